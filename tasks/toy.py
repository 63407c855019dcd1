"""Toy problems with an exact gradient (REBAR, Tucker et al. 2017, section 6.1;
RELAX, Grathwohl et al. 2018, section 6.1):

    minimise  E_{z ~ q_theta} [ sum_n (v(z_n) - t)^2 ]

over N independent K-way variables z_n with learnable logits, where category k
carries the value v_k = k / (K - 1) (so v(z) = z for K = 2: the Bernoulli toy).
With t = 0.499 the two best values differ in loss by only 1 - 2t = 0.002, a hard
signal-to-noise problem; t = 0.45 is the easier variant.

``toy_bernoulli``: K = 2; ``toy_categorical``: K = 4 by default (values 0, 1/3,
2/3, 1; t = 0.499 sits between 1/3 and 2/3, which nearly tie).

The logits are (0, theta_n): the first category's logit is fixed at 0 and theta,
of shape (N, K-1), is the only parameter (``encoder_parameters``). No data: the
task accepts ``data`` and ``device`` like every task and ignores the data; each
step draws ``batch_size`` independent samples.

Everything is exact: E f = sum_n sum_k q_nk (v_k - t)^2 and its gradient by
autograd, the optimum sum_n min_k (v_k - t)^2.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .base import TaskConfigError, register


def _number(key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TaskConfigError(f"{key} must be a finite number, got {value!r}")
    return float(value)


def _int(key: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TaskConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


@register("toy_bernoulli")
@register("toy_categorical")
class Toy(nn.Module):
    def __init__(self, data=None, device="cpu", latents: int = 1, categories: int = 2,
                 target: float = 0.499, init_logit: float = 0.0, init_scale: float = 0.0,
                 init_seed: int = 0, batch_size: int = 1):
        super().__init__()
        self.n = _int("task.latents", latents, 1)
        self.k = _int("task.categories", categories, 2)
        self.target = _number("task.target", target)
        self.batch = _int("task.batch_size", batch_size, 1)
        init_logit = _number("task.init_logit", init_logit)
        init_scale = _number("task.init_scale", init_scale)
        if init_scale < 0:
            raise TaskConfigError(f"task.init_scale must be >= 0, got {init_scale!r}")
        g = torch.Generator().manual_seed(_int("task.init_seed", init_seed, 0))
        theta = init_logit + init_scale * torch.randn(self.n, self.k - 1, generator=g)
        self.theta = nn.Parameter(theta.to(device))
        self.register_buffer("values", torch.linspace(0.0, 1.0, self.k, device=device))

    @property
    def latent_shape(self) -> tuple[int, int]:
        return self.n, self.k

    def encoder_parameters(self):
        return [self.theta]

    # --- the problem --------------------------------------------------------
    def logits(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        """(..., N, K) logits (0, theta) from theta of shape (..., N, K-1)."""
        theta = self.theta if theta is None else theta
        return torch.cat([torch.zeros_like(theta[..., :1]), theta], -1)

    def f(self, z: torch.Tensor) -> torch.Tensor:
        """sum_n (v(z_n) - t)^2, (*S, B, N, K) -> (*S, B)."""
        return ((z * self.values.to(z.dtype)).sum(-1) - self.target).pow(2).sum(-1)

    def expected_loss(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        q = torch.softmax(self.logits(theta), -1)
        return (q * (self.values - self.target).pow(2)).sum((-1, -2))

    def optimum(self) -> float:
        return self.n * float((self.values - self.target).pow(2).min())

    def exact_gradient(self) -> torch.Tensor:
        """d E f / d theta, flattened (P,)."""
        with torch.enable_grad():
            theta = self.theta.detach().clone().requires_grad_(True)
            (g,) = torch.autograd.grad(self.expected_loss(theta), theta)
        return g.flatten()

    # --- the task contract ---------------------------------------------------
    def loss(self, x, estimator):
        logits = self.logits().expand(self.batch, self.n, self.k)
        out = estimator(logits, self.f)
        return out.surrogate, out

    @torch.no_grad()
    def evaluate(self, data=None, eval_cfg=None, final: bool = False) -> dict[str, float]:
        q = torch.softmax(self.logits(), -1)
        best = (self.values - self.target).pow(2).argmin()
        exp = float(self.expected_loss())
        return {
            "expected_loss": exp,
            "optimality_gap": exp - self.optimum(),
            "prob_optimal": float(q[:, best].mean()),
            "exact_grad_norm": float(self.exact_gradient().norm()),
        }

    def estimator_gradients(self, x, estimator, m: int) -> torch.Tensor:
        """m independent estimates of d E f / d theta, (m, P), from one estimator
        call on m stacked copies of the batch (frozen: no state updates)."""
        theta = self.theta.detach().expand(m, self.n, self.k - 1).clone().requires_grad_(True)
        logits = self.logits(theta)[:, None].expand(m, self.batch, self.n, self.k)
        with estimator.frozen():
            out = estimator(logits.reshape(m * self.batch, self.n, self.k), self.f)
        (g,) = torch.autograd.grad(out.surrogate * m, theta)
        return g.reshape(m, -1)

    def grad_variance(self, x, estimator, m: int) -> float:
        """Variance over m independent estimates, averaged over the parameters."""
        return float(self.estimator_gradients(x, estimator, m).var(0).mean())
