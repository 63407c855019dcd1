"""The report's figures: curves against steps and training time, gradient
variance, step time per estimator."""

from __future__ import annotations

import math

import pandas as pd

from .stats import final_rows, mean_ci
from .tables import METRIC_LABELS, column_order

# --- figures ------------------------------------------------------------------

def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt


def _palette(cells):
    import seaborn as sns

    cells = column_order(cells)
    colours = sns.color_palette("tab20" if len(cells) > 10 else "tab10", len(cells))
    return dict(zip(cells, colours, strict=True))


_MARKERS = "osD^vPX*<>ph"


def _markers(cells):
    return {c: _MARKERS[i % len(_MARKERS)] for i, c in enumerate(column_order(cells))}


# the file formats every figure is saved in (`python -m bench report --format`)
FORMATS = ("png", "pdf")
ALLOWED_FORMATS = ("png", "pdf", "svg")


def save(fig, out, name: str, formats=None) -> list[str]:
    """Save ``fig`` as ``name.<fmt>`` for each format (default FORMATS) into ``out`` (a
    folder or a bench.report.output.Output); returns the file names, PNG first."""
    import matplotlib.pyplot as plt

    from .output import as_output

    out = as_output(out)
    files = []
    for fmt in formats or FORMATS:
        kw = {"dpi": 150} if fmt == "png" else {}
        out.save_figure(fig, f"{name}.{fmt}", bbox_inches="tight", **kw)
        files.append(f"{name}.{fmt}")
    plt.close(fig)
    return files


def curve_data(df: pd.DataFrame, metric: str, x: str = "step", log: bool = False) -> pd.DataFrame:
    """Per (row, cell, step): x (mean over seeds), y mean and 95% CI over seeds.
    ``x='train_time'``: step x that run's median step time (or the runner's
    train_time_s where recorded). ``log``: the interval is taken on log10 y."""
    sub = df[df["metric"] == metric]
    if sub.empty:
        return pd.DataFrame(columns=["row", "cell", "step", "x", "y", "lo", "hi", "n"])
    keys = ["row", "cell", "run_id", "step"]
    y = sub.groupby(keys)["value"].first().rename("y").reset_index()
    if x == "train_time":
        tt = df[df["metric"] == "train_time_s"].groupby(keys)["value"].first()
        st = df[df["metric"] == "step_time_s"].groupby(keys)["value"].first()
        y = y.set_index(keys)
        y["x"] = tt.reindex(y.index)
        est = st.reindex(y.index) * y.index.get_level_values("step")
        y["x"] = y["x"].fillna(est)
        y.loc[y.index.get_level_values("step") == 0, "x"] = 0.0
        y = y.reset_index().dropna(subset=["x"])
    else:
        y["x"] = y["step"].astype(float)
    if log:
        y = y[y["y"] > 0]
        y["y"] = y["y"].map(math.log10)
    out = []
    for (row, cell, step), g in y.groupby(["row", "cell", "step"]):
        m, h, n = mean_ci(g["y"])
        lo, hi = (m - h, m + h) if not math.isnan(h) else (math.nan, math.nan)
        if log:
            m, lo, hi = 10 ** m, 10 ** lo, 10 ** hi
        out.append({"row": row, "cell": cell, "step": step, "x": float(g["x"].mean()),
                    "y": m, "lo": lo, "hi": hi, "n": n})
    return pd.DataFrame(out)


