"""REINFORCE / score function (Williams, 1992).

    grad E_q[f(z)] = E_q[(f(z) - b) grad log q(z)] + E_q[grad f(z)],

with an optional baseline b: ``none``, or ``ema`` -- an exponential moving
average of the mean loss over past steps. It never depends on the current
sample, so the estimator stays unbiased. ``normalize: true`` divides the
gradient reaching the logits by max(1, sigma), sigma^2 a moving average of the
variance of the learning signal f(z) - b (``estimators._normalize``; unbiased up
to that known factor, ``logit_scale``).
"""

from ._normalize import VarianceNormalized
from .base import (
    Estimator,
    EstimatorConfigError,
    EstimatorOutput,
    log_prob_one_hot,
    register,
    sample_one_hot,
)


@register("reinforce")
class Reinforce(VarianceNormalized, Estimator):
    unbiased = True
    hard_forward = True

    def __init__(self, baseline: str = "none", ema_decay: float = 0.99,
                 normalize: bool = False, normalize_decay: float = 0.8):
        super().__init__()
        self.init_normalize(normalize, normalize_decay)
        if baseline not in ("none", "ema"):
            raise EstimatorConfigError(
                f"estimator.baseline must be one of none, ema; got {baseline!r}")
        if not 0.0 <= float(ema_decay) < 1.0:
            raise EstimatorConfigError(f"estimator.ema_decay must be in [0, 1), got {ema_decay}")
        self.baseline = baseline
        self.ema_decay = float(ema_decay)
        self.b = None  # running baseline (a detached scalar tensor)

    def estimate(self, logits, f):
        scaled = self.normalized(logits)
        z = sample_one_hot(logits.detach())
        loss = f(z)
        log_q = log_prob_one_hot(scaled, z)
        signal = loss.detach()
        if self.b is not None:
            signal = signal - self.b
        surrogate = (loss + signal * log_q).mean()
        self.update_variance(signal)
        if self.baseline == "ema" and self.training:
            m = loss.detach().mean()
            self.b = m if self.b is None else self.ema_decay * self.b + (1 - self.ema_decay) * m
        return EstimatorOutput(loss=loss, surrogate=surrogate, sample=z)
