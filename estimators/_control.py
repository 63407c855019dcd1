"""The machinery REBAR and RELAX share (not an estimator itself).

Both estimate the gradient of E_q[f(b)] with respect to the logits theta as

    g = [f(b) - c(z~)] d/dtheta log q(b) + d/dtheta c(z) - d/dtheta c(z~),

    z = theta + G (G ~ Gumbel),  b = H(z) = one_hot(argmax z),  z~ ~ p(z | b, theta),

where z~ is reparameterised in theta (``_conditional.conditional_gumbel``): its
dependence on theta is part of the estimator and is kept. ``c`` is a control
variate with its own parameters phi; the estimator is unbiased for every phi.

phi is trained by the estimator itself to minimise the variance of g. Because
E[g] does not depend on phi, d/dphi Var[g] = d/dphi E[|g|^2], estimated from the
same sample as 2 g . dg/dphi (Tucker et al. 2017; Grathwohl et al. 2018).
Here |g|^2 is the squared norm of the per-example gradient with respect to that
example's logits, averaged over the batch (the estimator never sees the encoder
that produced the logits, so this stands in for the variance of the encoder's
gradient).

Separation of the two losses:

* the returned surrogate is f(b) plus a linear term in the logits whose
  coefficient is g *detached*: backpropagating it gives g to the logits and
  d f(b) to every parameter f closes over, and nothing to phi;
* phi's gradient is taken with ``torch.autograd.grad(..., phi)`` (never
  ``backward``), so the variance objective leaves the model's ``.grad`` alone;
* phi is updated only while ``self.training`` (``frozen()`` freezes it), after g
  has been computed with the current phi.
"""

from __future__ import annotations

import torch

from ._conditional import conditional_gumbel
from .base import (
    Estimator,
    EstimatorConfigError,
    EstimatorOutput,
    gumbel_like,
    one_hot_argmax,
    softmax,
)

Tensor = torch.Tensor


def check_lr(value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise EstimatorConfigError(f"estimator.cv_lr must be a number > 0, got {value!r}") from None
    if not v > 0 or v == float("inf"):
        raise EstimatorConfigError(f"estimator.cv_lr must be a finite number > 0, got {value!r}")
    return v


class ControlVariateEstimator(Estimator):
    unbiased = True

    def __init__(self, cv_lr: float = 1e-3):
        super().__init__()
        self.cv_lr = check_lr(cv_lr)
        self._opt: torch.optim.Optimizer | None = None

    # --- what a subclass defines ---------------------------------------------
    def control_variate(self, z: Tensor, f) -> Tensor:
        """c(z) for perturbed logits z of shape (S, B, N, K) -> (S, B)."""
        raise NotImplementedError

    def cv_parameters(self, like: Tensor) -> list[torch.nn.Parameter]:
        """phi, created on first use on ``like``'s device."""
        raise NotImplementedError

    # --- the estimator ---------------------------------------------------------
    def extra_parameters(self) -> list[torch.nn.Parameter]:
        return list(self._opt.param_groups[0]["params"]) if self._opt is not None else []

    def optimizer(self, like: Tensor) -> torch.optim.Optimizer:
        if self._opt is None:
            self._opt = torch.optim.Adam(self.cv_parameters(like), lr=self.cv_lr)
        return self._opt

    def estimate(self, logits, f):
        opt = self.optimizer(logits)
        train = self.training
        b_size = logits.shape[0]
        with torch.enable_grad():
            theta = logits.detach().requires_grad_(True)
            z = theta + gumbel_like(theta)
            b = one_hot_argmax(z.detach())
            z_tilde = conditional_gumbel(theta, b)  # depends on theta: kept
            c = self.control_variate(torch.stack([z, z_tilde]), f)  # (2, B)
            (dc,) = torch.autograd.grad(c[0].sum() - c[1].sum(), theta, create_graph=train)
            f_b = f(b)
            score = b - softmax(theta.detach())  # d/dtheta log q(b)
            g = (f_b.detach() - c[1])[:, None, None] * score + dc  # (B, N, K), per example
            if train:
                phi = opt.param_groups[0]["params"]
                var = g.pow(2).sum((-1, -2)).mean()
                grads = torch.autograd.grad(var, phi, allow_unused=True)
                opt.zero_grad(set_to_none=True)
                for p, gp in zip(phi, grads, strict=True):
                    p.grad = None if gp is None else gp.detach()
                opt.step()
                opt.zero_grad(set_to_none=True)
        g = g.detach() / b_size  # gradient of the batch mean
        surrogate = f_b.mean() + (g * (logits - logits.detach())).sum()
        return EstimatorOutput(loss=f_b, surrogate=surrogate, sample=b)
