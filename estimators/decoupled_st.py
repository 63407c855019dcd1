"""Decoupled straight-through Gumbel-Softmax (Shah, Yan, Mozer & Liu 2024,
"Improving discrete optimisation via decoupled straight-through Gumbel-Softmax"):
ST Gumbel-Softmax with one temperature for the forward sample and another for
the backward relaxation,

    u = theta / tau_f + G,   G ~ Gumbel(0, 1)^K,
    forward   D = one_hot(argmax u)              ~ Categorical(softmax(theta / tau_f)),
    backward  y = softmax(u / tau_b),            g = df/dD . dy/dtheta  (G held fixed).

tau_f scales the forward stochasticity (tau_f = 1: D ~ q exactly, the default;
the Gumbel noise has scale tau_f relative to theta), tau_b the dispersion of the
backward pass; tau_f = 1 gives ``st_gumbel_softmax`` at tau = tau_b. tau_b is
``temperature`` (annealed like the other Gumbel-Softmax temperatures), tau_f is
``forward_temperature``. Biased. The estimate is a function of G
(``noise = "gumbel"``): for K = 2 the generic tests check it against its
expectation over G by quadrature. One f evaluation.
"""

from .base import (
    EstimatorOutput,
    TemperatureEstimator,
    check_positive,
    gumbel_like,
    one_hot_argmax,
    register,
    softmax,
)


@register("decoupled_st")
class DecoupledST(TemperatureEstimator):
    hard_forward = True
    noise = "gumbel"

    def __init__(self, temperature: float = 0.5, forward_temperature: float = 1.0,
                 anneal_rate: float = 0.0, anneal_every: int = 1000,
                 min_temperature: float = 0.1):
        super().__init__(temperature, anneal_rate, anneal_every, min_temperature)
        self.forward_temperature = check_positive("estimator.forward_temperature",
                                                  forward_temperature)

    def estimate(self, logits, f):
        return self.estimate_given(logits, f, gumbel_like(logits))

    def estimate_given(self, logits, f, g):
        u = logits / self.forward_temperature + g
        d = one_hot_argmax(u.detach())
        y = softmax(u / self.temperature)
        loss = f(d + y - y.detach())
        return EstimatorOutput(loss=loss, surrogate=loss.mean(), sample=d)

    def describe(self) -> dict:
        return {"temperature": self.schedule.tau0, "forward_temperature": self.forward_temperature}
