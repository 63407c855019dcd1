"""The training loop's optimisers (Adam, SGD with momentum): torch's fused kernels
with less Python work per step.

``torch.optim.Adam(fused=True)`` runs the whole update in one kernel, but each
``step()`` first walks the parameter groups in Python (state look-ups, grouping by
device and dtype, hooks), about 0.2 ms a step on one CPU thread: 3-4 % of a
categorical-VAE step on a CPU. ``FusedAdam`` is that optimizer, with the same
state and ``state_dict``; once every parameter has its state, it keeps the lists
of tensors and calls the same fused kernel itself. The update is bit for bit the
same (tests/test_optim.py). It falls back to ``torch.optim.Adam.step`` whenever
the fast path does not apply: before the state exists, when a parameter has no
gradient, with a closure, with options the fast path does not cover, or where
this torch build has no fused kernel for the device. Step hooks registered on the
optimizer are not called on the fast path.
"""

from __future__ import annotations

import torch


class _KeptLists:
    """What FusedAdam and FusedSGD share: the per-group tensor lists, built once by
    ``_group_lists`` (None where the fast path does not apply) and dropped when the
    state is replaced; ``step`` calls ``_fused_step`` on them, else torch's own step."""

    _lists = None

    def _group_lists(self, group, ps):
        raise NotImplementedError

    def _fused_step(self, group, ps, *lists):
        raise NotImplementedError

    def _fast_lists(self):
        if self._lists is None:
            lists = []
            for group in self.param_groups:
                if (group["maximize"] or group["differentiable"]
                        or not isinstance(group["lr"], float)):
                    return None
                ps = list(group["params"])
                if len({(p.device, p.dtype) for p in ps}) > 1:
                    return None
                kept = self._group_lists(group, ps)
                if kept is None:
                    return None
                lists.append((ps, *kept))
            self._lists = lists
        return self._lists

    def load_state_dict(self, state_dict) -> None:
        self._lists = None
        super().load_state_dict(state_dict)

    @torch.no_grad()
    def step(self, closure=None):
        lists = self._fast_lists() if closure is None else None
        if lists is None or any(p.grad is None for ps, *_ in lists for p in ps):
            self._lists = None
            return super().step(closure)
        for group, (ps, *kept) in zip(self.param_groups, lists, strict=True):
            if ps:
                self._fused_step(group, ps, *kept)
        return None


class FusedAdam(_KeptLists, torch.optim.Adam):
    def __init__(self, params, lr: float = 1e-3, **kwargs):
        super().__init__(params, lr=lr, fused=True, **kwargs)

    def _group_lists(self, group, ps):
        """(exp_avgs, exp_avg_sqs, steps), once every parameter has its state."""
        if group["amsgrad"] or group.get("decoupled_weight_decay", False):
            return None
        states = [self.state.get(p) for p in ps]
        if not all(s and {"exp_avg", "exp_avg_sq", "step"} <= s.keys() for s in states):
            return None
        return ([s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                [s["step"] for s in states])

    def _fused_step(self, group, ps, exp_avgs, exp_avg_sqs, steps):
        beta1, beta2 = group["betas"]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(ps, [p.grad for p in ps], exp_avgs, exp_avg_sqs, [], steps,
                           amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2,
                           weight_decay=group["weight_decay"], eps=group["eps"],
                           maximize=False, grad_scale=None, found_inf=None)


class FusedSGD(_KeptLists, torch.optim.SGD):
    """``torch.optim.SGD(fused=True)`` (momentum, Nesterov, weight decay), with the
    per-step Python walk skipped in the same way as ``FusedAdam``: once every
    parameter has its momentum buffer (or at once, without momentum), the lists are
    kept and torch's fused SGD kernel is called on them. Bit for bit the same update
    as ``torch.optim.SGD(fused=True)``; the same fall-backs as ``FusedAdam``."""

    def __init__(self, params, lr: float = 1e-3, **kwargs):
        super().__init__(params, lr=lr, fused=True, **kwargs)

    def _group_lists(self, group, ps):
        """(momentum buffers,) once they exist; ([],) without momentum."""
        if group["momentum"] == 0:
            return ([],)
        bufs = [self.state.get(p, {}).get("momentum_buffer") for p in ps]
        return None if any(b is None for b in bufs) else (bufs,)

    def _fused_step(self, group, ps, bufs):
        torch._fused_sgd_(ps, [p.grad for p in ps], bufs,
                          weight_decay=group["weight_decay"], momentum=group["momentum"],
                          lr=group["lr"], dampening=group["dampening"],
                          nesterov=group["nesterov"], maximize=False, is_first_step=False,
                          grad_scale=None, found_inf=None)


OPTIMIZERS = ("adam", "sgd")


def optimizer_options(train: dict) -> dict:
    """The optimiser settings of a config's ``train`` block, as make_optimizer's
    keywords (keys a config does not have take their defaults)."""
    out = {"optimizer": str(train.get("optimizer", "adam"))}
    for key in ("momentum", "nesterov", "weight_decay", "betas", "eps"):
        if train.get(key) is not None:
            out[key] = train[key]
    return out


def make_optimizer(params, lr: float, optimizer: str = "adam", momentum: float = 0.0,
                   nesterov: bool = False, weight_decay: float = 0.0,
                   betas=(0.9, 0.999), eps: float = 1e-8) -> torch.optim.Optimizer:
    """The training loop's optimiser: ``adam`` (betas, eps, L2 weight decay) or
    ``sgd`` (momentum, Nesterov, L2 weight decay), with the fused kernel where this
    torch build has one for the device, else torch's default implementation. The
    values are checked by bench.config.validate before training."""
    params = list(params)
    if optimizer == "adam":
        kw = dict(lr=lr, betas=tuple(float(b) for b in betas), eps=float(eps),
                  weight_decay=float(weight_decay))
        fast, plain = FusedAdam, torch.optim.Adam
    elif optimizer == "sgd":
        kw = dict(lr=lr, momentum=float(momentum), nesterov=bool(nesterov),
                  weight_decay=float(weight_decay))
        fast, plain = FusedSGD, torch.optim.SGD
    else:
        raise ValueError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, "
                         f"got {optimizer!r}")
    try:
        return fast(params, **kw)
    except (RuntimeError, TypeError, ValueError):
        return plain(params, **kw)
