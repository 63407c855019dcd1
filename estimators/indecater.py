"""IndeCateR (De Smet, Sansone & Zuidberg Dos Martires 2023, "Differentiable
sampling of categorical distributions using the CatLog-derivative trick",
the IndeCateR estimator for independent variables): each variable is
Rao-Blackwellised by summing f over its K values, the others sampled,

    d/dtheta_i E_q f(z) = E_{z_{-i} ~ q} [ sum_k d q_i(k)/dtheta_i  f(z_{-i}, z_i = k) ]
                  ~ 1/S sum_s sum_k d q_i(k)/dtheta_i  f(z_s^{i <- k}),

with the same S samples z_1..z_S ~ q for every i. Parameters inside f get
1/S sum_s mean_i sum_k q_i(k) d f(z_s^{i <- k}) (each i's term is an unbiased
estimate of E f). Unbiased; exact (zero variance) when N = 1. Cost: S * N * K
evaluations of f, all in one call. ``out.loss`` is the mean of f(z_s).
"""

import torch

from ._local import f_at_alternatives
from ._multisample import check_samples
from .base import Estimator, EstimatorOutput, register, sample_one_hot, softmax


@register("indecater")
class IndeCateR(Estimator):
    unbiased = True
    hard_forward = True

    def __init__(self, samples: int = 1):
        super().__init__()
        self.samples = check_samples(samples, minimum=1)

    def estimate(self, logits, f):
        s, (b, n, k) = self.samples, logits.shape
        z = sample_one_hot(logits.detach().expand(s, b, n, k))  # (S, B, N, K)
        every = torch.eye(k, dtype=logits.dtype, device=logits.device).expand(s, b, n, k, k)
        fz = f_at_alternatives(f, z, every)  # (S, B, N, K): f(z_s^{i <- k})
        q = softmax(logits)  # (B, N, K)
        v = fz.detach()
        value = (q.detach() * fz).sum(-1).mean((0, 2))  # (B,): unbiased for E f, each i
        score = ((q - q.detach()) * v).sum((-1, -2)).mean(0)  # sum_i sum_k dq_i(k) f
        loss = (z * v).sum(-1).mean((0, 2))  # f(z_s): the drawn value of variable i
        return EstimatorOutput(loss=loss, surrogate=(value + score).mean(), sample=z)
