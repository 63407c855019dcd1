"""Checking a composed config before any training, and its identity hash."""

from __future__ import annotations

import hashlib
import inspect
import json
from types import SimpleNamespace

import torch

import estimators
import tasks
from tasks import datasets


class ConfigError(ValueError):
    """A bad setting; the message is one line naming the key."""


# keys that do not change the numbers a run produces; ``seeds`` (several seeds trained
# together) is recorded as one run per seed, each under the config of its single run
NON_SEMANTIC = ("results_dir", "data_dir", "skip_complete", "progress", "threads", "seeds",
                "flush_denormal", "logger", "store")
# train.* keys that do not change the numbers either (a resumed run equals an uninterrupted one)
NON_SEMANTIC_TRAIN = ("checkpoint_every",)


# keys added after runs were stored: at these values they are left out of the identity,
# so a config hashed before the key existed keeps its hash (and its stored runs)
ADDED_DEFAULTS = {"train": {"optimizer": "adam", "momentum": 0.0, "nesterov": False,
                            "weight_decay": 0.0, "betas": [0.9, 0.999]}}


def config_hash(cfg: dict) -> str:
    ident = {k: v for k, v in cfg.items() if k not in NON_SEMANTIC}
    if isinstance(ident.get("train"), dict):
        ident["train"] = {k: v for k, v in ident["train"].items() if k not in NON_SEMANTIC_TRAIN}
    for group, defaults in ADDED_DEFAULTS.items():
        if isinstance(ident.get(group), dict):
            ident[group] = {k: v for k, v in ident[group].items()
                            if not (k in defaults and _same(v, defaults[k]))}
    return hashlib.sha1(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b or (
        not isinstance(a, bool) and not isinstance(b, bool)
        and isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == b)


def _number(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float))


def _check_optimizer(train: dict) -> None:
    """train.optimizer and its options: one line naming the key."""
    from .optim import OPTIMIZERS

    name = train.get("optimizer", "adam")
    if name not in OPTIMIZERS:
        raise ConfigError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    momentum = train.get("momentum", 0.0)
    if not _number(momentum) or not 0.0 <= momentum < 1.0:
        raise ConfigError(f"train.momentum must be a number in [0, 1), got {momentum!r}")
    nesterov = train.get("nesterov", False)
    if not isinstance(nesterov, bool):
        raise ConfigError(f"train.nesterov must be true or false, got {nesterov!r}")
    wd = train.get("weight_decay", 0.0)
    if not _number(wd) or not 0.0 <= wd < float("inf"):
        raise ConfigError(f"train.weight_decay must be a finite number >= 0, got {wd!r}")
    betas = train.get("betas", [0.9, 0.999])
    if (not isinstance(betas, (list, tuple)) or len(betas) != 2
            or not all(_number(b) and 0.0 <= b < 1.0 for b in betas)):
        raise ConfigError(f"train.betas must be two numbers in [0, 1), got {betas!r}")
    if name == "sgd":
        if nesterov and momentum == 0:
            raise ConfigError("train.nesterov=true needs train.momentum > 0 (got 0)")
    elif momentum != 0 or nesterov:
        key = "train.momentum" if momentum != 0 else "train.nesterov"
        raise ConfigError(f"{key} applies to train.optimizer=sgd only (optimizer is {name!r}; "
                          f"Adam's momentum is train.betas)")


def _int(cfg, key, minimum):
    v = _get(cfg, key)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {v!r}")
    return v


def _pos_float(cfg, key):
    v = _get(cfg, key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ConfigError(f"{key} must be a number > 0, got {v!r}")
    return float(v)


def _get(cfg, key):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"missing config key {key}")
        node = node[part]
    return node


def _split_named(cfg: dict, group: str) -> tuple[str, dict]:
    sub = dict(cfg.get(group) or {})
    if "name" not in sub:
        raise ConfigError(f"{group}.name is missing")
    name = sub.pop("name")
    return name, sub


def build_estimator(cfg: dict):
    name, kwargs = _split_named(cfg, "estimator")
    return estimators.get(name, **kwargs)


def check_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device must be cpu, cuda or cuda:N, got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device} but no CUDA device is available here; use device=cpu")
    return dev


def apply_cpu_settings(cfg: dict) -> None:
    """The run's CPU settings: torch's intra-op threads, and flushing subnormal floats
    to zero (``flush_denormal``, on by default). torch sets the latter for the calling
    thread, the one that runs a step with ``threads=1``."""
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    torch.set_flush_denormal(bool(cfg.get("flush_denormal", True)))


def validate(cfg: dict) -> None:
    """Raise a one-line error for anything that would fail or mislead later."""
    try:
        _int(cfg, "seed", 0)
        _int(cfg, "train.steps", 1)
        _int(cfg, "train.batch_size", 1)
        _pos_float(cfg, "train.lr")
        _check_optimizer(_get(cfg, "train"))
        _int(cfg, "train.check_every", 1)
        if "checkpoint_every" in cfg.get("train", {}):
            _int(cfg, "train.checkpoint_every", 0)
        _int(cfg, "eval.every", 1)
        _int(cfg, "eval.batch_size", 1)
        _int(cfg, "eval.nll_samples", 0)
        if _int(cfg, "eval.grad_samples", 0) == 1:
            raise ConfigError("eval.grad_samples must be 0 (off) or >= 2, got 1")
        if cfg.get("threads") is not None:
            _int(cfg, "threads", 1)
        if not isinstance(cfg.get("flush_denormal", True), bool):
            raise ConfigError(
                f"flush_denormal must be true or false, got {cfg['flush_denormal']!r}")
        check_device(str(_get(cfg, "device")))
        est = build_estimator(cfg)
        task_name, task_kwargs = _split_named(cfg, "task")
        cls = tasks.get_class(task_name)
        allowed = [p for p in inspect.signature(cls.__init__).parameters
                   if p not in ("self", "data", "device")]
        unknown = sorted(set(task_kwargs) - set(allowed))
        if unknown:
            raise ConfigError(f"task.{unknown[0]} is not an option of {task_name!r}; "
                              f"allowed: {', '.join(allowed)}")
        ds_name = _get(cfg, "dataset.name")
        if ds_name not in datasets.names():
            allowed = ", ".join(datasets.names())
            raise ConfigError(f"unknown dataset {ds_name!r}; allowed: {allowed}")
        # build the task on a 1-pixel stand-in for the data: checks its options cheaply
        stub = SimpleNamespace(dim=1, num_classes=10, image_shape=(1, 1))
        task = cls(data=stub, device="cpu", **task_kwargs)
        est.check_latents(*task.latent_shape)
        datasets.check_available(cfg["dataset"], cfg.get("data_dir"))
    except (estimators.EstimatorConfigError, tasks.TaskConfigError, datasets.DataError) as e:
        raise ConfigError(str(e)) from None
    return task
