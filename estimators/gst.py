"""Gapped Straight-Through (Fan, Geng, Xu, Hu & Gu 2022, "Training discrete deep
generative models via gapped straight-through estimator", the GST estimator
with a fixed gap kappa):

forward the one-hot sample D ~ q; backward through the tempered softmax of
deterministically shifted logits, no resampling of Gumbel noise:

    theta~ = theta + m(theta, D),   m = m_1 - m_2   (held constant: stopgrad),
    m_1 = (max_j theta_j - theta_D) D                   raise the sample to the max,
    m_2,j = max(0, theta_j - max_k theta_k + kappa) (1 - D_j)
                                                        push every other logit at
                                                        least kappa below it,
    g = df/dD . d softmax(theta~ / tau) / dtheta.

So theta~_D = max_j theta_j and theta~_j = min(theta_j, max_k theta_k - kappa)
for j != D: argmax theta~ = D with a gap >= kappa. The estimate is a
deterministic function of D (``noise = "sample"``); the generic tests check it
against its expectation sum_D q(D) g(D) by enumeration. Biased for the discrete
objective (a straight-through estimator). One f evaluation.
"""

import torch

from .base import (
    EstimatorConfigError,
    EstimatorOutput,
    TemperatureEstimator,
    register,
    sample_one_hot,
    softmax,
)


def gapped_logits(theta: torch.Tensor, d: torch.Tensor, gap: float) -> torch.Tensor:
    """theta + stopgrad(m_1 - m_2) for the one-hot sample d."""
    t = theta.detach()
    top = t.max(-1, keepdim=True).values
    m1 = (top - t) * d
    m2 = (t - top + gap).clamp(min=0.0) * (1.0 - d)
    return theta + (m1 - m2)


@register("gst")
class GappedST(TemperatureEstimator):
    hard_forward = True
    noise = "sample"

    def __init__(self, temperature: float = 1.0, gap: float = 1.0, anneal_rate: float = 0.0,
                 anneal_every: int = 1000, min_temperature: float = 0.5):
        super().__init__(temperature, anneal_rate, anneal_every, min_temperature)
        try:
            self.gap = float(gap)
        except (TypeError, ValueError):
            raise EstimatorConfigError(
                f"estimator.gap must be a number >= 0, got {gap!r}") from None
        if not self.gap >= 0 or self.gap == float("inf"):
            raise EstimatorConfigError(f"estimator.gap must be a finite number >= 0, got {gap!r}")

    def estimate(self, logits, f):
        return self.estimate_given(logits, f, sample_one_hot(logits.detach()))

    def estimate_given(self, logits, f, d):
        y = softmax(gapped_logits(logits, d, self.gap) / self.temperature)
        loss = f(d + y - y.detach())
        return EstimatorOutput(loss=loss, surrogate=loss.mean(), sample=d)
