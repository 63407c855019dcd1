"""Measuring the (task, estimator) pairs in independent groups, and the planted
regression (DoubledNoise) the gate's self-tests use."""

from __future__ import annotations

import math

import numpy as np
import torch

import estimators
from estimators.base import EstimatorOutput

from .problems import build_problem, refusal
from .settings import Settings, estimator_config, make_estimator


class DoubledNoise(estimators.Estimator):
    """A planted regression for self-tests: the wrapped estimator with its gradient
    noise variance doubled and its expectation unchanged,

        g' = g1 + (g2 - g3) / sqrt(2),   g1, g2, g3 independent estimates,

    so E g' = E g and Var g' = (1 + 1/2 + 1/2) Var g = 2 Var g, per parameter.
    An estimator that computes its own KL term (the relaxed Concrete KL) has it
    treated alike, each KL from its own estimate's sample, so the noise of the
    whole objective the estimator is responsible for is doubled."""

    def __init__(self, inner: estimators.Estimator):
        super().__init__()
        self.inner = inner
        self.name = inner.name
        for attr in ("unbiased", "relaxed", "hard_forward", "binary_only", "kl"):
            setattr(self, attr, getattr(inner, attr))
        self._last = None

    def __call__(self, logits, f):
        o1, o2, o3 = (self.inner(logits, f) for _ in range(3))
        surrogate = o1.surrogate + (o2.surrogate - o3.surrogate) / math.sqrt(2.0)
        out = EstimatorOutput(loss=o1.loss, surrogate=surrogate, sample=o1.sample,
                              log_sample=o1.log_sample)
        self._last = (out, o1, o2, o3)
        return out

    def relaxed_kl(self, out, logits, prior_logits=None):
        last, o1, o2, o3 = self._last
        if out is not last:
            raise RuntimeError("DoubledNoise.relaxed_kl: not the output of the last call")
        k1, k2, k3 = (self.inner.relaxed_kl(o, logits, prior_logits) for o in (o1, o2, o3))
        return k1 + (k2 - k3) / math.sqrt(2.0)

    def check_latents(self, n, k):
        self.inner.check_latents(n, k)

    def set_step(self, step):
        self.inner.set_step(step)

    def frozen(self):
        return self.inner.frozen()

    def extra_parameters(self):
        return self.inner.extra_parameters()


# --- measuring ----------------------------------------------------------------

def measure(settings: Settings, pairs, seed: int, device="cpu", factories=None,
            progress=None) -> dict:
    """Measure the given (task, estimator) pairs. ``factories`` may map an
    estimator name to a callable returning a (fresh) estimator, e.g. a planted
    regression; by default the configured estimator from ``model_seed``.

    Returns {"seed", "settings", "fingerprints": {task: ...}, "pairs": {key: entry}},
    where an entry has ``status`` measured / skipped / error."""
    factories = factories or {}
    out = {"seed": seed, "settings": settings.to_json(), "fingerprints": {}, "pairs": {}}
    problems = {}
    for task, name in pairs:
        key = f"{task}/{name}"
        if task not in problems:
            problems[task] = build_problem(task, settings, device)
            out["fingerprints"][task] = problems[task].fingerprint()
        problem = problems[task]
        factory = factories.get(name) or (lambda n=name: make_estimator(n, settings.model_seed))
        entry = {"task": task, "estimator": name, "m": problem.m,
                 "estimator_config": estimator_config(name)}
        try:
            est = factory()
            why = refusal(problem, est)
            if why:
                entry.update(status="skipped", reason=why)
            else:
                with torch.random.fork_rng(devices=[]):
                    entry.update(problem.measure(factory, seed, settings.groups))
                v = float(np.mean(entry["groups"]))
                entry.update(status="measured", grad_var=v,
                             log10_grad_var=math.log10(v) if v > 0 else None)  # JSON-safe
        except Exception as e:  # a broken estimator is reported, not a traceback
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            entry.update(status="error", reason=f"{type(e).__name__}: {msg}"[:300])
        out["pairs"][key] = entry
        if progress:
            progress(entry)
    return out


def all_pairs(task_names, est_names):
    return [(t, e) for t in task_names for e in est_names]
