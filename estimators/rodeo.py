"""RODEO (Shi, Zhou, Hwang, Titsias & Mackey 2022, "Gradient estimation with
discrete Stein operators"): leave-one-out REINFORCE with S samples plus control
variates built from a discrete Stein operator applied to a surrogate h fitted
online.

The Stein operator is the Gibbs (neighbourhood) operator of q: for any h,

    (A h)(x) = 1/N sum_i sum_c q_i(c) [ h(x^{i <- c}) - h(x) ],   E_{x ~ q}[(A h)(x)] = 0,

(x^{i <- c}: x with variable i set to category c; for binary variables the one
neighbour with variable i flipped, weighted by its probability). With
s(x) = d log q(x) / dlogits = x - p and, for each sample, a surrogate
h^{(s)} = (h0, h1) that depends on the other samples only,

    g = 1/S sum_s [ (f(z_s) - mean_{j != s} (f(z_j) + alpha (A h0^{(j)})(z_j))) s(z_s)
                    + beta (A [h1^{(s)} s])(z_s) ].

Both Stein terms have zero mean given the other samples, so g is unbiased for
every h, alpha, beta. The surrogate is a small network of the leave-one-out
first-order Taylor prediction of f and of the leave-one-out mean of f, as in
their VAE experiments:

    h^{(s)}(y) = NN( gbar_{-s}^T y - mean_{j != s} f'(z_j)^T z_j,  mean_{j != s} f(z_j) ),

gbar_{-s} = mean_{j != s} f'(z_j). The network, alpha and beta (both starting
at 0: RODEO starts as ``reinforce_loo``) are fitted online to minimise the
variance (``_online``). Cost: S evaluations of f, one backward through f at the
samples, and the network at the S N K neighbours (not f).
"""

import torch
import torch.nn as nn

from ._online import OnlineControlVariate, Samples
from .base import EstimatorConfigError, register, softmax


@register("rodeo")
class Rodeo(OnlineControlVariate):
    def __init__(self, samples: int = 4, hidden: int = 32, cv_lr: float = 1e-3):
        super().__init__(samples, cv_lr)
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise EstimatorConfigError(f"estimator.hidden must be an integer >= 1, got {hidden!r}")
        self.hidden = hidden
        self.net = self.alpha = self.beta = None

    def cv_parameters(self, like):
        self.net = nn.Sequential(nn.Linear(2, self.hidden), nn.LeakyReLU(0.3),
                                 nn.Linear(self.hidden, 2)).to(like.device)
        zero = torch.zeros((), dtype=like.dtype, device=like.device)
        self.alpha, self.beta = nn.Parameter(zero.clone()), nn.Parameter(zero.clone())
        return [*self.net.parameters(), self.alpha, self.beta]

    def surrogate(self, lin, fbar):
        """h = (h0, h1) at inputs of any shape, (..., 2)."""
        w = self.net[0].weight
        x = torch.stack([lin, fbar.expand_as(lin)], -1).to(w.dtype)
        return self.net(x).to(lin.dtype)

    def neighbour_weights(self, p):
        """q_i(c), the weight of neighbour z^{i <- c} in the Gibbs Stein operator."""
        return p

    def gradient(self, logits, smp: Samples):
        p = softmax(logits)
        z = smp.z
        n = z.shape[-2]
        score = z - p  # (S, B, N, K)
        slope = smp.loo(smp.grad)  # gbar_{-s}
        offset = smp.loo((smp.grad * z).sum((-1, -2)))  # mean_{j != s} f'(z_j)^T z_j
        fbar = smp.loo(smp.f)
        at_x = (slope * z).sum((-1, -2)) - offset  # (S, B): Taylor input at z_s
        # at the neighbour z_s^{i <- c}: replace slope_i . z_i by slope_i,c
        at_nb = at_x[..., None, None] + slope - (slope * z).sum(-1, keepdim=True)
        h_x = self.surrogate(at_x, fbar)  # (S, B, 2)
        h_nb = self.surrogate(at_nb, fbar[..., None, None])  # (S, B, N, K, 2)
        q = self.neighbour_weights(p)  # q_i(c)
        # (A h0)(z_s)
        stein0 = (q * (h_nb[..., 0] - h_x[..., None, None, 0])).sum((-1, -2)) / n
        # (A [h1 s])(z_s): s at a neighbour differs from s(z_s) in variable i only
        wts = q * h_nb[..., 1]  # q_i(c) h1(z^{i <- c})
        total = wts.sum((-1, -2))[..., None, None]
        stein1 = ((total - n * h_x[..., None, None, 1]) * score
                  + wts - wts.sum(-1, keepdim=True) * z) / n
        baseline = smp.loo(smp.f + self.alpha * stein0)
        return ((smp.f - baseline)[..., None, None] * score + self.beta * stein1).mean(0)
