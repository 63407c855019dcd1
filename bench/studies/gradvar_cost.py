"""Cost of the gradient-variance measurement relative to one training step, in one process.

    python -m bench gradvar_cost [--estimators gumbel_softmax reinforce] [--m 100]
                                 [--rounds 5] [--steps 20] [--threads 1] [--clock cpu|wall]
                                 [--data_dir DIR] [--out FILE]

Categorical VAE 20x10 (conf/task/categorical_vae.yaml), batch B = 100, binarized MNIST
(a synthetic stand-in of the same shape when the file is absent; the costs do not depend
on the pixel values). Timed, in interleaved rounds so that load on the machine hits all
alike, medians reported:

  step       one training step, bench.loop.Trainer.step
  grad_var   task.grad_variance(x, est, M): the variance over M independent estimates
             of the encoder gradient on the minibatch x, averaged over parameters,
             computed through B x B Gram matrices of each layer's input (see VAE.grad_variance)
  vjp        the same number by its definition: the M gradients formed by M batched
             vector-Jacobian products (task.grad_variance_vjp, the previous method)
  f          the floor: the loss f evaluated at M*B (example, sample) pairs, decoder and
             likelihood, forward only -- no exact method can do less; an estimator that
             needs df/dz (pathwise: Gumbel-Softmax, straight-through) also pays
  f+df/dz    f and its gradient w.r.t. the M*B samples

Also printed: the same floors counted in multiply-accumulates of the MLP layers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn

BATCH = 100


def load_data(data_dir, device):
    from tasks import datasets

    try:
        return datasets.load({"name": "binarized_mnist"}, data_dir, device), "binarized_mnist"
    except datasets.DataError:
        g = torch.Generator().manual_seed(0)
        x = (torch.rand(50000, 784, generator=g) < 0.13).float().to(device)
        d = datasets.Data(name="synthetic", splits={"train": x, "valid": x[:1000],
                                                    "test": x[:1000]})
        return d, "synthetic stand-in (binarized_mnist not found; same shape)"


def build_task(data, device):
    from omegaconf import OmegaConf

    import tasks
    from bench.paths import CONF_DIR

    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "task" / "categorical_vae.yaml"))
    return tasks.build(cfg, data, device)


def layer_macs(module: nn.Module) -> list[tuple[int, int]]:
    return [(mod.in_features, mod.out_features) for mod in module.modules()
            if isinstance(mod, nn.Linear)]


def flop_floors(task, m: int, b: int) -> dict:
    """Multiply-accumulates of the MLP layers only (what dominates here)."""
    enc, dec = layer_macs(task.encoder), layer_macs(task.decoder)
    fwd = lambda layers: sum(i * o for i, o in layers)
    # a step: forward, gradient w.r.t. every weight, and w.r.t. every layer input but the data
    step = b * (2 * fwd(enc) + 3 * fwd(dec) + fwd(enc[1:]))
    return {"step": step, "f": m * b * fwd(dec), "f+df/dz": 2 * m * b * fwd(dec)}


def timers(task, est, data, x, m, steps):
    from bench.loop import Trainer

    trainer = Trainer(task, est, data, BATCH, 1e-3)
    n, k = task.latent_shape
    x_rep = x.repeat(m, 1)
    z = torch.nn.functional.one_hot(torch.randint(0, k, (m * x.shape[0], n)), k).float()
    z_grad = z.clone().requires_grad_(True)

    def step():
        for i in range(steps):
            trainer.step(i)

    def f():
        with torch.no_grad():
            task.recon(x_rep, z)

    def f_grad():
        torch.autograd.grad(task.recon(x_rep, z_grad).sum(), z_grad)

    return {"step": (step, steps), "grad_var": (lambda: task.grad_variance(x, est, m), 1),
            "vjp": (lambda: task.grad_variance_vjp(x, est, m), 1), "f": (f, 1),
            "f+df/dz": (f_grad, 1)}


def measure(fns, rounds, clock, sync):
    for fn, _ in fns.values():
        fn()  # warm up
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for name, (fn, per) in fns.items():
            sync()
            t0 = clock()
            fn()
            sync()
            times[name].append((clock() - t0) / per)
    return {k: statistics.median(v) for k, v in times.items()}, times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench gradvar_cost",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--estimators", nargs="+", default=["gumbel_softmax", "reinforce"])
    ap.add_argument("--m", type=int, default=100, help="independent estimates (M)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="training steps per round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                    help="cpu: this thread's CPU time, robust to other load on the machine "
                         "(CPU device, one thread); wall: elapsed time")
    ap.add_argument("--data-dir", "--data_dir", dest="data_dir",
                    default=os.environ.get("BENCH_DATA_DIR", "data"))
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    a = ap.parse_args(argv)
    if a.m < 2:
        ap.error("--m must be >= 2")
    if a.clock == "cpu" and (a.device != "cpu" or a.threads != 1):
        ap.error("--clock cpu needs --device cpu and --threads 1")
    import estimators

    from ..config import apply_cpu_settings

    apply_cpu_settings({"threads": a.threads})  # threads, subnormals flushed: as `bench run`
    device = torch.device(a.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    clock = time.thread_time if a.clock == "cpu" else time.perf_counter
    data, source = load_data(a.data_dir, device)
    torch.manual_seed(0)
    task = build_task(data, device)
    x = data.eval_split("train")[:BATCH]
    flops = flop_floors(task, a.m, BATCH)

    print(f"categorical VAE {task.n}x{task.k}, batch {BATCH}, M = {a.m}, {device}, "
          f"{torch.get_num_threads()} thread(s), torch {torch.__version__}, data: {source}")
    print(f"median of {a.rounds} interleaved rounds ({a.clock} clock); ratio = time / step")
    print("multiply-accumulates of the MLP layers, ratio to one step: "
          + ", ".join(f"{k} {flops[k] / flops['step']:.1f}x" for k in ("f", "f+df/dz")))
    report = {"device": str(device), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "data": source, "batch": BATCH, "m": a.m,
              "rounds": a.rounds, "clock": a.clock,
              "mac_ratio": {k: flops[k] / flops["step"] for k in ("f", "f+df/dz")},
              "estimators": {}}
    for name in a.estimators:
        est = estimators.get(name)
        torch.manual_seed(1)
        ref = task.grad_variance(x, est, a.m)
        torch.manual_seed(1)
        alt = task.grad_variance_vjp(x, est, a.m)
        med, raw = measure(timers(task, est, data, x, a.m, a.steps), a.rounds, clock, sync)
        ratio = {k: v / med["step"] for k, v in med.items()}
        print(f"{name}:")
        for k, v in med.items():
            print(f"  {k:9s} {1e3 * v:9.1f} ms  {ratio[k]:6.1f}x")
        rel = abs(alt - ref) / abs(ref) if ref else math.nan
        print(f"  grad_var {ref:.6g} (vjp: {alt:.6g}, relative difference {rel:.1e}, "
              f"same samples)")
        report["estimators"][name] = {"median_s": med, "ratio_to_step": ratio,
                                      "all_rounds_s": raw, "grad_var": ref,
                                      "grad_var_vjp": alt}
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(report, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