def plot_curves(df, rows, metric, x, out, name, ylabel, xlabel, log=False) -> list[str]:
    data = curve_data(df, metric, x, log)
    if data.empty:
        return []
    plt = pyplot()
    rows = [r for r in rows if r in set(data["row"])]
    ncol = min(2, len(rows))
    nrow = math.ceil(len(rows) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.4 * ncol, 4.2 * nrow), squeeze=False)
    colours = _palette(data["cell"].unique())
    markers = _markers(data["cell"].unique())
    for ax, row in zip(axes.flat, rows, strict=False):  # spare panels stay empty
        d = data[data["row"] == row]
        for cell in column_order(d["cell"].unique()):
            c = d[d["cell"] == cell].sort_values("x")
            ax.plot(c["x"], c["y"], marker=markers[cell], ms=4, lw=1.5, color=colours[cell],
                    label=cell, alpha=0.9)
            if c["lo"].notna().any():
                ax.fill_between(c["x"], c["lo"], c["hi"], color=colours[cell], alpha=0.15, lw=0)
        ax.set_title(row, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        else:  # the untrained model's value would flatten the curves: clip it off
            later = d[d["step"] > 0]
            if len(later):
                lo, hi = later["y"].min(), later["y"].max()
                ax.set_ylim(lo - 0.05 * (hi - lo + 1), hi + 0.05 * (hi - lo + 1))
                x0, x1 = later["x"].min(), d["x"].max()
                ax.set_xlim(x0 - 0.05 * (x1 - x0 + 1e-9), x1 + 0.05 * (x1 - x0 + 1e-9))
    for ax in list(axes.flat)[len(rows):]:
        ax.set_visible(False)
    handles, labels = {}, {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    labels = column_order(handles)
    fig.legend([handles[lab] for lab in labels], labels, loc="center left",
               bbox_to_anchor=(1.0, 0.5), frameon=False, title="estimator")
    bands = "bands: 95% CI over seeds" if data["n"].max() > 1 else "one seed: no CI"
    fig.suptitle(f"{METRIC_LABELS.get(metric, metric)} ({bands})", fontsize=11)
    fig.tight_layout()
    return save(fig, out, name)


def plot_step_time(df, summ, rows, out, name="step_time") -> list[str]:
    """Bars: mean over seeds of each run's median step time; dots: the runs;
    whiskers: the 95% interval, cut at zero."""
    d = summ[(summ["metric"] == "step_time_s") & summ["row"].isin(rows)]
    if d.empty:
        return []
    done = df[df["status"] == "complete"] if "status" in df else df
    runs = final_rows(done)
    runs = runs[runs["metric"] == "step_time_s"]
    plt = pyplot()
    rows = [r for r in rows if r in set(d["row"])]
    ncol = min(2, len(rows))
    nrow = math.ceil(len(rows) / ncol)
    cells = column_order(d["cell"].unique())
    colours = _palette(cells)
    most = max(d.groupby("row")["cell"].nunique())
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.4 * ncol, (0.38 * most + 1.2) * nrow + 0.6),
                             squeeze=False)
    for ax, row in zip(axes.flat, rows, strict=False):  # spare panels stay empty
        g = d[d["row"] == row].set_index("cell").reindex(column_order(d[d["row"] == row]["cell"]))
        ms = g["mean"] * 1000
        half = (g["ci95"] * 1000).fillna(0)
        lower = ms - (ms - half).clip(lower=0)
        ax.barh(range(len(g)), ms, height=0.6, xerr=[lower, half], capsize=2,
                color=[colours[c] for c in g.index], alpha=0.8)
        for i, cell in enumerate(g.index):
            v = runs[(runs["row"] == row) & (runs["cell"] == cell)]["value"] * 1000
            ax.plot(v, [i] * len(v), "k.", ms=5)
        ax.set_yticks(range(len(g)), g.index)
        ax.set_ylim(most - 0.5, -0.5)
        ax.set_xlim(left=0)
        ax.set_xlabel("median training step time (ms)")
        ax.set_title(row, fontsize=10)
    for ax in list(axes.flat)[len(rows):]:
        ax.set_visible(False)
    devices = ", ".join(sorted(df["device"].astype(str).unique())) if "device" in df else "?"
    fig.suptitle(f"Step time per estimator on {devices} (bars: mean over seeds, dots: runs, "
                 "whiskers: 95% CI)", fontsize=11)
    fig.tight_layout()
    return save(fig, out, name)
