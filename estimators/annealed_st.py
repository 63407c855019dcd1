"""Slope-annealed straight-through (Chung, Ahn & Bengio 2017, "Hierarchical
multiscale recurrent neural networks", slope annealing; the "Annealed ST"
column of Jang et al. 2017): the forward pass uses a hard sample z ~ q, the
backward pass differentiates a softmax whose slope 1/tau grows during training,

    z_st = z + softmax(logits / tau) - stopgrad(softmax(logits / tau)),

with tau on the Gumbel-Softmax schedule tau_t = max(tau_min, tau_0 exp(-r t))
(``estimators.base.Temperature``). tau = 1 is plain straight-through.
"""


from .base import EstimatorOutput, TemperatureEstimator, register, sample_one_hot, softmax


@register("annealed_st")
class AnnealedST(TemperatureEstimator):
    hard_forward = True

    def estimate(self, logits, f):
        p = softmax(logits / self.temperature)
        z = sample_one_hot(logits.detach())
        loss = f(z + p - p.detach())
        return EstimatorOutput(loss=loss, surrogate=loss.mean(), sample=z)
