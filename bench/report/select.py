"""Hyperparameters chosen on validation, test metrics of the choice reported.

    python -m bench select RESULTS_DIR [--metric valid_neg_elbo] [--maximize]
                           [--by KEY ...] [--early-stopping] [--out DIR]

A *row* is a task x dataset x estimator (x ``report.protocol`` where the store
has it, x every ``--by`` key, e.g. ``--by estimator.normalize``). Within a row,
the *swept* hyperparameters are every config key whose value varies between the
row's runs, except the seed and the ``report.*`` labels (bench.configcols gives
the keys: ``train.lr``, ``estimator.anneal_rate``, ...). A *setting* is one value
of the swept keys; its score is the mean over its seeds of the validation metric
(``--metric``, default ``valid_neg_elbo``; lower is better unless ``--maximize``)
at each run's final evaluation, or with ``--early-stopping`` at the evaluation
step where that run's validation metric is best (its test metrics are then read
at that step). The setting with the best score is chosen; the test split is never
used to choose (a ``test_*`` metric is refused).

Rules a reader needs:

* ties (scores equal to 1e-9 relative) go to the setting with more seeds, then to
  the first in ascending order of the swept values (e.g. the smaller lr);
* a run that diverged scores worst (it counts as +inf, or -inf with
  ``--maximize``), so a setting with a diverged seed is chosen only when every
  setting has one; incomplete runs are left out (and counted in the notes);
* settings of a row with unequal numbers of seeds (a grid still running) are
  named in the notes under the table;
* a numeric swept key whose chosen value is the smallest or largest tried is
  flagged ``edge``: the grid does not show that a value beyond it is worse;
* test metrics of the chosen setting: mean and 95% Student-t half-width over its
  seeds (bench.report.stats.mean_ci).

Writes ``table.md``, ``selected.csv`` (one line per row) and ``grid.csv`` (every
setting's score) into ``--out``; prints the table.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from ..configcols import attach, flatten, run_configs, varying
from ..results import load
from .stats import mean_ci

ROW_KEYS = ["task", "dataset", "estimator"]
PROTOCOL = "report.protocol"
TIE_RTOL = 1e-9


class SelectError(ValueError):
    """A bad request or a store that cannot answer it; the message is one line."""


# --- one line per run: its config columns and the metrics of the chosen step ---------

def run_table(df: pd.DataFrame, metric: str, early_stopping: bool = False,
              maximize: bool = False) -> pd.DataFrame:
    """One row per run: the columns that are constant within a run (ids, config
    columns, status) and one column per metric, at the final step or (early
    stopping) at the step where ``metric`` is best; ``sel_step`` is that step."""
    if df.empty:
        return pd.DataFrame()
    wide = df.pivot_table(index=["run_id", "step"], columns="metric", values="value",
                          aggfunc="first").reset_index()
    if metric in wide and early_stopping:
        key = -wide[metric] if maximize else wide[metric]
        best = wide.assign(_k=key).dropna(subset=["_k"]).sort_values(["run_id", "_k", "step"])
        idx = best.groupby("run_id").head(1).set_index("run_id")["step"]
        last = wide.groupby("run_id")["step"].max()
        sel = idx.reindex(last.index).fillna(last)
    else:
        sel = wide.groupby("run_id")["step"].max()
    pick = wide.merge(sel.rename("sel_step"), left_on="run_id", right_index=True)
    out = pick[pick["step"] == pick["sel_step"]].drop(columns="step")
    final = wide.groupby("run_id")["step"].max().rename("final_step")
    out = out.merge(final, left_on="run_id", right_index=True)
    skip = {"metric", "value", "step", "wall_s"}
    const = [c for c in df.columns if c not in skip and c not in out.columns or c == "run_id"]
    info = df.drop_duplicates("run_id")[const]
    return info.merge(out, on="run_id").reset_index(drop=True)


# --- the choice -----------------------------------------------------------------------

def _key(v):
    """A sortable, hashable stand-in for a config value (NaN and None alike)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return (0, "")
    if isinstance(v, bool):
        return (1, str(v))
    if isinstance(v, (int, float)):
        return (2, float(v))
    return (3, str(v))


def swept_keys(runs: pd.DataFrame, config_cols: list[str], row_keys: list[str]) -> list[str]:
    """The config columns whose value varies within these runs (one row)."""
    out = []
    for c in config_cols:
        if c in row_keys or c == "seed" or c.startswith("report.") or c not in runs:
            continue
        if len({_key(v) for v in runs[c]}) > 1:
            out.append(c)
    return out


