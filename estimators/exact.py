"""Exact expectation by enumerating every joint state (marginalisation):

    E_q[f(z)] = sum_{s in {1..K}^N} q(s) f(s),   q(s) = prod_n q_n(s_n).

f is evaluated on all K^N states at once (a leading sample dimension), so the
gradient is exact. Refused when K^N exceeds ``max_states``.
"""

import itertools

import torch
import torch.nn.functional as F

from .base import Estimator, EstimatorConfigError, EstimatorOutput, log_prob_one_hot, register


def all_states(n: int, k: int, max_states: int, device=None, dtype=None) -> torch.Tensor:
    """Every joint one-hot state, shape (K^N, N, K)."""
    if k ** n > max_states:
        raise EstimatorConfigError(
            f"estimator 'exact' would enumerate K^N = {k}^{n} states, more than "
            f"estimator.max_states={max_states}; use a task with fewer latent states")
    idx = torch.tensor(list(itertools.product(range(k), repeat=n)), device=device)
    return F.one_hot(idx.reshape(-1, n), k).to(dtype)


@register("exact")
class Exact(Estimator):
    unbiased = True
    hard_forward = True
    state_exclude = ("_cache",)  # the enumerated states: a function of the shape only

    def __init__(self, max_states: int = 4096):
        super().__init__()
        self.max_states = int(max_states)
        self._cache = {}

    def check_latents(self, n: int, k: int) -> None:
        super().check_latents(n, k)
        if k ** n > self.max_states:
            all_states(n, k, self.max_states)  # raises the one-line error

    def estimate(self, logits, f):
        b, n, k = logits.shape
        key = (n, k, logits.device, logits.dtype)
        if key not in self._cache:
            self._cache[key] = all_states(n, k, self.max_states, logits.device, logits.dtype)
        states = self._cache[key]  # (S, N, K)
        z = states[:, None].expand(-1, b, n, k)  # (S, B, N, K)
        losses = f(z)  # (S, B)
        weights = log_prob_one_hot(logits, z).softmax(0)  # q(s) per example, (S, B)
        expectation = (weights * losses).sum(0)
        return EstimatorOutput(loss=expectation, surrogate=expectation.mean(), sample=z)
