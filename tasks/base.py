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

import torch

_REGISTRY: dict[str, type] = {}


def report_progress(task, done: int, total: int, what: str) -> None:
    """Tell the runner how far a pass of an evaluation has got (``done`` of ``total``
    examples of the metric ``what``); the runner sets ``task.eval_progress``
    (bench.progress), and without it this does nothing."""
    fn = getattr(task, "eval_progress", None)
    if fn is not None:
        fn(done, total, what)


def kl_logits(logits, estimator):
    """The logits as the analytic KL should see them. A variance-normalised estimator
    (``logit_scale`` s > 1, estimators/_normalize.py) divides the gradient that reaches
    the logits by s; the KL the task adds must have its logits gradient divided by the
    same s, so that the encoder's whole gradient is the -ELBO's gradient rescaled (a
    per-step learning rate of the encoder) rather than the KL weighted s times more
    than the reconstruction. Same values; the prior's gradient is not touched."""
    s = getattr(estimator, "logit_scale", 1.0)
    if not isinstance(s, torch.Tensor) and s == 1.0:
        return logits
    return logits.detach() + (logits - logits.detach()) / s


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
