"""The selection grid behind Table 1's choices (bench/report/table1.py): per row, the
final validation -ELBO of every selection run, one line per estimator (and tau schedule)
against the learning rate, the chosen setting in bold -- REPORT.md's 'Selection grid'."""

from __future__ import annotations

import pandas as pd

from .table1_runs import LRS, _sci, missing_settings, same_setting


def _value(g: pd.DataFrame) -> str:
    """One grid cell: the mean final valid -ELBO over its seeds, or what stands in for it."""
    if g.empty:
        return ""
    if (g["status"] == "diverged").any():
        return "diverged"
    done = g[g["status"] == "complete"]["valid_neg_elbo"].dropna()
    if done.empty:
        return "incomplete" if (g["status"] == "incomplete").any() else "—"
    return f"{done.mean():.1f}" + (f" (n={len(done)})" if len(done) > 1 else "")


def section(runs: pd.DataFrame, chosen_all: dict, rows, columns) -> list[str]:
    """Markdown lines of the selection grid of ``runs`` (table1_runs.selection_runs),
    [] when there is none."""
    if runs.empty:
        return []
    budgets = ", ".join(f"{s:,}" for s in sorted(runs["steps"].unique()))
    lrs = sorted(set(LRS) | set(runs["lr"].dropna()))
    out = ["## Selection grid", "",
           f"Final validation −ELBO (nats, seed 0 unless n says otherwise) of every selection "
           f"run ({budgets} steps), by learning rate; **bold**: the setting chosen for the "
           f"final runs (lowest mean, the rule of `python -m bench select`); empty: not run "
           f"yet; incomplete: running, or interrupted (the same command resumes it). "
           f"The choice reads validation only; a cell whose grid is not complete has no "
           f"final command yet.", ""]
    for task, row_name, *_ in rows:
        mine = runs[runs["task"] == task]
        if mine.empty:
            continue
        out += [f"### {row_name} (`{task}`)", "",
                "| estimator | τ schedule | " + " | ".join(_sci(lr) for lr in lrs)
                + " | grid |", "|" + "---|" * (len(lrs) + 3)]
        for est, col in columns:
            cell = mine[mine["estimator"] == est]
            if cell.empty:
                continue
            chosen = chosen_all.get((task, est)) or {}
            hyper = {k: x for k, x in chosen.items() if not k.startswith("_")}
            missing = missing_settings(task, est, chosen)
            grid = "complete" if chosen and not missing else (
                f"{len(missing)} not run" if missing else "—")
            for rate, sched in cell.groupby(cell["anneal_rate"].fillna(0.0), sort=True):
                every = sched["anneal_every"].iloc[0]
                label = "-" if rate == 0 else f"r={_sci(rate)}, N={int(every)}"  # 0: tau fixed
                vals = []
                for lr in lrs:
                    g = sched[(sched["lr"] - lr).abs() <= 1e-9 * lr]
                    v = _value(g)
                    if v and len(g) and hyper and same_setting(g.iloc[:1], hyper).iloc[0]:
                        v = f"**{v}**"
                    vals.append(v)
                out.append(f"| {col} | {label} | " + " | ".join(vals) + f" | {grid} |")
                col, grid = "", ""  # the cell's name and grid status once
        out.append("")
    return out

