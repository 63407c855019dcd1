"""Shared machinery of the multi-sample estimators whose control variates are
fitted online (double_cv, rodeo; not an estimator).

Both draw S samples z_1..z_S ~ q, evaluate f and its gradient f'(z_s) at each
(one call of f on the stacked samples and one backward with respect to them),
and build a per-example gradient estimate g (B, N, K) with respect to the
logits that is unbiased for every value of the control-variate parameters phi.
As for REBAR/RELAX (``_control``), phi is trained by the estimator's own Adam
to minimise E|g|^2 (= Var g + const, since E g does not depend on phi), from
the same sample, with ``torch.autograd.grad`` (never ``backward``), only while
``self.training`` (``frozen()`` freezes it) and after g was computed with the
current phi. The returned surrogate is mean f(z_s) + sum g_detached . logits:
the model gets g and the mean of d f(z_s); phi gets nothing from it.
"""

from __future__ import annotations

import torch

from ._control import check_lr
from ._multisample import check_samples
from .base import Estimator, EstimatorOutput, sample_one_hot

Tensor = torch.Tensor


class Samples:
    """z (S, B, N, K), f(z) (S, B) and f'(z) (S, B, N, K), with leave-one-out means."""

    def __init__(self, logits: Tensor, f, s: int):
        with torch.enable_grad():
            z = sample_one_hot(logits.detach().expand(s, *logits.shape)).requires_grad_(True)
            self.fz = f(z)
            (grad,) = torch.autograd.grad(self.fz.sum(), z, retain_graph=True)
        self.z, self.grad, self.f = z.detach(), grad.detach(), self.fz.detach()
        self.s = s

    def loo(self, x: Tensor) -> Tensor:
        """mean over the other samples j != s, for each s (dim 0)."""
        return (x.sum(0, keepdim=True) - x) / (self.s - 1)


class OnlineControlVariate(Estimator):
    unbiased = True
    hard_forward = True

    def __init__(self, samples: int = 4, cv_lr: float = 1e-3):
        super().__init__()
        self.samples = check_samples(samples)
        self.cv_lr = check_lr(cv_lr)
        self._opt: torch.optim.Optimizer | None = None

    # --- what a subclass defines ---------------------------------------------
    def cv_parameters(self, like: Tensor) -> list[torch.nn.Parameter]:
        raise NotImplementedError

    def gradient(self, logits: Tensor, smp: Samples) -> Tensor:
        """Per-example estimate g (B, N, K), differentiable in phi."""
        raise NotImplementedError

    # --- the estimator -------------------------------------------------------
    def extra_parameters(self) -> list[torch.nn.Parameter]:
        return list(self._opt.param_groups[0]["params"]) if self._opt is not None else []

    def estimate(self, logits, f):
        if self._opt is None:
            self._opt = torch.optim.Adam(self.cv_parameters(logits), lr=self.cv_lr)
        smp = Samples(logits, f, self.samples)
        with torch.enable_grad():
            g = self.gradient(logits.detach(), smp)
            if self.training:
                phi = self._opt.param_groups[0]["params"]
                var = g.pow(2).sum((-1, -2)).mean()
                grads = torch.autograd.grad(var, phi, allow_unused=True)
                self._opt.zero_grad(set_to_none=True)
                for p, gp in zip(phi, grads, strict=True):
                    p.grad = None if gp is None else gp.detach()
                self._opt.step()
                self._opt.zero_grad(set_to_none=True)
        g = g.detach() / logits.shape[0]  # gradient of the batch mean
        loss = smp.fz.mean(0)
        surrogate = loss.mean() + (g * (logits - logits.detach())).sum()
        return EstimatorOutput(loss=loss.detach(), surrogate=surrogate, sample=smp.z)
