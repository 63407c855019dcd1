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

Written under ``--out`` (default: a fresh folder ``RESULTS_DIR/report`` for a store,
``./report`` for a rows.csv; never over a store's committed REPORT.md unless asked
with ``--out``), only as regular files inside it (bench.report.output):

    REPORT.md                         the page linking everything below
    tables/main.{md,tex,csv}          rows x estimators, the paper's metric per row,
                                      the published value beside ours
    tables/<metric>.{md,tex,csv}      the same for every headline metric
    tables/summary.csv                long format: row, estimator, metric, mean, ci95, seeds,
                                      published
    tables/rows.csv                   every stored row, with its row and cell labels
    figures/*.{png,pdf}               curves against steps and training time, gradient
                                      variance, step time, samples and reconstructions
                                      (``--format``: any of png, pdf, svg)

RESULTS_DIR may also be a ``rows.csv`` written by an earlier report: tables and
curves are rebuilt from it (samples need the stored models and are skipped).
Missing estimators, metrics or models leave gaps, never errors.
"""


from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from ..paths import CONF_DIR
from ..results import COLUMNS
from . import budget
from . import figures as figmod
from .figures import plot_curves, plot_step_time
from .output import Output, ReportOutputError, md_code, one_line
from .runs import Runs, load_runs
from .samples import plot_samples
from .tables import HEADLINE, METRIC_LABELS, row_info, summary, table, to_markdown, write_table

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
        label = "(none)" if exp == "(none)" else md_code(exp)
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
        elif _is_experiment_file(exp):
            cmd = md_code(f"{env}python -m bench run +experiment={exp}")
        else:  # a label set with report.experiment=...: no config file of that name
            cmd = f"(label {label} set on the command line; see the notes beside this report)"
        ev = (f"m={'/'.join(map(str, sorted(evs)))}, grad M={'/'.join(map(str, sorted(gms)))}"
              if evs else "")
        lines.append(
            f"| {label} | {cmd} | "
            f"{md_code(', '.join(sorted(g['git_sha'].astype(str).unique())))} | "
            f"{', '.join(sorted(g['device'].astype(str).unique()))} | {', '.join(torch_v)} | "
            f"{g['row'].nunique()} | {st.get('complete', 0)} / {st.get('diverged', 0)} / "
            f"{st.get('incomplete', 0)} | "
            f"{steps} | {', '.join(map(str, sorted(g['seed'].unique())))} | {ev} | "
            f"{wall / 60:.1f} min |")
    return "\n".join(lines) + "\n"


def _runs_table(df, damaged=()) -> str:
    per_run = df.drop_duplicates("run_id")
    bad = per_run[per_run["status"] != "complete"]
    gaps = df[df["note"].astype(str) != ""] if "note" in df else df.iloc[:0]
    out = []
    if bad.empty and not len(damaged):
        out.append("Every run completed.\n")
    elif not bad.empty:
        last = df.groupby("run_id")["step"].max()
        lines = ["| row | estimator | seed | status | last step |", "|---|---|---|---|---|"]
        for r in bad.itertuples():
            lines.append(f"| {r.row} | {r.cell} | {r.seed} | {r.status} | {last[r.run_id]} |")
        out.append("Runs that did not complete are left out of the tables (gaps), listed "
                   "here:\n\n" + "\n".join(lines) + "\n")
    if len(damaged):
        lines = [f"- `{p}`: {what}" for p, what in damaged]
        out.append(f"{len(damaged)} damaged runs were not read (`python -m bench store verify` "
                   "lists them; `--repair` moves them aside so that a re-run trains them "
                   "again):\n\n" + "\n".join(lines) + "\n")
    if len(gaps):
        g = gaps.groupby(["row", "cell", "metric"], sort=False)["note"].agg(["first", "size"])
        lines = [f"- {row} · {cell} · `{metric}`: {n} values stored as gaps ({note})"
                 for (row, cell, metric), (note, n) in g.iterrows()
                 if metric != "temperature"]
        if lines:
            out.append("Metrics that were not finite are gaps (never numbers) in the tables "
                       "and figures:\n\n" + "\n".join(lines) + "\n")
    return "\n".join(out)


def _write_rows(frame: pd.DataFrame, path: Path) -> None:
    """tables/rows.csv. A large store's rows go through pyarrow's CSV writer (10x faster
    than pandas'; strings quoted, booleans lower case: the same frame when read back)."""
    if len(frame) < 200_000:
        frame.to_csv(path, index=False)
        return
    import pyarrow as pa
    import pyarrow.csv as pcsv

    pcsv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), path)


def _is_experiment_file(name: str) -> bool:
    """Whether ``name`` is a config in conf/experiment/ (a plain name, no path tricks)."""
    ok = name.replace("_", "").replace("-", "").replace("/", "").isalnum() and ".." not in name
    return ok and (CONF_DIR / "experiment" / f"{name}.yaml").is_file()


def build(results, out, data_dir=None, samples: bool = True, figures: bool = True,
          formats=None, budgets=()) -> Path:
    """Write every table, figure and REPORT.md under ``out``; returns REPORT.md's path.
    ``samples=False`` skips the sample figures (no models loaded), ``figures=False``
    every figure; ``formats``: the figure file formats (default png and pdf);
    ``budgets``: evaluations of f to tabulate at (bench.report.budget)."""
    formats = tuple(formats or figmod.FORMATS)
    figmod.FORMATS, saved_formats = formats, figmod.FORMATS
    try:
        return _build(results, Output(out), data_dir, samples, figures, budgets)
    finally:
        figmod.FORMATS = saved_formats


def _build(results, out: Output, data_dir, samples: bool, figures: bool, budgets=()) -> Path:
    runs = load_runs(results)
    df = runs.rows
    tdir, fdir = out.sub("tables"), out.sub("figures")
    summ = summary(df)
    info = row_info(df) if not df.empty else pd.DataFrame(columns=["published"])
    rows = list(info.index)

    keep = [c for c in COLUMNS + ["status", "row", "cell", "setting", "experiment", "protocol",
                                  "reduced", "train_steps"] if c in df]
    tdir.write("rows.csv", lambda t: _write_rows(df[keep], t))
    tdir.write_csv("summary.csv", summ, index=False)

    md = ["# Results report", ""]
    md.append(f"Generated by `python -m bench report` from {df['run_id'].nunique()} runs "
              f"in {md_code(results)} (no training). Tables: mean ± half-width of the 95% "
              "Student-t interval over seeds (no interval with one seed); published values in "
              "brackets. "
              "Every metric is computed on the discrete model (hard samples, analytic KL), "
              "whatever the estimator trained with.")
    md.append("")
    if df.empty:
        md.append("No results were found.")
        return out.write_text("REPORT.md", "\n".join(md) + "\n")
    if df.drop_duplicates("run_id")["reduced"].any():
        reduced = sorted(df.loc[df["reduced"].astype(bool), "experiment"].unique())
        md += ["> **Reduced runs.** The rows of " + ", ".join(md_code(e) for e in reduced)
               + " come from reduced runs (`report.reduced: true`: fewer steps or seeds than "
               "the papers, on CPU, possibly fewer importance samples): they are **not** "
               "directly comparable with the published numbers beside them. The full-run "
               "commands are at the end of this page.", ""]
    md += ["## Provenance", "", _provenance(runs, df),
           _runs_table(df, runs.damaged), ""]

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
    if budgets:
        md += budget.section(runs, budgets, tdir)

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
        figs += budget.figures(runs, fdir, budgets)
        figs.append(("Gradient variance against training steps",
                     plot_curves(df, rows, "grad_var", "step", fdir, "grad_var_vs_steps",
                                 "gradient variance (log scale)", "training step", log=True)))
        figs.append(("Step time per estimator", plot_step_time(df, summ, rows, fdir)))
    notes = []
    if samples:
        sfiles, notes = plot_samples(runs, df, rows, fdir, data_dir)
        stems = list(dict.fromkeys(f.rsplit(".", 1)[0] for f in sfiles))
        for stem in stems:
            figs.append((f"Samples and reconstructions: {stem[len('samples_'):]}",
                         [f for f in sfiles if f.rsplit(".", 1)[0] == stem]))
    if figures:
        md += ["## Figures", ""]
    for title, files in figs:
        if not files:
            md += [f"- {title}: no data (gap)."]
            continue
        title = one_line(title)
        shown = next((f for f in files if f.endswith((".png", ".svg"))), None)
        links = " · ".join(f"[{f.rsplit('.', 1)[1].upper()}](figures/{f})" for f in files)
        md += [f"### {title}", ""] + ([f"![{title}](figures/{shown})", ""] if shown else [])
        md += [links, ""]
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
           "looser.",
           "- `recon`, `kl` (VAE and M2 runs): the test −ELBO's two parts, −log p(x | z) and "
           "KL(q(z | x) ‖ p(z)), from the same draws; a `kl` near 0 means the latents carry "
           "nothing (the decoder has learnt the mean image). The SBN bound has no KL term.", ""]
    exps = ({e.removesuffix("_quick") for e in df["experiment"].unique() if e}
            | {e for e in df["setting"].unique() if e})
    full = [FULL_COMMANDS[e] for e in sorted(exps) if e in FULL_COMMANDS]
    if full:
        md += ["## Full runs (GPU)", "",
               "The papers' budgets (every estimator, 5 seeds, m = 1000) need a GPU; "
               "each command is one Hydra grid (see docs/reproduction.md):", "", "```"]
        md += full + ["python -m bench report results --out results", "```", ""]
    return out.write_text("REPORT.md", "\n".join(md))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench report",
        description="Tables, figures and REPORT.md from stored results (no training).")
    ap.add_argument("results_dir", nargs="?", default="results",
                    help="a results store (default: results), or a rows.csv from a report")
    ap.add_argument("--out", default=None,
                    help="output folder (default: RESULTS_DIR/report for a store, else "
                         "./report); files there of the same names are replaced")
    ap.add_argument("--format", default=",".join(figmod.FORMATS),
                    help="figure formats, comma-separated: png, pdf, svg (default: png,pdf)")
    ap.add_argument("--data-dir", "--data_dir", dest="data_dir", default=None,
                    help="where the datasets are, for the sample figures (default: each "
                         "run's data_dir, or BENCH_DATA_DIR)")
    ap.add_argument("--no-samples", action="store_true",
                    help="skip the sample/reconstruction figures (no models loaded)")
    ap.add_argument("--tables-only", action="store_true", help="draw no figures")
    ap.add_argument("--budget-evals", default="",
                    help="also tabulate every estimator at these budgets of evaluations of "
                         "f, comma-separated (e.g. 1e7), interpolated along each run")
    a = ap.parse_args(argv)
    try:
        budgets = [float(b) for b in a.budget_evals.split(",") if b.strip()]
    except ValueError:
        budgets = [-1.0]
    if any(not (b > 0 and b < float("inf")) for b in budgets):
        print(f"error: --budget-evals {a.budget_evals!r}: give positive numbers, e.g. 1e7",
              file=sys.stderr)
        return 2
    formats = tuple(f.strip().lower() for f in a.format.split(",") if f.strip())
    bad = [f for f in formats if f not in figmod.ALLOWED_FORMATS]
    if bad or not formats:
        print(f"error: --format {a.format!r}: allowed: {', '.join(figmod.ALLOWED_FORMATS)}",
              file=sys.stderr)
        return 2
    src = Path(a.results_dir)
    if not src.exists():
        print(f"error: results_dir {a.results_dir!r} does not exist", file=sys.stderr)
        return 2
    out = Path(a.out) if a.out else (src / "report" if src.is_dir() else Path("report"))
    runs_dir = src / "runs" if src.is_dir() else None
    if runs_dir is not None and not runs_dir.is_dir() and not any(src.glob("*/*/meta.json")):
        print(f"error: no results under {a.results_dir} (expected {runs_dir}); run "
              f"`python -m bench run ...` first", file=sys.stderr)
        return 2
    data_dir = a.data_dir or os.environ.get("BENCH_DATA_DIR")
    try:
        page = build(src, out, data_dir=data_dir, samples=not a.no_samples,
                     figures=not a.tables_only, formats=formats, budgets=budgets)
    except ReportOutputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {page} (tables in {out / 'tables'}, figures in {out / 'figures'})")
    return 0
