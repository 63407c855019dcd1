"""The pieces of a training loop shared by one run (bench.train) and stacked seeds
(bench.stacked): the step, its clock and progress lines, the evaluation at a step,
and the code version recorded with every run."""

from __future__ import annotations

import logging
import math
import statistics
import subprocess
import time
from functools import lru_cache
from pathlib import Path

import torch

from .counting import attach
from .optim import make_optimizer
from .progress import Progress

log = logging.getLogger("bench")


@lru_cache(maxsize=1)
def git_sha() -> str:
    here = Path(__file__).resolve().parent
    try:
        res = subprocess.run(["git", "-C", str(here), "rev-parse", "--verify", "-q", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        sha = res.stdout.strip() if res.returncode == 0 else ""
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + ("+dirty" if sha and dirty else "")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock:
    """Times the training steps and prints progress lines, for one run or a stack.

    On CPU every step is timed; on a GPU the host waits only at the NaN checks and
    evaluations, and each window between them gives one per-step time. Time spent
    in evaluations is not counted as training time. Progress (a bar on a terminal,
    log lines otherwise, an ETA with the evaluations in it) is bench.progress's."""

    def __init__(self, device, steps: int, every_s: float, unit: str = "steps/s",
                 eval_cfg=None):
        self.device, self.steps, self.every_s, self.unit = device, steps, every_s, unit
        self.progress = Progress(steps, every_s, unit, eval_cfg)
        self.sync_each = device.type != "cuda"
        self.t_start = time.perf_counter()
        self.times: list[float] = []  # one per-step time per window
        self.train_time = 0.0  # seconds spent in training steps (evaluations excluded)
        self.last_print = self.t_start
        self.window_t0, self.window_n = self.t_start, 0

    def wall(self) -> float:
        return time.perf_counter() - self.t_start

    def start(self) -> None:
        """Training begins (after the evaluation at step 0)."""
        self.window_t0 = self.last_print = time.perf_counter()
        self.window_n = 0

    def timing_metrics(self) -> dict:
        if not self.times:
            return {}
        med = statistics.median(self.times)
        return {"step_time_s": med, "steps_per_s": 1.0 / med if med > 0 else math.inf,
                "train_time_s": self.train_time}

    def after_step(self, step: int, check: bool, is_eval: bool, evaluate, label: str) -> None:
        """Close the timing window where the host waits anyway (or on every CPU step),
        run ``evaluate(step)`` if due, and print a progress line now and then."""
        self.window_n += 1
        if not (self.sync_each or check or is_eval):
            return
        _sync(self.device)
        t1 = time.perf_counter()
        self.times.append((t1 - self.window_t0) / self.window_n)
        self.train_time += t1 - self.window_t0
        self.progress.trained(step, self.train_time, label)
        if is_eval:
            self.evaluation(step, evaluate, label)
            t1 = self.last_print = time.perf_counter()
        self.window_t0, self.window_n = t1, 0

    def evaluation(self, step: int, evaluate, label: str) -> None:
        """Run ``evaluate(step)``, timed for the ETA and shown as in progress."""
        self.progress.eval_start(step, label)
        try:
            evaluate(step)
        finally:
            self.progress.eval_end(step)

    def watch(self, task) -> None:
        """Let ``task`` report progress inside its evaluations (tasks.base.report_progress)."""
        task.eval_progress = self.progress.eval_tick

    def close(self) -> None:
        self.progress.close()


class Trainer:
    """The training step: the dataset stays on the device as one tensor and is
    walked by a fresh randperm each epoch (no DataLoader); one estimator call,
    one backward, one optimiser update (``train.optimizer``). ``counter.n``: the
    estimator's evaluations of f in training (``f_evals``, bench.counting).

    Non-finite numbers: ``step(check=True)`` looks at the objective before the
    update and makes none if it is not finite. A non-finite gradient needs no pass
    of its own over the gradients: Adam (and SGD) turns any non-finite gradient element into a
    NaN parameter, which makes the next objective NaN, and ``params_finite`` then
    tells that it was the previous step's gradient. The runner checks the
    parameters before each evaluation as well, so a NaN from the last step's
    gradient is never evaluated or saved."""

    def __init__(self, task, est, data, batch_size: int, lr: float,
                 optim: dict | None = None):
        self.task, self.est, self.data = task, est, data
        self.counter = attach(est)
        self.n = data.size("train")
        self.batch_size = min(int(batch_size), self.n)
        # optim: make_optimizer's options (bench.optim.optimizer_options(cfg["train"]))
        self.opt = make_optimizer(task.parameters(), lr, **(optim or {}))
        self.device = data.splits["train"].device
        self.pos, self.perm = self.n, None

    def next_batch(self):
        if self.pos + self.batch_size > self.n:
            self.perm, self.pos = torch.randperm(self.n, device=self.device), 0
        idx = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return self.data.train_batch(idx)

    def step(self, step: int, check: bool = False) -> torch.Tensor:
        """One update; returns the (detached) training objective. With ``check``, a
        non-finite objective is returned without updating (a host sync on GPU)."""
        self.est.set_step(step)
        obj, _ = self.task.loss(self.next_batch(), self.est)
        self.opt.zero_grad(set_to_none=True)
        obj.backward()
        obj = obj.detach()
        if check and not torch.isfinite(obj):
            return obj
        self.opt.step()
        return obj

    def params_finite(self) -> bool:
        """Whether every trained parameter (the estimator's own ones too) is finite."""
        ps = [p for g in self.opt.param_groups for p in g["params"]]
        ps += list(self.est.extra_parameters())
        return bool(torch.stack([torch.isfinite(p).all() for p in ps]).all()) if ps else True


def evaluation_metrics(task, est, data, ev: dict, seed: int, step: int, final: bool,
                       x_fixed, grad_m: int, device) -> dict:
    """The task's evaluation and grad_var at a step, with the evaluation noise seeded
    from (seed, step) so it does not disturb the training stream."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(int(seed) * 1_000_003 + step)
        metrics = task.evaluate(data, ev, final=final)
        if grad_m:
            gv = task.grad_variance(x_fixed, est, grad_m)
            metrics["grad_var"] = gv
            # a NaN variance stays NaN (never -inf, "the lowest"); the store keeps
            # any non-finite value as a gap with a note
            metrics["log10_grad_var"] = (math.log10(gv) if gv > 0 else
                                         -math.inf if gv == 0 else math.nan)
    if getattr(est, "temperature", None) is not None:  # estimators without one: no row
        metrics["temperature"] = est.temperature
    return metrics