def choose(runs: pd.DataFrame, metric: str, maximize: bool, row_keys: list[str],
           swept: list[str] | None = None, config_cols: list[str] | None = None):
    """The choice in every row of a run table.

    ``swept``: the hyperparameter columns (the same for every row); else, per row,
    the ``config_cols`` that vary within it. Returns (chosen, settings): the runs of
    each row's chosen setting, and one line per (row, setting) with its score."""
    chosen, settings = [], []
    for rk, g in runs.groupby(row_keys, dropna=False, sort=True):
        rk = rk if isinstance(rk, tuple) else (rk,)
        keys = list(swept) if swept is not None else swept_keys(g, config_cols or [], row_keys)
        worst = -math.inf if maximize else math.inf
        ok = g["status"] != "diverged" if "status" in g else pd.Series(True, index=g.index)
        g = g.assign(_score=g[metric].where(ok, worst))
        groups = g.groupby([g[k].map(_key) for k in keys], sort=True) if keys else [((), g)]
        lines = []
        for sk, s in groups:
            vals = {k: s[k].iloc[0] for k in keys}
            score = float(s["_score"].mean()) if s["_score"].notna().any() else math.nan
            lines.append({**dict(zip(row_keys, rk)), **vals, "score": score,
                          "seeds": int(s["seed"].nunique()) if "seed" in s else len(s),
                          "n_diverged": int((s.get("status") == "diverged").sum())
                          if "status" in s else 0,
                          "_sort": sk if isinstance(sk, tuple) else (sk,), "_runs": s})
        valid = [ln for ln in lines if not math.isnan(ln["score"])]
        if not valid:
            continue
        sign = -1.0 if maximize else 1.0
        best = min(sign * ln["score"] for ln in valid)
        tol = TIE_RTOL * max(1.0, abs(best)) if math.isfinite(best) else 0.0
        tied = [ln for ln in valid if sign * ln["score"] <= best + tol]
        pick = sorted(tied, key=lambda ln: (-ln["seeds"], ln["_sort"]))[0]
        edges = []
        for k in keys:
            nums = sorted({float(v) for v in g[k] if _is_number(v)})
            if len(nums) >= 2 and _is_number(pick[k]):
                if float(pick[k]) == nums[0]:
                    edges.append(f"{k}=min")
                elif float(pick[k]) == nums[-1]:
                    edges.append(f"{k}=max")
        for ln in lines:
            ln["chosen"] = ln is pick
            ln["n_settings"] = len(lines)
            ln["swept"] = ", ".join(keys)
            ln["edge"] = "; ".join(edges) if ln is pick else ""
            settings.append({k: v for k, v in ln.items() if not k.startswith("_")})
        runs_of = pick["_runs"].drop(columns="_score").assign(
            swept=", ".join(keys), edge="; ".join(edges), n_settings=len(lines),
            score=pick["score"])
        chosen.append(runs_of)
    chosen = pd.concat(chosen, ignore_index=True) if chosen else pd.DataFrame()
    return chosen, pd.DataFrame(settings)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not (
        isinstance(v, float) and math.isnan(v))


# --- the table ------------------------------------------------------------------------

def _fmt(m, h, digits=2):
    if m is None or math.isnan(m):
        return ""
    return f"{m:.{digits}f}" + ("" if math.isnan(h) else f" ± {h:.{digits}f}")


def _val(v) -> str:
    return f"{v:g}" if _is_number(v) else str(v)


def summary(chosen: pd.DataFrame, row_keys: list[str], metric: str,
            test_metrics: list[str]) -> pd.DataFrame:
    """One line per row: the chosen values, seeds, the validation score and the
    test metrics (mean, 95% half-width)."""
    lines = []
    for rk, g in chosen.groupby(row_keys, dropna=False, sort=True):
        rk = rk if isinstance(rk, tuple) else (rk,)
        keys = [k for k in str(g["swept"].iloc[0]).split(", ") if k]
        line = dict(zip(row_keys, rk))
        line["chosen"] = ", ".join(f"{k}={_val(g[k].iloc[0])}" for k in keys) or "(one setting)"
        line["settings"] = int(g["n_settings"].iloc[0])
        line["edge"] = g["edge"].iloc[0]
        for m in [metric, *test_metrics]:
            mean, half, n = mean_ci(g[m]) if m in g else (math.nan, math.nan, 0)
            line[m], line[m + "_ci95"] = mean, half
            line["seeds"] = max(line.get("seeds", 0), n)
        line["diverged"] = int((g.get("status") == "diverged").sum()) if "status" in g else 0
        line["steps"] = ", ".join(str(int(s)) for s in sorted(set(g["sel_step"])))
        lines.append(line)
    return pd.DataFrame(lines)


