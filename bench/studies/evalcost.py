"""Cost of the final evaluation (the m = 1000 importance-sampled bound ``test_nll``
and the single-sample ``*_neg_elbo``), before and after decoding hard samples
without one-hots (tasks/_hard.py), measured in one process.

    python -m bench evalcost [--tasks categorical_vae bernoulli_vae sbn sbn_categorical]
                             [--images 200] [--samples 1000] [--rounds 3]
                             [--data_dir DIR] [--clock cpu|wall] [--out FILE]

For each task (its default config, conf/task/, freshly initialised with seed 0: the
cost does not depend on the weights), on the first ``--images`` test images of
binarized MNIST (a synthetic stand-in of the same shape if the file is absent):

  before   the previous code, kept here as the reference: one-hot samples from
           ``sample_one_hot`` (SBN: ``sample_top``) through the task's ``recon``
  after    the task's ``nll`` / ``neg_elbo`` as the runner calls them

timed in interleaved rounds (CPU-time clock by default, so other load on the machine
hits both alike; medians), with the ratio and the cost extrapolated to the 10,000
test images. Both are run from the same seed and so draw the same samples: the
values are printed side by side with their largest difference per image.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch

from estimators.base import log_softmax, sample_one_hot

TEST_IMAGES = 10_000
TASKS = ("categorical_vae", "bernoulli_vae", "sbn", "sbn_categorical")


# --- the previous implementation (the reference) ------------------------------------

@torch.no_grad()
def nll_before(task, x, samples: int, max_floats: float = 2e7):
    """-log (1/S sum_s w_s) as the tasks computed it before, with one-hot samples."""
    if hasattr(task, "sample_top"):  # SBN: w_s = p(x_l | h_s), h_s ~ p(h | x_u)
        x_upper, x_lower = task.split(x)
        chunk = max(1, int(max_floats // (x.shape[0] * max(task.n * task.k, task.n_lower))))
        logs = [-task.recon(x_lower, task.sample_top(x_upper, min(chunk, samples - s0)))
                for s0 in range(0, samples, chunk)]
    else:  # VAE: w_s = p(x | z_s) p(z_s) / q(z_s | x), z_s ~ q(z | x)
        logits = task.logits(x)
        log_q = log_softmax(logits)
        log_p = task.log_prior()
        if log_p is None:
            log_p = torch.full_like(log_q[0], -math.log(task.k))
        chunk = max(1, int(max_floats // (x.shape[0] * x.shape[1])))
        logs = []
        for s0 in range(0, samples, chunk):
            z = sample_one_hot(logits.expand(min(chunk, samples - s0), *logits.shape))
            logs.append(-task.recon(x, z) + (z * (log_p - log_q)).sum((-1, -2)))
    w = torch.cat(logs, 0)
    return -(torch.logsumexp(w, 0) - math.log(samples))


@torch.no_grad()
def neg_elbo_before(task, x):
    from estimators import categorical_kl

    if hasattr(task, "sample_top"):
        x_upper, x_lower = task.split(x)
        return task.recon(x_lower, task.sample_top(x_upper))
    logits = task.logits(x)
    return task.recon(x, sample_one_hot(logits)) + categorical_kl(logits, task.prior_logits)


# --- measurement ----------------------------------------------------------------------

def build(name, data):
    from omegaconf import OmegaConf

    import tasks
    from bench.paths import CONF_DIR

    torch.manual_seed(0)
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "task" / f"{name}.yaml"))
    return tasks.build(cfg, data, "cpu").eval()


def by_batches(fn, x, batch):
    return torch.cat([fn(x[i:i + batch]) for i in range(0, x.shape[0], batch)])


def compare(task, x, samples: int, seed: int = 1) -> dict:
    """The values of both implementations from the same seed."""
    out = {}
    for what, before, after in (
            ("test_nll", lambda xb: nll_before(task, xb, samples),
             lambda xb: task.nll(xb, samples)),
            ("neg_elbo", lambda xb: neg_elbo_before(task, xb), task.neg_elbo)):
        torch.manual_seed(seed)
        a = by_batches(before, x, 100).double()
        torch.manual_seed(seed)
        b = by_batches(after, x, 100).double()
        out[what] = {"before": a.mean().item(), "after": b.mean().item(),
                     "max_abs_diff": (a - b).abs().max().item()}
    return out


def timed(task, x, samples: int) -> dict:
    """what -> (before, after): the whole test subset through each implementation."""
    return {"test_nll": (lambda: by_batches(lambda xb: nll_before(task, xb, samples), x, 100),
                         lambda: by_batches(lambda xb: task.nll(xb, samples), x, 100)),
            "neg_elbo": (lambda: by_batches(lambda xb: neg_elbo_before(task, xb), x, 100),
                         lambda: by_batches(task.neg_elbo, x, 100))}


def main(argv=None) -> int:
    from bench.studies.gradvar_cost import load_data

    ap = argparse.ArgumentParser(prog="python -m bench evalcost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data_dir", default=None)
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    ap.add_argument("--out", default=None, help="also write the table to this file")
    a = ap.parse_args(argv)
    if a.images < 1 or a.samples < 1 or a.rounds < 1:
        ap.error("--images, --samples and --rounds must be >= 1")
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    clock = time.thread_time if a.clock == "cpu" else time.perf_counter
    data, source = load_data(a.data_dir, "cpu")
    x = data.eval_split("test")[:a.images]
    lines = [f"python -m bench evalcost --images {a.images} --samples {a.samples} "
             f"--rounds {a.rounds} --clock {a.clock}",
             f"data: {source}; {x.shape[0]} test images, m = {a.samples} samples, batches of "
             f"100 images, 1 thread, torch {torch.__version__}; medians of {a.rounds} "
             f"interleaved rounds ({a.clock} clock); 'full' = extrapolated to "
             f"{TEST_IMAGES} test images",
             "",
             f"{'task':16} {'what':9} {'before s':>9} {'after s':>9} {'ratio':>6} "
             f"{'full before':>12} {'full after':>11}  value before / after (max |diff| per image)"]
    for name in a.tasks:
        task = build(name, data)
        fns = timed(task, x, a.samples)
        vals = compare(task, x, a.samples)
        for what, (before, after) in fns.items():
            tb, ta = [], []
            for _ in range(a.rounds):
                for f, ts in ((before, tb), (after, ta)):
                    t0 = clock()
                    f()
                    ts.append(clock() - t0)
            mb, ma = statistics.median(tb), statistics.median(ta)
            scale = TEST_IMAGES / x.shape[0]
            v = vals[what]
            lines.append(f"{name:16} {what:9} {mb:9.3f} {ma:9.3f} {mb / ma:5.2f}x "
                         f"{mb * scale:11.1f}s {ma * scale:10.1f}s  {v['before']:.6f} / "
                         f"{v['after']:.6f} ({v['max_abs_diff']:.2e})")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(text)
    else:
        print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
