"""Several seeds of one config trained together in one process (``seeds=[...]``).

The S models are stacked: every parameter becomes one tensor with a leading seed
dimension, and the task's own ``loss`` runs once per step for all seeds under
``torch.func.vmap`` (``functional_call`` on the task; randomness "different", so
each seed draws its own noise). Each layer is then one batched kernel (a bmm) for
the S seeds instead of S small ones. The summed objective's backward gives every
seed exactly its own gradient (seed s's objective depends only on its slice), and
one fused Adam over the stacked tensors is S independent Adams (it is elementwise).

Two-dimensional parameters are stored transposed, (S, in, out), and handed to the
task as transposed views: a batched linear layer then multiplies contiguous
matrices in forward and backward (with (S, out, in) storage, vmap's rule for
``F.linear`` copied every weight twice a step on CPU).

What makes a config stackable is checked by ``check_stackable`` (from bench.jobs.validate):
a supported task, and an estimator with no state of its own that runs under vmap.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
import zlib

import torch
from torch.func import functional_call, vmap

import tasks
from tasks import datasets

from .config import (
    ConfigError,
    apply_cpu_settings,
    build_estimator,
    check_device,
    config_hash,
    validate,
)
from .counting import attach, cost_metrics
from .loggers import make as make_tracker
from .loop import StepClock, evaluation_metrics, git_sha
from .optim import make_optimizer, optimizer_options
from .results import Store

log = logging.getLogger("bench")

# vmap runs in-place ops without a batching rule (the estimators' clamp_ of uniforms)
# through a per-seed fallback, and says so; the numbers are the same
warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet "
                        "implemented the batching rule")

# tasks whose loss is known to run under vmap with stacked parameters
STACKABLE_TASKS = ("bernoulli_vae", "categorical_vae")
# estimator attributes that may change during a call: the step counter and
# temperature (set by the runner, the same for all seeds), the train/eval flag,
# and Exact's memo of the enumerated states (a function of the shape only)
_FREE_ATTRS = ("step", "temperature", "training", "_cache")


# --- what can be stacked -----------------------------------------------------------

def _fingerprint(v, depth: int = 0):
    """A comparable summary of an attribute's value (tensors by value)."""
    if isinstance(v, torch.Tensor):
        return ("tensor", tuple(v.shape), v.dtype, v.detach().cpu().flatten().tolist()[:1000])
    if isinstance(v, torch.nn.Module):
        return ("module", _fingerprint(v.state_dict(), depth + 1))
    if isinstance(v, torch.optim.Optimizer):
        return ("optimizer", id(v))
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return tuple(_fingerprint(x, depth + 1) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((str(k), _fingerprint(x, depth + 1)) for k, x in v.items()))
    if depth < 3 and hasattr(v, "__dict__"):
        return (type(v).__name__, _fingerprint(vars(v), depth + 1))
    return (type(v).__name__, id(v))


def _state(est) -> dict:
    return {k: _fingerprint(v) for k, v in vars(est).items() if k not in _FREE_ATTRS}


