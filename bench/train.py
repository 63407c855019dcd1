"""One training run: data on the device, the estimator's objective, evaluation
on the discrete model, rows into the results store."""

from __future__ import annotations

import logging
import math
import statistics
import subprocess
import time
from functools import lru_cache
from pathlib import Path

import torch

import tasks
from tasks import datasets

from .config import apply_cpu_settings, build_estimator, check_device, config_hash, validate
from .optim import make_optimizer
from .results import Store

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


def _fmt_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class StepClock:
    """Times the training steps and prints progress lines, for one run or a stack.

    On CPU every step is timed; on a GPU the host waits only at the NaN checks and
    evaluations, and each window between them gives one per-step time. Time spent
    in evaluations is not counted as training time."""

    def __init__(self, device, steps: int, every_s: float, unit: str = "steps/s"):
        self.device, self.steps, self.every_s, self.unit = device, steps, every_s, unit
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
        if is_eval:
            evaluate(step)
            t1 = self.last_print = time.perf_counter()
        elif t1 - self.last_print >= self.every_s:
            rate = step / self.train_time
            log.info(f"[{label}] step {step}/{self.steps} ({100 * step / self.steps:.0f}%) "
                     f"{rate:.1f} {self.unit} ETA {_fmt_eta((self.steps - step) / rate)}")
            self.last_print = t1
        self.window_t0, self.window_n = t1, 0


class Trainer:
    """The training step: the dataset stays on the device as one tensor and is
    walked by a fresh randperm each epoch (no DataLoader); one estimator call,
    one backward, one Adam update.

    Non-finite numbers: ``step(check=True)`` looks at the objective before the
    update and makes none if it is not finite. A non-finite gradient needs no pass
    of its own over the gradients: Adam turns any non-finite gradient element into a
    NaN parameter, which makes the next objective NaN, and ``params_finite`` then
    tells that it was the previous step's gradient. The runner checks the
    parameters before each evaluation as well, so a NaN from the last step's
    gradient is never evaluated or saved."""

    def __init__(self, task, est, data, batch_size: int, lr: float):
        self.task, self.est, self.data = task, est, data
        self.n = data.size("train")
        self.batch_size = min(int(batch_size), self.n)
        self.opt = make_optimizer(task.parameters(), lr)
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
            metrics["log10_grad_var"] = math.log10(gv) if gv > 0 else -math.inf
    metrics["temperature"] = getattr(est, "temperature", math.nan)
    return metrics


def run(cfg: dict) -> str | dict:
    """Train and evaluate one config; returns its status (complete, diverged, skipped).
    With ``seeds`` set, trains those seeds together (bench.stacked) and returns
    {seed: status}."""
    if cfg.get("seeds") is not None:
        from . import stacked

        return stacked.run(cfg)
    validate(cfg)
    h = config_hash(cfg)
    store = Store(cfg["results_dir"])
    label = (f"{cfg['estimator']['name']}|{cfg['task']['name']}|{cfg['dataset']['name']}"
             f"|seed={cfg['seed']}")
    if cfg.get("skip_complete", True) and (done := store.status(h)):
        log.info(f"[{label}] skipped: config {h} already {done} in {store.root}")
        return "skipped"

    device = check_device(str(cfg["device"]))
    apply_cpu_settings(cfg)
    torch.manual_seed(int(cfg["seed"]))
    data = datasets.load(cfg["dataset"], cfg.get("data_dir"), device)
    task = tasks.build(cfg["task"], data, device)
    est = build_estimator(cfg)
    est.check_latents(*task.latent_shape)
    trainer = Trainer(task, est, data, int(cfg["train"]["batch_size"]), float(cfg["train"]["lr"]))

    meta = {"estimator": cfg["estimator"]["name"], "task": cfg["task"]["name"],
            "dataset": cfg["dataset"]["name"], "seed": cfg["seed"],
            "temperature": est.describe().get("temperature", math.nan),
            "device": str(device), "git_sha": git_sha(), "config": cfg,
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    rec = store.start(h, meta)
    log.info(f"[{label}] run {rec.run_id} -> {rec.dir}")

    tr, ev = cfg["train"], cfg["eval"]
    steps, bs = int(tr["steps"]), trainer.batch_size
    check_every = int(tr.get("check_every", 1))
    every = int(ev["every"])
    grad_m = int(ev.get("grad_samples", 0))
    x_fixed = data.eval_split("train")[:bs]  # the fixed minibatch for grad_var
    clock = StepClock(device, steps, float(cfg.get("progress", {}).get("every_s", 10)))
    obj_sum = torch.zeros((), device=device)
    obj_count = 0

    def evaluate(step: int, final: bool = False) -> None:
        nonlocal obj_sum, obj_count
        metrics = evaluation_metrics(task, est, data, ev, int(cfg["seed"]), step, final,
                                     x_fixed, grad_m, device)
        if obj_count:
            metrics["train_objective"] = obj_sum.item() / obj_count
            obj_sum, obj_count = torch.zeros((), device=device), 0
        metrics.update(clock.timing_metrics())
        wall = clock.wall()
        if final:
            metrics["wall_s"] = wall
        rec.write(step, metrics, wall)
        shown = " ".join(f"{k}={metrics[k]:.3f}" for k in ("test_neg_elbo", "test_nll")
                         if k in metrics)
        log.info(f"[{label}] step {step}/{steps} {shown}")

    if ev.get("at_start", True):
        evaluate(0)
    task.train()
    clock.start()

    def diverged(step: int) -> str:
        log.warning(f"[{label}] diverged: non-finite objective or gradient at step {step}")
        rec.write(step, {"diverged": step}, clock.wall())
        rec.finish("diverged", step=step)
        return "diverged"

    for step in range(1, steps + 1):
        check = step % check_every == 0
        obj_sum += trainer.step(step - 1, check=check)
        obj_count += 1
        if check and not torch.isfinite(obj_sum):
            # the objective of this step is computed from the parameters that the
            # previous step's update produced: if they are not finite, that step's
            # gradient was (with check_every > 1, the step is the check's)
            before = check_every == 1 and step > 1 and not trainer.params_finite()
            return diverged(step - 1 if before else step)
        is_eval = step % every == 0 or step == steps
        if is_eval and not trainer.params_finite():  # this step's gradient
            return diverged(step)
        clock.after_step(step, check, is_eval, lambda t: evaluate(t, final=t == steps), label)
    if tr.get("save_model", True) and isinstance(task, torch.nn.Module):
        rec.save_model(task.state_dict())
    rec.finish("complete", wall_s=clock.wall())
    log.info(f"[{label}] complete in {clock.wall():.1f}s")
    return "complete"
