"""Gradient estimators for discrete latent variables, behind one contract.

    import estimators
    estimators.names()
    est = estimators.get("gumbel_softmax", temperature=0.5)
    out = est(logits, f)          # logits (B, N, K); f: (*S, B, N, K) -> (*S, B)
    out.surrogate.backward()

Every module in this package is imported here, so an estimator registered with
``@register("name")`` in a new module is available with no other edit.
"""

import importlib
import pkgutil

from .base import (
    Estimator,
    EstimatorConfigError,
    EstimatorOutput,
    Temperature,
    TemperatureEstimator,
    get,
    get_class,
    names,
    register,
)
from .kl import categorical_kl

for _m in pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = [
    "Estimator",
    "EstimatorConfigError",
    "EstimatorOutput",
    "Temperature",
    "TemperatureEstimator",
    "categorical_kl",
    "get",
    "get_class",
    "names",
    "register",
]
