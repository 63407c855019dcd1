"""One training run: data on the device, the estimator's objective, evaluation
on the discrete model, rows into the results store."""

from __future__ import annotations

import logging
import math

import torch

import tasks
from tasks import datasets

from . import checkpoint
from .config import (
    ConfigError,
    apply_cpu_settings,
    build_estimator,
    check_device,
    config_hash,
    validate,
)
from .counting import cost_metrics
from .loggers import make as make_tracker
from .loop import StepClock, Trainer, evaluation_metrics, git_sha
from .optim import optimizer_options
from .results import Run, Store

log = logging.getLogger("bench")


def run(cfg: dict) -> str | dict:
    """Train and evaluate one config (one seed); returns its status (complete,
    diverged, skipped). Several seeds at once (``seeds=[...]``) go through
    bench.jobs.run, which hands them to bench.stacked."""
    if cfg.get("seeds") is not None:
        raise ConfigError("seeds=[...] is trained by bench.jobs.run (bench.stacked), "
                          "not bench.train.run")
    validate(cfg)
    h = config_hash(cfg)
    store = Store(cfg["results_dir"])
    label = (f"{cfg['estimator']['name']}|{cfg['task']['name']}|{cfg['dataset']['name']}"
             f"|seed={cfg['seed']}")
    if cfg.get("skip_complete", True) and (done := store.status(h, log)):
        log.info(f"[{label}] skipped: config {h} already {done} in {store.root}")
        return "skipped"
    # one process per config: claimed before anything trains (or resumes)
    lock = store.claim(h, label, log, lock_stale_s(cfg), cfg.get("skip_complete", True))
    if lock is None:
        return "skipped"
    try:
        return _train(cfg, h, store, label)
    finally:
        lock.release()


def lock_stale_s(cfg: dict) -> float:
    return float((cfg.get("store") or {}).get("lock_stale_s", 300))


def _train(cfg: dict, h: str, store: Store, label: str) -> str:
    device = check_device(str(cfg["device"]))
    apply_cpu_settings(cfg)
    torch.manual_seed(int(cfg["seed"]))
    data = datasets.load(cfg["dataset"], cfg.get("data_dir"), device)
    task = tasks.build(cfg["task"], data, device)
    est = build_estimator(cfg)
    est.check_latents(*task.latent_shape)
    trainer = Trainer(task, est, data, int(cfg["train"]["batch_size"]), float(cfg["train"]["lr"]),
                      optimizer_options(cfg["train"]))

    meta = {"estimator": cfg["estimator"]["name"], "task": cfg["task"]["name"],
            "dataset": cfg["dataset"]["name"], "seed": cfg["seed"],
            "temperature": est.describe().get("temperature", math.nan),
            "device": str(device), "git_sha": git_sha(), "config": cfg,
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    ckpt_every = int(cfg["train"].get("checkpoint_every", 0) or 0)
    resume = checkpoint.find(store.runs, h, device)
    if resume is not None:
        rec = Run(resume.run_dir, resume.run_id, h, resume.meta)
        if resume.meta.get("git_sha") != meta["git_sha"]:
            log.warning(f"[{label}] resuming run {rec.run_id} started at code version "
                        f"{resume.meta.get('git_sha')}; this process runs {meta['git_sha']}")
    else:
        rec = store.start(h, meta)
        log.info(f"[{label}] run {rec.run_id} -> {rec.dir}")
    tracker = make_tracker(cfg, rec.run_id, label)  # logger=...: a mirror of the rows

    tr, ev = cfg["train"], cfg["eval"]
    steps, bs = int(tr["steps"]), trainer.batch_size
    check_every = int(tr.get("check_every", 1))
    every = int(ev["every"])
    grad_m = int(ev.get("grad_samples", 0))
    x_fixed = data.eval_split("train")[:bs]  # the fixed minibatch for grad_var
    clock = StepClock(device, steps, float(cfg.get("progress", {}).get("every_s", 10)),
                      eval_cfg=ev)
    clock.watch(task)
    obj_sum = torch.zeros((), device=device)
    obj_count = 0
    start, recorded = 0, set()
    if resume is not None:
        obj_sum, obj_count = checkpoint.restore(resume.state, task, est, trainer, clock)
        start, recorded = resume.step, checkpoint.recorded_steps(rec.dir)
        log.info(f"[{label}] resumed run {rec.run_id} from its checkpoint at step {start}")

    def evaluate(step: int, final: bool = False) -> None:
        nonlocal obj_sum, obj_count
        if step in recorded:  # written by the process that was stopped after its checkpoint
            obj_sum, obj_count = torch.zeros((), device=device), 0
            return
        metrics = evaluation_metrics(task, est, data, ev, int(cfg["seed"]), step, final,
                                     x_fixed, grad_m, device)
        if obj_count:
            metrics["train_objective"] = obj_sum.item() / obj_count
            obj_sum, obj_count = torch.zeros((), device=device), 0
        metrics.update(clock.timing_metrics())
        metrics.update(cost_metrics(trainer.counter.n, step))
        wall = clock.wall()
        if final:
            metrics["wall_s"] = wall
        rec.write(step, metrics, wall)
        tracker.log(step, metrics)
        shown = " ".join(f"{k}={metrics[k]:.3f}" for k in ("test_neg_elbo", "test_nll")
                         if k in metrics)
        log.info(f"[{label}] step {step}/{steps} {shown}")

    if ev.get("at_start", True) and start == 0:
        clock.evaluation(0, evaluate, label)
    task.train()
    clock.start()

    def diverged(step: int) -> str:
        log.warning(f"[{label}] diverged: non-finite objective or gradient at step {step}")
        if step not in recorded:
            rec.write(step, {"diverged": step}, clock.wall())
        rec.finish("diverged", step=step)
        checkpoint.remove(rec.dir)
        tracker.close("diverged")
        clock.close()
        return "diverged"

    with checkpoint.SigtermFlag(active=ckpt_every > 0) as sigterm:
        for step in range(start + 1, steps + 1):
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
            if sigterm.requested or (ckpt_every and step % ckpt_every == 0 and step < steps):
                checkpoint.write(rec.dir, checkpoint.capture(step, h, task, est, trainer, clock,
                                                             obj_sum, obj_count))
                if sigterm.requested:
                    log.warning(f"[{label}] SIGTERM: checkpoint written at step {step}; "
                                f"the same command resumes from it")
                    raise checkpoint.Preempted()
    if tr.get("save_model", True) and isinstance(task, torch.nn.Module):
        rec.save_model(task.state_dict())
    rec.finish("complete", wall_s=clock.wall())
    checkpoint.remove(rec.dir)
    tracker.close("complete")
    clock.close()
    log.info(f"[{label}] complete in {clock.wall():.1f}s")
    return "complete"
