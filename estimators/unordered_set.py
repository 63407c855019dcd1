"""The unordered set estimator with its built-in baseline (Kool, van Hoof &
Welling 2020, "Estimating gradients for discrete random variables by sampling
without replacement", the estimator e^USBL): k distinct joint states
S = {s_1..s_k} drawn without replacement from q, and

    g = sum_{s in S} p(s) R(S, s) d log p(s) [ f(s) - b(S, s) ],
    b(S, s) = sum_{s' in S} p(s') R^{D\\s}(S, s') f(s'),

    R(S, s) = p^{D\\s}(S \\ {s}) / p(S),
    R^{D\\s}(S, s') = p^{D\\{s,s'}}(S \\ {s, s'}) / p^{D\\s}(S \\ {s})  (s' != s),   1 (s' = s),

where p^{D\\C}(A) is the probability that sampling |A| states without
replacement from q restricted to the domain without C gives the set A. For
Gumbel-top-k sampling these are one-dimensional integrals (their appendix),
with a_t = p(t) / (1 - p(S)) for every t in S and any C in S:

    p^{D\\C}(S \\ C) = int_0^1 prod_{t in S \\ C} (1 - u^{a_t}) du
                    = int_0^inf e^{-x} prod_{t in S \\ C} (1 - e^{-a_t x}) dx,

computed by the trapezoid rule on x = e^v. b(S, s) is an unbiased estimate of
E f given s in S (p(s) f(s) plus the k - 1 other samples' unordered-set
estimate of the rest), so the baseline has zero mean: g is unbiased, for k >= 2.
The k states are sampled over the joint of the N independent variables by
stochastic beam search (Kool, van Hoof & Welling 2019): exact Gumbel-top-k over
the K^N states, one variable at a time. k = ``samples`` (capped at K^N, when
the estimate is exact); f is evaluated at the k states in one call. Parameters
inside f get sum_s p(s) R(S, s) d f(s), an unbiased estimate of E d f, which is
also ``out.loss``'s value (the unordered-set estimate of E f).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._multisample import check_samples
from .base import Estimator, EstimatorOutput, gumbel_like, log_prob_one_hot, log_softmax, register

Tensor = torch.Tensor

# quadrature grid in v = log x: the integrand e^{-x} x prod(...) is smooth and
# decays doubly exponentially in v, so the trapezoid rule converges exponentially
# (200 points: relative error ~1e-12 against 20000 points on a wider range, for
# log a_t ~ N(0, 16)); below x = e^-30 the integral is < 1e-13, above e^4.6 < e^-99
_V = torch.linspace(-30.0, 4.6, 200, dtype=torch.float64)


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - e^x) for x <= 0, accurate at both ends (-inf at x = 0)."""
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def truncated_gumbel(phi: Tensor, top: Tensor) -> Tensor:
    """Gumbels with locations phi (..., K) conditioned on their maximum being
    ``top`` (...): the children of a beam with perturbed log-probability top."""
    g = phi + gumbel_like(phi)
    z = g.max(-1, keepdim=True).values
    v = top[..., None] - g + log1mexp(g - z)
    return top[..., None] - v.clamp(min=0) - torch.log1p(torch.exp(-v.abs()))


def beam_sample(log_q: Tensor, k: int) -> Tensor:
    """k distinct joint states, as category indices (k, B, N), sampled without
    replacement from prod_n q_n (log_q (B, N, K), detached): stochastic beam
    search, i.e. the top k of log p(s) + Gumbel over all K^N states."""
    b, n, kk = log_q.shape
    ninf = torch.tensor(float("-inf"), dtype=log_q.dtype, device=log_q.device)
    log_p = torch.zeros(b, k, dtype=log_q.dtype, device=log_q.device)
    top = torch.full((b, k), float("-inf"), dtype=log_q.dtype, device=log_q.device)
    top[:, 0] = gumbel_like(top[:, 0])  # the root: max over all states ~ Gumbel(0)
    idx = torch.zeros(b, k, 0, dtype=torch.long, device=log_q.device)
    for i in range(n):
        phi = log_p[..., None] + log_q[:, None, i, :]  # (B, k, K)
        valid = torch.isfinite(top)
        safe_top = torch.where(valid, top, torch.zeros_like(top))
        child = torch.where(valid[..., None], truncated_gumbel(phi, safe_top), ninf)
        best = child.flatten(1).topk(k, -1).indices  # (B, k)
        parent, cat = best // kk, best % kk
        idx = torch.cat([idx.gather(1, parent[..., None].expand(-1, -1, i)), cat[..., None]], -1)
        log_p = phi.flatten(1).gather(1, best)
        top = child.flatten(1).gather(1, best)
    return idx.permute(1, 0, 2)


