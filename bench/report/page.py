"""`python -m bench report [RESULTS_DIR] [--out DIR]`: paper-style tables,
figures and one Markdown page from stored results (no training).

Runs are grouped into *rows*: runs whose configs agree on everything except the
estimator and the seed (and settings that do not change the numbers: paths,
threads, device). A row is labelled by its task, its experiment (the config's
``report`` node, set by ``conf/experiment/*.yaml``), its dataset and its number
of training steps. Within a row, a *cell* is one estimator (with its options,
where one row holds the same estimator with several settings), and its value is
the mean over seeds of each run's final evaluation, with the half-width of a 95%
Student-t interval (none with one seed).

Written under ``--out`` (default: RESULTS_DIR itself when it is a store):

    REPORT.md                         the page linking everything below
    tables/main.{md,tex,csv}          rows x estimators, the paper's metric per row,
                                      the published value beside ours
    tables/<metric>.{md,tex,csv}      the same for every headline metric
    tables/summary.csv                long format: row, estimator, metric, mean, ci95, seeds,
                                      published
    tables/rows.csv                   every stored row, with its row and cell labels
    figures/*.png, figures/*.pdf      curves against steps and training time, gradient
                                      variance, step time, samples and reconstructions

RESULTS_DIR may also be a ``rows.csv`` written by an earlier report: tables and
curves are rebuilt from it (samples need the stored models and are skipped).
Missing estimators, metrics or models leave gaps, never errors.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..paths import CONF_DIR
from ..results import COLUMNS, load

HEADLINE = ["test_neg_elbo", "test_nll", "train_neg_elbo", "log10_grad_var", "step_time_s",
            "wall_s"]

METRIC_LABELS = {
    "test_neg_elbo": "test −ELBO, single sample (nats)",
    "test_nll": "test NLL bound, m importance samples (nats)",
    "train_neg_elbo": "train −ELBO, single sample (nats)",
    "valid_neg_elbo": "validation −ELBO, single sample (nats)",
    "log10_grad_var": "log10 gradient variance",
    "grad_var": "gradient variance (mean over encoder parameters)",
    "step_time_s": "median training step time (s)",
    "wall_s": "whole run, evaluations included (s)",
}

# the estimators of the papers' tables, in their column order; others follow by name
PAPER_ORDER = ["reinforce", "darn", "muprop", "straight_through", "annealed_st",
               "gumbel_softmax", "st_gumbel_softmax", "concrete_kl"]

_JANG = "Jang, Gu & Poole (2017), Table 1"
_JANG_NAMES = ["reinforce", "darn", "muprop", "straight_through", "annealed_st",
               "gumbel_softmax", "st_gumbel_softmax"]


def _jang(values):
    return dict(zip(_JANG_NAMES, values, strict=True))


# Published numbers, keyed by (report.setting, task): the metric they correspond to
# (see docs/reproduction.md for why), the dataset, the source and the values (nats).
PUBLISHED = {
    ("jang_vae", "bernoulli_vae"): dict(
        metric="test_neg_elbo", dataset="binarized_mnist", source=_JANG,
        values=_jang([112.2, 110.9, 109.7, 116.0, 111.5, 105.0, 111.5])),
    ("jang_vae", "categorical_vae"): dict(
        metric="test_neg_elbo", dataset="binarized_mnist", source=_JANG,
        values=_jang([110.6, 128.8, 107.0, 110.9, 107.8, 101.5, 107.8])),
    ("jang_sbn", "sbn"): dict(
        metric="test_nll", dataset="binarized_mnist", source=_JANG,
        values=_jang([72.0, 59.7, 58.9, 58.9, 58.7, 58.5, 59.3])),
    ("jang_sbn", "sbn_categorical"): dict(
        metric="test_nll", dataset="binarized_mnist", source=_JANG,
        values=_jang([73.1, 67.9, 63.0, 61.8, 61.1, 59.0, 59.7])),
    ("concrete_vae_linear", "bernoulli_vae"): dict(
        metric="test_nll", dataset="binarized_mnist",
        source="Maddison, Mnih & Teh (2017), 200H–784V linear", values={"concrete_kl": 107.3}),
    ("concrete_vae_nonlinear", "bernoulli_vae"): dict(
        metric="test_nll", dataset="binarized_mnist",
        source="Maddison, Mnih & Teh (2017), 200H–784V nonlinear", values={"concrete_kl": 92.1}),
}

# config keys that do not change a run's numbers (nor its row)
_NOT_IN_ROW = {"results_dir", "data_dir", "skip_complete", "progress", "threads", "device",
               "seed", "estimator", "flush_denormal"}
_NOT_IN_ROW_TRAIN = {"save_model", "check_every"}


# --- statistics ---------------------------------------------------------------

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
    """Each run's rows at its last evaluated step."""
    last = df.groupby("run_id")["step"].transform("max")
    return df[df["step"] == last]


