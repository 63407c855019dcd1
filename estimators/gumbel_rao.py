"""Gumbel-Rao (Paulus, Maddison & Krause 2021, "Rao-Blackwellizing the
straight-through Gumbel-Softmax gradient estimator"): the straight-through
Gumbel-Softmax estimator with its backward pass averaged over the Gumbel noise
conditioned on the sample,

    D = H(theta + G),
    g = df/dD . E[ d softmax((theta + G') / tau) / dtheta | D ]
      ~ df/dD . 1/M sum_m d softmax((theta + G'_m) / tau) / dtheta,   G'_m ~ G | D.

The conditional noise G'_m = z~_m - theta (``_conditional``) is held fixed in the
derivative, as in ST Gumbel-Softmax. f is evaluated once, at the one-hot D, so
the cost over ST-GS is M softmaxes. Same expectation as ST-GS, lower variance;
biased for the discrete objective like ST-GS. M = ``samples``.
"""

from ._conditional import conditional_gumbel
from ._multisample import check_samples
from .base import (
    EstimatorOutput,
    TemperatureEstimator,
    gumbel_like,
    one_hot_argmax,
    register,
    softmax,
)


@register("gumbel_rao")
class GumbelRao(TemperatureEstimator):
    hard_forward = True

    def __init__(self, temperature: float = 1.0, samples: int = 10, anneal_rate: float = 0.0,
                 anneal_every: int = 1000, min_temperature: float = 0.5):
        super().__init__(temperature, anneal_rate, anneal_every, min_temperature)
        self.samples = check_samples(samples, minimum=1)

    def estimate(self, logits, f):
        d = one_hot_argmax(logits.detach() + gumbel_like(logits))
        noise = (conditional_gumbel(logits.detach(), d, (self.samples,)) - logits.detach())
        y = softmax((logits + noise) / self.temperature).mean(0)
        loss = f(d + y - y.detach())
        return EstimatorOutput(loss=loss, surrogate=loss.mean(), sample=d)