def check_stackable(cfg: dict, task) -> None:
    """Raise a one-line ConfigError for a ``seeds`` setting that cannot be stacked
    faithfully. ``task`` is the task built on validate's stand-in data."""
    seeds = cfg.get("seeds")
    if not isinstance(seeds, (list, tuple)) or not seeds:
        raise ConfigError(f"seeds must be null or a non-empty list of integers >= 0, got {seeds!r}")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ConfigError(f"seeds must be a list of integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must not repeat a seed, got {seeds!r}")
    if cfg.get("seed", 0) != 0:
        raise ConfigError(f"seeds={seeds} replaces seed; give one or the other "
                          f"(got seed={cfg['seed']!r} as well)")
    name = cfg["task"]["name"]
    if name not in STACKABLE_TASKS:
        raise ConfigError(f"seeds=[...] is not supported for task {name!r} "
                          f"(supported: {', '.join(STACKABLE_TASKS)}); use -m seed=0,1,...")
    est_name = cfg["estimator"]["name"]
    n, k = task.latent_shape
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(n, k, generator=gen)

    def f(z):
        return (z * w).sum((-1, -2))

    # 1. own parameters or mutable state, seen on a plain training call
    est = build_estimator(cfg)
    if isinstance(est, torch.nn.Module) and (list(est.parameters()) or list(est.buffers())):
        raise ConfigError(f"seeds=[...] cannot stack estimator {est_name!r}: it has its own "
                          f"parameters or buffers; use -m seed=0,1,...")
    before = _state(est)
    with torch.random.fork_rng():
        logits = torch.randn(2, n, k, generator=gen, requires_grad=True)
        est.set_step(0)
        est(logits, f).surrogate.backward()
    if est.extra_parameters():
        raise ConfigError(f"seeds=[...] cannot stack estimator {est_name!r}: it trains parameters "
                          f"of its own (a control variate); use -m seed=0,1,...")
    changed = sorted(k for k, v in _state(est).items() if before.get(k, "<absent>") != v)
    changed += sorted(set(before) - set(_state(est)))
    if changed:
        raise ConfigError(f"seeds=[...] cannot stack estimator {est_name!r}: it keeps state across "
                          f"steps ({', '.join(changed)}) that would be shared by the seeds; "
                          f"use -m seed=0,1,...")
    # 2. it must run under vmap with per-seed randomness
    est = build_estimator(cfg)
    try:
        with torch.random.fork_rng():
            logits = torch.randn(2, 2, n, k, generator=gen, requires_grad=True)
            out = vmap(lambda lg: est(lg, f).surrogate, randomness="different")(logits)
            out.sum().backward()
    except Exception as e:  # noqa: BLE001 - any failure means: not stackable
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise ConfigError(f"seeds=[...] cannot stack estimator {est_name!r}: it does not run "
                          f"under torch.func.vmap ({why}); use -m seed=0,1,...") from None


def seed_config(cfg: dict, seed: int) -> dict:
    """The config of the single run with ``seed``: what a stacked seed is recorded as."""
    out = copy.deepcopy(cfg)
    out["seed"] = int(seed)
    out["seeds"] = None
    return out


# --- the stacked training step ---------------------------------------------------------

class _Objective(torch.nn.Module):
    """The task's training objective as a module call, for functional_call."""

    def __init__(self, task, est):
        super().__init__()
        self.task = task
        self.est = [est]  # a list: not registered as a submodule

    def forward(self, x):
        return self.task.loss(x, self.est[0])[0]


