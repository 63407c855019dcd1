"""Reference quantities computed from the mathematics, independently of the
estimators' code: exact expectations by enumerating every joint state, and
relaxed objectives by numerical quadrature over the logistic noise."""

from __future__ import annotations

import itertools

import torch


def all_one_hot_states(n: int, k: int, dtype=torch.float64) -> torch.Tensor:
    """Every joint state of N K-way variables as one-hot, shape (K^N, N, K)."""
    idx = torch.tensor(list(itertools.product(range(k), repeat=n)))
    return torch.nn.functional.one_hot(idx.reshape(-1, n), k).to(dtype)


def exact_objective(logits: torch.Tensor, f) -> torch.Tensor:
    """mean_b sum_s q_b(s) f(s)_b by explicit enumeration (float64 friendly)."""
    b, n, k = logits.shape
    p = torch.softmax(logits, -1)
    total = 0.0
    for s in itertools.product(range(k), repeat=n):
        z = torch.zeros(b, n, k, dtype=logits.dtype)
        for i, si in enumerate(s):
            z[:, i, si] = 1.0
        q = torch.ones(b, dtype=logits.dtype)
        for i, si in enumerate(s):
            q = q * p[:, i, si]
        total = total + q * f(z)
    return total.mean()


def relaxed_objective_k2(logits: torch.Tensor, f, temperature: float,
                         points: int = 200001, bound: float = 60.0) -> torch.Tensor:
    """E_g[f(softmax((logits + g)/tau))] for B = 1, N = 1, K = 2 by quadrature.

    With two categories the relaxed sample is (1 - s, s), s = sigmoid((l1 - l0 + u)/tau),
    where u = g1 - g0 ~ Logistic(0, 1); integrate over u with the trapezoid rule.
    """
    u = torch.linspace(-bound, bound, points, dtype=torch.float64)
    pdf = torch.sigmoid(u) * torch.sigmoid(-u)
    s = torch.sigmoid((logits[0, 0, 1] - logits[0, 0, 0] + u) / temperature)
    y = torch.stack([1 - s, s], -1)[:, None, None, :]  # (U, 1, 1, 2): U as a sample dim
    vals = f(y)[:, 0]
    return torch.trapezoid(vals * pdf, u)