# --- loading: rows, run configs, row and cell labels ----------------------------

@dataclass
class Runs:
    rows: pd.DataFrame                      # tidy rows + row/cell columns
    configs: dict = field(default_factory=dict)   # run_id -> resolved config
    dirs: dict = field(default_factory=dict)      # run_id -> run folder
    meta: dict = field(default_factory=dict)      # run_id -> meta.json


def _row_signature(cfg: dict) -> str:
    c = {k: v for k, v in cfg.items() if k not in _NOT_IN_ROW}
    if isinstance(c.get("train"), dict):
        c["train"] = {k: v for k, v in c["train"].items() if k not in _NOT_IN_ROW_TRAIN}
    return hashlib.sha1(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _report_node(cfg: dict) -> dict:
    node = cfg.get("report") if isinstance(cfg, dict) else None
    return node if isinstance(node, dict) else {}


def _steps_label(steps) -> str:
    steps = int(steps)
    return f"{steps // 1000}k" if steps >= 1000 and steps % 1000 == 0 else str(steps)


def load_runs(path) -> Runs:
    """The store (or an exported rows.csv) with row and cell labels attached."""
    path = Path(path)
    if path.is_file():
        rows = pd.read_csv(path, dtype={"git_sha": str, "config_hash": str, "run_id": str})
        for col, default in (("setting", ""), ("experiment", ""), ("reduced", False),
                             ("status", "complete")):
            if col not in rows:
                rows[col] = default
        if "row" not in rows:
            rows["row"] = rows["task"].astype(str) + " · " + rows["dataset"].astype(str)
        if "cell" not in rows:
            rows["cell"] = rows["estimator"]
        rows["setting"] = rows["setting"].fillna("")
        rows["experiment"] = rows["experiment"].fillna("")
        return Runs(rows=rows)

    rows = load(path)
    root = path / "runs" if (path / "runs").is_dir() else path
    runs = Runs(rows=rows)
    for mf in root.glob("*/*/meta.json"):
        try:
            meta = json.loads(mf.read_text())
        except (OSError, ValueError):
            continue
        rid = meta.get("run_id", mf.parent.name)
        runs.meta[rid] = meta
        runs.configs[rid] = meta.get("config") or {}
        runs.dirs[rid] = mf.parent
    _label(runs)
    return runs


def _label(runs: Runs) -> None:
    """Attach row / cell / setting / experiment / reduced columns to runs.rows."""
    df = runs.rows
    if df.empty:
        for c in ("row", "cell", "setting", "experiment"):
            df[c] = pd.Series(dtype=str)
        df["reduced"] = pd.Series(dtype=bool)
        return
    info = {}
    for rid in df["run_id"].unique():
        cfg = runs.configs.get(rid, {})
        rep = _report_node(cfg)
        first = df[df["run_id"] == rid].iloc[0]
        steps = (cfg.get("train") or {}).get("steps", df.loc[df["run_id"] == rid, "step"].max())
        info[rid] = dict(sig=_row_signature(cfg) if cfg else f"{first['task']}|{first['dataset']}",
                         task=str(first["task"]), dataset=str(first["dataset"]), steps=int(steps),
                         setting=str(rep.get("setting", "")),
                         experiment=str(rep.get("experiment", "")),
                         reduced=bool(rep.get("reduced", False)),
                         est=str(first["estimator"]),
                         est_opts=json.dumps({k: v for k, v in (cfg.get("estimator") or {}).items()
                                              if k != "name"}, sort_keys=True, default=str))
    # row labels: task (experiment, steps); a hash suffix only where two rows collide
    by_sig = {}
    for i in info.values():
        by_sig.setdefault(i["sig"], i)
    def describe(i):
        where = i["experiment"] or i["setting"] or i["dataset"]
        if i["setting"] and not where.startswith(i["setting"]):
            where = f"{i['setting']}, {where}"  # e.g. the architecture of a grid
        return f"{i['task']} ({where}, {_steps_label(i['steps'])} steps)"

    base = {s: describe(i) for s, i in by_sig.items()}
    counts = pd.Series(list(base.values())).value_counts()
    row_label = {s: (b if counts[b] == 1 else f"{b} #{s[:6]}") for s, b in base.items()}
    # cell labels: the estimator's name, plus its options where a row holds several
    cell = {}
    for sig in by_sig:
        members = [(rid, i) for rid, i in info.items() if i["sig"] == sig]
        for est in {i["est"] for _, i in members}:
            variants = sorted({i["est_opts"] for _, i in members if i["est"] == est})
            for rid, i in members:
                if i["est"] != est:
                    continue
                if len(variants) == 1:
                    cell[rid] = est
                else:
                    mine = json.loads(i["est_opts"])
                    others = [json.loads(v) for v in variants]
                    diff = sorted(k for k in mine if any(o.get(k) != mine[k] for o in others))
                    cell[rid] = est + "[" + ",".join(f"{k}={mine[k]}" for k in diff) + "]"
    df["row"] = df["run_id"].map(lambda r: row_label[info[r]["sig"]])
    df["cell"] = df["run_id"].map(cell)
    for key in ("setting", "experiment", "reduced"):
        df[key] = df["run_id"].map(lambda r, k=key: info[r][k])
    df["train_steps"] = df["run_id"].map(lambda r: info[r]["steps"])


# --- tables -------------------------------------------------------------------

def row_info(df: pd.DataFrame) -> pd.DataFrame:
    """One line per row: task, dataset, setting, experiment, steps, reduced, published."""
    cols = ["row", "task", "dataset", "setting", "experiment", "reduced"]
    if "train_steps" in df:
        cols.append("train_steps")
    info = df[cols].drop_duplicates("row").copy()
    order = list(dict.fromkeys(s for s, _ in PUBLISHED))
    info["_rank"] = info["setting"].map(lambda s: order.index(s) if s in order else len(order))
    info = info.sort_values(["_rank", "setting", "experiment", "task", "row"])
    info = info.drop(columns="_rank").set_index("row")
    info["published"] = [published_for(r.setting, r.task, r.dataset) for r in info.itertuples()]
    return info


def published_for(setting, task, dataset):
    pub = PUBLISHED.get((setting, task))
    if pub is None or pub["dataset"] != dataset:
        return None
    return pub


def summary(df: pd.DataFrame, metrics=None) -> pd.DataFrame:
    """Long table: row, cell, metric -> mean, ci95, seeds, published (complete runs only)."""
    cols = ["row", "task", "dataset", "estimator", "cell", "metric", "mean", "ci95", "seeds",
            "published", "published_source"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    if "row" not in df:
        df = df.assign(row=df["task"].astype(str) + " · " + df["dataset"].astype(str),
                       cell=df["estimator"], setting="", experiment="", reduced=False)
    done = df[df["status"].isin(["complete"])] if "status" in df else df
    fin = final_rows(done)
    if metrics is not None:
        fin = fin[fin["metric"].isin(metrics)]
    info = row_info(df)
    out = []
    for (row, cell, metric), g in fin.groupby(["row", "cell", "metric"], sort=False):
        m, h, n = mean_ci(g["value"])
        pub = info.loc[row, "published"]
        est = g["estimator"].iloc[0]
        p = pub["values"].get(est, math.nan) if pub and pub["metric"] == metric else math.nan
        out.append({"row": row, "task": g["task"].iloc[0], "dataset": g["dataset"].iloc[0],
                    "estimator": est, "cell": cell, "metric": metric, "mean": m, "ci95": h,
                    "seeds": n, "published": p,
                    "published_source": pub["source"] if pub and not math.isnan(p) else ""})
    return pd.DataFrame(out, columns=cols)


def _order(names) -> list[str]:
    names = list(dict.fromkeys(names))

    def key(n):
        base = n.split("[")[0]
        return (PAPER_ORDER.index(base) if base in PAPER_ORDER else len(PAPER_ORDER), n)
    return sorted(names, key=key)


def _fmt(m, h, digits=1) -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return ""
    if h is None or math.isnan(h):
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {h:.{digits}f}"


def _digits(metric: str) -> int:
    return {"step_time_s": 4, "log10_grad_var": 2, "wall_s": 0}.get(metric, 1)


def table(summ: pd.DataFrame, info: pd.DataFrame, metric: str | None):
    """Rows x cells. metric=None: each row's paper metric (default test_neg_elbo).
    Returns (display frame of strings, numbers frame for the CSV)."""
    cells = _order(summ["cell"].unique()) if len(summ) else []
    disp, nums = [], []
    for row in info.index:
        pub = info.loc[row, "published"]
        met = metric or (pub["metric"] if pub else "test_neg_elbo")
        row_cells = list(cells)
        if pub and pub["metric"] == met:
            row_cells += [e for e in pub["values"] if e not in row_cells]
        d = {"task": row, "metric": met}
        n = {"row": row, "metric": met}
        for c in _order(set(cells) | set(row_cells)):
            r = summ[(summ["row"] == row) & (summ["cell"] == c) & (summ["metric"] == met)]
            m = float(r["mean"].iloc[0]) if len(r) else math.nan
            h = float(r["ci95"].iloc[0]) if len(r) else math.nan
            s = int(r["seeds"].iloc[0]) if len(r) else 0
            p = pub["values"].get(c, math.nan) if pub and pub["metric"] == met else math.nan
            txt = _fmt(m, h, _digits(met))
            if not math.isnan(p):
                txt = f"{txt or '—'} [{p:.1f}]"
            d[c] = txt
            n[f"{c}:mean"], n[f"{c}:ci95"], n[f"{c}:seeds"], n[f"{c}:published"] = m, h, s, p
        disp.append(d)
        nums.append(n)
    dframe = pd.DataFrame(disp).fillna("")
    cols = ["task", "metric"] + _order([c for c in dframe.columns if c not in ("task", "metric")])
    return dframe.reindex(columns=cols).fillna(""), pd.DataFrame(nums)


def to_markdown(frame: pd.DataFrame) -> str:
    def esc(v):
        return str(v).replace("|", "\\|")
    lines = ["| " + " | ".join(esc(c) for c in frame.columns) + " |",
             "|" + "---|" * len(frame.columns)]
    for _, r in frame.iterrows():
        lines.append("| " + " | ".join(esc(v) for v in r.values) + " |")
    return "\n".join(lines) + "\n"


def to_latex(frame: pd.DataFrame, caption: str) -> str:
    def tex(v):
        s = str(v)
        for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("&", r"\&"), ("%", r"\%"),
                     ("#", r"\#"), ("±", r"$\pm$"), ("−", "-"), ("—", "--"), ("·", r"$\cdot$")):
            s = s.replace(a, b)
        return s
    body = frame.map(tex)
    body.columns = [tex(c) for c in frame.columns]
    return body.to_latex(index=False, escape=False, caption=tex(caption),
                         column_format="l" * len(frame.columns))


def write_table(frame, nums, out: Path, name: str, caption: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(f"{caption}\n\n{to_markdown(frame)}")
    (out / f"{name}.tex").write_text(to_latex(frame, caption))
    nums.to_csv(out / f"{name}.csv", index=False)


# --- figures ------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt


def _palette(cells):
    import seaborn as sns

    cells = _order(cells)
    colours = sns.color_palette("tab20" if len(cells) > 10 else "tab10", len(cells))
    return dict(zip(cells, colours, strict=True))


_MARKERS = "osD^vPX*<>ph"


def _markers(cells):
    return {c: _MARKERS[i % len(_MARKERS)] for i, c in enumerate(_order(cells))}


def _save(fig, out: Path, name: str) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"{name}.png", dpi=130, bbox_inches="tight")
    fig.savefig(out / f"{name}.pdf", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return [f"{name}.png", f"{name}.pdf"]


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
    plt = _plt()
    rows = [r for r in rows if r in set(data["row"])]
    ncol = min(2, len(rows))
    nrow = math.ceil(len(rows) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.4 * ncol, 4.2 * nrow), squeeze=False)
    colours = _palette(data["cell"].unique())
    markers = _markers(data["cell"].unique())
    for ax, row in zip(axes.flat, rows, strict=False):  # spare panels stay empty
        d = data[data["row"] == row]
        for cell in _order(d["cell"].unique()):
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
    labels = _order(handles)
    fig.legend([handles[lab] for lab in labels], labels, loc="center left",
               bbox_to_anchor=(1.0, 0.5), frameon=False, title="estimator")
    bands = "bands: 95% CI over seeds" if data["n"].max() > 1 else "one seed: no CI"
    fig.suptitle(f"{METRIC_LABELS.get(metric, metric)} ({bands})", fontsize=11)
    fig.tight_layout()
    return _save(fig, out, name)


def plot_step_time(df, summ, rows, out, name="step_time") -> list[str]:
    """Bars: mean over seeds of each run's median step time; dots: the runs;
    whiskers: the 95% interval, cut at zero."""
    d = summ[(summ["metric"] == "step_time_s") & summ["row"].isin(rows)]
    if d.empty:
        return []
    done = df[df["status"] == "complete"] if "status" in df else df
    runs = final_rows(done)
    runs = runs[runs["metric"] == "step_time_s"]
    plt = _plt()
    rows = [r for r in rows if r in set(d["row"])]
    ncol = min(2, len(rows))
    nrow = math.ceil(len(rows) / ncol)
    cells = _order(d["cell"].unique())
    colours = _palette(cells)
    most = max(d.groupby("row")["cell"].nunique())
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.4 * ncol, (0.38 * most + 1.2) * nrow + 0.6),
                             squeeze=False)
    for ax, row in zip(axes.flat, rows, strict=False):  # spare panels stay empty
        g = d[d["row"] == row].set_index("cell").reindex(_order(d[d["row"] == row]["cell"]))
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
    return _save(fig, out, name)


