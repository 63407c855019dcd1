"""The report's figures: curves against steps and training time, gradient
variance, step time per estimator."""

from __future__ import annotations

import math

import pandas as pd

from .stats import final_rows
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


# a band over seeds is drawn from this many seeds on (below it, the lines alone)
MIN_SEEDS_FOR_BAND = 3


def row_panels(data: pd.DataFrame, rows, panel_height: float = 4.2,
               extra_height: float = 0.0):
    """A grid of one panel per report row that has data, two to a line:
    (fig, axes, the rows kept)."""
    rows = [r for r in rows if r in set(data["row"])]
    ncol = min(2, len(rows))
    nrow = math.ceil(len(rows) / ncol)
    fig, axes = pyplot().subplots(nrow, ncol, squeeze=False,
                                  figsize=(6.4 * ncol, panel_height * nrow + extra_height))
    return fig, axes, rows


def finish_panels(fig, axes, n_used: int) -> None:
    """Hide the spare panels of a grid of ``n_used`` panels and draw one legend for
    the whole figure, estimators in the papers' column order."""
    for ax in list(axes.flat)[n_used:]:
        ax.set_visible(False)
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    labels = column_order(handles)
    fig.legend([handles[lab] for lab in labels], labels, loc="center left",
               bbox_to_anchor=(1.0, 0.5), frameon=False, title="estimator")


def curve_data(df: pd.DataFrame, metric: str, x: str = "step", log: bool = False) -> pd.DataFrame:
    """Per (row, cell, step): x (mean over seeds), y mean over seeds and the band
    mean ± 1 standard error (nan below MIN_SEEDS_FOR_BAND seeds). ``x='train_time'``:
    step x that run's median step time (or the runner's train_time_s where
    recorded). ``log``: mean and band are taken on log10 y."""
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
    y = y[y["y"].map(lambda v: math.isfinite(v))]
    if log:
        y = y[y["y"] > 0]
        y["y"] = y["y"].map(math.log10)
    out = []
    for (row, cell, step), g in y.groupby(["row", "cell", "step"]):
        n = len(g)
        m = float(g["y"].mean())
        if n >= MIN_SEEDS_FOR_BAND:
            se = float(g["y"].std(ddof=1)) / math.sqrt(n)
            lo, hi = m - se, m + se
        else:
            lo = hi = math.nan
        if log:
            m, lo, hi = 10 ** m, 10 ** lo, 10 ** hi
        out.append({"row": row, "cell": cell, "step": step, "x": float(g["x"].mean()),
                    "y": m, "lo": lo, "hi": hi, "n": n})
    return pd.DataFrame(out)


def seeds_caption(n_values, band: str = "±1 standard error of the mean over seeds") -> str:
    """The caption line that says how many seeds each point averages and which band."""
    ns = sorted({int(v) for v in n_values if v == v})
    seeds = (f"{ns[0]} seed{'s' if ns[0] != 1 else ''}" if len(ns) == 1
             else f"{ns[0]}–{ns[-1]} seeds")
    if ns and ns[-1] >= MIN_SEEDS_FOR_BAND:
        shaded = (f"shaded: {band} (where ≥ {MIN_SEEDS_FOR_BAND} seeds)")
    else:
        shaded = f"no band (fewer than {MIN_SEEDS_FOR_BAND} seeds)"
    return f"Lines: mean over {seeds} per estimator; {shaded}."


def _style_axis(ax, values, log: bool) -> None:
    """Plain tick labels (no offset or 1e-10+3e2 notation); log scale where the plotted
    values span more than a factor of 3 (or were asked for)."""
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    values = list(values)
    v = [float(a) for a in values if a == a and a > 0]
    if log or (v and len(v) == len(values) and max(v) / min(v) > 10):
        ax.set_yscale("log")
    else:
        fmt = ScalarFormatter(useOffset=False)
        ax.yaxis.set_major_formatter(fmt)
        ax.yaxis.set_major_locator(MaxNLocator(6, steps=[1, 2, 2.5, 5, 10]))
    xf = ScalarFormatter(useOffset=False)
    xf.set_powerlimits((-3, 5))
    ax.xaxis.set_major_formatter(xf)
    ax.xaxis.set_major_locator(MaxNLocator(6, steps=[1, 2, 2.5, 5, 10]))


def _drop_off_scale_start(d: pd.DataFrame, log: bool) -> tuple[pd.DataFrame, str]:
    """The untrained model (step 0) often sits far above every later point; drawn, it
    squeezes the curves that matter into a sliver. Then it is left off and named."""
    start, later = d[d["step"] == 0], d[d["step"] > 0]
    if start.empty or later.empty:
        return d, ""
    if log:
        f = lambda v: math.log10(v) if v > 0 else math.nan
        s0, lo, hi = start["y"].map(f), later["y"].map(f).min(), later["y"].map(f).max()
    else:
        s0, lo, hi = start["y"], later["y"].min(), later["y"].max()
    span = max(hi - lo, 1e-12)
    if ((s0 - hi) / span).max() <= 1.0 and ((lo - s0) / span).max() <= 1.0:
        return d, ""
    v0, v1 = start["y"].min(), start["y"].max()
    shown = f"{v0:.3g}" if math.isclose(v0, v1, rel_tol=0.005) else f"{v0:.3g}–{v1:.3g}"
    return later, f"step 0, the untrained model: {shown}, not drawn"


