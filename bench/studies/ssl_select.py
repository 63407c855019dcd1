"""Choose the classification weight alpha of the ``semisupervised`` task per
estimator on the validation split, and report the test metrics of the choice
(Jang, Gu & Poole 2017, Table 3).

    python -m bench ssl_select RESULTS_DIR [--out DIR]

One use of ``python -m bench select`` (bench/report/select.py): per estimator,
the alpha whose runs' final evaluations have the highest mean ``valid_accuracy``
over seeds is chosen among the alphas tried (the test split is never looked at
to choose); its ``test_accuracy``, ``test_neg_elbo`` and
``steps_per_s`` (1 / median step time) are summarised over seeds as mean and
95% Student-t half-width. Writes ``grid.csv`` (every run's final metrics),
``selected.csv``, ``table.md`` and ``curves.png`` (accuracy and bound against
training steps for the chosen runs) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from ..report.select import choose
from ..report.stats import mean_ci
from ..results import load

# Jang et al. (2017), Table 3 (MNIST, 100 labels, convolutional networks):
# test accuracy (%) and ELBO (nats) of the unlabelled test set.
PUBLISHED = {"exact": (92.6, 0.8, -106.8), "gumbel_softmax": (92.4, 0.6, -109.6),
             "st_gumbel_softmax": (93.6, 0.3, -110.7)}
METRICS = ["valid_accuracy", "test_accuracy", "labelled_accuracy", "valid_neg_elbo",
           "test_neg_elbo", "train_neg_elbo", "step_time_s", "log10_grad_var", "temperature"]


def run_configs(root: Path) -> dict[str, dict]:
    runs = root / "runs" if (root / "runs").is_dir() else root
    out = {}
    for meta in runs.glob("*/*/meta.json"):
        m = json.loads(meta.read_text())
        out[m["run_id"]] = m.get("config", {})
    return out


def final_table(df: pd.DataFrame, configs: dict[str, dict]) -> pd.DataFrame:
    """One row per run: its configuration and the metrics of its last evaluation."""
    df = df[df["task"] == "semisupervised"]
    if "status" in df:
        df = df[df["status"] == "complete"]
    if df.empty:
        return pd.DataFrame()
    last = df.groupby("run_id")["step"].transform("max")
    fin = df[df["step"] == last]
    wide = fin.pivot_table(index=["run_id", "estimator", "dataset", "seed", "step"],
                           columns="metric", values="value", aggfunc="first").reset_index()
    wide["alpha"] = wide["run_id"].map(lambda r: configs.get(r, {}).get("task", {}).get("alpha"))
    wide["steps_per_s"] = 1.0 / wide["step_time_s"] if "step_time_s" in wide else math.nan
    cols = ["estimator", "dataset", "seed", "alpha", "step"] + \
        [m for m in METRICS if m in wide] + ["steps_per_s", "run_id"]
    return wide[cols].sort_values(["dataset", "estimator", "seed", "alpha"]).reset_index(drop=True)


def select(grid: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, estimator): the alpha with the best mean validation accuracy over
    seeds, by ``bench.report.select.choose`` (ties: more seeds, then the smaller
    alpha); the chosen alpha's runs, one line per seed, with its ``edge`` flag."""
    chosen, _ = choose(grid, "valid_accuracy", True, ["dataset", "estimator"], swept=["alpha"])
    cols = [c for c in grid.columns] + ["edge"]
    return chosen[cols].sort_values(["dataset", "estimator", "seed"]).reset_index(drop=True)


def _fmt(m, h, scale=1.0, digits=1):
    if math.isnan(m):
        return ""
    return f"{m * scale:.{digits}f}" + ("" if math.isnan(h) else f" ± {h * scale:.{digits}f}")


def markdown(grid: pd.DataFrame, chosen: pd.DataFrame) -> str:
    lines = ["Alpha chosen per estimator by mean validation accuracy over seeds; test metrics "
             "of that choice (mean ± 95% t half-width over seeds where there are several).", "",
             "| dataset | estimator | seeds | alpha chosen | steps | test accuracy (%) "
             "| test ELBO (nats) | steps/s | published accuracy (%) | published ELBO |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (ds, est), g in chosen.groupby(["dataset", "estimator"]):
        acc, acc_h, n = mean_ci(g["test_accuracy"])
        elbo, elbo_h, _ = mean_ci(-g["test_neg_elbo"])
        sps, sps_h, _ = mean_ci(g["steps_per_s"])
        pub = PUBLISHED.get(est)
        pa = f"{pub[0]} ± {pub[1]}" if pub else ""
        pe = f"{pub[2]}" if pub else ""
        alphas = ", ".join(f"{a:g}" for a in g["alpha"])
        steps = ", ".join(str(int(s)) for s in sorted(set(g["step"])))
        lines.append(f"| {ds} | {est} | {n} | {alphas} | {steps} | {_fmt(acc, acc_h, 100)} "
                     f"| {_fmt(elbo, elbo_h)} | {_fmt(sps, sps_h)} | {pa} | {pe} |")
    lines += ["", "Every run (final evaluation):", "",
              "| dataset | estimator | seed | alpha | steps | valid acc (%) | test acc (%) "
              "| labelled acc (%) | test -ELBO | steps/s | log10 grad var |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in grid.iterrows():
        gv = r.get("log10_grad_var", math.nan)
        lines.append(f"| {r['dataset']} | {r['estimator']} | {int(r['seed'])} | {r['alpha']:g} "
                     f"| {int(r['step'])} | {100 * r['valid_accuracy']:.2f} "
                     f"| {100 * r['test_accuracy']:.2f} | {100 * r['labelled_accuracy']:.0f} "
                     f"| {r['test_neg_elbo']:.2f} | {r['steps_per_s']:.2f} "
                     f"| {'' if math.isnan(gv) else f'{gv:.2f}'} |")
    return "\n".join(lines) + "\n"


def curves(df: pd.DataFrame, chosen: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for _, r in chosen.iterrows():
        d = df[df["run_id"] == r["run_id"]].pivot_table(index="step", columns="metric",
                                                       values="value")
        label = f"{r['estimator']} (alpha={r['alpha']:g}, seed {int(r['seed'])})"
        axes[0].plot(d.index, 100 * d["test_accuracy"], "o-", ms=3, label=label)
        axes[1].plot(d.index[1:], d["test_neg_elbo"].iloc[1:], "o-", ms=3, label=label)
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].set_ylabel("test -ELBO (nats, unlabelled bound)")
    for a in axes:
        a.set_xlabel("training step")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench ssl_select", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results_dir")
    ap.add_argument("--out", default=None, help="folder for grid.csv, selected.csv, "
                    "table.md, curves.png (default: print the table only)")
    a = ap.parse_args(argv)
    root = Path(a.results_dir)
    if not root.is_dir():
        print(f"error: results_dir {a.results_dir!r} does not exist", file=sys.stderr)
        return 2
    df = load(root)
    df = df[df["task"] == "semisupervised"]
    if df.empty:
        print(f"error: no semisupervised runs under {root}", file=sys.stderr)
        return 2
    grid = final_table(df, run_configs(root))
    if grid.empty:
        print(f"error: no complete semisupervised runs under {root}", file=sys.stderr)
        return 2
    chosen = select(grid)
    md = markdown(grid, chosen)
    print(md)
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        grid.to_csv(out / "grid.csv", index=False)
        chosen.to_csv(out / "selected.csv", index=False)
        (out / "table.md").write_text(md)
        curves(df, chosen, out / "curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
