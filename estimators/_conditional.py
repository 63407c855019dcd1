"""Gumbel noise conditioned on the sampled category, shared by REBAR, RELAX and
Gumbel-Rao (not an estimator: modules starting with "_" are not registered).

With z_k = logits_k + G_k, G_k ~ Gumbel(0, 1) i.i.d. and b = argmax_k z_k, the
conditional law of z given b is (Maddison, Tarlow & Minka 2014, "A* sampling";
Tucker et al. 2017):

* the maximum z_b ~ Gumbel(logsumexp(logits)), independent of b:
      z_b = logsumexp_k(logits_k) - log E_b,
* every other z_k ~ Gumbel(logits_k) truncated to (-inf, z_b):
      z_k = -log(exp(-z_b) + exp(-logits_k) E_k),

with E ~ Exponential(1) i.i.d. Written this way the sample is a differentiable
function of the logits for fixed noise (a reparameterisation of p(z | b)).
"""

from __future__ import annotations

import torch

from .base import uniform

Tensor = torch.Tensor


def exponential_like(x: Tensor, shape=None) -> Tensor:
    """Exponential(1) noise -log U, U clamped away from 0 and 1 (never log 0)."""
    finfo = torch.finfo(x.dtype)
    shape = x.shape if shape is None else shape
    u = uniform(shape, x).clamp_(finfo.tiny, 1.0 - finfo.eps)
    return -torch.log(u)


def conditional_gumbel(logits: Tensor, b: Tensor, sample_shape=()) -> Tensor:
    """z ~ p(logits + G | argmax = b), shape ``sample_shape + logits.shape``.

    ``b`` is one-hot over the last dimension and broadcasts against ``logits``.
    Gradients flow to ``logits`` through the reparameterisation above; detach
    the result for the noise alone.
    """
    shape = tuple(sample_shape) + tuple(torch.broadcast_shapes(logits.shape, b.shape))
    log_e = torch.log(exponential_like(logits, shape))
    top = torch.logsumexp(logits, -1, keepdim=True) - (b * log_e).sum(-1, keepdim=True)
    others = -torch.logaddexp(-top, log_e - logits)
    return torch.where(b.bool(), top, others)