def markdown(table: pd.DataFrame, row_keys: list[str], metric: str, test_metrics: list[str],
             maximize: bool, early_stopping: bool, notes: list[str]) -> str:
    how = "highest" if maximize else "lowest"
    when = "the best validation step of each run" if early_stopping else "the final step"
    out = [f"Hyperparameters chosen per row on the {how} mean `{metric}` over seeds "
           f"(at {when}); the test metrics are those of the chosen setting (mean ± 95% "
           f"t half-width over seeds). The test split is never used to choose. `edge`: "
           f"the chosen value is the smallest or largest tried.", ""]
    cols = [*row_keys, "chosen", "settings", "seeds", "steps", metric, *test_metrics, "edge"]
    out += ["| " + " | ".join(c.replace("report.", "") for c in cols) + " |",
            "|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        cells = []
        for c in cols:
            if c in (metric, *test_metrics):
                cells.append(_fmt(r[c], r[c + "_ci95"]))
            else:
                cells.append(_val(r[c]) if not (isinstance(r[c], float) and math.isnan(r[c]))
                             else "")
        if r.get("diverged"):
            cells[-1] = (cells[-1] + "; " if cells[-1] else "") + f"{r['diverged']} diverged"
        out.append("| " + " | ".join(cells) + " |")
    if notes:
        out += ["", *[f"- {n}" for n in notes]]
    return "\n".join(out) + "\n"


def select_store(root, metric: str = "valid_neg_elbo", maximize: bool = False,
                 by: list[str] | None = None, early_stopping: bool = False,
                 test_metrics: list[str] | None = None):
    """(table, chosen runs, settings, notes, row_keys, test_metrics) for a store."""
    if metric.startswith("test_"):
        raise SelectError(f"--metric {metric}: select chooses on validation (or training) "
                          f"metrics; test metrics are only reported")
    df = load(root)
    if df.empty:
        raise SelectError(f"no runs under {root}")
    configs = run_configs(root, df["run_id"].unique())
    keys = varying(configs)
    if PROTOCOL not in keys and any(flatten(c).get(PROTOCOL) for c in configs.values()):
        keys.append(PROTOCOL)  # the protocol is always shown where runs have one
    df = attach(df, root, keys)
    metrics = sorted(df["metric"].unique())
    if metric not in metrics:
        raise SelectError(f"metric {metric!r} is not in {root} (it has: {', '.join(metrics)})")
    by = list(by or [])
    for k in by:
        if k not in df.columns:
            raise SelectError(f"--by {k}: no such column (config keys that vary here: "
                              f"{', '.join(c for c in df.columns if '.' in c) or 'none'})")
    config_cols = [c for c in df.columns if "." in c]
    row_keys = ROW_KEYS + ([PROTOCOL] if PROTOCOL in df.columns else []) + \
        [k for k in by if k not in ROW_KEYS]
    notes = []
    n_inc = df.loc[df["status"] == "incomplete", "run_id"].nunique()
    if n_inc:
        notes.append(f"{n_inc} incomplete run(s) left out")
    df = df[df["status"] != "incomplete"]
    runs = run_table(df, metric, early_stopping, maximize)
    missing = runs[runs[metric].isna() & (runs["status"] != "diverged")]
    if len(missing):
        notes.append(f"{len(missing)} run(s) without {metric} left out")
        runs = runs.drop(missing.index)
    test_metrics = test_metrics or [m for m in ("test_neg_elbo", "test_nll", "test_accuracy")
                                    if m in metrics]
    chosen, settings = choose(runs, metric, maximize, row_keys, config_cols=config_cols)
    if chosen.empty:
        raise SelectError(f"no complete run with {metric} under {root}")
    table = summary(chosen, row_keys, metric, test_metrics)
    for rk, g in settings.groupby(row_keys, dropna=False, sort=True):
        if g["seeds"].nunique() > 1:  # e.g. a grid still running
            rk = rk if isinstance(rk, tuple) else (rk,)
            label = " · ".join(_val(v) for v in rk if not (isinstance(v, float) and math.isnan(v)))
            notes.append(f"{label}: the settings have unequal numbers of seeds "
                         f"({', '.join(str(n) for n in g['seeds'])}), so their means are over "
                         f"different seeds")
    return table, chosen, settings, notes, row_keys, test_metrics


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench select", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results_dir")
    ap.add_argument("--metric", default="valid_neg_elbo", help="the validation metric to choose on")
    ap.add_argument("--maximize", action="store_true", help="higher is better (accuracy)")
    ap.add_argument("--by", nargs="+", default=[], metavar="KEY",
                    help="more row keys (config columns, e.g. estimator.normalize)")
    ap.add_argument("--early-stopping", action="store_true",
                    help="each run at its best validation step, not its final one")
    ap.add_argument("--out", default=None, help="folder for table.md, selected.csv, grid.csv")
    a = ap.parse_args(argv)
    root = Path(a.results_dir)
    if not root.is_dir():
        print(f"error: results_dir {a.results_dir!r} does not exist", file=sys.stderr)
        return 2
    try:
        table, chosen, settings, notes, row_keys, tests = select_store(
            root, a.metric, a.maximize, a.by, a.early_stopping)
    except SelectError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    md = markdown(table, row_keys, a.metric, tests, a.maximize, a.early_stopping, notes)
    print(md)
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(md)
        table.to_csv(out / "selected.csv", index=False)
        settings.to_csv(out / "grid.csv", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
