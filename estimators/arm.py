"""Antithetic estimators for binary variables, in terms of the Bernoulli logit
alpha = logits[..., 1] - logits[..., 0] and one uniform vector u ~ U(0, 1)^N:

ARM (Yin & Zhou 2019, "ARM: augment-REINFORCE-merge gradient for stochastic
binary networks", Theorem 1):

    d/dalpha E f(b) = E_u[(f(1[u > s(-alpha)]) - f(1[u < s(alpha)])) (u - 1/2)],

DisARM (Dong, Mnih & Tucker 2020, "DisARM: an antithetic gradient estimator for
binary latent variables", the DisARM estimator per variable i), with the
antithetic pair
b = 1[u < s(alpha)], b~ = 1[1 - u < s(alpha)]:

    g_i = 1/2 (f(b) - f(b~)) (-1)^{b~_i} 1[b_i != b~_i] s(|alpha_i|).

s is the logistic sigmoid. f is called once on the stacked pair; parameters
inside f get the average of their gradients at both samples (each sample is
distributed as q, so that is unbiased too). K must be 2.
"""

import torch

from .base import Estimator, EstimatorOutput, register, uniform_like


def _one_hot(bits: torch.Tensor) -> torch.Tensor:
    return torch.stack([1.0 - bits, bits], -1)


class _Antithetic(Estimator):
    unbiased = True
    hard_forward = True
    binary_only = True

    def __init__(self):
        super().__init__()

    def signal(self, alpha, u, b1, b2, f1, f2):
        """Per-variable gradient w.r.t. alpha, (B, N)."""
        raise NotImplementedError

    def estimate(self, logits, f):
        alpha = logits[..., 1] - logits[..., 0]
        a = alpha.detach()
        u = uniform_like(a)
        b1 = (u > torch.sigmoid(-a)).to(a.dtype)  # = 1[1 - u < s(alpha)]
        b2 = (u < torch.sigmoid(a)).to(a.dtype)
        pair = torch.stack([_one_hot(b1), _one_hot(b2)])
        fs = f(pair)  # (2, B)
        g = self.signal(a, u, b1, b2, fs[0].detach(), fs[1].detach())
        loss = fs.mean(0)
        surrogate = loss.mean() + (g * (alpha - a)).sum() / a.shape[0]
        return EstimatorOutput(loss=loss, surrogate=surrogate, sample=pair)


@register("arm")
class ARM(_Antithetic):
    def signal(self, alpha, u, b1, b2, f1, f2):
        return (f1 - f2)[:, None] * (u - 0.5)


@register("disarm")
class DisARM(_Antithetic):
    def signal(self, alpha, u, b1, b2, f1, f2):
        # b = b2 (u < s(alpha)), b~ = b1 (1 - u < s(alpha))
        sign = 1.0 - 2.0 * b1  # (-1)^{b~_i}
        differ = (b1 != b2).to(alpha.dtype)
        return 0.5 * (f2 - f1)[:, None] * sign * differ * torch.sigmoid(alpha.abs())
