"""KL divergences: the analytic categorical KL and the Concrete log-densities
behind Maddison et al.'s relaxed KL."""

from __future__ import annotations

import math

import torch

from .base import log_softmax

Tensor = torch.Tensor


def categorical_kl(logits: Tensor, prior_logits: Tensor | None = None) -> Tensor:
    """KL(q || p) summed over the N variables, (B, N, K) -> (B,).

    Each of the N variables has its own softmax over its K categories; the
    prior defaults to uniform (log p_k = -log K).
    """
    log_q = log_softmax(logits)
    if prior_logits is None:
        return (log_q.exp() * (log_q + math.log(logits.shape[-1]))).sum((-1, -2))
    log_p = torch.log_softmax(prior_logits, -1).expand_as(log_q)
    return (log_q.exp() * (log_q - log_p)).sum((-1, -2))


def exp_concrete_log_prob(y: Tensor, logits: Tensor, temperature: float) -> Tensor:
    """Log-density of ExpConcrete(alpha = exp(logits), lambda) at y (a point whose
    exp lies on the simplex), per variable: (..., K) -> (...).

    Maddison et al. (2017), appendix C:
    log p(y) = log (K-1)! + (K-1) log lambda + sum_k (log a_k - lambda y_k)
               - K logsumexp_k (log a_k - lambda y_k).
    """
    k = y.shape[-1]
    lam = float(temperature)
    t = logits - lam * y
    return (math.lgamma(k) + (k - 1) * math.log(lam)
            + t.sum(-1) - k * torch.logsumexp(t, -1))


def concrete_log_prob(x: Tensor, logits: Tensor, temperature: float) -> Tensor:
    """Log-density of Concrete(alpha, lambda) on the simplex (w.r.t. Lebesgue
    measure on its first K-1 coordinates), Maddison et al. (2017) definition 1:
    (K-1)! lambda^(K-1) prod_k a_k x_k^(-lambda-1) / (sum_i a_i x_i^(-lambda))^K.
    """
    log_x = torch.log(x)
    return exp_concrete_log_prob(log_x, logits, temperature) - log_x.sum(-1)
