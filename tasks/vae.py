"""Discrete VAEs (Jang et al. 2017, section 4.2): N independent K-way latents,
uniform (or learned) prior, Bernoulli likelihood, MLP encoder/decoder
(784-512-256 and 256-512-784 by default, the input size following the data).

``bernoulli_vae``: N = 200, K = 2. ``categorical_vae``: N = 20, K = 10.

Training objective: the estimator's surrogate of E_q[-log p(x|z)] plus the KL
it pairs with (analytic categorical KL, or the relaxed Concrete KL). Every
metric is computed on the discrete model: hard samples, analytic KL.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from estimators import categorical_kl
from estimators.base import log_softmax

from . import _hard
from .base import TaskConfigError, kl_logits, register, report_progress

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}


def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def _int_list(key: str, value) -> list[int]:
    try:
        out = [int(v) for v in value]
    except (TypeError, ValueError):
        raise TaskConfigError(f"{key} must be a list of positive integers, got {value!r}") from None
    if any(v < 1 for v in out):
        raise TaskConfigError(f"{key} must be a list of positive integers, got {value!r}")
    return out


def _positive_int(key: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TaskConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


@register("bernoulli_vae")
@register("categorical_vae")
class VAE(nn.Module):
    def __init__(self, data, device="cpu", latents: int = 20, categories: int = 10,
                 encoder_hidden=(512, 256), decoder_hidden=(256, 512),
                 activation: str = "relu", learn_prior: bool = False):
        super().__init__()
        self.n = _positive_int("task.latents", latents)
        self.k = _positive_int("task.categories", categories, minimum=2)
        if activation not in _ACTIVATIONS:
            raise TaskConfigError(
                f"task.activation must be one of {', '.join(_ACTIVATIONS)}; got {activation!r}")
        dim = data.dim
        nk = self.n * self.k
        self.encoder = mlp([dim, *_int_list("task.encoder_hidden", encoder_hidden), nk], activation)
        self.decoder = mlp([nk, *_int_list("task.decoder_hidden", decoder_hidden), dim], activation)
        self.prior_logits = nn.Parameter(torch.zeros(self.n, self.k)) if learn_prior else None
        self.to(device)

    @property
    def latent_shape(self) -> tuple[int, int]:
        return self.n, self.k

    def encoder_parameters(self):
        return list(self.encoder.parameters())

    # --- model pieces -------------------------------------------------------
    def logits(self, x):
        return self.encoder(x).view(x.shape[0], self.n, self.k)

    def recon(self, x, z):
        """-log p(x|z), z of shape (*S, B, N, K) -> (*S, B)."""
        out = self.decoder(z.flatten(-2))
        return F.binary_cross_entropy_with_logits(
            out, x.expand_as(out), reduction="none").sum(-1)

    def log_prior(self):
        if self.prior_logits is None:
            return None
        return torch.log_softmax(self.prior_logits, -1)

    def kl(self, estimator, out, logits):
        if estimator.kl == "concrete":
            return estimator.relaxed_kl(out, logits, self.prior_logits)
        if estimator.kl == "sampled":  # already inside f
            return torch.zeros(logits.shape[0], dtype=logits.dtype, device=logits.device)
        return categorical_kl(logits, self.prior_logits)

    def loss_fn(self, x, logits, estimator):
        """The f handed to the estimator: -log p(x|z), plus log q(z) - log p(z) for
        estimators that take the KL as a sampled term (kl == "sampled")."""
        if estimator.kl != "sampled":
            return lambda z: self.recon(x, z)
        log_q = log_softmax(logits)
        log_p = self.log_prior()
        if log_p is None:
            log_p = torch.full_like(log_q[0], -math.log(self.k))
        return lambda z: self.recon(x, z) + (z * (log_q - log_p)).sum((-1, -2))

    # --- training -----------------------------------------------------------
    def loss(self, x, estimator):
        logits = self.logits(x)
        out = estimator(logits, self.loss_fn(x, logits, estimator))
        return out.surrogate + self.kl(estimator, out, kl_logits(logits, estimator)).mean(), out

    # --- evaluation on the discrete model ------------------------------------
    # The evaluations below draw the samples sample_one_hot draws, as indices, and
    # decode them without one-hots (tasks/_hard.py): the same numbers as
    # recon(x, sample_one_hot(...)) up to float rounding (tests/test_evalcost.py), at
    # a fraction of the cost (python -m bench evalcost).
    @torch.no_grad()
    def recon_sampled(self, x, logits):
        """-log p(x | z) at one z ~ q(z | x) (the draw sample_one_hot makes): (B,)."""
        idx = _hard.gumbel_argmax(logits)
        return _hard.bernoulli_nll(_hard.first_layer(self.decoder, self.n, self.k)(idx), x)

    @torch.no_grad()
    def neg_elbo(self, x):
        logits = self.logits(x)
        return self.recon_sampled(x, logits) + categorical_kl(logits, self.prior_logits)

    @torch.no_grad()
    def neg_elbo_parts(self, x):
        """The -ELBO's two parts per example, (B, 2): the reconstruction term
        -log p(x | z) at one z ~ q(z | x), and KL(q(z | x) || p(z)); they add up to
        ``neg_elbo`` (the same draw of z)."""
        logits = self.logits(x)
        return torch.stack([self.recon_sampled(x, logits),
                            categorical_kl(logits, self.prior_logits)], -1)

    @torch.no_grad()
    def nll(self, x, samples: int, max_floats: float = 1.5e6):
        """Importance-sampled -log p(x) with ``samples`` draws from q(z|x):
        -log (1/S sum_s p(x|z_s) p(z_s) / q(z_s|x))."""
        logits = self.logits(x)
        log_q = log_softmax(logits)
        log_p = self.log_prior()
        if log_p is None:
            log_p = torch.full_like(log_q[0], -math.log(self.k))
        ratio = log_p - log_q  # (B, N, K)
        decode = _hard.first_layer(self.decoder, self.n, self.k)
        # chunks of ~1.5M floats (a few MB per layer) keep each pass over the decoder's
        # activations in cache: ~1.3x faster than 20M on this CPU; the stream of random
        # numbers, and so the samples, do not depend on the chunking
        chunk = max(1, int(max_floats // (x.shape[0] * x.shape[1])))
        ws = []
        for s0 in range(0, samples, chunk):
            s = min(chunk, samples - s0)
            idx = _hard.gumbel_argmax(logits, s)  # (s, B, N)
            ws.append(_hard.gather_sum(ratio, idx) - _hard.bernoulli_nll(decode(idx), x))
        w = torch.cat(ws, 0)
        return -(torch.logsumexp(w, 0) - math.log(samples))

    def _batched_mean(self, fn, x, batch_size, what: str | None = None):
        """Mean over the examples of fn's (B,) or (B, P) values; ``what`` names the
        pass for the runner's progress display."""
        n, total = x.shape[0], 0.0
        if what:
            report_progress(self, 0, n, what)
        for i in range(0, n, batch_size):
            total = total + fn(x[i:i + batch_size]).double().sum(0)
            if what:
                report_progress(self, min(i + batch_size, n), n, what)
        total = total / n
        return total.tolist() if torch.is_tensor(total) and total.ndim else float(total)

    def evaluate(self, data, eval_cfg, final: bool = False) -> dict[str, float]:
        bs = int(eval_cfg.get("batch_size", 1000))
        was = self.training
        self.eval()
        train = data.eval_split("train")[: int(eval_cfg.get("train_subset", 10000))]
        out = {
            "train_neg_elbo": self._batched_mean(self.neg_elbo, train, bs, "train_neg_elbo"),
            "valid_neg_elbo": self._batched_mean(self.neg_elbo, data.eval_split("valid"), bs,
                                                 "valid_neg_elbo"),
        }
        # the test -ELBO with its two parts (recon + kl, from the same draws)
        recon, kl = self._batched_mean(self.neg_elbo_parts, data.eval_split("test"), bs,
                                       "test_neg_elbo")
        out.update(test_neg_elbo=recon + kl, recon=recon, kl=kl)
        s = int(eval_cfg.get("nll_samples", 0))
        if s > 0 and (final or eval_cfg.get("nll_every_eval", False)):
            out["test_nll"] = self._batched_mean(
                lambda xb: self.nll(xb, s), data.eval_split("test"), max(1, bs // 10),
                "test_nll")
        self.train(was)
        return out

    def _estimates_wrt_logits(self, x_rep, rep, estimator, m):
        """m independent estimates of d(objective)/d(logits) from one estimator call
        on m stacked copies of the batch: (m * B, N, K)."""
        with estimator.frozen():
            out = estimator(rep, self.loss_fn(x_rep, rep, estimator))
            obj = out.surrogate + self.kl(estimator, out, rep).mean()
        (g,) = torch.autograd.grad(obj * m, rep)
        return g

    def grad_variance(self, x, estimator, m: int) -> float:
        """Mean over encoder parameters of the variance, across m independent
        estimates on the minibatch x, of the estimator's gradient.

        The encoder is run once; the m estimates differ only in the samples, so
        each one's gradient w.r.t. the logits, G_j, comes from one estimator call on
        m stacked copies of the batch, and one batched backward pass from the logits
        gives d_j, the gradient w.r.t. the output of each linear layer. A layer with
        input h (B x in) has weight gradient h^T d_j in estimate j, so the variance
        over j, summed over its weights, is

            1/(m-1) sum_j ||h^T D_j||^2 = 1/(m-1) sum_j <D_j, (h h^T) D_j>,
            D_j = d_j - mean_j d_j,

        with a B x B Gram matrix instead of m (in x out) gradients; the bias adds
        1/(m-1) sum_j ||sum_b D_j||^2. ``grad_variance_vjp`` forms the m gradients
        instead (the definition; used when the encoder has parameters outside
        nn.Linear layers); tests check both against a loop of m backward passes.
        """
        linears = [mod for mod in self.encoder.modules() if isinstance(mod, nn.Linear)]
        params = self.encoder_parameters()
        n_params = sum(p.numel() for p in params)
        if sum(p.numel() for mod in linears for p in mod.parameters()) != n_params:
            return self.grad_variance_vjp(x, estimator, m)
        acts = []
        hooks = [mod.register_forward_hook(lambda mod, inp, out: acts.append((mod, inp[0], out)))
                 for mod in linears]
        try:
            logits = self.logits(x)
        finally:
            for h in hooks:
                h.remove()
        rep = logits.detach().repeat(m, 1, 1).requires_grad_(True)
        g = self._estimates_wrt_logits(x.repeat(m, 1), rep, estimator, m)
        deltas = torch.autograd.grad(logits, [o for _, _, o in acts],
                                     grad_outputs=g.view(m, *logits.shape),
                                     is_grads_batched=True)
        total = 0.0
        for (mod, h, _), d in zip(acts, deltas, strict=True):
            d = d - d.mean(0)  # (m, B, out)
            h = h.detach()
            total += (d * ((h @ h.T) @ d)).sum().item()  # weights
            if mod.bias is not None:
                total += d.sum(1).square().sum().item()
        return total / (m - 1) / n_params

    def grad_variance_vjp(self, x, estimator, m: int) -> float:
        """``grad_variance`` by its definition: the m encoder gradients, pulled back
        from the logits by m vector-Jacobian products batched in one backward pass,
        their variance over the m, averaged over the encoder's parameters."""
        b = x.shape[0]
        logits = self.logits(x)
        rep = logits.detach().repeat(m, 1, 1).requires_grad_(True)
        g = self._estimates_wrt_logits(x.repeat(m, 1), rep, estimator, m)
        g = g.view(m, b, self.n, self.k)
        params = self.encoder_parameters()
        grads = torch.autograd.grad(logits, params, grad_outputs=g, is_grads_batched=True)
        total = sum(gp.var(0).sum().item() for gp in grads)
        return total / sum(p.numel() for p in params)
