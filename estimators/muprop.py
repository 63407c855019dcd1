"""MuProp (Gu, Levine, Sutskever & Mnih 2016, "MuProp: unbiased backpropagation
for stochastic neural networks", with the mean-field point of a single
stochastic layer):
REINFORCE with the first-order Taylor expansion of f around the mean
zbar = E_q[z] = softmax(logits) as control variate, plus its analytic mean:

    g = [f(z) - f(zbar) - f'(zbar)^T (z - zbar)] d log q(z) + f'(zbar)^T d zbar,

(zbar held fixed inside the bracket and in f'). Unbiased: the Taylor term has
expectation f(zbar) + f'(zbar)^T (E z - zbar), whose score-function part is
replaced by its exact gradient. f is evaluated at the hard sample and at the
mean-field point (a point inside the simplex), so ``hard_forward`` is False.
Parameters inside f get d f(z) at the sample. ``normalize: true``: the whole
gradient reaching the logits (both terms) is divided by max(1, sigma), sigma^2 a
moving average of the variance of the residual signal in brackets
(``estimators._normalize``; unbiased up to that known factor, ``logit_scale``).
"""

import torch

from ._normalize import VarianceNormalized
from .base import (
    Estimator,
    EstimatorOutput,
    log_prob_one_hot,
    register,
    sample_one_hot,
    softmax,
)


@register("muprop")
class MuProp(VarianceNormalized, Estimator):
    unbiased = True

    def __init__(self, normalize: bool = False, normalize_decay: float = 0.8):
        super().__init__()
        self.init_normalize(normalize, normalize_decay)

    def estimate(self, logits, f):
        logits = self.normalized(logits)
        p = softmax(logits)
        z = sample_one_hot(logits.detach())
        with torch.enable_grad():
            zbar = p.detach().requires_grad_(True)
            fs = f(torch.stack([z, zbar]))  # (2, B)
            (fp,) = torch.autograd.grad(fs[1].sum(), zbar, retain_graph=True)
        fz = fs[0]
        with torch.no_grad():
            signal = fz - fs[1] - (fp * (z - zbar)).sum((-1, -2))
        log_q = log_prob_one_hot(logits, z)
        surrogate = (fz.mean() + (signal * (log_q - log_q.detach())).mean()
                     + (fp * (p - p.detach())).sum() / logits.shape[0])
        self.update_variance(signal)
        return EstimatorOutput(loss=fz, surrogate=surrogate, sample=z)
