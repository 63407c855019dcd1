"""`python -m bench table1 [STORE]`: Jang, Gu & Poole (2017) Table 1 from a results
store alone -- every cell beside the published value, the hyperparameters chosen on
validation, rank agreement, curves, and evidence for every large gap.

    python -m bench table1 results/jang_table1/final [--out results/jang_table1]
                           [--selection results/jang_table1/selection | --select CHOSEN.csv]
                           [--cost results/jang_table1/cost.csv] [--final-commands [--partial]]
                           [--final_steps 50000] [--seeds 3] [--check all|unstable]

Runs are sorted into the 4 rows (tasks) x 7 columns (estimators) of Table 1. Runs of
``--final_steps`` steps are the final runs; shorter ones (in ``--selection``, a store of
their own, or in STORE itself) are the selection grid. A cell's hyperparameters
(train.lr and, for the Gumbel-Softmax family, the tau schedule r, N) are those of
``--select`` (a CSV with columns ``task``, ``estimator`` and any of ``train.lr``/``lr``,
``estimator.anneal_rate``/``anneal_rate``, ``estimator.anneal_every``/``anneal_every``,
as ``python -m bench select`` writes), else chosen here: the setting with the lowest
mean final ``valid_neg_elbo`` over seeds among the selection runs (never a test metric),
then settled at full length: seed 0 of the next smaller learning rate is run at full
length too and the lower final valid -ELBO wins, for every cell (``--check all``) or
only where the selected seed-0 run is unstable or diverged (``--check unstable``;
bench/report/table1_check.py). The cell's value is the mean +- 95 % Student-t interval
over the final runs at that setting: test_nll (m = 1000) for the SBN rows, the
single-sample test -ELBO for the VAE rows, with their m = 1000 bound beside it. Cells
without final runs are "not run yet", with their planned cost: the median wall clock of
the cell's finished final runs in STORE (status.json ``wall_s``, resumes included), else
``--cost`` (``python -m bench table1_cost``). Written under ``--out``: REPORT.md,
table1.csv and figures/valid_<row>.png; REPORT.md ends with the selection grid (every
selection run's final valid -ELBO by learning rate, the choice in bold;
bench/report/table1_selection.py). ``--final-commands`` prints one command per cell and
seed at its chosen setting (bench/report/table1_commands.py), and holds back a cell
whose planned selection grid is not all run (``--partial`` prints it anyway, marked).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import pandas as pd

from ..results import load
from .published import published_for
from .stats import mean_ci
from .table1_check import MODES, UNSTABLE, curve_rise, full_length
from .table1_commands import final_commands
from .table1_runs import (
    HYPER,
    chosen_settings,
    missing_settings,
    read_select,
    run_table,
    same_setting,
    select_here,
    selection_runs,
    setting_label,
)
from .table1_selection import section as selection_section

ROWS = [("sbn", "SBN Bernoulli", "jang_sbn", "test_nll"),
        ("sbn_categorical", "SBN categorical", "jang_sbn", "test_nll"),
        ("bernoulli_vae", "VAE Bernoulli", "jang_vae", "test_neg_elbo"),
        ("categorical_vae", "VAE categorical", "jang_vae", "test_neg_elbo")]
COLUMNS = [("reinforce", "SF"), ("darn", "DARN"), ("muprop", "MuProp"),
           ("straight_through", "ST"), ("annealed_st", "Annealed ST"),
           ("gumbel_softmax", "Gumbel-Softmax"), ("st_gumbel_softmax", "ST Gumbel-Softmax")]
FALLING = 0.5  # nats of valid -ELBO lost over the last 20 % of training: "still falling"
GAP = 2.0  # nats from the paper that call for a line of evidence


# --- the table --------------------------------------------------------------------

def cell(runs, finals, curves, task, est, chosen, final_steps, mode="all") -> dict:
    mine = runs[(runs["task"] == task) & (runs["estimator"] == est)
                & (runs["steps"] == final_steps)]
    done = mine[mine["status"].isin(["complete", "diverged"])]
    hyper = {k: v for k, v in (chosen or {}).items() if not k.startswith("_")}
    check = (full_length(runs, curves, task, est, chosen, final_steps, mode) if "lr" in hyper
             else {"setting": hyper, "pending": None, "checked": [], "changed": False})
    hyper = check["setting"]
    if hyper:
        done = done[same_setting(done, hyper)]
    elif len(done.drop_duplicates(list(HYPER))) > 1:
        return {"status": "final runs at several settings and no selection"}
    out = {"n_running": int((mine["status"] == "incomplete").sum()),
           "n_diverged": int((done["status"] == "diverged").sum()), "check": check}
    done = done[done["status"] == "complete"]
    if done.empty:
        return {**out, "status": "not run yet"}
    ids = set(done["run_id"])
    fin = finals[finals["run_id"].isin(ids)]
    for metric in ("test_neg_elbo", "test_nll", "valid_neg_elbo"):
        m, h, n = mean_ci(fin.loc[fin["metric"] == metric, "value"])
        out[metric] = (m, h, n)
    # per seed's validation curve: still falling? (valid -ELBO at ~80 % of training minus
    # at the end) and unstable? (how far the end lies above the curve's best); means over seeds
    drops, rises = [], []
    for rid in ids:
        c = curves[(curves["run_id"] == rid)].sort_values("step")
        if len(c) >= 3:
            at80 = c.iloc[(c["step"] - 0.8 * c["step"].max()).abs().argmin()]["value"]
            drops.append(at80 - c["value"].iloc[-1])
        if len(c):
            rise, best_step, _ = curve_rise(c)
            rises.append((rise, best_step))
    out["drop_last20"] = sum(drops) / len(drops) if drops else math.nan
    out["rise"] = sum(r for r, _ in rises) / len(rises) if rises else math.nan
    out["best_step"] = max(s for _, s in rises) if rises else None  # every seed's best by then
    out["setting"] = (setting_label(done.iloc[0]) if not hyper else setting_label(hyper)) \
        + check_label(check)
    out["protocol"] = ", ".join(sorted(set(done["protocol"]) - {""})) or "-"
    out["status"] = "done"
    return out


def check_label(check: dict) -> str:
    """The full-length check, as the 'chosen on validation' column shows it."""
    if check["pending"]:
        return f" (full-length check of {setting_label(check['pending'])} pending)"
    if len(check["checked"]) > 1:
        return " (chosen at full length)" if check["changed"] else \
            " (kept at full length)"
    return ""


def spearman(a: list[float], b: list[float]) -> float:
    from scipy import stats

    return float(stats.spearmanr(a, b).statistic) if len(a) >= 3 else math.nan


def _fmt(t) -> str:
    m, h, n = t
    if n == 0 or pd.isna(m):
        return ""
    return f"{m:.1f} ± {h:.1f} (n={n})" if n > 1 else f"{m:.1f} (n=1)"


def evidence(c: dict, chosen: dict | None, metric: str) -> list[str]:
    lines = []
    if c.get("drop_last20", 0) > FALLING:
        lines.append(f"still falling: valid −ELBO {c['drop_last20']:.1f} nats lower at the end "
                     f"than at 80 % of training")
    rise = c.get("rise", 0)
    above = (f"{rise:.1f} nats above its best (every seed's best reached by step "
             f"{c.get('best_step')})")
    if rise > UNSTABLE:  # the full-length check's own threshold
        lines.append(f"unstable: valid −ELBO {above} at the end: the chosen LR holds for the "
                     f"selection's length, not for the final one")
    elif rise > FALLING:
        lines.append(f"valid −ELBO ends {above}, within the full-length check's "
                     f"{UNSTABLE:g}-nat tolerance")
    chk = c.get("check") or {}
    if len(chk.get("checked", [])) > 1 or chk.get("pending"):
        lines.append("full-length check (seed 0): " + "; ".join(chk["checked"])
                     + (f"; {setting_label(chk['pending'])} not run yet" if chk["pending"]
                        else ""))
    n = c[metric][2]
    if n < 3:
        lines.append(f"only {n} seed(s)")
    tried = (chosen or {}).get("_tried") or []
    lr = chk.get("setting", chosen or {}).get("lr")
    if len(tried) > 1 and lr in (tried[0], tried[-1]):
        lines.append(f"chosen LR {lr:g} is at the edge of the grid tried "
                     f"({', '.join(f'{t:g}' for t in tried)}): the optimum may lie outside")
    if c.get("n_diverged"):
        lines.append(f"{c['n_diverged']} final run(s) diverged")
    if not lines:
        lines.append("not explained by the data here: a protocol detail the paper does not "
                     "state (see README, 'Protocol gaps')")
    return lines


def build(store, out, select=None, cost=None, final_steps=50_000, seeds=3,
          figures=True, selection=None, check="all") -> Path:
    store, out = Path(store), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = run_table(store)
    df = load(store, all_runs=True)
    df = df[df["run_id"].isin(runs["run_id"])]
    last = df.groupby("run_id")["step"].transform("max")
    finals = df[df["step"] == last]
    curves = df[df["metric"] == "valid_neg_elbo"]
    sel = selection_runs(Path(selection) if selection else store, final_steps)
    chosen_all = read_select(Path(select)) if select else select_here(sel)
    costs = pd.read_csv(cost) if cost and Path(cost).exists() else None

    recs, md = [], []
    for task, row_name, setting, metric in ROWS:
        pub = published_for(setting, task, "binarized_mnist") or {"values": {}}
        what = "m = 1000 bound" if metric == "test_nll" else "single-sample test −ELBO"
        md += [f"### {row_name} (`{task}`) — {what}, nats", ""]
        head = "| estimator | ours (mean ± 95 % CI) | paper | ours − paper |"
        head += " m = 1000 bound |" if metric == "test_neg_elbo" else ""
        head += " chosen on validation | valid −ELBO still falling? | evidence |"
        md += [head, "|" + "---|" * (head.count("|") - 1)]
        ours, theirs, names, settings = [], [], [], {}
        for est, col in COLUMNS:
            chosen = chosen_all.get((task, est))
            c = cell(runs, finals, curves, task, est, chosen, final_steps, check)
            settings[est] = (c.get("check") or {}).get("setting")
            p = pub["values"].get(est, math.nan)
            rec = {"row": task, "column": col, "estimator": est, "metric": metric,
                   "published": p, "status": c["status"]}
            h = measured_hours(runs, task, est, final_steps)  # this store's own runs first
            rec["cost_from"] = "" if math.isnan(h) else "measured here"
            if math.isnan(h) and costs is not None:
                hit = costs[(costs["row"] == task) & (costs["column"] == col)]
                h = float(hit["run_h"].iloc[0]) if len(hit) else math.nan
                rec["cost_from"] = "" if math.isnan(h) else "cost.csv"
            if c["status"] != "done":
                planned = ""
                n = seeds + (1 if (c.get("check") or {}).get("pending") else 0)
                if not math.isnan(h):  # (n: with its full-length check)
                    planned = f"; planned {n} × {h:.2f} = {n * h:.1f} CPU-h"
                    rec["planned_h"] = n * h
                running = f"; {c['n_running']} in progress" if c.get("n_running") else ""
                pick = setting_label(chosen) if chosen and "lr" in chosen else ""
                if pick and missing_settings(task, est, chosen):
                    pick += " (selection incomplete)"
                md.append(f"| {col} | *{c['status']}*{planned}{running} | {p:g} | | "
                          + ("| " if metric == "test_neg_elbo" else "") + f"{pick} | | |")
                recs.append(rec)
                continue
            m = c[metric][0]
            diff = m - p
            rec.update(mean=m, ci95=c[metric][1], seeds=c[metric][2], diff=diff,
                       nll_mean=c["test_nll"][0], nll_ci95=c["test_nll"][1],
                       setting=c["setting"], drop_last20=c["drop_last20"], rise=c["rise"],
                       protocol=c["protocol"])
            falling = ("yes" if c["drop_last20"] > FALLING
                       else "rising" if c["drop_last20"] < -FALLING else "no") + (
                f" ({c['drop_last20']:+.1f})" if not pd.isna(c["drop_last20"]) else "")
            ev = "; ".join(evidence(c, chosen, metric)) if abs(diff) > GAP else ""
            more = seeds - c[metric][2]  # seeds still to run (the report fills in as they land)
            extra = 1 if c["check"]["pending"] else 0  # the full-length check's seed-0 run
            if more + extra > 0 and not math.isnan(h):
                rec["planned_h"] = (more + extra) * h
            ours_txt = _fmt(c[metric]) + (f"; {more} more seed(s) planned" if more > 0 else "")
            ours_txt += "; 1 full-length check planned" if extra else ""
            line = f"| {col} | {ours_txt} | {p:g} | {diff:+.1f} |"
            line += f" {_fmt(c['test_nll'])} |" if metric == "test_neg_elbo" else ""
            line += f" {c['setting']} | {falling} | {ev} |"
            md.append(line)
            recs.append(rec)
            if not math.isnan(p):
                ours.append(m), theirs.append(p), names.append(col)
        md.append("")
        if ours:
            win_o = names[ours.index(min(ours))]
            win_p = names[theirs.index(min(theirs))]
            rho = spearman(ours, theirs)
            md += [f"Rank agreement over the {len(ours)} estimator(s) with data: best here "
                   f"**{win_o}**, in the paper (among these) **{win_p}**; Spearman ρ = "
                   + (f"{rho:.2f}" if not math.isnan(rho) else "n/a (fewer than 3)") + ".", ""]
        if figures and not curves.empty:
            fig = plot_row(curves, runs, task, final_steps, out, settings)
            if fig:
                md += [f"![validation −ELBO, {row_name}]({fig})", ""]

    md += selection_section(sel, chosen_all, ROWS, COLUMNS)
    table = pd.DataFrame(recs)
    table.to_csv(out / "table1.csv", index=False)
    done = table[table["status"] == "done"]
    planned_h = table.get("planned_h", pd.Series(0.0, index=table.index))
    planned = planned_h.sum()
    basis = table.loc[planned_h > 0, "cost_from"].value_counts()  # cells still to run
    how = (f"from {select}" if select else "chosen on validation (valid_neg_elbo) among the "
           f"shorter selection runs of {selection or 'the store'}")
    how += ("; then the full-length check (seed 0 at the next smaller LR too, the lower "
            "final valid −ELBO wins; the 'chosen on validation' column says so) "
            + ("for every cell" if check == "all" else
               f"where a cell's seed-0 final run ends more than {UNSTABLE:g} nats above its "
               "best or diverges"))
    lines = ["# Jang, Gu & Poole (2017), Table 1 — reproduction", "",
             f"Generated by `python -m bench table1 {store}` on {time.strftime('%Y-%m-%d')} "
             f"from the store alone ({len(runs)} runs; final runs: {final_steps} steps). "
             f"Hyperparameters: {how}. "
             f"Cells with final runs: {len(done)} of {len(table)}, "
             f"{int((done['seeds'] >= seeds).sum()) if len(done) else 0} of them with all "
             f"{seeds} seeds"
             + (f"; the rest planned at {planned:.1f} CPU-hours ({seeds} seeds and the full-length "
                f"checks; a run's cost: the median wall clock of the cell's finished final runs "
                f"here for {basis.get('measured here', 0)} of these cells, cost.csv for "
                f"{basis.get('cost.csv', 0)})"
                if planned else "")
             + ". Lower is better everywhere. A difference beyond "
             f"{GAP:g} nats gets a line of evidence; 'still falling' means the validation −ELBO "
             f"fell by more than {FALLING} nats over the last 20 % of training.", ""]
    page = out / "REPORT.md"
    page.write_text("\n".join(lines + md) + "\n")
    return page


def measured_hours(runs: pd.DataFrame, task: str, est: str, final_steps: int) -> float:
    """Median wall clock, in hours, of a cell's complete final runs (any setting, the
    full-length checks' too; resumes included): what one more seed costs on the machine
    that ran them. NaN where the cell has none or the store did not record it."""
    mine = runs[(runs["task"] == task) & (runs["estimator"] == est)
                & (runs["steps"] == final_steps) & (runs["status"] == "complete")]
    wall = mine["wall_s"].dropna()
    return float(wall.median()) / 3600 if len(wall) else math.nan


def row_curves(curves, runs, task, final_steps, settings: dict) -> dict:
    """{column: validation -ELBO by step, mean over the cell's final runs} -- only the
    runs at the setting each cell reports (``settings``: estimator -> hyperparameters),
    never a rejected learning rate's or a full-length check's that lost."""
    ids = runs[(runs["task"] == task) & (runs["steps"] == final_steps)
               & (runs["status"] == "complete")]
    out = {}
    for est, col in COLUMNS:
        mine = ids[ids["estimator"] == est]
        if settings.get(est):
            mine = mine[same_setting(mine, settings[est])]
        c = curves[curves["run_id"].isin(set(mine["run_id"]))]
        if not c.empty:
            out[col] = c.groupby("step")["value"].mean()
    return out


def plot_row(curves, runs, task, final_steps, out: Path, settings: dict) -> str | None:
    lines = row_curves(curves, runs, task, final_steps, settings)
    if not lines:
        return None
    from .figures import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    late = []  # the y range: the curves after the first 10 % of training, where they differ
    for col, mean in lines.items():
        ax.plot(mean.index, mean.values, label=col)
        late += list(mean[mean.index >= 0.1 * final_steps].values)
    if late:
        lo, hi = min(late), max(late)
        pad = 0.08 * (hi - lo) + 0.5
        ax.set_ylim(lo - pad, hi + pad)
    # the window the table's "still falling" reads
    ax.axvspan(0.8 * final_steps, final_steps, color="0.9", zorder=0, label="last 20 %")
    ax.set_xlabel("step")
    ax.set_ylabel("validation −ELBO (nats), mean over seeds")
    ax.set_title(task)
    ax.legend(fontsize=7)
    (out / "figures").mkdir(exist_ok=True)
    name = f"figures/valid_{task}.png"
    fig.savefig(out / name, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return name


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench table1", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store", nargs="?", default="results/jang_table1/final")
    ap.add_argument("--out", default=None, help="default: the store's parent folder")
    ap.add_argument("--select", default=None, help="CSV of chosen hyperparameters")
    ap.add_argument("--selection", default=None,
                    help="store of the selection runs (default: 'selection' beside STORE if "
                         "it exists, else STORE itself)")
    ap.add_argument("--cost", default=None,
                    help="per-cell costs (default: cost.csv beside the output, if present)")
    ap.add_argument("--final_steps", type=int, default=50_000)
    ap.add_argument("--seeds", type=int, default=3, help="seeds planned per cell")
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--check", choices=MODES, default="all",
                    help="which cells get the full-length check (bench/report/"
                         "table1_check.py): all (default) or only the unstable ones")
    ap.add_argument("--final-commands", action="store_true",
                    help="print the final runs' commands at the chosen settings, write nothing")
    ap.add_argument("--partial", action="store_true",
                    help="with --final-commands: also for cells whose selection grid is "
                         "incomplete (marked)")
    a = ap.parse_args(argv)
    store = Path(a.store)
    selection = a.selection
    if selection is None and (store.parent / "selection" / "runs").is_dir():
        selection = store.parent / "selection"
    if not (store / "runs").is_dir() and not (a.final_commands and (selection or a.select)):
        print(f"error: no results store at {store} (expected {store / 'runs'})", file=sys.stderr)
        return 2
    if a.final_commands:
        chosen = chosen_settings(store, a.select, selection, a.final_steps)
        print("\n".join(final_commands(chosen, a.final_steps, a.seeds, store, ROWS,
                                         COLUMNS, a.partial, a.check)))
        return 0
    out = Path(a.out) if a.out else store.parent
    cost = a.cost or (out / "cost.csv")
    try:
        page = build(store, out, a.select, cost, a.final_steps, a.seeds, not a.no_figures,
                     selection, a.check)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {page} and {out / 'table1.csv'}")
    return 0
