"""Training speed of a sampled label against marginalisation in the M2 model,
as the number of classes K grows (Jang, Gu & Poole 2017, section 4.3, Fig. 5).

    python -m bench ssl_speedup [--ks 10 20 50 100] [--device cpu|cuda] [--out DIR]

For every K the ``semisupervised`` task is built once on MNIST images with
random labels in {0..K-1} (as in the paper), and every estimator trains its own
copy of the same initial model with the runner's own training step
(``bench.loop.Trainer``: an unlabelled batch + the labelled batch, loss,
backward, Adam update). The estimators are timed in the same process, in
alternating order, in several rounds; the speed-up of each round is the ratio
of the two estimators' median step times in that round, so slow drifts of a
shared machine cancel, and the table gives the mean over rounds with a 95%
Student-t interval. Results:
``steps.csv`` (every timed step), ``speedup.csv`` / ``speedup.md`` (per K:
median steps/s, speed-up) and ``speedup.png``; ``--summarise-only`` rebuilds
the tables and figure from a folder's ``steps.csv`` and ``env.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

PUBLISHED = {10: 2.0, 100: 9.9}  # Jang et al. 2017, section 4.3 (GPU)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_label_data(k: int, data_dir, device, source: str, n: int = 50000, seed: int = 0):
    """MNIST training images (or random binary images) with uniform random labels."""
    from tasks import datasets

    g = torch.Generator().manual_seed(seed)
    if source == "mnist":
        base = datasets.load({"name": "mnist"}, data_dir, "cpu")
        x, dynamic, name = base.splits["train"][:n], True, "mnist"
    else:
        x = torch.bernoulli(torch.full((n, 784), 0.2), generator=g)
        dynamic, name = False, "random"
    y = torch.randint(0, k, (x.shape[0],), generator=g)
    data = datasets.Data(name=f"{name}-random-labels", splits={"train": x.to(device)},
                         labels={"train": y.to(device)}, dynamic=dynamic, num_classes=k)
    return data


def time_steps(trainer, first: int, steps: int, device) -> list[float]:
    """Seconds of each of the training steps first .. first + steps - 1 (the
    runner's step; synchronised on GPU)."""
    out = []
    for step in range(first, first + steps):
        t0 = time.perf_counter()
        trainer.step(step)
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    from scipy import stats

    if len(values) < 2:
        return math.nan, math.nan
    m = statistics.mean(values)
    h = stats.t.ppf(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) \
        / math.sqrt(len(values))
    return m - h, m + h


def measure(ks, estimator_names, args, device, log=print):
    import estimators
    import tasks

    from ..loop import Trainer

    rows = []
    for k in ks:
        data = random_label_data(k, args.data_dir, device, args.data)
        torch.manual_seed(args.seed)
        task_cfg = {"name": "semisupervised", "categories": k,
                    "labels_per_class": max(1, args.labels // k), "label_seed": args.seed,
                    "labelled_batch_size": args.batch_size}
        base = tasks.build(task_cfg, data, device)
        runs = {}
        for name in estimator_names:
            est = estimators.get(name)
            est.check_latents(*base.latent_shape)
            task = copy.deepcopy(base)
            task.train()
            runs[name] = Trainer(task, est, data, args.batch_size, lr=1e-3)
            time_steps(runs[name], 0, args.warmup, device)
        for r in range(args.rounds):
            order = estimator_names if r % 2 == 0 else estimator_names[::-1]
            for name in order:
                first = args.warmup + r * args.steps
                for i, s in enumerate(time_steps(runs[name], first, args.steps, device)):
                    rows.append({"K": k, "estimator": name, "round": r, "step": i, "seconds": s})
        per = {n: statistics.median(x["seconds"] for x in rows
                                    if x["K"] == k and x["estimator"] == n)
               for n in estimator_names}
        log(f"K={k}: " + ", ".join(f"{n} {1 / t:.2f} steps/s" for n, t in per.items()))
    return rows


def summarise(rows, fast: str, slow: str):
    import pandas as pd

    df = pd.DataFrame(rows)
    out = []
    for k, g in df.groupby("K"):
        med = g.groupby(["estimator", "round"])["seconds"].median().unstack("estimator")
        ratios = (med[slow] / med[fast]).tolist()
        lo, hi = t_interval(ratios)
        out.append({"K": int(k),
                    f"{fast}_steps_per_s": 1 / g[g.estimator == fast]["seconds"].median(),
                    f"{slow}_steps_per_s": 1 / g[g.estimator == slow]["seconds"].median(),
                    "speedup": statistics.mean(ratios), "speedup_ci_low": lo,
                    "speedup_ci_high": hi, "rounds": len(ratios),
                    "published_speedup": PUBLISHED.get(int(k), math.nan)})
    return pd.DataFrame(out)


def markdown(summ, fast: str, slow: str, env: dict) -> str:
    lines = [f"Steps/s of `{fast}` against `{slow}` (marginalisation) in the M2 model, "
             f"{env['device_name']}, torch {env['torch']}, {env['threads']} threads; "
             f"batch {env['batch_size']} unlabelled + {env['batch_size']} labelled, "
             f"{env['rounds']} rounds x {env['steps']} steps per estimator, data: {env['data']}.",
             "", f"| K | {fast} steps/s | {slow} steps/s | speed-up (95% CI over rounds) "
             f"| published (GPU) |", "|---|---|---|---|---|"]
    for _, r in summ.iterrows():
        ci = ("" if math.isnan(r["speedup_ci_low"])
              else f" [{r['speedup_ci_low']:.2f}, {r['speedup_ci_high']:.2f}]")
        pub = "" if math.isnan(r["published_speedup"]) else f"{r['published_speedup']:.1f}x"
        lines.append(f"| {int(r['K'])} | {r[f'{fast}_steps_per_s']:.2f} | "
                     f"{r[f'{slow}_steps_per_s']:.2f} | {r['speedup']:.2f}x{ci} | {pub} |")
    return "\n".join(lines) + "\n"


def figure(summ, fast: str, slow: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    ks = summ["K"].to_numpy()
    a.plot(ks, summ[f"{fast}_steps_per_s"], "o-", label=f"{fast} (one sample)")
    a.plot(ks, summ[f"{slow}_steps_per_s"], "s-", label=f"{slow} (marginalise K)")
    a.set_xlabel("number of classes K")
    a.set_ylabel("training steps / s")
    a.set_yscale("log")
    a.legend(fontsize=8)
    err = [summ["speedup"] - summ["speedup_ci_low"], summ["speedup_ci_high"] - summ["speedup"]]
    b.errorbar(ks, summ["speedup"], yerr=err, fmt="o-", capsize=3, label="measured here")
    pk = [k for k in PUBLISHED]
    b.plot(pk, [PUBLISHED[k] for k in pk], "k^", label="Jang et al. 2017 (GPU)")
    b.set_xlabel("number of classes K")
    b.set_ylabel(f"speed-up of {fast}")
    b.set_ylim(bottom=0)
    b.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench ssl_speedup", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ks", type=int, nargs="+", default=[10, 20, 50, 100])
    ap.add_argument("--fast", default="gumbel_softmax", help="the sampling estimator")
    ap.add_argument("--slow", default="exact", help="the marginalising estimator")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round and estimator")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--labels", type=int, default=100, help="labelled examples (about)")
    ap.add_argument("--data", choices=["mnist", "random"], default="mnist",
                    help="mnist: MNIST training images from --data-dir; random: random "
                         "binary 784-pixel images (the speed does not depend on pixel values)")
    ap.add_argument("--data-dir", "--data_dir", dest="data_dir", default=None,
                    help="folder holding MNIST/raw (or "
                    "BENCH_DATA_DIR)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/semisupervised/speedup")
    ap.add_argument("--summarise-only", action="store_true",
                    help="no measuring: rebuild the tables and figure in --out from its "
                         "steps.csv and env.json")
    a = ap.parse_args(argv)
    out = Path(a.out)
    if a.summarise_only:
        import pandas as pd

        try:
            rows = pd.read_csv(out / "steps.csv").to_dict("records")
            env = json.loads((out / "env.json").read_text())
        except OSError as e:
            print(f"error: --summarise-only: {e}", file=sys.stderr)
            return 2
        write_outputs(out, rows, env)
        return 0

    from tasks.datasets import DataError

    from ..config import ConfigError, apply_cpu_settings, check_device
    from ..loop import git_sha

    for key, v, lo in (("--steps", a.steps, 1), ("--rounds", a.rounds, 2),
                       ("--warmup", a.warmup, 0), ("--batch-size", a.batch_size, 1),
                       ("--labels", a.labels, 1)):
        if v < lo:
            print(f"error: {key} must be >= {lo}, got {v}", file=sys.stderr)
            return 2
    if any(k < 2 for k in a.ks):
        print(f"error: --ks must all be >= 2, got {a.ks}", file=sys.stderr)
        return 2
    try:
        device = check_device(a.device)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    apply_cpu_settings({"threads": a.threads})  # threads, subnormals flushed: as `bench run`
    names = [a.fast, a.slow]
    try:
        rows = measure(a.ks, names, a, device, log=lambda s: print(s, file=sys.stderr))
    except DataError as e:
        print(f"error: {e} (or pass --data random)", file=sys.stderr)
        return 2
    except ValueError as e:  # EstimatorConfigError / TaskConfigError: one line
        print(f"error: {e}", file=sys.stderr)
        return 2

    import pandas as pd

    device_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"CPU: {cpu_name()}, {os.cpu_count()} cores")
    env = {"device": str(device), "device_name": device_name, "torch": torch.__version__,
           "threads": torch.get_num_threads(), "batch_size": a.batch_size,
           "steps": a.steps, "rounds": a.rounds, "warmup": a.warmup, "data": a.data,
           "ks": a.ks, "fast": a.fast, "slow": a.slow, "seed": a.seed,
           "git_sha": git_sha(), "python": platform.python_version(),
           "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / "steps.csv", index=False)
    (out / "env.json").write_text(json.dumps(env, indent=1))
    write_outputs(out, rows, env)
    return 0


def write_outputs(out: Path, rows, env: dict) -> None:
    fast, slow = env["fast"], env["slow"]
    summ = summarise(rows, fast, slow)
    summ.to_csv(out / "speedup.csv", index=False)
    md = markdown(summ, fast, slow, env)
    (out / "speedup.md").write_text(md)
    figure(summ, fast, slow, out / "speedup.png",
           f"M2 on {env['data']}, random labels; {env['device_name']}, "
           f"{env['threads']} thread(s)")
    print(md)


if __name__ == "__main__":
    sys.exit(main())
