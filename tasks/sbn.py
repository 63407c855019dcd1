"""Structured output prediction with a stochastic binary network (SBN):
predict the lower half x_l of a binarised digit from its upper half x_u
(Raiko et al., 2014; Gu et al., 2016, MuProp; Jang et al., 2017, section 4.2).

L stochastic layers of N independent K-way units (K = 2: Bernoulli), each one
an affine map of the layer below (``hidden`` adds deterministic layers between):

    h_1 ~ Cat(softmax(W_1 x_u + b_1)),   h_l ~ Cat(softmax(W_l h_{l-1} + b_l)),
    p(x_l | h_L) = Bernoulli(sigmoid(W_o h_L + b_o)).

For K = 2 a layer is N sigmoid units (logits (0, a), the next layer sees the
N bits); for K > 2 it is N one-hot groups (the next layer sees N*K inputs).
``sbn``: 392-200-200-392 with 200 Bernoulli units per layer (N = 200, K = 2);
``sbn_categorical``: 20 x 10-way units per layer (N = 20, K = 10), also
392-200-200-392 counted in one-hot units.

Training minimises the single-sample objective (m = 1 in Jang et al.)

    E_{h ~ p(h | x_u)} [ -log p(x_l | h_L) ].

The estimator is applied to each stochastic layer in turn: the loss it sees for
layer l is the rest of the network, which samples layers l+1..L with copies of
the same estimator (one per layer, each with its own state: baselines, control
variates). That inner loss is returned with the inner estimator's surrogate
gradient attached (value: the loss drawn; gradient: the inner surrogate's), so
every layer's parameters get the estimator's own gradient. Where the estimator
evaluates f on a stack of samples (MuProp, ARM, RELAX, ...) the layer above is
sampled once per stacked sample. This is exact whenever the estimator averages
f uniformly over the examples of a batch (every estimator here except those
with per-example importance weights, such as VIMCO, which are refused with a
one-line error when the gradient is taken).

Metrics, on the discrete model (hard samples):
``*_neg_elbo``: the single-sample bound E_h[-log p(x_l | h)] (nats per example);
``test_nll``: the m-sample bound -log (1/m sum_i p(x_l | h^(i))), h^(i) ~ p(h | x_u),
with m = ``eval.nll_samples`` (1000 in the paper).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from estimators.base import sample_one_hot

from . import _hard
from .base import TaskConfigError, register
from .vae import mlp

_ACTIVATIONS = ("relu", "tanh", "elu")


def _int(key: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TaskConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _sizes(key: str, value) -> list[int]:
    try:
        out = [int(v) for v in value]
    except (TypeError, ValueError):
        raise TaskConfigError(f"{key} must be a list of positive integers, got {value!r}") from None
    if any(v < 1 for v in out):
        raise TaskConfigError(f"{key} must be a list of positive integers, got {value!r}")
    return out


class _AttachSurrogate(torch.autograd.Function):
    """Value: the inner losses drawn, (S, B). Gradient: slice s's surrogate (a
    mean over its B examples) receives the sum of the upstream gradients of its
    examples -- exact when they are all equal, i.e. when the outer estimator
    averages f uniformly over examples. Anything else (per-example importance
    weights) cannot be attributed through a batch-mean surrogate and is refused."""

    @staticmethod
    def forward(ctx, losses, surrogates, name):
        ctx.name = name
        return losses.clone()

    @staticmethod
    def backward(ctx, grad):
        spread = grad.amax(-1) - grad.amin(-1)
        if bool((spread > 1e-5 * grad.abs().amax(-1) + 1e-30).any()):
            raise TaskConfigError(
                f"estimator {ctx.name!r} differentiates the loss with unequal weights per example "
                f"(importance weights, or a learned temperature inside a control variate), which "
                f"the layer-by-layer SBN objective cannot attribute; use a VAE task (for relax "
                f"and rebar: estimator.learn_temperature=false)")
        return None, grad.sum(-1), None


@register("sbn")
@register("sbn_categorical")
class SBN(nn.Module):
    def __init__(self, data, device="cpu", latents: int = 200, categories: int = 2,
                 layers: int = 2, hidden=(), activation: str = "tanh"):
        super().__init__()
        self.n = _int("task.latents", latents)
        self.k = _int("task.categories", categories, minimum=2)
        self.depth = _int("task.layers", layers)
        if activation not in _ACTIVATIONS:
            raise TaskConfigError(
                f"task.activation must be one of {', '.join(_ACTIVATIONS)}; got {activation!r}")
        hid = _sizes("task.hidden", hidden)
        dim = int(data.dim)
        rows, cols = data.image_shape
        if rows * cols == dim and rows >= 2:
            self.n_upper = (rows // 2) * cols  # the upper half of the image, row-major
        elif dim >= 2:
            self.n_upper = dim // 2
        else:  # the 1-pixel stand-in used to validate options: any split will do
            self.n_upper = 1
        self.n_lower = max(1, dim - self.n_upper)
        self.image_shape = (rows, cols)
        # width of a stochastic layer: N sigmoid units for K = 2, N*K one-hot units otherwise
        w = self.n if self.k == 2 else self.n * self.k
        self.nets = nn.ModuleList(
            [mlp([self.n_upper, *hid, w], activation)]
            + [mlp([w, *hid, w], activation) for _ in range(self.depth - 1)])
        self.out = mlp([w, *hid, self.n_lower], activation)
        self.to(device)

    @property
    def latent_shape(self) -> tuple[int, int]:
        return self.n, self.k

    def encoder_parameters(self):
        """The parameters of the stochastic layers' logits (what the estimator acts on)."""
        return list(self.nets.parameters())

    # --- model pieces -------------------------------------------------------
    def split(self, x):
        return x[..., :self.n_upper], x[..., self.n_upper:self.n_upper + self.n_lower]

    def features(self, h):
        """What the next layer sees of a (*S, B, N, K) sample: h[..., 1] (the
        Bernoulli units) for K = 2, the flattened one-hots otherwise."""
        return h[..., 1] if self.k == 2 else h.flatten(-2)

    def logits(self, layer: int, below):
        """Logits of stochastic layer ``layer`` (0-based) given the layer below
        (x_u for layer 0, a (*S, B, N, K) sample otherwise): (*S, B, N, K).
        For K = 2 the unit's logit a gives the pair (0, a): p(h = 1) = sigmoid(a)."""
        a = self.nets[layer](below if layer == 0 else self.features(below))
        if self.k == 2:
            return torch.stack([torch.zeros_like(a), a], -1)
        return a.unflatten(-1, (self.n, self.k))

    def recon(self, x_lower, h):
        """-log p(x_l | h_L), h of shape (*S, B, N, K) -> (*S, B)."""
        out = self.out(self.features(h))
        return F.binary_cross_entropy_with_logits(
            out, x_lower.expand_as(out), reduction="none").sum(-1)

    # --- training -----------------------------------------------------------
    def layer_estimators(self, estimator) -> list:
        """One estimator per stochastic layer: ``estimator`` for the first, copies
        of it (own state: baselines, control variates) for the layers above,
        following its step and training flag."""
        if self.__dict__.get("_est_source") is not estimator:
            copies = [copy.deepcopy(estimator) for _ in range(self.depth - 1)]
            self.__dict__["_est_source"], self.__dict__["_est_copies"] = estimator, copies
        for c in self.__dict__["_est_copies"]:
            c.training = estimator.training
            if c.step != estimator.step or getattr(c, "temperature", None) != getattr(
                    estimator, "temperature", None):
                c.set_step(estimator.step)
        return [estimator, *self.__dict__["_est_copies"]]

    def _rest(self, layer: int, h, x_lower, ests):
        """-log p(x_l | .) given a sample h (*S, B, N, K) of layer ``layer``,
        sampling the layers above with their estimators (once per leading sample
        slice); its value is the loss drawn, its gradient the inner surrogates'."""
        if layer == self.depth - 1:
            return self.recon(x_lower, h)
        est = ests[layer + 1]
        lead = h.shape[:-3]
        losses, surrogates = [], []
        for hs in h.reshape(-1, *h.shape[-3:]):
            inner = est(self.logits(layer + 1, hs),
                        lambda z: self._rest(layer + 1, z, x_lower, ests))
            losses.append(inner.loss.detach())
            surrogates.append(inner.surrogate)
        out = _AttachSurrogate.apply(torch.stack(losses), torch.stack(surrogates), est.name)
        return out.reshape(*lead, -1)

    def loss(self, x, estimator):
        ests = self.layer_estimators(estimator)
        x_upper, x_lower = self.split(x)
        out = estimator(self.logits(0, x_upper),
                        lambda z: self._rest(0, z, x_lower, ests))
        return out.surrogate, out

    # --- evaluation on the discrete model ------------------------------------
    @torch.no_grad()
    def sample_top(self, x_upper, samples: int | None = None):
        """Ancestral hard samples of every layer given x_u (B, D_u); returns h_L,
        (B, N, K), or (samples, B, N, K) for ``samples`` independent draws."""
        logits = self.logits(0, x_upper)
        if samples is not None:
            logits = logits.expand(samples, *logits.shape)
        h = sample_one_hot(logits)
        for layer in range(1, self.depth):
            h = sample_one_hot(self.logits(layer, h))
        return h

    # The evaluations below draw the samples sample_top draws, as indices, and pass
    # them up without one-hots (tasks/_hard.py): the same numbers as
    # recon(x_l, sample_top(...)) up to float rounding (tests/test_evalcost.py).
    def _hard_nets(self):
        """Each stochastic layer above the first and the output net, on indices."""
        bits = self.k == 2  # the layers see the N bits: the same product, bit for bit
        return [_hard.first_layer(net, self.n, self.k, bits) for net in [*self.nets[1:], self.out]]

    @torch.no_grad()
    def _recon_hard(self, x_upper, x_lower, samples: int | None = None, nets=None):
        nets = nets or self._hard_nets()
        logits = self.logits(0, x_upper)
        idx = _hard.gumbel_argmax(logits, samples)
        for net in nets[:-1]:
            a = net(idx)
            logits = (torch.stack([torch.zeros_like(a), a], -1) if self.k == 2
                      else a.unflatten(-1, (self.n, self.k)))
            idx = _hard.gumbel_argmax(logits)
        return _hard.bernoulli_nll(nets[-1](idx), x_lower)

    @torch.no_grad()
    def neg_elbo(self, x):
        """Single-sample bound -log p(x_l | h), h ~ p(h | x_u): (B,)."""
        x_upper, x_lower = self.split(x)
        return self._recon_hard(x_upper, x_lower)

    @torch.no_grad()
    def nll(self, x, samples: int, max_floats: float = 2e7):
        """The m-sample bound -log (1/m sum_i p(x_l | h^(i))), m = ``samples``: (B,)."""
        x_upper, x_lower = self.split(x)
        per_sample = x.shape[0] * max(self.n * self.k, self.n_lower)
        # the chunking decides which random numbers each layer gets (the layers are drawn
        # in turn per chunk): kept as it was, so the bound is the one stored before
        chunk = max(1, int(max_floats // per_sample))
        nets = self._hard_nets()
        logs = []
        for s0 in range(0, samples, chunk):
            s = min(chunk, samples - s0)
            logs.append(-self._recon_hard(x_upper, x_lower, s, nets))
        w = torch.cat(logs, 0)
        return -(torch.logsumexp(w, 0) - math.log(samples))

    @torch.no_grad()
    def complete(self, x, samples: int = 1):
        """Images whose lower half is p(x_l = 1 | h) for ``samples`` draws of h
        given the upper half of x: (samples, B, D)."""
        x_upper, _ = self.split(x)
        h = self.sample_top(x_upper, samples)
        lower = torch.sigmoid(self.out(self.features(h)))
        return torch.cat([x_upper.expand(samples, *x_upper.shape), lower], -1)

    def _batched_mean(self, fn, x, batch_size):
        total = 0.0
        for i in range(0, x.shape[0], batch_size):
            total += fn(x[i:i + batch_size]).double().sum().item()
        return total / x.shape[0]

    def evaluate(self, data, eval_cfg, final: bool = False) -> dict[str, float]:
        bs = int(eval_cfg.get("batch_size", 1000))
        was = self.training
        self.eval()
        train = data.eval_split("train")[: int(eval_cfg.get("train_subset", 10000))]
        out = {
            "train_neg_elbo": self._batched_mean(self.neg_elbo, train, bs),
            "valid_neg_elbo": self._batched_mean(self.neg_elbo, data.eval_split("valid"), bs),
            "test_neg_elbo": self._batched_mean(self.neg_elbo, data.eval_split("test"), bs),
        }
        s = int(eval_cfg.get("nll_samples", 0))
        if s > 0 and (final or eval_cfg.get("nll_every_eval", False)):
            out["test_nll"] = self._batched_mean(
                lambda xb: self.nll(xb, s), data.eval_split("test"), max(1, bs // 10))
        self.train(was)
        return out

    def grad_variance(self, x, estimator, m: int) -> float:
        """Mean over the stochastic layers' parameters of the variance, across m
        independent estimates on the minibatch x, of the estimator's gradient."""
        params = self.encoder_parameters()
        mean = [torch.zeros_like(p) for p in params]
        m2 = [torch.zeros_like(p) for p in params]
        with estimator.frozen():
            for i in range(1, m + 1):
                obj, _ = self.loss(x, estimator)
                grads = torch.autograd.grad(obj, params, allow_unused=True)
                for g, mu, sq in zip(grads, mean, m2, strict=True):
                    g = torch.zeros_like(mu) if g is None else g
                    d = g - mu
                    mu += d / i
                    sq += d * (g - mu)  # Welford's running sum of squares
        total = sum((sq / (m - 1)).sum().item() for sq in m2)
        return total / sum(p.numel() for p in params)
