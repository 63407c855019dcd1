"""Gumbel-Softmax / Concrete relaxation (Jang et al., 2017, eq. 1; Maddison et
al., 2017) and its straight-through variant (Jang et al., 2017, section 2.2).

    y = softmax((logits + g) / tau),   g_k ~ Gumbel(0, 1) i.i.d.

``gumbel_softmax`` passes y to f: an unbiased gradient of the relaxed objective
E_g[f(y)]. ``st_gumbel_softmax`` passes one_hot(argmax y) forward and
backpropagates through y.
"""

import torch

from .base import (
    EstimatorOutput,
    TemperatureEstimator,
    gumbel_like,
    one_hot_argmax,
    register,
    softmax,
)


def relaxed_sample(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return softmax((logits + gumbel_like(logits)) / temperature)


@register("gumbel_softmax")
class GumbelSoftmax(TemperatureEstimator):
    relaxed = True

    def estimate(self, logits, f):
        y = relaxed_sample(logits, self.temperature)
        loss = f(y)
        return EstimatorOutput(loss=loss, surrogate=loss.mean(), sample=y)


@register("st_gumbel_softmax")
class STGumbelSoftmax(TemperatureEstimator):
    hard_forward = True

    def estimate(self, logits, f):
        y = relaxed_sample(logits, self.temperature)
        z = one_hot_argmax(y.detach())
        loss = f(z + y - y.detach())
        return EstimatorOutput(loss=loss, surrogate=loss.mean(), sample=z)