# --- samples and reconstructions -----------------------------------------------

def _load_task(runs: Runs, rid: str, data_dir, cache: dict):
    import torch

    import tasks
    from tasks import datasets

    cfg = runs.configs.get(rid)
    model = runs.dirs.get(rid, Path("/nonexistent")) / "model.pt"
    if not cfg or not model.exists():
        return None, None, "no saved model"
    ds = cfg["dataset"]
    key = json.dumps(ds, sort_keys=True)
    if key not in cache:
        where = data_dir or cfg.get("data_dir")
        try:
            cache[key] = datasets.load(ds, where, "cpu")
        except Exception as e:  # a missing dataset leaves a gap, with the reason
            cache[key] = f"dataset {ds.get('name')!r} not loaded ({str(e).splitlines()[0]})"
    data = cache[key]
    if isinstance(data, str):
        return None, None, data
    task = tasks.build(cfg["task"], data, "cpu")
    task.load_state_dict(torch.load(model, map_location="cpu", weights_only=True))
    task.eval()
    return task, data, ""


def _images(task, x, n):
    """(top row, rows of panels) for one trained model: reconstructions and
    prior samples for a VAE; completions of the lower half for an SBN."""
    import torch

    torch.manual_seed(0)
    with torch.no_grad():
        if hasattr(task, "complete"):
            return task.complete(x, samples=1)[0], None
        if hasattr(task, "decoder") and hasattr(task, "logits"):
            from estimators.base import sample_one_hot

            z = sample_one_hot(task.logits(x))
            recon = torch.sigmoid(task.decoder(z.flatten(-2)))
            log_p = task.log_prior() if hasattr(task, "log_prior") else None
            prior = torch.zeros(task.n, task.k) if log_p is None else log_p
            zs = sample_one_hot(prior.expand(n, task.n, task.k))
            samples = torch.sigmoid(task.decoder(zs.flatten(-2)))
            return recon, samples
    return None, None