def set_log_integrals(log_a: Tensor, chunk_elems: int = 1 << 22):
    """For a_t = exp(log_a) (k, B): the logs of I_full (B), I_minus[s] (k, B) and
    I_minus2[s, s'] (k, k, B), I = int_0^inf e^-x prod_{t in S minus the named}
    (1 - e^{-a_t x}) dx, in float64 and in log space (with N = 200 variables the
    states' probabilities, and so these integrals, are far below float32's range)."""
    k, b = log_a.shape
    v = _V.to(log_a.device)
    x = v.exp()
    log_w = -x + v + torch.log(v[1] - v[0])  # e^-x x dv, trapezoid ends halved
    log_w[0] -= math.log(2.0)
    log_w[-1] -= math.log(2.0)
    la = log_a.to(torch.float64).T  # (B, k)
    out_full, out_1, out_2 = [], [], []
    step = max(1, chunk_elems // (len(v) * k * k))
    for r in range(0, b, step):
        a = la[r:r + step].exp()  # (R, k), may be inf
        lt = log1mexp(-(a[None] * x[:, None, None]))  # (P, R, k): log(1 - e^{-a x})
        full = lt.sum(-1) + log_w[:, None]  # (P, R)
        minus1 = full[..., None] - lt  # (P, R, k)
        minus2 = minus1[..., None] - lt[..., None, :]  # (P, R, k, k)
        out_full.append(torch.logsumexp(full, 0))
        out_1.append(torch.logsumexp(minus1, 0))
        out_2.append(torch.logsumexp(minus2, 0))
    return torch.cat(out_full), torch.cat(out_1).T, torch.cat(out_2).permute(1, 2, 0)


def leave_out_weights(log_p: Tensor):
    """p(s) R(S, s) (k, B) and p(s') R^{D\\s}(S, s') (k, k, B; [s, s']) from the
    states' log-probabilities log_p (k, B), formed in log space."""
    k = log_p.shape[0]
    lp = log_p.to(torch.float64)
    log_rest = log1mexp(torch.logsumexp(lp, 0).clamp(max=0.0))  # log(1 - p(S))
    full, minus1, minus2 = set_log_integrals(lp - log_rest)
    weight = (lp + minus1 - full).exp()
    other = (lp[None] + minus2 - minus1[:, None]).exp()
    eye = torch.eye(k, dtype=torch.bool, device=log_p.device)[..., None]
    other = torch.where(eye, lp.exp()[None].expand_as(other), other)  # R^{D\\s}(S, s) = 1
    return weight.to(log_p.dtype), other.to(log_p.dtype)


@register("unordered_set")
class UnorderedSet(Estimator):
    unbiased = True
    hard_forward = True

    def __init__(self, samples: int = 4):
        super().__init__()
        self.samples = check_samples(samples)

    def estimate(self, logits, f):
        b, n, kk = logits.shape
        k = self.samples if n * math.log(kk) >= math.log(self.samples) else kk ** n
        log_q = log_softmax(logits.detach())
        idx = beam_sample(log_q, k)  # (k, B, N)
        z = F.one_hot(idx, kk).to(logits.dtype)  # (k, B, N, K)
        fz = f(z)  # (k, B)
        log_p = log_prob_one_hot(logits, z)  # (k, B), with gradient
        lp = log_p.detach()
        weight, other = leave_out_weights(lp)  # p(s) R(S, s); p(s') R^{D\\s}(S, s')
        v = fz.detach()
        baseline = (other * v[None]).sum(1)  # b(S, s), (k, B)
        value = (weight * fz).sum(0)  # (B,): unbiased for E f
        score = (weight * (v - baseline) * (log_p - lp)).sum(0)
        return EstimatorOutput(loss=value.detach(), surrogate=(value + score).mean(), sample=z)
