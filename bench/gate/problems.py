"""The fixed problems the gate measures on: the toy problem (exact gradient known)
and the VAE tasks on a fixed digits minibatch, each from a fixed model state."""

from __future__ import annotations

import itertools
import math
import zlib
from functools import lru_cache

import numpy as np
import torch
import yaml

import estimators
import tasks
from tasks import datasets

from ..paths import CONF_DIR
from .settings import TASKS, CheckError, Settings

# --- the fixed problems ------------------------------------------------------

def _fingerprint(tensors) -> dict:
    ts = [t.detach().double().cpu() for t in tensors]
    return {"numel": int(sum(t.numel() for t in ts)),
            "sum": float(sum(t.sum() for t in ts)),
            "sumsq": float(sum(t.pow(2).sum() for t in ts))}


def _same_fingerprint(a: dict, b: dict) -> bool:
    return (a.get("numel") == b.get("numel")
            and all(math.isclose(a.get(k, math.nan), b.get(k, math.nan), rel_tol=1e-6,
                                 abs_tol=1e-9) for k in ("sum", "sumsq")))


def fresh_estimator(factory, logits, f, seed: int):
    """A new estimator whose lazily created state (e.g. a control-variate network
    built on first use) is initialised from ``seed``, not from the sampling
    stream: one frozen warm-up call under that seed. Every group then starts
    from the same estimator state, so the groups are identically distributed."""
    est = factory()
    with torch.random.fork_rng(devices=[logits.device] if logits.is_cuda else []):
        torch.manual_seed(seed)
        with est.frozen():
            est(logits.detach(), f)
    return est


def _seed(*parts) -> int:
    """A sampling seed for one group: independent streams for distinct parts."""
    words = [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] >> 1)


class ToyProblem:
    """Minimise E_{z~q}[sum_i (z_i - t)^2], z_i ~ Bernoulli(sigmoid(a_i)),
    t = 0.499 (the toy problem of Tucker et al. 2017, REBAR, and Grathwohl et al.
    2018, RELAX), with N = len(a) variables and logits (0, a_i) (K = 2), B = 1.
    The gradient is taken w.r.t. the logits; it is known exactly by enumeration,
    so the estimator's bias is reported too."""

    name = "toy"

    def __init__(self, settings: Settings, device="cpu"):
        a = torch.tensor(settings.toy_logits, dtype=torch.float64, device=device)
        self.logits = torch.stack([torch.zeros_like(a), a], -1)[None]  # (1, N, 2)
        self.t = float(settings.toy_target)
        self.m = settings.m_for("toy")
        self.model_seed = settings.model_seed
        self.timing_batch = settings.timing_batch
        self.exact = self.exact_gradient()

    @property
    def latent_shape(self):
        return tuple(self.logits.shape[1:])

    def f(self, z):
        return ((z[..., 1] - self.t) ** 2).sum(-1)

    def exact_gradient(self) -> torch.Tensor:
        """d/dlogits of sum_s q(s) f(s), enumerating all 2^N states."""
        lg = self.logits.detach().clone().requires_grad_(True)
        n = lg.shape[1]
        p = torch.softmax(lg, -1)[0]  # (N, 2)
        total = lg.new_zeros(())
        for s in itertools.product((0, 1), repeat=n):
            prob = torch.stack([p[i, si] for i, si in enumerate(s)]).prod()
            total = total + prob * sum((si - self.t) ** 2 for si in s)
        (g,) = torch.autograd.grad(total, lg)
        return g[0]

    def fingerprint(self) -> dict:
        return _fingerprint([self.logits]) | {"target": self.t}

    def estimates(self, est, m: int) -> torch.Tensor:
        """m independent gradient estimates w.r.t. the logits, (m, N, K): one
        call on m stacked copies (each copy's surrogate is its own term)."""
        rep = self.logits.repeat(m, 1, 1).requires_grad_(True)
        with est.frozen():
            out = est(rep, self.f)
        (g,) = torch.autograd.grad(out.surrogate * m, rep)
        return g

    def measure(self, est_factory, seed: int, groups: int) -> dict:
        vs, gs = [], []
        for r in range(groups):
            est = fresh_estimator(est_factory, self.logits, self.f, self.model_seed)
            torch.manual_seed(_seed(seed, "toy", est.name, r))
            g = self.estimates(est, self.m).detach()
            vs.append(float(g.var(0).mean()))
            gs.append(g)
        g = torch.cat(gs).flatten(1)
        exact = self.exact.flatten()
        bias = g.mean(0) - exact
        se = g.std(0) / math.sqrt(g.shape[0])
        z = torch.where(se > 0, bias.abs() / se.clamp_min(1e-300),
                        torch.where(bias.abs() > 1e-12 * (1 + exact.abs()), math.inf, 0.0))
        return {"groups": vs, "bias_rms": float(bias.pow(2).mean().sqrt()),
                "bias_z": float(z.max()), "exact_rms": float(exact.pow(2).mean().sqrt())}

    def timed_step(self, est):
        """One estimate on a batch of ``timing_batch`` copies, with its backward."""
        logits = self.logits.repeat(self.timing_batch, 1, 1)

        def step():
            lg = logits.detach().requires_grad_(True)
            est(lg, self.f).surrogate.backward()
        return step


