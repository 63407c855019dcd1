"""REBAR (Tucker et al. 2017, "REBAR: low-variance, unbiased gradient estimates
for discrete latent variable models"; the categorical form of their
estimator):

    g = [f(b) - eta f(s_lam(z~))] d/dtheta log q(b)
        + eta d/dtheta f(s_lam(z)) - eta d/dtheta f(s_lam(z~)),

    z = theta + G,  b = H(z),  z~ ~ p(z | b, theta),  s_lam(z) = softmax(z / lam).

The control variate is the Concrete relaxation of f itself, scaled by eta; eta
and log lam are trained to minimise the variance of g by the estimator's own
Adam optimiser (see ``estimators._control``). z~ is reparameterised in theta and
its dependence on theta is kept: dropping it (a bug found in public code) makes
the estimator biased. ``temperature`` is the initial lam.
"""

import math

import torch

from ._control import ControlVariateEstimator
from .base import EstimatorConfigError, check_positive, register, softmax


@register("rebar")
class Rebar(ControlVariateEstimator):
    def __init__(self, temperature: float = 0.5, eta: float = 1.0,
                 learn_temperature: bool = True, cv_lr: float = 1e-3):
        super().__init__(cv_lr)
        self.lam0 = check_positive("estimator.temperature", temperature)
        try:
            self.eta0 = float(eta)
        except (TypeError, ValueError):
            raise EstimatorConfigError(f"estimator.eta must be a number, got {eta!r}") from None
        self.learn_temperature = bool(learn_temperature)
        self.eta = self.log_lam = None

    def cv_parameters(self, like):
        self.eta = torch.nn.Parameter(torch.tensor(self.eta0, device=like.device))
        self.log_lam = torch.nn.Parameter(torch.tensor(math.log(self.lam0), device=like.device),
                                          requires_grad=self.learn_temperature)
        return [self.eta, self.log_lam] if self.learn_temperature else [self.eta]

    def control_variate(self, z, f):
        return self.eta * f(softmax(z / self.log_lam.exp()))

    @property
    def temperature(self) -> float:
        return self.lam0 if self.log_lam is None else float(self.log_lam.detach().exp())

    def describe(self) -> dict:
        return {"temperature": self.lam0}
