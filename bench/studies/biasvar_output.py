"""The bias/variance study's outputs: the Markdown tables and the figure
(bench.studies.biasvar computes the rows)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def _fmt(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v == 0:
            return "0"
        return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 else f"{v:.2e}"
    return str(v)


def markdown(df, header: str) -> str:
    cols = ["estimator", "declared_unbiased", "rel_bias", "noise_floor", "rel_bias_corr",
            "bias_detected", "rel_std", "rel_rmse", "cosine", "variance", "ms_per_estimate",
            "ms_min", "evals_per_example", "var_x_evals", "rel_std_eq"]
    names = ["estimator", "unbiased (declared)", "rel. bias", "noise floor", "rel. bias (corr.)",
             "bias found", "rel. std", "rel. RMSE", "cosine", "variance / param",
             "ms / estimate", "ms (fastest)", "f evals / example", "variance × evals",
             "rel. std at equal evals"]
    keep = [i for i, c in enumerate(cols) if c in df]
    cols, names = [cols[i] for i in keep], [names[i] for i in keep]
    out = [header, ""]
    for task, g in df.groupby("task", sort=False):
        out.append(f"### {task}  (|g| = {_fmt(float(g['grad_norm'].iloc[0]))}, "
                   f"{int(g['params'].iloc[0])} parameters, M = {int(g['estimates'].iloc[0])})")
        out.append("")
        out.append("| " + " | ".join(names) + " |")
        out.append("|" + "---|" * len(names))
        for _, r in g.sort_values("rel_rmse").iterrows():
            out.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
        out.append("")
        if "rel_std_eq" in g:
            out += [equal_evals_line(g), ""]
    return "\n".join(out)


def equal_evals_line(g) -> str:
    """The task's estimators ranked by relative std at an equal budget of evaluations
    (rel. std x sqrt(evals per example)), the significantly biased ones marked."""
    g = g[(g["estimator"] != "exact") & (g["rel_std_eq"] > 0)].sort_values("rel_std_eq")
    parts = [f"{r.estimator}{'†' if r.bias_detected else ''} {_fmt(float(r.rel_std_eq))}"
             for r in g.itertuples()]
    return ("At equal evaluations (rel. std × √(evals per example), lowest first; † "
            "significantly biased, which averaging does not remove): " + ", ".join(parts) + ".")


def figure(df, path_stem: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", font_scale=0.8)
    task_names = list(dict.fromkeys(df["task"]))
    order = (df.groupby("estimator")["rel_rmse"].median().sort_values().index.tolist())
    evals = "evals_per_example" in df
    n = len(task_names) + 1 + evals
    cols = 3
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 0.26 * len(order) * rows + 1.6),
                             sharey=True, squeeze=False)
    y = {e: i for i, e in enumerate(order)}
    for ax, task in zip(axes.flat, task_names, strict=False):
        g = df[(df["task"] == task) & (df["estimator"] != "exact")]  # the reference: 0, 0
        ys = g["estimator"].map(y)
        found = g["bias_detected"].astype(bool)
        ax.scatter(g["rel_std"], ys, marker="o", color="tab:blue", label="relative std",
                   zorder=3)
        bias = g["rel_bias_corr"].where(g["rel_bias_corr"] > 0, g["rel_bias"])
        ax.scatter(bias[found], ys[found], marker="D", color="tab:red",
                   label="relative bias (significant)", zorder=3)
        ax.scatter(g["noise_floor"][~found], ys[~found], marker="<", facecolors="none",
                   edgecolors="tab:red", label="no significant bias: below this noise floor",
                   zorder=3)
        if "rel_std_eq" in g:
            ax.scatter(g["rel_std_eq"], ys, marker="s", facecolors="none", edgecolors="tab:blue",
                       label="relative std at equal evaluations (× √evals per example)",
                       zorder=3)
        ax.set_xscale("log")
        ax.set_title(task)
        ax.set_xlabel("relative to |exact gradient|")
    cost = axes.flat[len(task_names)]
    for task in task_names:
        g = df[df["task"] == task]
        cost.scatter(g["ms_min"], g["estimator"].map(y), s=14, label=task)
    cost.set_xscale("log")
    cost.set_title("cost")
    cost.set_xlabel("ms per gradient estimate (fastest of the timed steps, 1 thread)")
    cost.legend(fontsize=6, loc="center right")
    if evals:
        ev = axes.flat[len(task_names) + 1]
        for task in task_names:
            g = df[df["task"] == task]
            ev.scatter(g["evals_per_example"], g["estimator"].map(y), s=14, label=task)
        ev.set_xscale("log")
        ev.set_title("evaluations of f")
        ev.set_xlabel("f evaluations per example per estimate (counted)")
    for ax in axes.flat[n:]:
        ax.axis("off")
    axes[0, 0].set_yticks(range(len(order)))
    axes[0, 0].set_yticklabels(order)
    axes[0, 0].invert_yaxis()  # shared: the best estimator on top everywhere
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    for ext in ("png", "pdf"):
        fig.savefig(path_stem.with_suffix(f".{ext}"), dpi=130)
    plt.close(fig)
