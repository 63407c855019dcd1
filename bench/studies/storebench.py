"""How fast a large results store is read: `python -m bench storebench`.

    python -m bench storebench [--runs 10000] [--evals 20] [--baseline-runs 200]
                               [--out results/store_speed/RESULTS.md]

Builds a synthetic store of N finished runs in a temporary folder in the store's
format (one rows file per evaluation, ~15 metrics each, byte for byte what
bench.store.Run writes; the default config with estimator, seed, lr, temperature
and batch size varied: a grid of 200 report rows x 10 estimators), then measures,
each phase in a fresh process (seconds and peak resident memory, VmHWM):

  load (files)      ``load()`` of the store as written: every rows file read and
                    checked against the checksum in its name
  compact           ``python -m bench store compact``: finished runs into one part
  load (compacted)  ``load()`` again: the part, checked against its SHA-256
  report            ``python -m bench report --tables-only`` on the compacted store
  old reader        the reader before this change (one ``pd.read_csv`` per rows file,
                    no checks) on the first ``--baseline-runs`` runs, scaled to N

The temporary store is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METRICS = ["train_neg_elbo", "valid_neg_elbo", "test_neg_elbo", "kl", "recon", "grad_var",
           "log10_grad_var", "train_objective", "temperature", "step_time_s", "steps_per_s",
           "train_time_s", "f_evals"]
ESTIMATORS = ["gumbel_softmax", "st_gumbel_softmax", "reinforce", "concrete_kl", "rebar",
              "relax", "nvil", "muprop", "arm", "rao_blackwell"]


def _rows_bytes(run, step, metrics, wall_s) -> bytes:
    """The bytes ``Run.write`` writes, formatted directly (checked against it on the
    first run of every store generated)."""
    from bench.store.files import COLUMNS

    b = run.base
    head = f"{b['run_id']},{b['estimator']},{b['task']},{b['dataset']},{b['seed']},"
    head += f"{b['temperature']},{step},"
    tail = f",{wall_s:.4f},{b['device']},{b['git_sha']},{b['config_hash']},\n"
    return (",".join(COLUMNS) + "\n" + "".join(
        f"{head}{m},{float(v)!r}{tail}" for m, v in metrics.items())).encode()


def generate(root: Path, n_runs: int, n_evals: int) -> None:
    from bench.cli import job_configs
    from bench.config import config_hash
    from bench.store.files import atomic_write, rows_name
    from bench.store.write import Store

    base = job_configs([f"results_dir={root}"], False)[0]
    store = Store(root, fsync=False)
    rnd = random.Random(0)
    for i in range(n_runs):
        cfg = json.loads(json.dumps(base))
        cfg["estimator"]["name"] = ESTIMATORS[i % len(ESTIMATORS)]
        # a grid: 10 estimators x 5 seeds x 4 lr x 5 temperatures x 10 batch sizes (x steps)
        cfg["seed"] = (i // 10) % 5
        cfg["train"]["lr"] = [1e-3, 3e-4, 1e-4, 3e-5][(i // 50) % 4]
        cfg["estimator"]["temperature"] = [0.1, 0.3, 0.5, 1.0, 2.0][(i // 200) % 5]
        cfg["train"]["batch_size"] = 100 + 10 * ((i // 1000) % 10)
        cfg["train"]["steps"] = 2000 * (1 + i // 10000)
        h = config_hash(cfg)
        meta = {"estimator": cfg["estimator"]["name"], "task": cfg["task"]["name"],
                "dataset": cfg["dataset"]["name"], "seed": cfg["seed"],
                "temperature": cfg["estimator"]["temperature"], "device": "cpu",
                "git_sha": "synthetic", "config": cfg}
        run = store.start(h, meta)
        steps = int(cfg["train"]["steps"])
        for e in range(n_evals + 1):
            step = steps * e // n_evals
            metrics = {m: rnd.random() * 100 for m in METRICS}
            if e == n_evals:
                metrics.update(test_nll=rnd.random() * 100, wall_s=rnd.random() * 1000)
            wall = rnd.random() * 1000
            data = _rows_bytes(run, step, metrics, wall)
            if i == 0:  # the store's own writer, and the fast path gives the same bytes
                assert run.write(step, metrics, wall).read_bytes() == data
            else:
                atomic_write(run.dir / rows_name(step, len(metrics), data), data, fsync=False)
        run.finish("complete", wall_s=1.0)


OLD_READER = """
import json, sys, time
from pathlib import Path
import pandas as pd
root, limit = Path(sys.argv[1]) / "runs", int(sys.argv[2])
t0, c0 = time.perf_counter(), time.process_time()
frames, statuses = [], {}
dirs = sorted(p for p in root.glob("*/*") if p.is_dir())[:limit]
for run_dir in dirs:
    st = run_dir / "status.json"
    statuses[run_dir.name] = json.loads(st.read_text())["status"] if st.exists() else "incomplete"
    for f in sorted(run_dir.glob("rows-*.csv")):
        frames.append(pd.read_csv(f, dtype={"git_sha": str, "config_hash": str, "run_id": str}))
