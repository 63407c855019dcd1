"""Shared option check for the multi-sample estimators (not an estimator)."""

from .base import EstimatorConfigError


def check_samples(value, minimum: int = 2) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise EstimatorConfigError(f"estimator.samples must be an integer >= {minimum}, "
                                   f"got {value!r}")
    return value
