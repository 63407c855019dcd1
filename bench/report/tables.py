"""The report's tables: the long summary, rows x estimators with the published
value beside ours, and their Markdown, LaTeX and CSV files."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .published import published_for, setting_order
from .stats import ci_halfwidth, final_rows

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

# --- tables -------------------------------------------------------------------

def row_info(df: pd.DataFrame) -> pd.DataFrame:
    """One line per row: task, dataset, setting, experiment, steps, reduced, published."""
    cols = ["row", "task", "dataset", "setting", "experiment", "reduced"]
    if "train_steps" in df:
        cols.append("train_steps")
    info = df[cols].drop_duplicates("row").copy()
    order = setting_order()
    info["_rank"] = info["setting"].map(lambda s: order.index(s) if s in order else len(order))
    info = info.sort_values(["_rank", "setting", "experiment", "task", "row"])
    info = info.drop(columns="_rank").set_index("row")
    info["published"] = [published_for(r.setting, r.task, r.dataset) for r in info.itertuples()]
    return info


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
    if fin.empty:
        return pd.DataFrame(columns=cols)
    # one grouped pass (mean, sd and count of the finite values per cell and metric)
    keys = ["row", "cell", "metric"]
    out = (fin.groupby(keys, sort=False)
           .agg(task=("task", "first"), dataset=("dataset", "first"),
                estimator=("estimator", "first"), mean=("value", "mean"),
                seeds=("value", "count")).reset_index())
    # sd in two passes, as Series.std does (the same numbers as mean_ci, to the bit)
    dev2 = (fin["value"] - fin.groupby(keys, sort=False)["value"].transform("mean")) ** 2
    ss = dev2.groupby([fin[k] for k in keys], sort=False).sum(min_count=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = (ss.to_numpy() / (out["seeds"].to_numpy() - 1)) ** 0.5
    out["ci95"] = ci_halfwidth(sd, out["seeds"])
    pubs = out["row"].map(info["published"])
    out["published"] = [pub["values"].get(est, math.nan) if pub and pub["metric"] == m
                        else math.nan for pub, est, m in zip(pubs, out["estimator"],
                                                             out["metric"])]
    out["published_source"] = [pub["source"] if pub and not math.isnan(p) else ""
                               for pub, p in zip(pubs, out["published"])]
    return out[cols]


def column_order(names) -> list[str]:
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
    cells = column_order(summ["cell"].unique()) if len(summ) else []
    by_key = {(r, c, m): (float(mean), float(ci), int(n)) for r, c, m, mean, ci, n in
              zip(summ["row"], summ["cell"], summ["metric"], summ["mean"], summ["ci95"],
                  summ["seeds"])}
    disp, nums = [], []
    for row in info.index:
        pub = info.loc[row, "published"]
        met = metric or (pub["metric"] if pub else "test_neg_elbo")
        row_cells = list(cells)
        if pub and pub["metric"] == met:
            row_cells += [e for e in pub["values"] if e not in row_cells]
        d = {"task": row, "metric": met}
        n = {"row": row, "metric": met}
        for c in column_order(set(cells) | set(row_cells)):
            m, h, s = by_key.get((row, c, met), (math.nan, math.nan, 0))
            p = pub["values"].get(c, math.nan) if pub and pub["metric"] == met else math.nan
            txt = _fmt(m, h, _digits(met))
            if not math.isnan(p):
                txt = f"{txt or '—'} [{p:.1f}]"
            d[c] = txt
            n[f"{c}:mean"], n[f"{c}:ci95"], n[f"{c}:seeds"], n[f"{c}:published"] = m, h, s, p
        disp.append(d)
        nums.append(n)
    dframe = pd.DataFrame(disp).fillna("")
    rest = [c for c in dframe.columns if c not in ("task", "metric")]
    cols = ["task", "metric"] + column_order(rest)
    return dframe.reindex(columns=cols).fillna(""), pd.DataFrame(nums)


def to_markdown(frame: pd.DataFrame) -> str:
    from .output import md_cell as esc

    lines = ["| " + " | ".join(esc(c) for c in frame.columns) + " |",
             "|" + "---|" * len(frame.columns)]
    for _, r in frame.iterrows():
        lines.append("| " + " | ".join(esc(v) for v in r.values) + " |")
    return "\n".join(lines) + "\n"


def to_latex(frame: pd.DataFrame, caption: str) -> str:
    from .output import one_line

    def tex(v):
        s = one_line(v)
        for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("&", r"\&"), ("%", r"\%"),
                     ("#", r"\#"), ("±", r"$\pm$"), ("−", "-"), ("—", "--"), ("·", r"$\cdot$")):
            s = s.replace(a, b)
        return s
    body = frame.map(tex)
    body.columns = [tex(c) for c in frame.columns]
    return body.to_latex(index=False, escape=False, caption=tex(caption),
                         column_format="l" * len(frame.columns))


def write_table(frame, nums, out, name: str, caption: str) -> None:
    """``out``: a folder or a bench.report.output.Output (files are written safely)."""
    from .output import as_output

    out = as_output(out)
    out.write_text(f"{name}.md", f"{caption}\n\n{to_markdown(frame)}")
    out.write_text(f"{name}.tex", to_latex(frame, caption))
    out.write_csv(f"{name}.csv", nums, index=False)
