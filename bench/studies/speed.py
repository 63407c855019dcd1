"""Throughput of the training step, measured against two references in one process.

    python -m bench speed [--steps 300] [--rounds 5] [--warmup 1000] [--threads 1]
                          [--estimator gumbel_softmax] [--data_dir DIR] [--device cpu]
                          [--stack 4] [--out FILE]

Categorical VAE 20x10 (784-512-256-200 / 200-256-512-784), batch 100:

  runner  this suite's Trainer (bench.loop): data resident on the device, randperm batches,
          the estimator contract, fused Adam, subnormals flushed to zero (``flush_denormal``,
          on in every run of ``bench run``);
  plain   a plain implementation of the same model and loss: TensorDataset + DataLoader
          (shuffle), nn.Sequential, F.gumbel_softmax, torch.optim.Adam defaults, torch's
          default floating-point mode (subnormals kept);
  plain_ftz  the same plain implementation with subnormals flushed to zero, to separate
          that one setting from the rest (on CPU only);
  matmul  only the step's 17 matrix products (6 forward, 11 backward) on preallocated
          tensors: an upper bound on steps/s for any implementation;
  stacked S = --stack seeds trained together by the runner's code for ``seeds=[...]``
          (bench.stacked.StackedTrainer), reported per model: S * steps / time
          (0 leaves it out).

Each first trains ``--warmup`` steps (default 1000): after a few hundred steps of
Adam on MNIST, the first moments of parameters whose gradient is exactly zero
(weights of always-blank pixels, dead units) decay into subnormal floats and stay
there (0.9 times the smallest subnormal rounds back to it), and every later step
pays for arithmetic on them unless they are flushed; a timing of the first steps
alone would miss that. Then they are timed in interleaved rounds, so load on the
machine hits all alike; the median over rounds is reported with the ratios
runner/plain, runner/plain_ftz, runner/matmul and stacked/plain, stacked/matmul
(the matmul bound is per model, so this ratio compares).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

N_LAT, K, BATCH, DIM = 20, 10, 100, 784
ENC, DEC = [DIM, 512, 256, N_LAT * K], [N_LAT * K, 256, 512, DIM]


def load_train(data_dir, device):
    from tasks import datasets

    try:
        d = datasets.load({"name": "binarized_mnist"}, data_dir, device)
        return d, "binarized_mnist"
    except datasets.DataError:
        g = torch.Generator().manual_seed(0)
        x = (torch.rand(50000, DIM, generator=g) < 0.13).float()
        d = datasets.Data(name="synthetic", splits={"train": x.to(device), "valid": x[:100],
                                                    "test": x[:100]})
        return d, "synthetic (binarized_mnist not found; same shapes)"


def runner_steps(data, estimator, device):
    import estimators
    import tasks
    from bench.loop import Trainer

    torch.manual_seed(0)
    task = tasks.build({"name": "categorical_vae", "latents": N_LAT, "categories": K}, data, device)
    est = estimators.get(estimator)
    return _stepper(Trainer(task, est, data, BATCH, 1e-3))


def _stepper(trainer):
    """run(n): n more training steps of ``trainer``, its step counter carried on."""
    state = {"t": 0}

    def run(n):
        for _ in range(n):
            trainer.step(state["t"])
            state["t"] += 1
    return run


def stacked_steps(data, estimator, device, size: int):
    import estimators
    import tasks
    from bench.stacked import StackedTrainer

    task_list, gens = [], []
    for s in range(size):  # as bench.stacked.run builds them
        torch.manual_seed(s)
        task_list.append(tasks.build({"name": "categorical_vae", "latents": N_LAT,
                                      "categories": K}, data, device))
        gens.append(torch.Generator().set_state(torch.get_rng_state()))
    return _stepper(StackedTrainer(task_list, estimators.get(estimator), data, BATCH, 1e-3, gens))


def plain_steps(data, device):
    torch.manual_seed(0)

    def mlp(sizes):
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
        return nn.Sequential(*layers)

    enc, dec = mlp(ENC).to(device), mlp(DEC).to(device)
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=1e-3)
    ds = torch.utils.data.TensorDataset(data.splits["train"].cpu())
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, drop_last=True)
    it = {"i": iter(loader)}

    def batch():
        try:
            return next(it["i"])[0]
        except StopIteration:
            it["i"] = iter(loader)
            return next(it["i"])[0]

    def run(n):
        for _ in range(n):
            x = batch().to(device)
            logits = enc(x).view(-1, N_LAT, K)
            z = F.gumbel_softmax(logits, tau=1.0)
            recon = F.binary_cross_entropy_with_logits(dec(z.view(-1, N_LAT * K)), x,
                                                       reduction="none").sum(1)
            q = logits.softmax(-1)
            kl = (q * (q.clamp_min(1e-20).log() + torch.log(torch.tensor(float(K))))).sum((1, 2))
            loss = (recon + kl).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return run


def matmul_steps(device):
    g = torch.Generator().manual_seed(0)

    def t(*shape):
        return torch.randn(*shape, generator=g).to(device)

    prods = []
    for sizes, first in ((ENC, True), (DEC, False)):
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            x, w, gy = t(BATCH, a), t(b, a), t(BATCH, b)
            prods.append((x, w.t(), t(BATCH, b)))  # forward   y = x W^T
            prods.append((gy.t(), x, t(b, a)))  # backward  dW = dy^T x
            if not (first and i == 0):  # no gradient w.r.t. the data
                prods.append((gy, w, t(BATCH, a)))  # backward  dx = dy W
    assert len(prods) == 17

    def run(n):
        for _ in range(n):
            for a, b, out in prods:
                torch.mm(a, b, out=out)
    return run


def measure(fns: dict, steps: int, rounds: int, device, clock=time.perf_counter,
            models: dict | None = None, flush: dict | None = None,
            warmup: int | None = None) -> dict:
    """Median steps/s of each fn over interleaved rounds, after ``warmup`` steps each
    (default steps // 10); ``models[name]`` (default 1) models trained per step: the
    rate is then per model; ``flush[name]``: subnormals flushed to zero while it runs."""
    models, flush = models or {}, flush or {}
    rates = {k: [] for k in fns}
    for name, fn in fns.items():
        torch.set_flush_denormal(flush.get(name, False))
        fn(max(5, steps // 10) if warmup is None else warmup)
    for _ in range(rounds):
        for name, fn in fns.items():
            torch.set_flush_denormal(flush.get(name, False))
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = clock()
            fn(steps)
            if device.type == "cuda":
                torch.cuda.synchronize()
            rates[name].append(models.get(name, 1) * steps / (clock() - t0))
    torch.set_flush_denormal(False)
    return {k: statistics.median(v) for k, v in rates.items()}, rates


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench speed", description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1000,
                    help="steps each variant trains before timing (steady state)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--estimator", default="gumbel_softmax")
    ap.add_argument("--data-dir", "--data_dir", dest="data_dir",
                    default=os.environ.get("BENCH_DATA_DIR", "data"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: this thread's CPU time (robust to other load on the machine; "
                         "CPU device with one thread only)")
    ap.add_argument("--stack", type=int, default=4,
                    help="seeds trained together in the 'stacked' variant (0: leave it out)")
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    a = ap.parse_args(argv)
    if a.clock == "cpu" and (a.device != "cpu" or a.threads != 1):
        ap.error("--clock cpu needs --device cpu and --threads 1")
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    data, source = load_train(a.data_dir, device)
    fns = {"runner": runner_steps(data, a.estimator, device),
           "plain": plain_steps(data, device)}
    if device.type == "cpu":
        fns["plain_ftz"] = plain_steps(data, device)
    fns["matmul"] = matmul_steps(device)
    if a.stack > 0:
        fns["stacked"] = stacked_steps(data, a.estimator, device, a.stack)
    clock = time.thread_time if a.clock == "cpu" else time.perf_counter
    flush = {"runner": True, "plain_ftz": True, "stacked": True}
    med, all_rates = measure(fns, a.steps, a.rounds, device, clock, {"stacked": a.stack},
                             flush, a.warmup)
    info = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "data": source, "estimator": a.estimator, "steps_per_round": a.steps,
            "rounds": a.rounds, "warmup": a.warmup, "clock": a.clock, "steps_per_s": med,
            "all_rounds": all_rates,
            "runner_over_plain": med["runner"] / med["plain"],
            "runner_over_matmul_bound": med["runner"] / med["matmul"],
            "plain_over_matmul_bound": med["plain"] / med["matmul"]}
    if "plain_ftz" in med:
        info["runner_over_plain_ftz"] = med["runner"] / med["plain_ftz"]
    if a.stack > 0:
        info.update(stack=a.stack, stacked_over_plain=med["stacked"] / med["plain"],
                    stacked_over_runner=med["stacked"] / med["runner"],
                    stacked_over_matmul_bound=med["stacked"] / med["matmul"])
    print(f"categorical VAE 20x10, batch {BATCH}, {a.estimator}, {device}, "
          f"{info['threads']} thread(s), torch {torch.__version__}, data: {source}")
    print(f"median of {a.rounds} interleaved rounds of {a.steps} steps after {a.warmup} "
          f"warm-up steps each ({a.clock} clock):")
    for k in fns:
        per = f" per model ({a.stack} seeds per step)" if k == "stacked" else ""
        print(f"  {k:9s} {med[k]:8.1f} steps/s{per}")
    print(f"  runner / plain         = {info['runner_over_plain']:.2f}x")
    if "plain_ftz" in med:
        print(f"  runner / plain_ftz     = {info['runner_over_plain_ftz']:.2f}x")
    print(f"  runner / matmul bound  = {info['runner_over_matmul_bound']:.2f}")
    print(f"  plain  / matmul bound  = {info['plain_over_matmul_bound']:.2f}")
    if a.stack > 0:
        print(f"  stacked / plain        = {info['stacked_over_plain']:.2f}x")
        print(f"  stacked / runner       = {info['stacked_over_runner']:.2f}x")
        print(f"  stacked / matmul bound = {info['stacked_over_matmul_bound']:.2f}")
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(info, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
