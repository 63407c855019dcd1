"""Straight-through (Bengio et al., 2013): the forward pass uses a hard one-hot
sample z ~ q, the backward pass treats dz/dlogits as d softmax(logits)/dlogits.

    z_st = z + p - stopgrad(p),   p = softmax(logits)

For K = 2 this is the Bernoulli straight-through estimator.
"""

from .base import Estimator, EstimatorOutput, register, sample_one_hot, softmax


@register("straight_through")
class StraightThrough(Estimator):
    hard_forward = True

    def __init__(self):
        super().__init__()

    def estimate(self, logits, f):
        p = softmax(logits)
        z = sample_one_hot(logits.detach())
        z_st = z + p - p.detach()
        loss = f(z_st)
        return EstimatorOutput(loss=loss, surrogate=loss.mean(), sample=z)
