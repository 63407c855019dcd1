"""Equal cost: metrics against cumulative evaluations of f and training time, and
every estimator's value at a fixed budget of evaluations (``--budget-evals``).

Estimators differ by orders of magnitude in what a step costs (REINFORCE evaluates
f once per example, leave-one-out S times, IndeCateR N * K times), so a table at
equal steps flatters the expensive ones. Every run records ``f_evals`` (counted
by the runner, bench.counting) and ``train_time_s`` at each evaluation. A run's
value at a budget E is interpolated between the two evaluations around E,
linearly in log f_evals (linearly in f_evals on the first segment, which starts
at 0); a run that never reached E is a gap with its reason (stopped short,
diverged, not finished, no count recorded), never extrapolated.

Runs are grouped as in the rest of the report, except that runs differing only in
their length (``train.steps``, ``eval.every``) share a row here: at equal cost a
cheap estimator is meant to run more steps than a dear one. Within such a row an
estimator with several settings is labelled by the options that differ (e.g.
``reinforce_loo[samples=200]``).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from .runs import Runs, _row_signature
from .stats import mean_ci
from .tables import METRIC_LABELS, column_order

# metrics tabulated at a budget and drawn against cost, where the store has them
BUDGET_METRICS = ["test_neg_elbo", "valid_neg_elbo", "train_neg_elbo", "expected_loss",
                  "optimality_gap", "log10_grad_var"]
CURVE_METRICS = [("test_neg_elbo", False), ("grad_var", True), ("expected_loss", False)]
COST_LABELS = {"f_evals": "evaluations of f (cumulative, log scale)",
               "train_time_s": "training time (s, evaluations excluded)"}


# --- rows at equal cost ---------------------------------------------------------------

def cost_rows(runs: Runs) -> pd.DataFrame:
    """The report's rows with runs of different lengths merged (row and cell relabelled);
    rows loaded from a rows.csv (no configs) keep their labels."""
    df = runs.rows
    if df.empty or not runs.configs:
        return df
    sig, label, opts = {}, {}, {}
    for rid in df["run_id"].unique():
        cfg = json.loads(json.dumps(runs.configs.get(rid) or {}, default=str))
        if not cfg:
            continue
        (cfg.get("train") or {}).pop("steps", None)
        (cfg.get("eval") or {}).pop("every", None)
        first = df[df["run_id"] == rid].iloc[0]
        rep = cfg.get("report") if isinstance(cfg.get("report"), dict) else {}
        sig[rid] = _row_signature(cfg)
        label[rid] = f"{first['task']} ({rep.get('experiment') or first['dataset']}, any length)"
        opts[rid] = {k: v for k, v in (runs.configs[rid].get("estimator") or {}).items()
                     if k != "name"}
    if not sig:
        return df
    names = {}
    for rid, s in sig.items():
        names.setdefault(label[rid], set()).add(s)
    rows = {rid: label[rid] if len(names[label[rid]]) == 1 else f"{label[rid]} #{s[:6]}"
            for rid, s in sig.items()}
    cells = {}
    est = df.drop_duplicates("run_id").set_index("run_id")["estimator"].astype(str)
    for rid in sig:
        peers = [r for r in sig if sig[r] == sig[rid] and est[r] == est[rid]]
        diff = sorted(k for k in opts[rid] if any(opts[r].get(k) != opts[rid][k] for r in peers))
        cells[rid] = est[rid] + ("[" + ",".join(f"{k}={opts[rid][k]}" for k in diff) + "]"
                                 if diff else "")
    out = df.copy()
    out["row"] = out["run_id"].map(rows).fillna(out["row"])
    out["cell"] = out["run_id"].map(cells).fillna(out["cell"])
    return out


# --- interpolation along one run ----------------------------------------------

def interpolate(evals, values, budget: float) -> float:
    """The value at ``budget`` evaluations along a run's (evals, values) points,
    linear in log evals between evaluations (in evals from a point at 0); nan when
    the budget lies outside the points or a bracketing value is missing."""
    e = np.asarray(evals, dtype=float)
    v = np.asarray(values, dtype=float)
    order = np.argsort(e, kind="stable")
    e, v = e[order], v[order]
    if len(e) == 0 or not (e[0] <= budget <= e[-1]):
        return math.nan
    hit = np.flatnonzero(e == budget)
    if len(hit):
        return float(v[hit[-1]])
    i = int(np.searchsorted(e, budget)) - 1  # e[i] < budget < e[i + 1]
    e0, e1, v0, v1 = e[i], e[i + 1], v[i], v[i + 1]
    if e0 <= 0:
        w = (budget - e0) / (e1 - e0)
    else:
        w = (math.log(budget) - math.log(e0)) / (math.log(e1) - math.log(e0))
    return float(v0 + w * (v1 - v0))


def _linear(x, y, at: float) -> float:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = ~np.isnan(y)
    if ok.sum() == 0 or not (x[ok][0] <= at <= x[ok][-1]):
        return math.nan
    return float(np.interp(at, x[ok], y[ok]))


# --- one run, then a table -----------------------------------------------------

def _wide(df: pd.DataFrame, run_id: str) -> pd.DataFrame:
    g = df[df["run_id"] == run_id]
    return g.pivot_table(index="step", columns="metric", values="value", aggfunc="first")


def run_at_budget(df: pd.DataFrame, run_id: str, metric: str, budget: float) -> dict:
    """One run's ``metric`` at ``budget`` evaluations: value, steps and training time
    there, or nan with ``reason``."""
    w = _wide(df, run_id).sort_index()
    status = str(df.loc[df["run_id"] == run_id, "status"].iloc[0]) if "status" in df else ""
    out = {"value": math.nan, "step": math.nan, "train_time_s": math.nan, "reason": ""}
    if "f_evals" not in w or w["f_evals"].isna().all():
        out["reason"] = "no f_evals recorded (run older than the counter)"
        return out
    w = w[w["f_evals"].notna()]
    most = float(w["f_evals"].max())
    if most < budget:
        last = int(w.index.max())
        out["reason"] = {"diverged": f"diverged at step {last} after {most:.3g} evaluations",
                         "incomplete": f"not finished: {most:.3g} evaluations so far"}.get(
            status, f"stopped at {most:.3g} evaluations (step {last})")
        return out
    out["step"] = _linear(w["f_evals"], w.index.to_numpy(dtype=float), budget)
    if "train_time_s" in w:
        tt = w["train_time_s"].copy()
        tt[w.index == 0] = 0.0
        out["train_time_s"] = _linear(w["f_evals"], tt, budget)
    if metric not in w:
        out["reason"] = f"{metric} not recorded"
        return out
    pts = w[["f_evals", metric]].dropna()
    out["value"] = interpolate(pts["f_evals"], pts[metric], budget)
    if math.isnan(out["value"]):
        out["reason"] = f"{metric} not recorded on both sides of the budget"
    return out


def budget_table(df: pd.DataFrame, budget: float, metrics=None) -> pd.DataFrame:
    """Long table: row, cell, metric -> mean and 95% CI over the seeds that reached
    the budget, seeds reached / runs, evaluations per step, steps and training
    time at the budget, and why the other runs are gaps."""
    cols = ["row", "cell", "metric", "budget", "mean", "ci95", "seeds", "runs",
            "f_evals_per_step", "steps", "train_time_s", "gaps"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    present = set(df["metric"])
    metrics = [m for m in (metrics or BUDGET_METRICS) if m in present]
    per_step = df[df["metric"] == "f_evals_per_step"].groupby("run_id")["value"].last()
    out = []
    for (row, cell), g in df.groupby(["row", "cell"], sort=False):
        runs = list(dict.fromkeys(g["run_id"]))
        for metric in metrics:
            got = [run_at_budget(g, r, metric, budget) for r in runs]
            vals = [x["value"] for x in got if not math.isnan(x["value"])]
            m, h, n = mean_ci(vals)
            gaps = sorted({x["reason"] for x in got if x["reason"]})
            out.append({"row": row, "cell": cell, "metric": metric, "budget": budget,
                        "mean": m, "ci95": h, "seeds": n, "runs": len(runs),
                        "f_evals_per_step": float(per_step.reindex(runs).mean()),
                        "steps": float(np.nanmean([x["step"] for x in got]))
                        if any(not math.isnan(x["step"]) for x in got) else math.nan,
                        "train_time_s": float(np.nanmean([x["train_time_s"] for x in got]))
                        if any(not math.isnan(x["train_time_s"]) for x in got) else math.nan,
                        "gaps": "; ".join(gaps)})
    return pd.DataFrame(out, columns=cols)


def _num(v: float, digits: int = 2) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def markdown(table: pd.DataFrame, budget: float) -> list[str]:
    """One Markdown table per report row: estimators x (cost, metrics at the budget)."""
    if table.empty:
        return [f"No run recorded f_evals: nothing to compare at {budget:.3g} evaluations.", ""]
    md = []
    metrics = list(dict.fromkeys(table["metric"]))
    for row in dict.fromkeys(table["row"]):
        t = table[table["row"] == row]
        head = (["estimator", "f evals / step", "steps to budget", "train time (s)"]
                + [METRIC_LABELS.get(m, m) for m in metrics] + ["gaps"])
        md += [f"### {row} at {budget:.3g} evaluations of f", "",
               "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for cell in column_order(t["cell"].unique()):
            c = t[t["cell"] == cell].set_index("metric")
            first = c.iloc[0]
            vals = []
            for m in metrics:
                r = c.loc[m] if m in c.index else None
                if r is None or math.isnan(r["mean"]):
                    vals.append("gap")
                    continue
                ci = "" if math.isnan(r["ci95"]) else f" ± {r['ci95']:.2f}"
                part = "" if r["seeds"] == r["runs"] else f" ({r['seeds']} of {r['runs']} seeds)"
                vals.append(f"{r['mean']:.2f}{ci}{part}")
            gaps = "; ".join(sorted({g for g in c["gaps"] if g}))
            md.append("| " + " | ".join([cell, _num(first["f_evals_per_step"], 0),
                                          _num(first["steps"], 0), _num(first["train_time_s"], 1),
                                          *vals, gaps]) + " |")
        md.append("")
    return md


# --- figures against cost -----------------------------------------------------------

def cost_curve_data(df: pd.DataFrame, metric: str, x: str, log: bool = False) -> pd.DataFrame:
    """Per (row, cell, step): x = mean over seeds of the cost column ``x``
    (``f_evals`` or ``train_time_s``), y mean and 95% CI over seeds."""
    cols = ["row", "cell", "step", "x", "y", "lo", "hi", "n"]
    keys = ["row", "cell", "run_id", "step"]
    y = df[df["metric"] == metric].groupby(keys)["value"].first()
    cost = df[df["metric"] == x].groupby(keys)["value"].first()
    if y.empty or cost.empty:
        return pd.DataFrame(columns=cols)
    d = pd.DataFrame({"y": y, "x": cost.reindex(y.index)}).reset_index()
    d.loc[d["step"] == 0, "x"] = 0.0
    d = d.dropna(subset=["x", "y"])
    if log:
        d = d[d["y"] > 0].assign(y=lambda t: np.log10(t["y"]))
    out = []
    for (row, cell, step), g in d.groupby(["row", "cell", "step"]):
        m, h, n = mean_ci(g["y"])
        lo, hi = (m - h, m + h) if not math.isnan(h) else (math.nan, math.nan)
        if log:
            m, lo, hi = 10 ** m, 10 ** lo, 10 ** hi
        out.append({"row": row, "cell": cell, "step": step, "x": float(g["x"].mean()),
                    "y": m, "lo": lo, "hi": hi, "n": n})
    return pd.DataFrame(out, columns=cols)


def plot_vs_cost(df, rows, metric, x, out, name, log=False, budgets=()) -> list[str]:
    """``metric`` against cost ``x`` (f_evals on a log axis, or train_time_s), one
    panel per report row; dashed lines at the budgets."""
    from .figures import _markers, _palette, finish_panels, row_panels, save

    data = cost_curve_data(df, metric, x, log)
    if x == "f_evals":
        data = data[data["x"] > 0]  # the log axis starts at the first evaluation
    if data.empty:
        return []
    fig, axes, rows = row_panels(data, rows)
    colours, markers = _palette(data["cell"].unique()), _markers(data["cell"].unique())
    for ax, row in zip(axes.flat, rows, strict=False):
        d = data[data["row"] == row]
        for cell in column_order(d["cell"].unique()):
            c = d[d["cell"] == cell].sort_values("x")
            ax.plot(c["x"], c["y"], marker=markers[cell], ms=4, lw=1.5, color=colours[cell],
                    label=cell, alpha=0.9)
            if c["lo"].notna().any():
                ax.fill_between(c["x"], c["lo"], c["hi"], color=colours[cell], alpha=0.15, lw=0)
        for b in budgets:
            ax.axvline(b, color="0.3", ls="--", lw=1)
        if x == "f_evals":
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # decades only: no overlapping labels
        if log:
            ax.set_yscale("log")
        ax.set_title(row, fontsize=10)
        ax.set_xlabel(COST_LABELS.get(x, x))
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    finish_panels(fig, axes, len(rows))
    bands = "bands: 95% CI over seeds" if data["n"].max() > 1 else "one seed: no CI"
    fig.suptitle(f"{METRIC_LABELS.get(metric, metric)} at equal cost ({bands})", fontsize=11)
    fig.tight_layout()
    return save(fig, out, name)


def figures(runs: Runs, out, budgets=()) -> list[tuple[str, list[str]]]:
    """(title, files) of every cost figure the store has data for."""
    df = cost_rows(runs)
    rows = list(dict.fromkeys(df["row"]))
    figs = []
    for metric, log in CURVE_METRICS:
        if metric not in set(df["metric"]):
            continue
        label = METRIC_LABELS.get(metric, metric)
        figs.append((f"{label} against evaluations of f",
                     plot_vs_cost(df, rows, metric, "f_evals", out, f"{metric}_vs_f_evals",
                                  log, budgets)))
        if metric != "test_neg_elbo":  # page.py draws test_neg_elbo_vs_time
            figs.append((f"{label} against training time",
                         plot_vs_cost(df, rows, metric, "train_time_s", out,
                                      f"{metric}_vs_time", log)))
    return figs


def section(runs: Runs, budgets, tables_dir) -> list[str]:
    """The report's equal-cost section: a table per budget (also as CSV)."""
    df = cost_rows(runs)
    md = ["## Equal cost: at a fixed budget of evaluations of f", "",
          "Each run's value at the budget, interpolated between the evaluations around it "
          "(linear in log f_evals); mean ± 95% CI over the seeds that reached it. `f_evals` is "
          "counted by the runner (rows of z passed to f; grad_var's estimates not included). "
          "A run that stopped short of the budget is a gap with its reason, never "
          "extrapolated. Runs that differ only in their number of steps share a row.", ""]
    for b in budgets:
        t = budget_table(df, float(b))
        name = f"budget_{float(b):g}.csv".replace("+", "")
        if hasattr(tables_dir, "write_csv"):
            tables_dir.write_csv(name, t, index=False)
        else:
            t.to_csv(tables_dir / name, index=False)
        md += markdown(t, float(b)) + [f"CSV: [tables/{name}](tables/{name}).", ""]
    return md
