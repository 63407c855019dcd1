"""Double control variates (Titsias & Shi 2022, "Double control variates for
gradient estimation in discrete latent variable models"):
leave-one-out REINFORCE with S samples, plus a second control variate, the
first-order Taylor expansion of f with the other samples' slope
gbar_{-s} = mean_{j != s} f'(z_j), and its exact expectation:

    h_s = gbar_{-s}^T (z_s - p),
    g = 1/S sum_s [ (f(z_s) - mean_{j != s} f(z_j))
                    - alpha (h_s - mean_{j != s} h_j) ] d log q(z_s)
        + alpha J(p) mean_s f'(z_s),

with p = softmax(logits), d log q(z_s) / dlogits = z_s - p and J(p) = diag(p) -
p p^T per variable: E[h_s d log q(z_s)] = J(p) E f'(z), the straight-through
term, which the last line adds back (its estimate from all S samples is
unbiased too). Unbiased for every alpha; for f linear in z and alpha = 1 the
bracket vanishes and g is exact. The paper treats binary variables; the same
algebra holds per K-way variable. alpha (initial value ``alpha``, 0 as in the
authors' code: double_cv starts as ``reinforce_loo``) is fitted online to
minimise the variance (``_online``). A tangent slope can be a poor model of f
on the vertices (on the REBAR toy f'(b) = +-1 while f(1) - f(0) = 0.002): there
alpha = 1 has 10^5 times the variance of alpha = 0. Cost: S evaluations of f and
one backward through f at the samples.
"""

import torch

from ._online import OnlineControlVariate, Samples
from .base import register, softmax


@register("double_cv")
class DoubleCV(OnlineControlVariate):
    def __init__(self, samples: int = 4, alpha: float = 0.0, cv_lr: float = 1e-3):
        super().__init__(samples, cv_lr)
        self.alpha0 = float(alpha)
        self.alpha = None

    def cv_parameters(self, like):
        self.alpha = torch.nn.Parameter(torch.tensor(self.alpha0, dtype=like.dtype,
                                                     device=like.device))
        return [self.alpha]

    def gradient(self, logits, smp: Samples):
        p = softmax(logits)
        score = smp.z - p  # (S, B, N, K)
        h = (smp.loo(smp.grad) * score).sum((-1, -2))  # (S, B)
        signal = (smp.f - smp.loo(smp.f)) - self.alpha * (h - smp.loo(h))
        mean_grad = smp.grad.mean(0)
        st = p * (mean_grad - (p * mean_grad).sum(-1, keepdim=True))  # J(p) f'
        return (signal[..., None, None] * score).mean(0) + self.alpha * st
