"""`python -m bench report [RESULTS_DIR] [--out DIR]`: summary tables from the store.

For each (task, dataset, estimator) the last evaluation of every seed is taken
and summarised as mean ± half-width of a 95% Student-t interval over seeds
(no interval with one seed).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from .results import load

HEADLINE = ["test_neg_elbo", "test_nll", "train_neg_elbo", "log10_grad_var", "step_time_s"]


def mean_ci(values, level: float = 0.95) -> tuple[float, float, int]:
    """Mean and half-width of the Student-t confidence interval (nan for n < 2)."""
    from scipy import stats

    v = pd.Series(values, dtype=float).dropna()
    n = len(v)
    if n == 0:
        return math.nan, math.nan, 0
    if n == 1:
        return float(v.iloc[0]), math.nan, 1
    half = stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n)
    return float(v.mean()), float(half), n


def final_rows(df: pd.DataFrame) -> pd.DataFrame:
    last = df.groupby("run_id")["step"].transform("max")
    return df[df["step"] == last]


def summary(df: pd.DataFrame, metrics=HEADLINE) -> pd.DataFrame:
    fin = final_rows(df)
    fin = fin[fin["metric"].isin(metrics)]
    out = []
    for (task, dataset, est, metric), g in fin.groupby(["task", "dataset", "estimator", "metric"]):
        m, h, n = mean_ci(g["value"])
        out.append({"task": task, "dataset": dataset, "estimator": est, "metric": metric,
                    "mean": m, "ci95": h, "seeds": n})
    return pd.DataFrame(out, columns=["task", "dataset", "estimator", "metric", "mean", "ci95",
                                      "seeds"])


def _cell(m, h):
    if math.isnan(m):
        return ""
    return f"{m:.2f}" if math.isnan(h) else f"{m:.2f} ± {h:.2f}"


def markdown(summ: pd.DataFrame) -> str:
    lines = []
    for (task, dataset), g in summ.groupby(["task", "dataset"]):
        metrics = [m for m in HEADLINE if m in set(g["metric"])]
        lines.append(f"### {task} on {dataset}\n")
        lines.append("| estimator | seeds | " + " | ".join(metrics) + " |")
        lines.append("|---|---|" + "---|" * len(metrics))
        for est, ge in g.groupby("estimator"):
            cells = []
            for m in metrics:
                r = ge[ge["metric"] == m]
                cells.append(_cell(r["mean"].iloc[0], r["ci95"].iloc[0]) if len(r) else "")
            lines.append(f"| {est} | {int(ge['seeds'].max())} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench report")
    ap.add_argument("results_dir", nargs="?", default="results")
    ap.add_argument("--out", default=None, help="folder for summary.md and summary.csv")
    a = ap.parse_args(argv)
    if not Path(a.results_dir).is_dir():
        print(f"error: results_dir {a.results_dir!r} does not exist", file=sys.stderr)
        return 2
    df = load(a.results_dir)
    if df.empty:
        print(f"error: no results under {a.results_dir}", file=sys.stderr)
        return 2
    summ = summary(df)
    md = markdown(summ)
    print(md)
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.md").write_text(md)
        summ.to_csv(out / "summary.csv", index=False)
    return 0
