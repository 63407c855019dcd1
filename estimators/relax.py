"""RELAX (Grathwohl et al. 2018, "Backpropagation through the void: optimizing
control variates for black-box gradient estimation"; their estimator for
discrete variables):

    g = [f(b) - c_phi(z~)] d/dtheta log q(b) + d/dtheta c_phi(z) - d/dtheta c_phi(z~),

    z = theta + G,  b = H(z),  z~ ~ p(z | b, theta),

with a free-form control variate, as in their discrete VAE experiments

    c_phi(z) = eta f(softmax(z / lam)) + r_rho(z)     (``relaxed_f: true``)
    c_phi(z) = r_rho(z)                               (``relaxed_f: false``)

where r_rho is a small MLP on the flattened perturbed logits (N*K inputs).
phi = (eta, log lam, rho) is trained to minimise the variance of g by the
estimator's own Adam optimiser (``estimators._control``); z~ keeps its
dependence on theta. The network is built on first use for the latent shape it
sees; a later call with another (N, K) is refused.
"""

import math

import torch
import torch.nn as nn

from ._control import ControlVariateEstimator
from .base import EstimatorConfigError, check_positive, register, softmax

_ACT = {"elu": nn.ELU, "tanh": nn.Tanh, "softplus": nn.Softplus}


@register("relax")
class Relax(ControlVariateEstimator):
    def __init__(self, temperature: float = 0.5, eta: float = 1.0, relaxed_f: bool = True,
                 learn_temperature: bool = True, hidden=(32,), activation: str = "elu",
                 cv_lr: float = 1e-3):
        super().__init__(cv_lr)
        self.lam0 = check_positive("estimator.temperature", temperature)
        try:
            self.eta0 = float(eta)
            self.hidden = [int(h) for h in hidden]
        except (TypeError, ValueError):
            raise EstimatorConfigError(
                f"estimator.eta must be a number and estimator.hidden a list of positive "
                f"integers; got eta={eta!r}, hidden={hidden!r}") from None
        if any(h < 1 for h in self.hidden):
            raise EstimatorConfigError(
                f"estimator.hidden must be a list of positive integers, got {hidden!r}")
        if activation not in _ACT:
            raise EstimatorConfigError(
                f"estimator.activation must be one of {', '.join(_ACT)}; got {activation!r}")
        self.activation = activation
        self.relaxed_f = bool(relaxed_f)
        self.learn_temperature = bool(learn_temperature)
        self.net = self.eta = self.log_lam = None
        self.shape = None

    def cv_parameters(self, like):
        self.shape = tuple(like.shape[-2:])
        sizes = [self.shape[0] * self.shape[1], *self.hidden, 1]
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(_ACT[self.activation]())
        self.net = nn.Sequential(*layers).to(like.device)
        params = list(self.net.parameters())
        if self.relaxed_f:
            self.eta = nn.Parameter(torch.tensor(self.eta0, device=like.device))
            self.log_lam = nn.Parameter(torch.tensor(math.log(self.lam0), device=like.device),
                                        requires_grad=self.learn_temperature)
            params += [self.eta] + ([self.log_lam] if self.learn_temperature else [])
        return params

    def control_variate(self, z, f):
        if tuple(z.shape[-2:]) != self.shape:
            raise EstimatorConfigError(
                f"estimator 'relax' built its control variate for latents (N, K) = {self.shape}, "
                f"got {tuple(z.shape[-2:])}; use a new estimator for another task")
        w = self.net[0].weight
        c = self.net(z.flatten(-2).to(w.dtype)).squeeze(-1).to(z.dtype)
        if self.relaxed_f:
            c = c + self.eta * f(softmax(z / self.log_lam.exp()))
        return c

    @property
    def temperature(self) -> float:
        return self.lam0 if self.log_lam is None else float(self.log_lam.detach().exp())

    def describe(self) -> dict:
        return {"temperature": self.lam0}