def plot_curves(df, rows, metric, x, out, name, ylabel, xlabel, log=False) -> list[str]:
    data = curve_data(df, metric, x, log)
    if data.empty:
        return []
    fig, axes, rows = row_panels(data, rows, extra_height=0.5)
    colours = _palette(data["cell"].unique())
    markers = _markers(data["cell"].unique())
    for ax, row in zip(axes.flat, rows, strict=False):  # spare panels stay empty
        d = data[data["row"] == row]
        # on a log axis the untrained model's point fits; on a linear one it may not
        d, note = (d, "") if log else _drop_off_scale_start(d, log)
        for cell in column_order(d["cell"].unique()):
            c = d[d["cell"] == cell].sort_values("x")
            ax.plot(c["x"], c["y"], marker=markers[cell], ms=3.5, lw=1.6, color=colours[cell],
                    label=cell, zorder=3)
            if c["lo"].notna().any():
                ax.fill_between(c["x"], c["lo"], c["hi"], color=colours[cell], alpha=0.12, lw=0,
                                zorder=2)
        ax.set_title(row + (f"\n({note})" if note else ""), fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        _style_axis(ax, list(d["y"]), log)
        # the axis follows the mean curves (every step, step 0 included); bands may
        # run past it but never set the scale
        lo, hi = float(d["y"].min()), float(d["y"].max())
        if ax.get_yscale() == "log":
            ax.set_ylim(lo / (hi / lo) ** 0.06, hi * (hi / lo) ** 0.06)
        else:
            pad = 0.06 * (hi - lo) if hi > lo else max(abs(hi) * 0.02, 1e-3)
            ax.set_ylim(lo - pad, hi + pad)
        x0, x1 = float(d["x"].min()), float(d["x"].max())
        padx = 0.03 * (x1 - x0) if x1 > x0 else 1.0
        ax.set_xlim(x0 - padx, x1 + padx)
    finish_panels(fig, axes, len(rows))
    band = ("±1 standard error of log10 over seeds" if log
            else "±1 standard error of the mean over seeds")
    fig.suptitle(METRIC_LABELS.get(metric, metric), fontsize=11)
    fig.tight_layout(rect=(0, 0.035, 1, 1))
    fig.text(0.5, 0.005, seeds_caption(data["n"], band),
             ha="center", va="bottom", fontsize=8.5, color="0.25")
    return save(fig, out, name)


def plot_step_time(df, summ, rows, out, name="step_time") -> list[str]:
    """Bars: mean over seeds of each run's median step time; dots: the runs;
    whiskers: the smallest and largest run (no interval that runs below zero)."""
    d = summ[(summ["metric"] == "step_time_s") & summ["row"].isin(rows)]
    if d.empty:
        return []
    done = df[df["status"] == "complete"] if "status" in df else df
    runs = final_rows(done)
    runs = runs[runs["metric"] == "step_time_s"]
    cells = column_order(d["cell"].unique())
    colours = _palette(cells)
    most = max(d.groupby("row")["cell"].nunique())
    fig, axes, rows = row_panels(d, rows, 0.38 * most + 1.2, 0.6)
    for ax, row in zip(axes.flat, rows, strict=False):  # spare panels stay empty
        g = d[d["row"] == row].set_index("cell").reindex(column_order(d[d["row"] == row]["cell"]))
        ms = g["mean"] * 1000
        mine = runs[runs["row"] == row].groupby("cell")["value"]
        vmin = (mine.min() * 1000).reindex(g.index).fillna(ms)
        vmax = (mine.max() * 1000).reindex(g.index).fillna(ms)
        ax.barh(range(len(g)), ms, height=0.6, color=[colours[c] for c in g.index], alpha=0.8)
        ax.errorbar(ms, range(len(g)), xerr=[(ms - vmin).clip(lower=0), (vmax - ms).clip(lower=0)],
                    fmt="none", ecolor="0.2", capsize=2, lw=1)
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
    fig.suptitle(f"Median training step time per estimator on {devices}", fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    n = runs.groupby(["row", "cell"])["run_id"].nunique()
    seeds = f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"
    fig.text(0.5, 0.005, f"Bars: mean over {seeds} runs (seeds); dots: each run; whiskers: "
             "the fastest and slowest run.", ha="center", va="bottom", fontsize=8.5,
             color="0.25")
    return save(fig, out, name)
