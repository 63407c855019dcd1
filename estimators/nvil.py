"""NVIL (Mnih & Gregor 2014, "Neural variational inference and learning in belief
networks"): REINFORCE with their three variance-reduction devices,

    g = [(l - c - b_psi(x)) / max(1, sigma)] d log q(z),   l = f(z),

* centring: c, a moving average of the batch mean of l (``ema_decay``; their
  alpha = 0.8);
* an input-dependent baseline b_psi(x), fitted to the centred signal l - c by
  minimising mean (l - c - b_psi(x))^2 with its own Adam optimiser (``baseline_lr``),
  like REBAR/RELAX's control variates. The estimator sees the encoder's logits,
  which are a function of x, so b_psi is a small MLP of softmax(logits) (detached),
  flattened (N*K inputs);
* variance normalisation: sigma^2 is a moving average of the batch variance of
  l - c - b_psi(x) (``estimators._normalize``).

c, sigma and psi are those of the previous steps: they do not depend on the
current sample, so the estimate is unbiased up to the known factor
``logit_scale`` = max(1, sigma). The signal is detached: the baseline gets no
gradient from the model's loss, and its own loss is differentiated with
``torch.autograd.grad`` with respect to psi only, so the model gets none from it.
Nothing moves while ``frozen()``. ``input_baseline: false`` and
``normalize: false`` switch the second and third device off (ablations).
"""

import torch
import torch.nn as nn

from ._normalize import VarianceNormalized, check_decay, ema
from .base import (
    Estimator,
    EstimatorConfigError,
    EstimatorOutput,
    check_positive,
    log_prob_one_hot,
    register,
    sample_one_hot,
    softmax,
)

_ACT = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}


@register("nvil")
class NVIL(VarianceNormalized, Estimator):
    unbiased = True
    hard_forward = True

    def __init__(self, ema_decay: float = 0.8, input_baseline: bool = True, hidden=(100,),
                 activation: str = "tanh", baseline_lr: float = 1e-3, normalize: bool = True):
        super().__init__()
        self.ema_decay = check_decay("estimator.ema_decay", ema_decay)
        self.init_normalize(normalize, ema_decay, key="estimator.ema_decay")
        if not isinstance(input_baseline, bool):
            raise EstimatorConfigError(
                f"estimator.input_baseline must be true or false, got {input_baseline!r}")
        try:
            self.hidden = [int(h) for h in hidden]
        except (TypeError, ValueError):
            raise EstimatorConfigError(
                f"estimator.hidden must be a list of positive integers, got {hidden!r}") from None
        if any(h < 1 for h in self.hidden):
            raise EstimatorConfigError(
                f"estimator.hidden must be a list of positive integers, got {hidden!r}")
        if activation not in _ACT:
            raise EstimatorConfigError(
                f"estimator.activation must be one of {', '.join(_ACT)}; got {activation!r}")
        self.activation = activation
        self.input_baseline = input_baseline
        self.baseline_lr = check_positive("estimator.baseline_lr", baseline_lr)
        self.signal_mean = None  # c: a detached 0-d tensor once the first batch is seen
        self.net: nn.Sequential | None = None  # b_psi, built on first use
        self._opt: torch.optim.Optimizer | None = None
        self.shape = None

    def extra_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.net.parameters()) if self.net is not None else []

    def _baseline_net(self, like):
        if self.net is None:
            self.shape = tuple(like.shape[-2:])
            sizes = [self.shape[0] * self.shape[1], *self.hidden, 1]
            layers = []
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
                layers.append(nn.Linear(a, b))
                if i < len(sizes) - 2:
                    layers.append(_ACT[self.activation]())
            self.net = nn.Sequential(*layers).to(like.device)
            self._opt = torch.optim.Adam(self.net.parameters(), lr=self.baseline_lr)
        elif tuple(like.shape[-2:]) != self.shape:
            raise EstimatorConfigError(
                f"estimator 'nvil' built its baseline for latents (N, K) = {self.shape}, "
                f"got {tuple(like.shape[-2:])}; use a new estimator for another task")
        return self.net

    def estimate(self, logits, f):
        scaled = self.normalized(logits)  # gradient to the logits / max(1, sigma)
        z = sample_one_hot(logits.detach())
        fz = f(z)
        centred = fz.detach() - (self.signal_mean if self.signal_mean is not None else 0.0)
        bx = None
        if self.input_baseline:
            net = self._baseline_net(logits)
            with torch.enable_grad():
                x = softmax(logits.detach()).flatten(1).to(net[0].weight.dtype)
                bx = net(x).squeeze(-1).to(fz.dtype)  # (B,)
            signal = centred - bx.detach()
        else:
            signal = centred
        log_q = log_prob_one_hot(scaled, z)
        surrogate = (fz + signal * log_q).mean()
        if self.training:
            if bx is not None:
                with torch.enable_grad():
                    fit = (centred - bx).pow(2).mean()
                    grads = torch.autograd.grad(fit, list(self.net.parameters()))
                for p, g in zip(self.net.parameters(), grads, strict=True):
                    p.grad = g.detach()
                self._opt.step()
                self._opt.zero_grad(set_to_none=True)
            self.update_variance(signal)
            self.signal_mean = ema(self.signal_mean, fz.detach().mean(), self.ema_decay)
        return EstimatorOutput(loss=fz, surrogate=surrogate, sample=z)
