"""ReinMax (Liu, Dong, Liu, Yu & Gao 2023, "Bridging discrete and
backpropagation: straight-through and beyond", the ReinMax algorithm):
straight-through with a second-order (Heun's method) backward pass. With pi_0 = softmax(theta),
a hard sample D ~ pi_0 and

    pi_1 = (D + softmax(theta / tau)) / 2,

the forward value is D and the backward pass is that of

    2 J(pi_1) - 1/2 J(pi_0),    J(p) = diag(p) - p p^T,

the softmax Jacobian evaluated at the point p. Here the term J(p)^T v is
produced by the linear surrogate p * (theta - p . theta) with p held fixed,
which has exactly that Jacobian (no log of pi_1 is needed). The paper requires
tau >= 1; smaller temperatures are refused.
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


def jacobian_at(p: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """A zero-valued tensor whose derivative w.r.t. theta is J(p) = diag(p) - p p^T."""
    p = p.detach()
    lin = p * (theta - (p * theta).sum(-1, keepdim=True))
    return lin - lin.detach()


@register("reinmax")
class ReinMax(TemperatureEstimator):
    hard_forward = True
    min_allowed_temperature = 1.0  # tau >= 1 (Liu et al. 2023)

    def __init__(self, temperature: float = 1.0, anneal_rate: float = 0.0,
                 anneal_every: int = 1000, min_temperature: float = 1.0):
        super().__init__(temperature, anneal_rate, anneal_every, min_temperature)
        if self.schedule.tau0 < self.min_allowed_temperature:
            raise EstimatorConfigError(
                f"estimator.temperature must be >= 1 for reinmax (Liu et al. 2023), "
                f"got {temperature!r}")
        if anneal_rate and self.schedule.tau_min < self.min_allowed_temperature:
            raise EstimatorConfigError(
                f"estimator.min_temperature must be >= 1 for reinmax, got {min_temperature!r}")

    def estimate(self, logits, f):
        pi0 = softmax(logits.detach())
        d = sample_one_hot(logits.detach())
        pi1 = 0.5 * (d + softmax(logits.detach() / self.temperature))
        z = d + 2.0 * jacobian_at(pi1, logits) - 0.5 * jacobian_at(pi0, logits)
        loss = f(z)
        return EstimatorOutput(loss=loss, surrogate=loss.mean(), sample=d)
