"""Concrete relaxation with Maddison et al.'s (2017) relaxed KL.

The posterior sample is drawn in log space (ExpConcrete) at temperature
lambda_1,

    y = log_softmax((logits + g) / lambda_1),   f sees exp(y),

and the KL term is the single-sample estimate (Maddison et al., section 3.3,
appendix C)

    KL ~= sum_n log q_{alpha, lambda_1}(y_n) - log p_{a, lambda_2}(y_n)

with ExpConcrete densities for the posterior (alpha = exp(logits)) and the
prior (a = exp(prior_logits), uniform by default) at their own temperatures.
Paper defaults for K = 2: lambda_1 = 2/3, lambda_2 = 1/2.
"""

import torch

from .base import (
    EstimatorOutput,
    TemperatureEstimator,
    check_positive,
    gumbel_like,
    log_softmax,
    register,
)
from .kl import exp_concrete_log_prob


@register("concrete_kl")
class ConcreteKL(TemperatureEstimator):
    relaxed = True
    kl = "concrete"

    def __init__(self, temperature: float = 2 / 3, prior_temperature: float = 0.5,
                 anneal_rate: float = 0.0, anneal_every: int = 1000,
                 min_temperature: float = 0.5):
        super().__init__(temperature, anneal_rate, anneal_every, min_temperature)
        self.prior_temperature = check_positive("estimator.prior_temperature", prior_temperature)

    def estimate(self, logits, f):
        y = log_softmax((logits + gumbel_like(logits)) / self.temperature)
        x = y.exp()
        loss = f(x)
        return EstimatorOutput(loss=loss, surrogate=loss.mean(), sample=x, log_sample=y)

    def relaxed_kl(self, out: EstimatorOutput, logits: torch.Tensor,
                   prior_logits: torch.Tensor | None = None) -> torch.Tensor:
        """Single-sample relaxed KL at the drawn sample, (B, N, K) -> (B,)."""
        y = out.log_sample
        if prior_logits is None:
            prior_logits = torch.zeros_like(logits)
        log_q = exp_concrete_log_prob(y, logits, self.temperature)
        log_p = exp_concrete_log_prob(y, prior_logits.expand_as(logits), self.prior_temperature)
        return (log_q - log_p).sum(-1)
