"""The estimator contract, the registry and shared sampling helpers.

An estimator turns unnormalised logits of shape (B, N, K) -- N independent
K-way categorical variables per example -- and a loss ``f`` into

* ``out.loss``: (B,) the value of ``f`` at the sample drawn, and
* ``out.surrogate``: a scalar whose ``backward()`` gives the estimator's estimate
  of the gradient of ``mean_b E_{z_b ~ q(logits_b)} f(z)_b`` (of the relaxed
  objective, for relaxed estimators) with respect to the logits and to every
  parameter ``f`` closes over.

``f`` maps samples of shape (*S, B, N, K) to losses of shape (*S, B).
"""

from __future__ import annotations

import contextlib
import inspect
import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
LossFn = Callable[[Tensor], Tensor]

_REGISTRY: dict[str, type["Estimator"]] = {}


class EstimatorConfigError(ValueError):
    """A bad estimator name or setting; its message is one line naming the key."""


@dataclass
class EstimatorOutput:
    loss: Tensor  # (B,) f at the sample(s) drawn (mean over sample dims if several)
    surrogate: Tensor  # scalar; backward() gives the gradient estimate
    sample: Tensor | None = None  # what was passed to f
    log_sample: Tensor | None = None  # log-space relaxed sample (Concrete estimators)