_PAD = 0.12  # light grey between images (gray_r: 0 is white, 1 is black ink)


def _mosaic(imgs, shape, pad=1, fill=_PAD):
    import numpy as np

    h, w = shape
    a = np.full((h + pad, len(imgs) * (w + pad)), fill)
    for i, im in enumerate(imgs):
        a[:h, i * (w + pad): i * (w + pad) + w] = im.reshape(h, w)
    return a


def plot_samples(runs: Runs, df, rows, out, data_dir, n=8) -> tuple[list[str], list[str]]:
    """One figure per row: for each estimator (its lowest-seed complete run), the
    reconstructions of n test digits spread over the test split and n samples
    (VAE), or completions of their lower halves (SBN)."""
    import numpy as np

    files, notes, cache = [], [], {}
    if not runs.configs:
        return files, ["samples: no run configs (a rows.csv input): not drawn"]
    done = df[df["status"] == "complete"] if "status" in df else df
    for row in rows:
        d = done[done["row"] == row]
        picks = {}
        for cell, g in d.groupby("cell"):
            g = g.sort_values("seed")
            picks[cell] = g["run_id"].iloc[0]
        panels, shape, top, why, sbn = [], None, None, {}, False
        for cell in _order(picks):
            task, data, reason = _load_task(runs, picks[cell], data_dir, cache)
            if task is None:
                why[cell] = reason
                continue
            test = data.eval_split("test")
            x = test[::max(1, len(test) // n)][:n]  # spread over the split (it may be sorted)
            recon, samples = _images(task, x, n)
            if recon is None:
                why[cell] = "this task has no image view"
                continue
            shape = tuple(data.image_shape)
            sbn = hasattr(task, "complete")
            top = x.numpy()
            parts = [_mosaic(recon.numpy(), shape)]
            if samples is not None:
                parts += [np.full((shape[0] + 1, 4), 0.0), _mosaic(samples.numpy(), shape)]
            panels.append((cell, np.concatenate(parts, 1)))
        for cell, reason in why.items():
            notes.append(f"samples for {row} / {cell}: {reason}")
        if not panels:
            continue
        plt = _plt()
        import matplotlib as mpl

        first = _mosaic(top, shape)
        width = panels[0][1].shape[1]
        first = np.concatenate([first, np.full((first.shape[0], width - first.shape[1]), 0.0)], 1)
        stack = [("test digits", first)] + panels
        img = np.concatenate([p for _, p in stack], 0)
        fig, ax = plt.subplots(figsize=(min(14, 0.55 * width / (shape[1] + 1) + 2),
                                        0.62 * len(stack) + 1.2))
        ax.imshow(img, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        rh = shape[0] + 1
        ax.set_yticks([rh * i + shape[0] / 2 for i in range(len(stack))],
                      [name for name, _ in stack])
        ax.set_xticks([])
        ax.grid(False)
        if sbn:
            for i in range(1, len(stack)):
                y = rh * i + shape[0] // 2 - 0.5
                ax.axhline(y, color="tab:red", lw=0.6, alpha=0.7)
            title = ("SBN: upper half given, lower half = p(x_l = 1 | h) for one draw of h "
                     "(red line: the split)")
        else:
            title = ("left: reconstructions p(x = 1 | z), z ~ q(z | x) of the test digits; "
                     "right: samples p(x = 1 | z), z ~ prior")
        ax.set_title(f"{row}\n{title}", fontsize=9)
        for s in ax.spines.values():
            s.set_visible(False)
        mpl.rcParams.update({})
        safe = "".join(ch if ch.isalnum() else "_" for ch in row).strip("_")
        files += _save(fig, out, f"samples_{safe}")
    return files, notes


# --- the page -------------------------------------------------------------------

FULL_COMMANDS = {
    "jang_vae": "python -m bench run +experiment=jang_vae device=cuda data_dir=DATA",
    "jang_sbn": "python -m bench run +experiment=jang_sbn device=cuda data_dir=DATA",
    "concrete_vae": "python -m bench run +experiment=concrete_vae device=cuda data_dir=DATA",
}


def _provenance(runs: Runs, df: pd.DataFrame) -> str:
    lines = ["| experiment | command | git commit | device | torch | rows | runs (complete / "
             "diverged / unfinished) | steps | seeds | eval | run time (sum) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    per_run = df.drop_duplicates("run_id").set_index("run_id")
    groups = per_run.groupby(per_run["experiment"].replace("", "(none)"))
    for exp, g in groups:
        cfgs = [runs.configs.get(r, {}) for r in g.index]
        evs = {(c.get("eval") or {}).get("nll_samples") for c in cfgs} - {None}
        gms = {(c.get("eval") or {}).get("grad_samples") for c in cfgs} - {None}
        torch_v = sorted({str(runs.meta.get(r, {}).get("torch", "")) for r in g.index} - {""})
        st = g["status"].value_counts()
        wall = df[(df["run_id"].isin(g.index)) & (df["metric"] == "wall_s")]["value"].sum()
        steps = (", ".join(map(str, sorted(g["train_steps"].unique())))
                 if "train_steps" in g else "")
        dirs = sorted({str(c.get("data_dir")) for c in cfgs if c.get("data_dir")})
        env = f"BENCH_DATA_DIR={dirs[0]} " if len(dirs) == 1 else ""
        if exp == "(none)":
            cmd = "(ad hoc runs)"
        elif (CONF_DIR / "experiment" / f"{exp}.yaml").exists():
            cmd = f"`{env}python -m bench run +experiment={exp}`"
        else:  # a label set with report.experiment=...: no config file of that name
            cmd = f"(label `{exp}` set on the command line; see the notes beside this report)"
        ev = (f"m={'/'.join(map(str, sorted(evs)))}, grad M={'/'.join(map(str, sorted(gms)))}"
              if evs else "")
        lines.append(
            f"| {exp} | {cmd} | {', '.join(sorted(g['git_sha'].astype(str).unique()))} | "
            f"{', '.join(sorted(g['device'].astype(str).unique()))} | {', '.join(torch_v)} | "
            f"{g['row'].nunique()} | {st.get('complete', 0)} / {st.get('diverged', 0)} / "
            f"{st.get('incomplete', 0)} | "
            f"{steps} | {', '.join(map(str, sorted(g['seed'].unique())))} | {ev} | "
            f"{wall / 60:.1f} min |")
    return "\n".join(lines) + "\n"


def _runs_table(df) -> str:
    per_run = df.drop_duplicates("run_id")
    bad = per_run[per_run["status"] != "complete"]
    if bad.empty:
        return "Every run completed.\n"
    lines = ["| row | estimator | seed | status | last step |", "|---|---|---|---|---|"]
    for r in bad.itertuples():
        last = df[df["run_id"] == r.run_id]["step"].max()
        lines.append(f"| {r.row} | {r.cell} | {r.seed} | {r.status} | {last} |")
    return ("Runs that did not complete are left out of the tables (gaps), listed here:\n\n"
            + "\n".join(lines) + "\n")


def build(results, out, data_dir=None, samples: bool = True, figures: bool = True) -> Path:
    """Write every table, figure and REPORT.md under ``out``; returns REPORT.md's path.
    ``samples=False`` skips the sample figures (no models loaded), ``figures=False``
    every figure."""
    out = Path(out)
    runs = load_runs(results)
    df = runs.rows
    tdir, fdir = out / "tables", out / "figures"
    tdir.mkdir(parents=True, exist_ok=True)
    fdir.mkdir(parents=True, exist_ok=True)
    summ = summary(df)
    info = row_info(df) if not df.empty else pd.DataFrame(columns=["published"])
    rows = list(info.index)

    keep = [c for c in COLUMNS + ["status", "row", "cell", "setting", "experiment", "reduced",
                                  "train_steps"] if c in df]
    df[keep].to_csv(tdir / "rows.csv", index=False)
    summ.to_csv(tdir / "summary.csv", index=False)

    md = ["# Results report", ""]
    md.append(f"Generated by `python -m bench report` from {df['run_id'].nunique()} runs "
              f"in `{results}` (no training). Tables: mean ± half-width of the 95% Student-t "
              "interval over seeds (no interval with one seed); published values in brackets. "
              "Every metric is computed on the discrete model (hard samples, analytic KL), "
              "whatever the estimator trained with.")
    md.append("")
    if df.empty:
        md.append("No results were found.")
        (out / "REPORT.md").write_text("\n".join(md) + "\n")
        return out / "REPORT.md"
    if df.drop_duplicates("run_id")["reduced"].any():
        reduced = sorted(df.loc[df["reduced"].astype(bool), "experiment"].unique())
        md += ["> **Reduced runs.** The rows of " + ", ".join(f"`{e}`" for e in reduced)
               + " come from reduced runs (`report.reduced: true`: fewer steps or seeds than "
               "the papers, on CPU, possibly fewer importance samples): they are **not** "
               "directly comparable with the published numbers beside them. The full-run "
               "commands are at the end of this page.", ""]
    md += ["## Provenance", "", _provenance(runs, df), _runs_table(df), ""]

    main, main_nums = table(summ, info, None)
    write_table(main, main_nums, tdir, "main",
                "Main table: each row's paper metric (the 'metric' column), ours "
                "[published]; nats")
    md += ["## Main table", "",
           "Each row in the metric its paper reports (see the notes below): ours "
           "[published]. Files: [Markdown](tables/main.md), [LaTeX](tables/main.tex), "
           "[CSV](tables/main.csv).", "", to_markdown(main)]
    for metric in HEADLINE:
        if metric not in set(summ["metric"]):
            continue
        t, nums = table(summ, info, metric)
        write_table(t, nums, tdir, metric, METRIC_LABELS.get(metric, metric))
        if metric in ("test_neg_elbo", "test_nll"):
            md += [f"### {METRIC_LABELS[metric]}", "", to_markdown(t)]
    others = [m for m in HEADLINE if m in set(summ["metric"]) and m not in
              ("test_neg_elbo", "test_nll")]
    if others:
        md += ["Other metrics: " + ", ".join(
            f"{m} ([md](tables/{m}.md), [tex](tables/{m}.tex), [csv](tables/{m}.csv))"
            for m in others) + ". All rows of the store: [tables/rows.csv](tables/rows.csv); "
            "the long summary: [tables/summary.csv](tables/summary.csv).", ""]

    figs = []
    if not figures:
        samples = False
        md += ["Figures were not drawn (`--tables-only`).", ""]
    else:
        figs.append(("Test −ELBO against training steps",
                     plot_curves(df, rows, "test_neg_elbo", "step", fdir, "test_neg_elbo_vs_steps",
                                 "test −ELBO (nats)", "training step")))
        figs.append(("Test −ELBO against training time",
                     plot_curves(df, rows, "test_neg_elbo", "train_time", fdir,
                                 "test_neg_elbo_vs_time", "test −ELBO (nats)",
                                 "training time (s): steps × median step time")))
        figs.append(("Gradient variance against training steps",
                     plot_curves(df, rows, "grad_var", "step", fdir, "grad_var_vs_steps",
                                 "gradient variance (log scale)", "training step", log=True)))
        figs.append(("Step time per estimator", plot_step_time(df, summ, rows, fdir)))
    notes = []
    if samples:
        sfiles, notes = plot_samples(runs, df, rows, fdir, data_dir)
        pngs = [f for f in sfiles if f.endswith(".png")]
        for p in pngs:
            figs.append((f"Samples and reconstructions: {p[len('samples_'):-4]}",
                         [p, p[:-4] + ".pdf"]))
    if figures:
        md += ["## Figures", ""]
    for title, files in figs:
        if not files:
            md += [f"- {title}: no data (gap)."]
            continue
        png, pdf = files[0], files[1]
        md += [f"### {title}", "", f"![{title}](figures/{png})", "",
               f"[PNG](figures/{png}) · [PDF](figures/{pdf})", ""]
    if notes:
        md += ["Figures not drawn:", ""] + [f"- {n}" for n in notes] + [""]
    md += ["## Notes on the metrics", "",
           "- `test_neg_elbo`: single-sample −ELBO on the test set (for `sbn`: the "
           "single-sample bound E_h[−log p(x_l | h)]). Jang et al.'s Table 1 VAE numbers "
           "behave like this quantity, so the VAE rows compare against it.",
           "- `test_nll`: the m-sample importance-sampled bound −log (1/m Σ p(x, z_i)/q(z_i | x)) "
           "(for `sbn`: −log (1/m Σ p(x_l | h_i)), h_i from the network). Jang et al.'s SBN "
           "numbers (m = 1000) and Maddison et al.'s test NLL (m = 1000) compare against it.",
           "- A reduced run's m (above) is far below the papers' 1000, which leaves its bound "
           "looser.", ""]
    exps = ({e.removesuffix("_quick") for e in df["experiment"].unique() if e}
            | {e for e in df["setting"].unique() if e})
    full = [FULL_COMMANDS[e] for e in sorted(exps) if e in FULL_COMMANDS]
    if full:
        md += ["## Full runs (GPU)", "",
               "The papers' budgets (every estimator, 5 seeds, m = 1000) need a GPU; "
               "each command is one Hydra grid (see docs/reproduction.md):", "", "```"]
        md += full + ["python -m bench report results --out results", "```", ""]
    (out / "REPORT.md").write_text("\n".join(md))
    return out / "REPORT.md"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench report",
        description="Tables, figures and REPORT.md from stored results (no training).")
    ap.add_argument("results_dir", nargs="?", default="results",
                    help="a results store (default: results), or a rows.csv from a report")
    ap.add_argument("--out", default=None,
                    help="output folder (default: RESULTS_DIR for a store, else ./report)")
    ap.add_argument("--data-dir", default=None,
                    help="where the datasets are, for the sample figures (default: each "
                         "run's data_dir, or BENCH_DATA_DIR)")
    ap.add_argument("--no-samples", action="store_true",
                    help="skip the sample/reconstruction figures (no models loaded)")
    ap.add_argument("--tables-only", action="store_true", help="draw no figures")
    a = ap.parse_args(argv)
    src = Path(a.results_dir)
    if not src.exists():
        print(f"error: results_dir {a.results_dir!r} does not exist", file=sys.stderr)
        return 2
    out = Path(a.out) if a.out else (src if src.is_dir() else Path("report"))
    runs_dir = src / "runs" if src.is_dir() else None
    if runs_dir is not None and not runs_dir.is_dir() and not any(src.glob("*/*/meta.json")):
        print(f"error: no results under {a.results_dir} (expected {runs_dir}); run "
              f"`python -m bench run ...` first", file=sys.stderr)
        return 2
    data_dir = a.data_dir or os.environ.get("BENCH_DATA_DIR")
    page = build(src, out, data_dir=data_dir, samples=not a.no_samples,
                 figures=not a.tables_only)
    print(f"wrote {page} (tables in {out / 'tables'}, figures in {out / 'figures'})")
    return 0