@lru_cache(maxsize=4)
def _digits(device: str):
    return datasets.load({"name": "digits", "threshold": 8.0}, None, device)


class VAEProblem:
    """A VAE task (conf/task/NAME.yaml) on the digits data, initialised from
    ``model_seed``, untrained; the fixed minibatch is the first ``batch`` rows of
    the training split. The variance is the task's own ``grad_variance``."""

    def __init__(self, name: str, settings: Settings, device="cpu"):
        self.name = name
        path = CONF_DIR / "task" / f"{name}.yaml"
        if not path.exists():
            raise CheckError(f"task {name!r} has no config at {path}")
        cfg = dict(yaml.safe_load(path.read_text()) or {})
        cfg.update(settings.overrides_for(name))
        self.config = cfg
        data = _digits(str(device))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.model_seed)
            self.task = tasks.build(cfg, data, device)
        self.x = data.eval_split("train")[: settings.batch]
        self.x_time = data.eval_split("train")[: settings.timing_batch]
        self.m = settings.m_for(name)
        self.model_seed = settings.model_seed

    @property
    def latent_shape(self):
        return tuple(self.task.latent_shape)

    def fingerprint(self) -> dict:
        return _fingerprint([*self.task.parameters(), self.x])

    def measure(self, est_factory, seed: int, groups: int) -> dict:
        vs = []
        with torch.no_grad():
            logits = self.task.logits(self.x)
        for r in range(groups):
            est = fresh_estimator(est_factory, logits, lambda z: self.task.recon(self.x, z),
                                  self.model_seed)
            torch.manual_seed(_seed(seed, self.name, est.name, r))
            vs.append(float(self.task.grad_variance(self.x, est, self.m)))
        return {"groups": vs}

    def timed_step(self, est):
        """The gradient of a training step: the task's loss on ``timing_batch``
        examples, backward to every parameter (no optimiser step)."""
        task, x = self.task, self.x_time

        def step():
            task.zero_grad(set_to_none=True)
            obj, _ = task.loss(x, est)
            obj.backward()
        return step


def build_problem(name: str, settings: Settings, device="cpu"):
    if name == "toy":
        return ToyProblem(settings, device)
    if name in ("bernoulli_vae", "categorical_vae"):
        return VAEProblem(name, settings, device)
    raise CheckError(f"--tasks: unknown task {name!r}; allowed: {', '.join(TASKS)}")


def refusal(problem, est) -> str | None:
    """Why the estimator cannot run on this problem (e.g. binary-only on K = 10)."""
    try:
        est.check_latents(*problem.latent_shape)
    except estimators.EstimatorConfigError as e:
        return str(e)
    return None
