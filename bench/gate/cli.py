"""`python -m bench check`: a CI gate on gradient variance, and a timing report.

For every registered estimator x {toy, bernoulli_vae, categorical_vae}, at a
fixed model state and fixed sampling seeds, the gate measures the variance of
the gradient estimator (the ``grad_var`` metric: variance across m independent
estimates, averaged over the encoder parameters -- over the logits on the toy
problem) in R independent groups, and compares the R values with the R values
committed under ``results/baselines/grad_variance.json``.

The decision, per (task, estimator) pair, is a one-sided exact Mann-Whitney
(Wilcoxon rank-sum) test of H0 "variance ratio current/baseline <= tolerance"
on the log group variances, at level alpha / n (Bonferroni over the n pairs
compared). The R groups of a run are i.i.d. and independent of the baseline's
(other seeds), so on an unchanged tree the values are exchangeable and the
exact rank test bounds the chance that a check run fails anywhere by alpha,
whatever the distribution of the gradient (see docs/ci_gate.md).

Timing -- seconds per estimate (estimator call + backward) on a fixed batch --
is measured by the pytest-benchmark suite in ``benchmarks/``; it goes to
pytest-benchmark's JSON and a compare table that is printed, never enforced.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import torch

import estimators

from .baselines import baseline_record, check_compatible, read_json, write_json
from .measure import DoubledNoise, all_pairs, measure
from .settings import (
    BASELINE_DIR,
    CHECK_SEED,
    DEFAULT_OUT,
    TASKS,
    TIMING_FILE,
    UPDATE_SEED,
    VARIANCE_FILE,
    CheckError,
    Settings,
    make_estimator,
)
from .stats import Row, compare
from .timing import add_variance, merge_timing, run_timing, timing_table

# --- report -----------------------------------------------------------------------

def _fmt(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3e}"


def variance_table(rows: list[Row], summary: dict, current: dict) -> list[str]:
    lines = [f"gradient-variance gate: {summary['compared']} pairs compared, R={summary['groups']} "
             f"groups each; fails if P(ratio <= {summary['tolerance']:g}) is rejected at "
             f"{summary['per_pair_alpha']:.2g} (alpha={summary['alpha']:g} over all pairs)",
             f"  {'task':16} {'estimator':20} {'baseline':>10} {'now':>10} {'ratio':>6} "
             f"{'p':>8}  verdict"]
    order = {"REGRESSION": 0, "ERROR": 1}
    for r in sorted(rows, key=lambda r: (order.get(r.status, 2), r.task, r.estimator)):
        ratio = "-" if math.isnan(r.ratio) else f"{r.ratio:6.2f}"
        p = "-" if math.isnan(r.p_value) else f"{r.p_value:8.1e}"
        extra = ""
        entry = current["pairs"].get(f"{r.task}/{r.estimator}", {})
        if "bias_rms" in entry:
            extra = f" [bias rms {entry['bias_rms']:.2e}, |z| {entry['bias_z']:.1f}]"
        note = f"  ({r.note})" if r.note else ""
        lines.append(f"  {r.task:16} {r.estimator:20} {_fmt(r.base_var):>10} "
                     f"{_fmt(r.cur_var):>10} {ratio:>6} {p:>8}  {r.status}{extra}{note}")
    return lines


# --- command line --------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench check",
        description="Gradient-variance regression gate (exit 1 on a regression) and a "
                    "timing report (never enforced). See docs/ci_gate.md.")
    up = p.add_mutually_exclusive_group()
    up.add_argument("--update", nargs="*", metavar="NAME", default=None,
                    help="rewrite the baselines on purpose: all of them, or only those "
                         "of the estimators NAME ...")
    up.add_argument("--update-missing", action="store_true",
                    help="add baselines for (task, estimator) pairs that have none")
    p.add_argument("--estimators", default=None, help="comma list (default: all registered)")
    p.add_argument("--tasks", default=",".join(TASKS),
                   help=f"comma list (default: {','.join(TASKS)})")
    p.add_argument("--seed", type=int, default=None,
                   help=f"sampling seed (default {CHECK_SEED} for a check, {UPDATE_SEED} "
                        "for --update)")
    p.add_argument("--tolerance", type=float, default=1.2,
                   help="variance ratio tolerated before the test (default 1.2)")
    p.add_argument("--alpha", type=float, default=1e-3,
                   help="false-alarm rate of a whole check run (default 0.001)")
    p.add_argument("--no-timing", action="store_true", help="skip the timing benchmarks")
    p.add_argument("--verbose", action="store_true", help="show the pytest-benchmark output")
    p.add_argument("--plant-noise", metavar="NAME", default=None,
                   help="self-test: double NAME's gradient noise; the gate must fail")
    p.add_argument("--device", default="cpu", help="device (default cpu)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: steadier timings on a busy machine)")
    p.add_argument("--baselines", default=str(BASELINE_DIR), help="baseline folder")
    p.add_argument("--out", default=str(DEFAULT_OUT),
                   help="where this run's JSON goes (default .benchmarks/check)")
    return p


def _names(arg: str | None, allowed: list[str], key: str) -> list[str]:
    if arg is None:
        return list(allowed)
    got = [s.strip() for s in arg.split(",") if s.strip()]
    bad = [g for g in got if g not in allowed]
    if bad or not got:
        raise CheckError(f"{key}: unknown {bad[0] if bad else '(empty)'!r}; "
                         f"allowed: {', '.join(allowed)}")
    return got


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        return _main(args)
    except CheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(args) -> int:
    settings = Settings()
    if args.threads < 1:
        raise CheckError(f"--threads must be >= 1, got {args.threads}")
    if not args.tolerance >= 1.0:
        raise CheckError(f"--tolerance must be >= 1 (a ratio), got {args.tolerance}")
    if not 0.0 < args.alpha < 1.0:
        raise CheckError(f"--alpha must be in (0, 1), got {args.alpha}")
    torch.set_num_threads(args.threads)
    names = estimators.names()
    est_names = _names(args.estimators, names, "--estimators")
    task_names = _names(args.tasks, list(TASKS), "--tasks")
    if args.plant_noise is not None and args.plant_noise not in names:
        raise CheckError(f"--plant-noise: unknown estimator {args.plant_noise!r}; "
                         f"allowed: {', '.join(names)}")
    updating = args.update is not None or args.update_missing
    if updating and args.plant_noise:
        raise CheckError("--plant-noise is a self-test; it cannot write baselines")
    if args.update:
        est_names = _names(",".join(args.update), names, "--update")
    seed = args.seed if args.seed is not None else (UPDATE_SEED if updating else CHECK_SEED)
    base_dir, out_dir = Path(args.baselines), Path(args.out)
    var_path, time_path = base_dir / VARIANCE_FILE, base_dir / TIMING_FILE
    full_update = args.update is not None and not args.update

    if updating:
        old = read_json(var_path) if var_path.exists() else None
    else:
        old = read_json(var_path)
    pairs = all_pairs(task_names, est_names)
    if args.update_missing and old is not None:
        have = {k for k, e in old.get("pairs", {}).items() if e.get("status") == "measured"}
        pairs = [p for p in pairs if f"{p[0]}/{p[1]}" not in have]
        if not pairs:
            print("every registered (task, estimator) pair has a baseline; nothing to add")
            return 0
        est_names = sorted({e for _, e in pairs})
        task_names = [t for t in task_names if any(p[0] == t for p in pairs)]

    factories = {}
    if args.plant_noise:
        factories[args.plant_noise] = lambda: DoubledNoise(
            make_estimator(args.plant_noise, settings.model_seed))

    def progress(entry):
        v = entry.get("grad_var")
        print(f"  measured {entry['task']}/{entry['estimator']}: {entry['status']}"
              + (f" grad_var={v:.3e}" if v is not None else ""), file=sys.stderr, flush=True)

    print(f"bench check: measuring {len(pairs)} pairs (seed {seed})", file=sys.stderr)
    current = measure(settings, pairs, seed, args.device, factories, progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "grad_variance.json", current)

    if updating:
        if old is not None:
            try:
                check_compatible(old, current)
            except CheckError as e:
                whole = set(task_names) == set(TASKS) and set(est_names) == set(names)
                if not (full_update and whole):
                    raise CheckError(f"{e} (a partial update cannot merge into it)") from None
                print(f"note: replacing the whole baseline: {e}", file=sys.stderr)
                old = None
        if old is not None and full_update:  # drop estimators no longer registered
            old = dict(old, pairs={k: v for k, v in old["pairs"].items()
                                   if v["estimator"] in names})
        errors = [k for k, e in current["pairs"].items() if e["status"] == "error"]
        for k in errors:
            print(f"error: {k}: {current['pairs'][k]['reason']}", file=sys.stderr)
        write_json(var_path, baseline_record(current, old))
        print(f"wrote {sum(e['status'] == 'measured' for e in current['pairs'].values())} "
              f"baselines to {var_path}")
        if not args.no_timing:
            code = run_timing(out_dir / "benchmark.json", task_names, est_names, args.device,
                              verbose=args.verbose)
            if code == 0:
                new = add_variance(json.loads((out_dir / "benchmark.json").read_text()), current)
                old_t = read_json(time_path) if time_path.exists() and old is not None else None
                write_json(time_path, merge_timing(new, old_t))
                print(f"wrote timings to {time_path}")
            else:
                print(f"error: the timing suite failed (pytest exit {code})", file=sys.stderr)
                return 1
        return 1 if errors else 0

    if old.get("seed") == seed:
        print(f"warning: sampling seed {seed} is the baseline's own; the test assumes "
              "independent seeds (use another --seed)", file=sys.stderr)
    check_compatible(old, current)
    rows, summary = compare(old, current, args.tolerance, args.alpha)
    report = variance_table(rows, summary, current)
    current["verdicts"] = [dataclasses.asdict(r) for r in rows]
    current["summary"] = summary
    write_json(out_dir / "grad_variance.json", current)
    code = 1 if any(r.fails for r in rows) else 0

    if not args.no_timing:
        bench_json = out_dir / "benchmark.json"
        tcode = run_timing(bench_json, task_names, est_names, args.device, args.plant_noise,
                               args.verbose)
        if tcode != 0:
            print(f"error: the timing suite failed (pytest exit {tcode})", file=sys.stderr)
            code = 1
        if bench_json.exists():
            doc = add_variance(json.loads(bench_json.read_text()), current)
            write_json(bench_json, doc)
            base_t = json.loads(time_path.read_text()) if time_path.exists() else None
            print()
            print("\n".join(timing_table(doc, base_t)))
    print()
    print("\n".join(report))
    failed = [r for r in rows if r.fails]
    new = [r for r in rows if r.status == "new"]
    if new:
        print(f"{len(new)} new pair(s) without a baseline (not failing): "
              "add them with `python -m bench check --update-missing`")
    print(f"results: {out_dir}")
    if failed:
        print(f"FAILED: {', '.join(f'{r.task}/{r.estimator} ({r.status})' for r in failed)}")
        print("if the change is intended, rewrite those baselines with "
              f"`python -m bench check --update {' '.join(sorted({r.estimator for r in failed}))}`")
    else:
        print("passed")
    return code
