"""Straight-through (Bengio et al., 2013): the forward pass uses a hard one-hot
sample z ~ q, the backward pass treats dz/dlogits as d softmax(logits)/dlogits.

    z_st = z + p - stopgrad(p),   p = softmax(logits)

For K = 2 this is the Bernoulli straight-through estimator. The estimate is a
function of z alone (``noise = "sample"``), so its expectation
sum_z q(z) g(z) is computed by enumeration in the generic tests.
"""

from .base import Estimator, EstimatorOutput, register, sample_one_hot, softmax


@register("straight_through")
class StraightThrough(Estimator):
    hard_forward = True
    noise = "sample"

    def __init__(self):
        super().__init__()

    def estimate(self, logits, f):
        return self.estimate_given(logits, f, sample_one_hot(logits.detach()))

    def estimate_given(self, logits, f, z):
        p = softmax(logits)
        loss = f(z + p - p.detach())
        return EstimatorOutput(loss=loss, surrogate=loss.mean(), sample=z)
