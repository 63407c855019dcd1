"""Counting evaluations of f: the runner hands the task a counting view of the
estimator, which wraps every ``f`` it is given and adds up the rows of z passed to
it (the product of the leading sample dimensions and the batch), so estimators of
different cost can be compared at an equal number of evaluations (``f_evals``).

The count is taken by the runner, never declared by an estimator: REINFORCE
evaluates f once per example (B rows a step), leave-one-out and VIMCO S times
(S * B), ARM/DisARM twice, MuProp at the sample and the mean-field point (2 B),
``exact`` at every joint state (K^N * B). Only the f the task hands to the
estimator it was given is counted: on a stochastic binary network that is the
whole network above the first stochastic layer (the inner layers' estimators are
copies, not counted), on the semi-supervised task the unlabelled term. What the
runner measures with the plain estimator (grad_var, evaluation) is not counted.
"""

from __future__ import annotations

import copy
import math


def rows(z) -> int:
    """How many evaluations f does on z of shape (*S, B, N, K)."""
    return math.prod(z.shape[:-2])


class CountingEstimator:
    """A view of ``est`` that counts f's evaluations in ``f_evals``; every other
    attribute (reading and setting) is the estimator's own.

    Under ``torch.func.vmap`` (stacked seeds) f sees one seed's shapes, so the
    count is per seed, as each run records it. A deep copy (the inner layers of a
    stochastic network) is a copy of the plain estimator: it does not count."""

    def __init__(self, est):
        object.__setattr__(self, "_est", est)
        object.__setattr__(self, "_count", [0])

    @property
    def f_evals(self) -> int:
        return self._count[0]

    def reset(self, value: int = 0) -> None:
        """Start the count at ``value`` (a run resumed from a checkpoint)."""
        self._count[0] = int(value)

    def __call__(self, logits, f):
        count = self._count

        def counted(z):
            count[0] += rows(z)
            return f(z)

        return self._est(logits, counted)

    def __getattr__(self, name):  # only for names not found on the view itself
        return getattr(object.__getattribute__(self, "_est"), name)

    def __setattr__(self, name, value):
        setattr(self._est, name, value)

    def __deepcopy__(self, memo):
        return copy.deepcopy(self._est, memo)


def cost_metrics(f_evals: int, step: int) -> dict:
    """The rows a run records at an evaluation: ``f_evals`` so far and per step."""
    out = {"f_evals": float(f_evals)}
    if step > 0:
        out["f_evals_per_step"] = f_evals / step
    return out