df = pd.concat(frames, ignore_index=True)
df["status"] = df["run_id"].map(statuses)
seconds, rows = time.perf_counter() - t0, len(df)
"""

PHASES = {
    "load": "from bench.results import load\nt0, c0 = time.perf_counter(), time.process_time()\n"
            "df = load(sys.argv[1])\nseconds, rows = time.perf_counter() - t0, len(df)\n",
    "compact": "from bench.store.compact import compact\n"
               "t0, c0 = time.perf_counter(), time.process_time()\n"
               "part, rows = compact(sys.argv[1])\nseconds = time.perf_counter() - t0\n",
    "report": "from bench.report.page import build\n"
              "t0, c0 = time.perf_counter(), time.process_time()\n"
              "build(sys.argv[1], sys.argv[1] + '/report', samples=False, figures=False)\n"
              "seconds, rows = time.perf_counter() - t0, 0\n",
}
FOOTER = """
cpu = time.process_time() - c0
hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")]
peak = hwm[0] / 1024 if hwm else float("nan")
print(json.dumps({"seconds": seconds, "cpu_s": cpu, "rows": int(rows), "peak_mb": peak}))
"""


def phase(code: str, *args) -> dict:
    src = "import json, sys, time\n" + code + FOOTER
    res = subprocess.run([sys.executable, "-c", src, *map(str, args)], capture_output=True,
                         text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if res.returncode:
        print(f"phase failed:\n{res.stderr[-2000:]}", file=sys.stderr, flush=True)
        raise SystemExit(1)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench storebench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10000)
    ap.add_argument("--evals", type=int, default=20)
    ap.add_argument("--baseline-runs", type=int, default=200)
    ap.add_argument("--out", default=None, help="also write the table to this Markdown file")
    ap.add_argument("--store", default=None,
                    help="build the synthetic store here and keep it (an existing one is "
                         "reused as it is, parts removed)")
    a = ap.parse_args(argv)
    tmp = Path(a.store) if a.store else Path(tempfile.mkdtemp(prefix="bench-storebench-"))
    try:
        t0 = time.perf_counter()
        reused = (tmp / "runs").is_dir()
        if reused:
            shutil.rmtree(tmp / "index", ignore_errors=True)
            shutil.rmtree(tmp / "report", ignore_errors=True)
            a.runs = sum(1 for _ in (tmp / "runs").glob("*/*/status.json"))
        else:
            generate(tmp, a.runs, a.evals)
        gen_s = time.perf_counter() - t0
        files = sum(1 for _ in (tmp / "runs").glob("*/*/rows-*.csv"))
        res = {"load (files)": phase(PHASES["load"], tmp)}
        old = phase(OLD_READER, tmp, min(a.baseline_runs, a.runs))
        res["compact"] = phase(PHASES["compact"], tmp)
        res["load (compacted)"] = phase(PHASES["load"], tmp)
        res["report --tables-only"] = phase(PHASES["report"], tmp)
    finally:
        if not a.store:
            shutil.rmtree(tmp, ignore_errors=True)
    scale = a.runs / min(a.baseline_runs, a.runs)
    rows = res["load (files)"]["rows"]
    lines = [f"Synthetic store: {a.runs} finished runs x {a.evals + 1} evaluations, "
             f"{rows} rows in {files} rows files "
             f"({'an existing store, reused' if reused else f'written in {gen_s:.0f} s'}); "
             f"{platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}.",
             f"Load average when it started: {os.getloadavg()[0]:.1f} on "
             f"{os.cpu_count()} CPUs (wall seconds move with it; CPU seconds of the "
             f"process, all its threads, much less).",
             "", "| phase | wall s | CPU s | peak memory (MB) | rows |", "|---|---|---|---|---|"]
    for name, r in res.items():
        lines.append(f"| {name} | {r['seconds']:.2f} | {r['cpu_s']:.2f} | {r['peak_mb']:.0f} "
                     f"| {r['rows']} |")
    old_n = old["seconds"] * scale
    nb = min(a.baseline_runs, a.runs)
    lines.append(f"| old reader, {nb} runs | {old['seconds']:.2f} | {old['cpu_s']:.2f} | "
                 f"{old['peak_mb']:.0f} | {old['rows']} |")
    old_c = old["cpu_s"] * scale
    lc, lf = res["load (compacted)"], res["load (files)"]
    lines += ["", f"Old reader scaled to {a.runs} runs: {old_n:.0f} s wall, {old_c:.0f} s CPU "
              f"({1000 * old['seconds'] / nb:.1f} / {1000 * old['cpu_s'] / nb:.1f} ms a run). "
              f"load (compacted) is {old_n / lc['seconds']:.0f}x faster in wall time "
              f"({old_c / lc['cpu_s']:.0f}x in CPU time), load (files) "
              f"{old_n / lf['seconds']:.1f}x ({old_c / lf['cpu_s']:.1f}x). Targets: load of "
              f"10,000 runs x 20 evaluations < 5 s, report --tables-only < 30 s."]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
    return 0 if math.isfinite(old_n) else 1
