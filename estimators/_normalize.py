"""Variance normalisation of a score-function learning signal (Mnih & Gregor 2014,
NVIL), shared by ``nvil`` and the ``normalize`` option of reinforce, darn and muprop
(not an estimator itself).

With ``normalize: true`` the gradient that reaches the logits is divided by

    s = max(1, sigma),   sigma^2 = moving average of the batch variance of the
                                   learning signal over the *previous* steps,

and the gradient of every parameter inside f (the decoder) is left as it is. s is
fixed before the current sample is drawn, so an estimator that was unbiased stays
unbiased up to the known positive factor: ``s * (logits gradient)`` is unbiased,
and ``logit_scale`` holds the s of the last call (what the generic tests multiply
by). Mnih & Gregor update the averages with the current minibatch first; using
the previous steps' values instead keeps this exact and differs by one step of
the average. Dividing the whole logits gradient (for MuProp also its analytic
mean term, not only the residual signal) is what keeps the estimate a rescaled
unbiased one: the division acts like a data-driven learning rate of the encoder.
A task that adds an analytic KL outside the estimator divides that KL's logits
gradient by the same ``logit_scale`` (tasks.base.kl_logits), so the encoder's whole
gradient is rescaled, not the KL reweighted against the reconstruction.

State (checkpointable like reinforce's EMA baseline): ``signal_var``, a detached
0-d tensor or None before the first update; nothing moves while ``frozen()``.
"""

from __future__ import annotations

import torch

from .base import EstimatorConfigError

Tensor = torch.Tensor


def check_decay(key: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise EstimatorConfigError(f"{key} must be a number in [0, 1), got {value!r}") from None
    if not 0.0 <= v < 1.0:
        raise EstimatorConfigError(f"{key} must be a number in [0, 1), got {value!r}")
    return v


def ema(old: Tensor | None, new: Tensor, decay: float) -> Tensor:
    """decay * old + (1 - decay) * new, starting at the first value."""
    new = new.detach()
    return new if old is None else decay * old + (1.0 - decay) * new


class VarianceNormalized:
    """Mixin for an Estimator: ``init_normalize`` in __init__, ``normalized(logits)``
    at the start of ``estimate`` and ``update_variance(signal)`` at its end."""

    def init_normalize(self, normalize: bool, decay: float,
                       key: str = "estimator.normalize_decay") -> None:
        if not isinstance(normalize, bool):
            raise EstimatorConfigError(
                f"estimator.normalize must be true or false, got {normalize!r}")
        self.normalize = normalize
        self.normalize_decay = check_decay(key, decay)
        self.signal_var: Tensor | None = None
        self.logit_scale: Tensor | float = 1.0

    def normalized(self, logits: Tensor) -> Tensor:
        """The logits, with the gradient that reaches them divided by s = max(1, sigma);
        the same values (x - x is exactly 0)."""
        if not self.normalize or self.signal_var is None:
            self.logit_scale = 1.0
            return logits
        s = self.signal_var.sqrt().clamp(min=1.0).to(logits.dtype)
        self.logit_scale = s
        return logits.detach() + (logits - logits.detach()) / s

    def update_variance(self, signal: Tensor) -> None:
        """Fold this batch's variance of the learning signal into sigma^2 (while
        training and normalising only)."""
        if self.normalize and self.training:
            v = signal.detach().float().var(correction=0)
            self.signal_var = ema(self.signal_var, v, self.normalize_decay)
