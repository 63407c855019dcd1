"""The task contract and registry.

A task builds its model from its config and the dataset, and exposes

* ``latent_shape``: (N, K), checked against the estimator before training;
* ``parameters()`` / ``encoder_parameters()``;
* ``loss(x, estimator)``: the training objective (a scalar to backpropagate)
  and the estimator's output, for a batch;
* ``evaluate(data, cfg_eval)``: metrics on the discrete model, a dict;
* ``grad_variance(x, estimator, m)``: the variance of the estimator's gradient
  w.r.t. the encoder parameters over m independent estimates.
"""

from __future__ import annotations

_REGISTRY: dict[str, type] = {}


def report_progress(task, done: int, total: int, what: str) -> None:
    """Tell the runner how far a pass of an evaluation has got (``done`` of ``total``
    examples of the metric ``what``); the runner sets ``task.eval_progress``
    (bench.progress), and without it this does nothing."""
    fn = getattr(task, "eval_progress", None)
    if fn is not None:
        fn(done, total, what)


class TaskConfigError(ValueError):
    """A bad task name or setting; its message is one line naming the key."""


def register(name: str):
    def deco(cls):
        _REGISTRY[name] = cls
        return cls
    return deco


def names() -> list[str]:
    return sorted(_REGISTRY)


def get_class(name: str):
    try:
        return _REGISTRY[name]
    except KeyError:
        raise TaskConfigError(f"unknown task {name!r}; allowed: {', '.join(names())}") from None


def build(cfg: dict, data, device="cpu"):
    cfg = dict(cfg)
    name = cfg.pop("name")
    cls = get_class(name)
    return cls(data=data, device=device, **cfg)