class StackedTrainer:
    """S copies of one task trained as one: per seed its own initial parameters
    (those of ``task_list[i]``), its own data order (``generators[i]``, a CPU
    generator) and its own noise; one vmapped objective, one backward, one fused
    Adam for all.

    ``step`` returns the (S,) detached objectives, each made non-finite when any of
    that seed's gradients is, like ``Trainer.step``.
    """

    def __init__(self, task_list, est, data, batch_size: int, lr: float, generators,
                 optim: dict | None = None):

        self.est, self.data, self.lr = est, data, float(lr)
        self.optim = dict(optim or {})  # make_optimizer's options (train.optimizer, ...)
        self.make_optimizer = make_optimizer
        self.n = data.size("train")
        self.batch_size = min(int(batch_size), self.n)
        self.device = data.splits["train"].device
        self.gens = list(generators)
        self.pos, self.perms = self.n, None
        if any(True for _ in task_list[0].buffers()):
            raise ConfigError("seeds=[...]: tasks with buffers cannot be stacked")
        self.names = [name for name, _ in task_list[0].named_parameters()]
        self.params = {}
        for name in self.names:
            vals = [dict(t.named_parameters())[name].detach() for t in task_list]
            p = torch.stack([v.t() if v.dim() == 2 else v for v in vals]).contiguous()
            self.params[name] = p.requires_grad_(True)
        self.opt = make_optimizer(list(self.params.values()), self.lr, **self.optim)
        self.counter = attach(est)  # f's evaluations, per seed under vmap (bench.counting)
        objective = _Objective(copy.deepcopy(task_list[0]), est)
        objective.train()

        def one(params, x):
            return functional_call(objective, {"task." + k: v for k, v in params.items()}, (x,))
        self._objective = vmap(one, randomness="different")

    @property
    def size(self) -> int:
        return len(self.gens)

    def views(self) -> dict:
        """Parameters as the task has them, with a leading seed dimension."""
        return {k: (p.transpose(1, 2) if p.dim() == 3 else p) for k, p in self.params.items()}

    def load_into(self, i: int, task) -> None:
        """Copy seed i's parameters into a task of the same config."""
        views = self.views()
        with torch.no_grad():
            for name, p in task.named_parameters():
                p.copy_(views[name][i])

    def next_batch(self):
        if self.pos + self.batch_size > self.n:
            self.perms = torch.stack([torch.randperm(self.n, generator=g) for g in self.gens])
            self.perms, self.pos = self.perms.to(self.device), 0
        idx = self.perms[:, self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return self.data.train_batch(idx)  # (S, B, ...)

    def step(self, step: int) -> torch.Tensor:
        self.est.set_step(step)
        obj = self._objective(self.views(), self.next_batch())  # (S,)
        self.opt.zero_grad(set_to_none=True)
        obj.sum().backward()
        self.opt.step()
        # a non-finite gradient element makes Adam's update NaN, and so does an update
        # that overflows: a seed whose parameters are not all finite has diverged here
        ok = torch.stack([torch.isfinite(p.detach()).flatten(1).all(1)
                          for p in self.params.values()]).all(0)
        return obj.detach().masked_fill(~ok, math.nan)

    def keep(self, rows: list[int]) -> None:
        """Go on with the seeds at positions ``rows`` only (the others diverged): their
        parameters and Adam moments are carried over, nothing of the others."""
        idx = torch.tensor(rows, device=self.device)
        old = self.params
        self.params = {k: p.detach()[idx].clone().requires_grad_(True) for k, p in old.items()}
        opt = self.make_optimizer(list(self.params.values()), self.lr, **self.optim)
        for k, p in old.items():
            state = self.opt.state.get(p, {})
            opt.state[self.params[k]] = {
                key: (v[idx].clone() if torch.is_tensor(v) and v.dim() > 0 else
                      v.clone() if torch.is_tensor(v) else v)
                for key, v in state.items()}
        self.opt = opt
        self.gens = [self.gens[i] for i in rows]
        if self.perms is not None:
            self.perms = self.perms[idx]


# --- the job -----------------------------------------------------------------------------

def run(cfg: dict) -> dict:
    """Train the seeds of ``cfg['seeds']`` together; each is recorded as the single run
    with that seed. Returns {seed: status}."""
    check_stackable(cfg, validate(cfg))
    store = Store(cfg["results_dir"])
    name = f"{cfg['estimator']['name']}|{cfg['task']['name']}|{cfg['dataset']['name']}"
    statuses, todo = {}, []
    skip = cfg.get("skip_complete", True)
    stale_s = float((cfg.get("store") or {}).get("lock_stale_s", 300))
    locks = []  # one per seed trained here, claimed before anything trains
    try:
        for s in cfg["seeds"]:
            scfg = seed_config(cfg, s)
            h = config_hash(scfg)
            if skip and (done := store.status(h, log)):
                log.info(f"[{name}|seed={s}] skipped: config {h} already {done} in {store.root}")
                statuses[s] = "skipped"
            elif (lock := store.claim(h, f"{name}|seed={s}", log, stale_s, skip)) is None:
                statuses[s] = "skipped"
            else:
                locks.append(lock)
                todo.append((s, scfg, h))
        if not todo:
            return statuses
        return _train(cfg, store, name, statuses, todo)
    finally:
        for lock in locks:
            lock.release()


def _train(cfg: dict, store: Store, name: str, statuses: dict, todo: list) -> dict:
    device = check_device(str(cfg["device"]))
    apply_cpu_settings(cfg)
    data = datasets.load(cfg["dataset"], cfg.get("data_dir"), device)
    task_list, gens = [], []
    for s, _, _ in todo:
        torch.manual_seed(int(s))  # as a single run with seed=s: same initial parameters
        task_list.append(tasks.build(cfg["task"], data, device))
        # and the same data order: its randperm stream continues from here
        gens.append(torch.Generator().set_state(torch.get_rng_state()))
    est = build_estimator(cfg)
    est.check_latents(*task_list[0].latent_shape)
    # the noise of the stacked steps: one stream for the seeds trained together
    torch.manual_seed(zlib.crc32(("stacked:" + ",".join(str(s) for s, _, _ in todo)).encode()))
    trainer = StackedTrainer(task_list, est, data, int(cfg["train"]["batch_size"]),
                             float(cfg["train"]["lr"]), gens, optimizer_options(cfg["train"]))

    stacked = [s for s, _, _ in todo]
    active = []  # per position in the stack: seed, config, record, task copy, label
    for (s, scfg, h), task in zip(todo, task_list):
        meta = {"estimator": cfg["estimator"]["name"], "task": cfg["task"]["name"],
                "dataset": cfg["dataset"]["name"], "seed": s,
                "temperature": est.describe().get("temperature", math.nan),
                "device": str(device), "git_sha": git_sha(), "config": scfg,
                "torch": torch.__version__, "threads": torch.get_num_threads(),
                "stacked_seeds": stacked}
        rec = store.start(h, meta)
        label = f"{name}|seed={s}"
        log.info(f"[{label}] run {rec.run_id} -> {rec.dir} (stacked with seeds {stacked})")
        active.append({"seed": s, "rec": rec, "task": task, "label": label,
                       "tracker": make_tracker(scfg, rec.run_id, label)})

    tr, ev = cfg["train"], cfg["eval"]
    steps, bs = int(tr["steps"]), trainer.batch_size
    if 0 < int(tr.get("checkpoint_every", 0) or 0) < steps:
        log.info(f"[{name}] seeds=[...] runs are not checkpointed: an interrupted one starts "
                 f"again from step 0 (train one seed per process to resume mid-run)")
    check_every = int(tr.get("check_every", 1))
    every = int(ev["every"])
    grad_m = int(ev.get("grad_samples", 0))
    x_fixed = data.eval_split("train")[:bs]
    clock = StepClock(device, steps, float(cfg.get("progress", {}).get("every_s", 10)),
                      unit="stacked steps/s", eval_cfg=ev)
    obj_sum = torch.zeros(len(active), device=device)
    obj_count = 0

    def evaluate(step: int, final: bool = False) -> None:
        nonlocal obj_sum, obj_count
        for i, a in enumerate(active):
            trainer.load_into(i, a["task"])
            metrics = evaluation_metrics(a["task"], est, data, ev, int(a["seed"]), step, final,
                                         x_fixed, grad_m, device)
            if obj_count:
                metrics["train_objective"] = obj_sum[i].item() / obj_count
            metrics.update(clock.timing_metrics())
            metrics.update(cost_metrics(trainer.counter.n, step))
            wall = clock.wall()
            if final:
                metrics["wall_s"] = wall
            a["rec"].write(step, metrics, wall)
            a["tracker"].log(step, metrics)
            shown = " ".join(f"{k}={metrics[k]:.3f}" for k in ("test_neg_elbo", "test_nll")
                             if k in metrics)
            log.info(f"[{a['label']}] step {step}/{steps} {shown}")
        obj_sum, obj_count = torch.zeros(len(active), device=device), 0

    if ev.get("at_start", True):
        clock.evaluation(0, evaluate, name)
    clock.start()
    for step in range(1, steps + 1):
        obj_sum += trainer.step(step - 1)
        obj_count += 1
        check = step % check_every == 0
        if check:
            finite = torch.isfinite(obj_sum).tolist()
            if not all(finite):
                wall = clock.wall()
                for a, ok in zip(active, finite):
                    if not ok:
                        log.warning(f"[{a['label']}] diverged: non-finite objective or "
                                    f"gradient at step {step}")
                        a["rec"].write(step, {"diverged": step}, wall)
                        a["rec"].finish("diverged", step=step)
                        a["tracker"].close("diverged")
                        statuses[a["seed"]] = "diverged"
                rows = [i for i, ok in enumerate(finite) if ok]
                active[:] = [active[i] for i in rows]
                if not active:
                    clock.close()
                    return statuses
                trainer.keep(rows)
                obj_sum = obj_sum[rows]
        is_eval = step % every == 0 or step == steps
        clock.after_step(step, check, is_eval, lambda t: evaluate(t, final=t == steps),
                         f"{name}|seeds={[a['seed'] for a in active]}")
    wall = clock.wall()
    clock.close()
    for i, a in enumerate(active):
        if tr.get("save_model", True) and isinstance(a["task"], torch.nn.Module):
            trainer.load_into(i, a["task"])
            a["rec"].save_model(a["task"].state_dict())
        a["rec"].finish("complete", wall_s=wall)
        a["tracker"].close("complete")
        statuses[a["seed"]] = "complete"
        log.info(f"[{a['label']}] complete in {wall:.1f}s (stacked)")
    return statuses
