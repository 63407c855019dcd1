"""Evaluation on hard samples without forming one-hots (shared by tasks/vae.py and
tasks/sbn.py): the importance-sampled bound draws ~10^7 samples per run, so its
cost is in the sampling, the decoder's first layer and the Bernoulli likelihood.

* ``gumbel_argmax``: the category indices of ``sample_one_hot`` -- the same uniform
  draws, the same float operations (done in place), so the same samples;
* ``first_layer``: a linear layer applied to one-hot inputs, as the sum of the
  weight columns the indices pick (``embedding_bag``) instead of a dense product;
  for K = 2 the layer sees the N bits (as the SBN does), a dense product half the
  size; equal to the dense product up to the order of the float additions;
* ``bernoulli_nll``: sum_d softplus(o_d) - x_d o_d, which is
  ``binary_cross_entropy_with_logits(o, x).sum(-1)`` (for any target in [0, 1]) in
  one elementwise pass and one batched dot product instead of six passes.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

Tensor = torch.Tensor


def gumbel_argmax(logits: Tensor, samples: int | None = None) -> Tensor:
    """Indices (samples, *logits.shape[:-1]) of Gumbel-max samples of softmax(logits):
    the draws ``sample_one_hot(logits.expand(samples, ...))`` makes, as indices."""
    shape = logits.shape if samples is None else torch.Size((samples, *logits.shape))
    g = torch.rand(shape.numel(), dtype=logits.dtype, device=logits.device).view(shape)
    finfo = torch.finfo(logits.dtype)
    g.clamp_(finfo.tiny, 1.0 - finfo.eps).log_().neg_().log_().neg_().add_(logits)
    if logits.shape[-1] == 2:  # argmax of two: the first on a tie
        return (g[..., 1] > g[..., 0]).long()
    return g.argmax(-1)


def gather_sum(table: Tensor, idx: Tensor) -> Tensor:
    """sum_n table[..., n, idx_n]: table (B, N, K), idx (*S, B, N) -> (*S, B); the
    value of (one_hot(idx) * table).sum((-1, -2))."""
    t = table.expand(*idx.shape, table.shape[-1])
    return t.gather(-1, idx.unsqueeze(-1)).squeeze(-1).sum(-1)


class OneHotLinear:
    """``linear(one_hot(idx).flatten(-2))`` for indices idx (*S, B, N) of K categories."""

    def __init__(self, linear: nn.Linear, n: int, k: int, bits: bool = False):
        w = linear.weight.detach()  # (H, N*K), or (H, N) when the layer sees bits
        self.n, self.k, self.bits = n, k, bits
        self.bias = linear.bias.detach() if linear.bias is not None else None
        if bits:  # the layer's input is already the N bits (SBN, K = 2)
            self.w = w
        elif k == 2:  # one-hot pairs (VAE, K = 2): w0 summed + bits @ (w1 - w0)
            self.w = (w[:, 1::2] - w[:, 0::2]).contiguous()
            w0 = w[:, 0::2].sum(1)
            self.bias = w0 if self.bias is None else self.bias + w0
        else:
            self.table = w.t().contiguous()  # (N*K, H)
            self.offsets = torch.arange(n, device=w.device) * k

    def __call__(self, idx: Tensor) -> Tensor:
        if self.bits or self.k == 2:
            return F.linear(idx.to(self.w.dtype), self.w, self.bias)
        lead = idx.shape[:-1]
        h = F.embedding_bag((idx + self.offsets).reshape(-1, self.n), self.table, mode="sum")
        h = h.view(*lead, -1)
        return h if self.bias is None else h.add_(self.bias)


_INPLACE = {nn.ReLU: torch.relu_, nn.Tanh: torch.tanh_,
            nn.ELU: lambda h: F.elu(h, inplace=True)}


def first_layer(net: nn.Sequential, n: int, k: int, bits: bool = False):
    """``net`` applied to one-hot (or, with ``bits``, 0/1) inputs given as indices,
    its activations applied in place (no autograd here: the same values)."""
    head = OneHotLinear(net[0], n, k, bits)
    rest = [_INPLACE.get(type(mod), mod) for mod in net[1:]]

    def forward(idx):
        h = head(idx)
        for mod in rest:
            h = mod(h)
        return h
    return forward


def bernoulli_nll(out: Tensor, x: Tensor) -> Tensor:
    """-log Bernoulli(x | sigmoid(out)) summed over the last dim: out (*S, B, D), x (B, D)."""
    xo = torch.einsum("...bd,bd->...b", out, x.to(out.dtype))
    return F.softplus(out).sum(-1) - xo
