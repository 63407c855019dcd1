"""ZGR, the zero-temperature limit of Gumbel-Rao (Shekhovtsov 2023, "Cold
analysis of Rao-Blackwellized straight-through Gumbel-Softmax gradient
estimator", the ZGR estimator): the average of straight-through and of DARN
centred at the mean, per variable n with p = softmax(theta_n), x = the one-hot
sample and f' = df/dx at the sample,

    g_n = 1/2 [ J(p) f'_n  +  (f'_n^T (x_n - p)) d log p(x_n) ],
    J(p) = diag(p) - p p^T,   d log p(x_n) / d theta_n = x_n - p,

implemented as a surrogate for x in the forward pass,

    x + 1/2 (p - stopgrad p) + 1/2 stopgrad(x - p) (log p_x - stopgrad log p_x).

Biased in general, exact in expectation when f is quadratic in x (the generic
objective is); for K = 2 it coincides with ``darn`` (centred at 1/2). The
estimate is a function of x alone (``noise = "sample"``): the generic tests check
it against its expectation by enumeration. One f evaluation.
"""

from .base import (
    Estimator,
    EstimatorOutput,
    log_softmax,
    register,
    sample_one_hot,
    softmax,
)


@register("zgr")
class ZGR(Estimator):
    hard_forward = True
    noise = "sample"

    def __init__(self):
        super().__init__()

    def estimate(self, logits, f):
        return self.estimate_given(logits, f, sample_one_hot(logits.detach()))

    def estimate_given(self, logits, f, x):
        p = softmax(logits)
        log_px = (log_softmax(logits) * x).sum(-1, keepdim=True)
        st = p - p.detach()
        darn = (x - p).detach() * (log_px - log_px.detach())
        loss = f(x + 0.5 * (st + darn))
        return EstimatorOutput(loss=loss, surrogate=loss.mean(), sample=x)
