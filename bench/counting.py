"""Counting evaluations of f: the runner attaches a counter to the estimator it
trains with, and the estimator contract's ``__call__`` (estimators.base) hands
``estimate`` a wrapped f that adds up the rows of z it is given (the product of
the leading sample dimensions and the batch), so estimators of different cost can
be compared at an equal number of evaluations (``f_evals``).

The count is taken by the runner, never declared by an estimator: REINFORCE
evaluates f once per example (B rows a step), leave-one-out and VIMCO S times
(S * B), ARM/DisARM twice, MuProp at the sample and the mean-field point (2 B),
``exact`` at every joint state (K^N * B). Only training-mode calls count: the
grad_var measurements draw their estimates frozen (``Estimator.frozen``), and the
evaluations do not call the estimator. Only the estimator the task was given
counts: on a stochastic binary network that is the whole network above the
first stochastic layer (the inner layers' estimators are copies, which do not
count), on the semi-supervised task the unlabelled term.

The counter is an attribute of the estimator itself, so the estimator keeps its
identity (tasks that cache per-estimator state, such as the SBN's layer copies,
see the same object in training and evaluation), and it travels with the
estimator's state (a checkpoint restores the count).
"""

from __future__ import annotations

import math

ATTR = "f_counter"


def rows(z) -> int:
    """How many evaluations f does on z of shape (*S, B, N, K)."""
    return math.prod(z.shape[:-2])


class Counter:
    """The number of f evaluations (``n``) of the estimator it is attached to."""

    def __init__(self, n: int = 0):
        self.n = int(n)

    def wrap(self, f):
        def counted(z):
            self.n += rows(z)
            return f(z)

        return counted

    def __deepcopy__(self, memo):  # a copy of the estimator (an inner layer) does not count
        return None


def attach(est) -> Counter:
    """The counter of ``est``, attached now if it has none: from here on every
    training-mode call of ``est`` counts its f evaluations."""
    counter = est.__dict__.get(ATTR)
    if counter is None:
        counter = Counter()
        setattr(est, ATTR, counter)
    return counter


def cost_metrics(f_evals: int, step: int) -> dict:
    """The rows a run records at an evaluation: ``f_evals`` so far and per step."""
    out = {"f_evals": float(f_evals)}
    if step > 0:
        out["f_evals_per_step"] = f_evals / step
    return out