def register(name: str):
    """Class decorator: make an estimator available as ``estimators.get(name)``."""

    def deco(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise EstimatorConfigError(f"estimator name {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def names() -> list[str]:
    return sorted(_REGISTRY)


def get_class(name: str) -> type["Estimator"]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise EstimatorConfigError(
            f"unknown estimator {name!r}; allowed: {', '.join(names())}"
        ) from None


def get(name: str, **kwargs) -> "Estimator":
    cls = get_class(name)
    allowed = cls.options()
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise EstimatorConfigError(
            f"estimator.{unknown[0]} is not an option of {name!r}; "
            f"allowed: {', '.join(allowed) or '(none)'}"
        )
    return cls(**kwargs)


class Estimator:
    """Base class. Subclasses implement ``estimate(logits, f)``.

    Class attributes describe what the generic tests check:

    * ``unbiased``: the surrogate's gradient is unbiased for the discrete objective;
    * ``relaxed``: it is unbiased for the Gumbel-Softmax relaxed objective at
      temperature ``self.temperature``;
    * ``hard_forward``: ``f`` only ever sees one-hot samples;
    * ``binary_only``: refuses K > 2; ``logit_scale`` (where set, else 1): the last
      call's divisor of the logits' gradient (variance normalisation, ``_normalize``);
    * ``kl``: ``"categorical"`` (analytic KL of the discrete model, added by the
      task), ``"concrete"`` (the estimator computes the relaxed KL, ``relaxed_kl``)
      or ``"sampled"`` (the task puts log q(z) - log p(z) inside f: multi-sample
      objectives such as VIMCO's importance-weighted bound);
    * ``noise``: what the estimate is a deterministic function of, for biased
      estimators whose own expectation the generic tests compute: ``"sample"``
      (the one-hot z ~ q: E[g] = sum_z q(z) g(z), by enumeration) or ``"gumbel"``
      (the Gumbel noise G: E[g] = E_G g(G), by quadrature for K = 2). Such an
      estimator implements ``estimate_given(logits, f, noise)`` and its
      ``estimate`` is ``estimate_given`` at a fresh draw of that noise.
    """

    name: ClassVar[str] = "?"
    unbiased: ClassVar[bool] = False
    relaxed: ClassVar[bool] = False
    hard_forward: ClassVar[bool] = False
    binary_only: ClassVar[bool] = False
    kl: ClassVar[str] = "categorical"
    noise: ClassVar[str | None] = None

    def __init__(self):
        self.training = True  # False: stateful estimators freeze their state
        self.step = 0

    @classmethod
    def options(cls) -> list[str]:
        params = inspect.signature(cls.__init__).parameters
        return [p for p in params if p != "self"]

    # --- the contract -------------------------------------------------------
    def __call__(self, logits: Tensor, f: LossFn) -> EstimatorOutput:
        if logits.dim() != 3:
            raise EstimatorConfigError(
                f"logits must have shape (B, N, K), got {tuple(logits.shape)}"
            )
        self.check_categories(logits.shape[-1])
        counter = self.__dict__.get("f_counter")  # attached by the runner (bench.counting)
        if counter is not None and self.training:
            f = counter.wrap(f)
        return self.estimate(logits, f)

    def estimate(self, logits: Tensor, f: LossFn) -> EstimatorOutput:
        raise NotImplementedError

    def estimate_given(self, logits: Tensor, f: LossFn, noise: Tensor) -> EstimatorOutput:
        """The estimate at fixed noise (see ``noise``): a one-hot sample (B, N, K)
        for ``noise = "sample"``, Gumbel noise (B, N, K) for ``"gumbel"``."""
        raise NotImplementedError

    # --- hooks used by the runner ------------------------------------------
    def check_categories(self, k: int) -> None:
        if k < 2:
            raise EstimatorConfigError(f"task.categories must be >= 2, got {k}")
        if self.binary_only and k != 2:
            raise EstimatorConfigError(
                f"estimator {self.name!r} is binary-only (K=2) but task.categories={k}"
            )

    def check_latents(self, n: int, k: int) -> None:
        """Refuse, before any training, a latent space this estimator cannot handle."""
        self.check_categories(k)

    def set_step(self, step: int) -> None:
        """Called by the training loop before each step (temperature schedules)."""
        self.step = step

    @contextlib.contextmanager
    def frozen(self):
        """Draw estimates without updating internal state (baselines etc.)."""
        old, self.training = self.training, False
        try:
            yield self
        finally:
            self.training = old

    def extra_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters the estimator owns (control variates); trained by itself."""
        return []

    def describe(self) -> dict:
        return {"temperature": getattr(self, "temperature", float("nan"))}

    # --- state, for checkpoints -------------------------------------------------
    #: attributes left out of ``state_dict`` (caches that are a function of the shape)
    state_exclude: ClassVar[tuple[str, ...]] = ()

    def state_dict(self) -> dict:
        """Everything that changes while training, from the instance's attributes:
        tensors (baselines), ``nn.Module``s and optimizers (control variates), plain
        numbers, strings, containers of these, and plain objects holding them (a
        temperature schedule). ``torch.save``-able with ``weights_only=True``. An
        attribute of another type raises a TypeError naming it, so a new estimator
        with state this cannot save is caught by tests/test_estimator_state.py."""
        return {k: _pack(f"{self.name}.{k}", v) for k, v in vars(self).items()
                if k not in self.state_exclude}

    def load_state_dict(self, state: dict, latents: tuple[int, int] | None = None,
                        device=None) -> None:
        """Restore ``state_dict()``. State that an estimator builds on its first call
        (a control variate's network and optimizer) is built first by one frozen call
        on zero logits of shape (1, *latents) -- it draws random numbers, so restore
        the RNG after this."""
        missing = [k for k, v in state.items() if v[0] in ("module", "optim")
                   and getattr(self, k, None) is None]
        if missing:
            if latents is None:
                raise ValueError(f"estimator {self.name!r}: state {missing[0]!r} is built on "
                                 f"first use; pass latents=(N, K) to load_state_dict")
            self.materialize(*latents, device=device)
        for k, v in state.items():
            setattr(self, k, _unpack(f"{self.name}.{k}", v, getattr(self, k, None)))

    def materialize(self, n: int, k: int, device=None) -> None:
        """Build the state an estimator creates on its first call, without training."""
        logits = torch.zeros(1, n, k, device=device, requires_grad=True)
        with self.frozen(), torch.enable_grad():
            self(logits, lambda z: z.flatten(-2).sum(-1))


_PLAIN = (int, float, bool, str, type(None))


def _pack(key: str, v):
    """(kind, payload) for one attribute value; see ``Estimator.state_dict``."""
    if isinstance(v, torch.nn.Parameter):
        return ("param", v.detach().clone())
    if isinstance(v, Tensor):
        return ("tensor", v.detach().clone())
    if isinstance(v, torch.nn.Module):
        return ("module", v.state_dict())
    if isinstance(v, torch.optim.Optimizer):
        return ("optim", v.state_dict())
    if isinstance(v, _PLAIN):
        return ("value", v)
    if isinstance(v, (list, tuple)):
        return ("list" if isinstance(v, list) else "tuple",
                [_pack(f"{key}[{i}]", x) for i, x in enumerate(v)])
    if isinstance(v, dict):
        return ("dict", [(_pack(f"{key}.key", a), _pack(f"{key}[{a!r}]", b))
                         for a, b in v.items()])
    if hasattr(v, "__dict__") and not callable(v):
        return ("object", {a: _pack(f"{key}.{a}", b) for a, b in vars(v).items()})
    raise TypeError(f"estimator state {key} of type {type(v).__name__} cannot be saved; "
                    f"list it in state_exclude or hold it as tensors, modules or numbers")


def _unpack(key: str, packed, current):
    kind, v = packed
    if kind == "param":
        if not isinstance(current, torch.nn.Parameter) or current.shape != v.shape:
            raise ValueError(f"estimator state {key}: no parameter of shape "
                             f"{tuple(v.shape)} to load into")
        with torch.no_grad():
            current.copy_(v)  # in place: optimizers hold this very tensor
        return current
    if kind == "module":
        current.load_state_dict(v)
        return current
    if kind == "optim":
        current.load_state_dict(v)
        return current
    if kind == "tensor":
        return v.clone()
    if kind == "value":
        return v
    if kind in ("list", "tuple"):
        cur = list(current) if isinstance(current, (list, tuple)) else []
        out = [_unpack(f"{key}[{i}]", x, cur[i] if i < len(cur) else None)
               for i, x in enumerate(v)]
        return out if kind == "list" else tuple(out)
    if kind == "dict":
        cur = current if isinstance(current, dict) else {}
        out = {}
        for pk, pv in v:
            a = _unpack(f"{key}.key", pk, None)
            out[a] = _unpack(f"{key}[{a!r}]", pv, cur.get(a))
        return out
    if kind == "object":
        if current is None:
            raise ValueError(f"estimator state {key}: no object to load into")
        for a, b in v.items():
            setattr(current, a, _unpack(f"{key}.{a}", b, getattr(current, a, None)))
        return current
    raise ValueError(f"estimator state {key}: unknown kind {kind!r}")


class Temperature:
    """tau_t = max(tau_min, tau0 * exp(-rate * t_n)), t_n = t rounded down to a
    multiple of ``every`` (Jang et al. 2017's annealing schedule)."""

    def __init__(self, temperature: float, anneal_rate: float = 0.0,
                 anneal_every: int = 1000, min_temperature: float | None = None,
                 key: str = "estimator.temperature"):
        check_positive(key, temperature)
        if anneal_rate < 0:
            raise EstimatorConfigError(f"estimator.anneal_rate must be >= 0, got {anneal_rate}")
        if int(anneal_every) < 1:
            raise EstimatorConfigError(f"estimator.anneal_every must be >= 1, got {anneal_every}")
        if min_temperature is not None:
            check_positive("estimator.min_temperature", min_temperature)
        self.tau0 = float(temperature)
        self.rate = float(anneal_rate)
        self.every = int(anneal_every)
        self.tau_min = float(min_temperature) if min_temperature is not None else 0.0

    def at(self, step: int) -> float:
        if self.rate == 0.0:
            return self.tau0
        t = (step // self.every) * self.every
        return max(self.tau_min, self.tau0 * math.exp(-self.rate * t))


def check_positive(key: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise EstimatorConfigError(f"{key} must be a number > 0, got {value!r}") from None
    if not v > 0 or math.isinf(v):
        raise EstimatorConfigError(f"{key} must be a finite number > 0, got {value!r}")
    return v


class TemperatureEstimator(Estimator):
    """An estimator with a (possibly annealed) temperature."""

    def __init__(self, temperature: float = 1.0, anneal_rate: float = 0.0,
                 anneal_every: int = 1000, min_temperature: float = 0.5):
        super().__init__()
        self.schedule = Temperature(temperature, anneal_rate, anneal_every, min_temperature)
        self.temperature = self.schedule.at(0)

    def set_step(self, step: int) -> None:
        super().set_step(step)
        self.temperature = self.schedule.at(step)

    def describe(self) -> dict:
        return {"temperature": self.schedule.tau0}


# --- softmax over the K categories -------------------------------------------

# torch's CPU softmax kernels for the last dimension process one row at a time and
# are slow when that dimension is shorter than a vector register (K < 16 floats):
# for (100, 20, 10), forward and backward take ~0.5 ms, several times a matrix
# product of the step (torch 2.14). Over a non-last dimension the kernel vectorises
# across the rows instead, so for small K on CPU the categories are moved to the
# front, normalised there and moved back: the same function, 3-4x faster.
_SMALL_K = 16
_MIN_ELEMENTS = 4096


def _categories_first(x: Tensor) -> bool:
    return x.device.type == "cpu" and x.shape[-1] < _SMALL_K and x.numel() >= _MIN_ELEMENTS


def _over_categories(fn, x: Tensor) -> Tensor:
    """``fn(x, dim)`` over the last dimension, through the categories-first layout
    where that is faster."""
    if _categories_first(x):
        return fn(x.movedim(-1, 0).contiguous(), 0).movedim(0, -1).contiguous()
    return fn(x, -1)


def softmax(x: Tensor) -> Tensor:
    """softmax over the last dimension (the K categories)."""
    return _over_categories(torch.softmax, x)


def log_softmax(x: Tensor) -> Tensor:
    """log_softmax over the last dimension (the K categories)."""
    return _over_categories(torch.log_softmax, x)


# --- sampling helpers -------------------------------------------------------

def uniform(shape, like: Tensor) -> Tensor:
    """U(0, 1) noise of the given shape, with like's dtype and device.

    Drawn as a flat vector and viewed: on CPU, torch's uniform kernel is several
    times slower on 3-d tensors than on 1-d ones (75 vs 18 us for 100x20x10,
    torch 2.14), and the draw is on every training step."""
    shape = torch.Size(shape)
    return torch.rand(shape.numel(), dtype=like.dtype, device=like.device).view(shape)


def uniform_like(x: Tensor) -> Tensor:
    return uniform(x.shape, x)


def gumbel_like(logits: Tensor) -> Tensor:
    """Gumbel(0, 1) noise from uniforms clamped away from 0 and 1 (never log 0)."""
    finfo = torch.finfo(logits.dtype)
    u = uniform_like(logits).clamp_(finfo.tiny, 1.0 - finfo.eps)
    return -torch.log(-torch.log(u))


def one_hot_argmax(x: Tensor) -> Tensor:
    return F.one_hot(x.argmax(-1), x.shape[-1]).to(x.dtype)


def sample_one_hot(logits: Tensor) -> Tensor:
    """An exact sample from Categorical(softmax(logits)) as a one-hot (Gumbel-max)."""
    return one_hot_argmax(logits + gumbel_like(logits))


def log_prob_one_hot(logits: Tensor, z: Tensor) -> Tensor:
    """log q(z) summed over the N variables: (..., B, N, K) -> (..., B)."""
    return (log_softmax(logits) * z).sum((-1, -2))
