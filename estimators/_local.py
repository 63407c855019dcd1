"""Local alternatives of a sample, shared by IndeCateR and the sum-and-sample
Rao-Blackwellisation (not an estimator).

For samples z (S, B, N, K) and candidate values v (S, B, N, J, K) (one-hot), the
alternative z^{i <- v_ij} is z with variable i replaced by v[..., i, j, :]. All
S * N * J alternatives go to f in one call with one leading sample dimension.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def substitute(z: Tensor, values: Tensor) -> Tensor:
    """(S, B, N, K), (S, B, N, J, K) -> (S, N, J, B, N, K): z^{i <- values[s, b, i, j]}."""
    n = z.shape[-2]
    mask = torch.eye(n, dtype=z.dtype, device=z.device).view(1, n, 1, 1, n, 1)
    v = values.permute(0, 2, 3, 1, 4).unsqueeze(-2)  # (S, N, J, B, 1, K)
    return z[:, None, None] * (1.0 - mask) + v * mask


def f_at_alternatives(f, z: Tensor, values: Tensor, with_sample: bool = False):
    """f at every z^{i <- values[s, b, i, j]} in one call, as (S, B, N, J); with
    ``with_sample`` also f(z) itself (S, B), from the same call."""
    s, b, n, k = z.shape
    j = values.shape[-2]
    alt = substitute(z, values).reshape(s * n * j, b, n, k)
    if with_sample:
        alt = torch.cat([alt, z])
    out = f(alt)
    fz = out[: s * n * j].view(s, n, j, b).permute(0, 3, 1, 2)
    return (fz, out[s * n * j:]) if with_sample else fz
