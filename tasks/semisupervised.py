"""Semi-supervised classification with Kingma et al.'s (2014) M2 model, as in
Jang, Gu & Poole (2017, section 4.3).

Generative model: p(y) = Cat(1/K), p(z) = N(0, I), p(x|y,z) Bernoulli (an MLP
on [y, z]). Inference: a classifier q(y|x) and a Gaussian q(z|x,y).

Labelled example (Kingma et al. eq. 6), one reparameterised z:

    L(x, y) = -E_{q(z|x,y)}[log p(x|y,z)] + KL(q(z|x,y) || p(z)) - log p(y)

Unlabelled example (Kingma et al. eq. 7), where the label is the discrete
latent the estimator handles (logits of q(y|x), shape (B, 1, K)):

    U(x) = E_{q(y|x)}[L'(x, y)] + KL(q(y|x) || p(y)),   L' = L + log p(y).

``exact`` marginalises y (K passes of q(z|x,y) and p(x|y,z) per example);
``gumbel_softmax``, ``st_gumbel_softmax``, ``reinforce``... use one sample.

Training objective (Jang et al. section 4.3; Kingma et al. eq. 9):

    J = mean_labelled L(x, y) + mean_unlabelled U(x) + alpha * mean_labelled [-log q(y|x)].

(``unlabelled_weight`` multiplies the U term: 0 gives the labels-only baseline.)

The labelled set is ``labels_per_class`` examples per class of the training
split, drawn with ``label_seed`` (default: from torch's global RNG, which the
runner seeds with the run's seed); every training image is also an unlabelled
example. Metrics are computed on the discrete model: accuracy of
argmax q(y|x), and U(x) with y summed exactly over its K values (analytic
categorical KL, one z sample per value) whatever the estimator trained with.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from estimators import categorical_kl

from .base import TaskConfigError, kl_logits, register
from .datasets import binarize

Tensor = torch.Tensor

_ACTIVATIONS = {"relu": nn.ReLU, "softplus": nn.Softplus, "tanh": nn.Tanh, "elu": nn.ELU}
# rows of q(z|x,y) / p(x|y,z) evaluated at once when summing over y at evaluation
_EVAL_ROWS = 20000


def _mlp(sizes: list[int], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def _int(key: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TaskConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _sizes(key: str, value) -> list[int]:
    try:
        out = [int(v) for v in value]
        ok = all(float(v) == o >= 1 for v, o in zip(value, out, strict=True))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise TaskConfigError(f"{key} must be a list of positive integers, got {value!r}")
    return out


def _weight(key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 \
            or math.isinf(value):
        raise TaskConfigError(f"{key} must be a finite number >= 0, got {value!r}")
    return float(value)


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Fraction of examples whose argmax class equals the label."""
    return (logits.argmax(-1) == labels).double().mean().item()


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)), summed over the last dimension."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)


@register("semisupervised")
class SemiSupervised(nn.Module):
    def __init__(self, data, device="cpu", alpha: float = 0.1, labels_per_class: int = 10,
                 label_seed: int | None = None, categories: int | None = None,
                 latent_dim: int = 50, classifier_hidden=(500,), encoder_hidden=(500,),
                 decoder_hidden=(500,), activation: str = "softplus",
                 labelled_batch_size: int = 100, unlabelled_weight: float = 1.0):
        super().__init__()
        self.alpha = _weight("task.alpha", alpha)
        self.unlabelled_weight = _weight("task.unlabelled_weight", unlabelled_weight)
        self.labels_per_class = _int("task.labels_per_class", labels_per_class, 1)
        if label_seed is not None:
            _int("task.label_seed", label_seed, 0)
        self.k = _int("task.categories", categories if categories is not None
                      else int(data.num_classes), 2)
        self.latent_dim = _int("task.latent_dim", latent_dim, 1)
        self.labelled_batch_size = _int("task.labelled_batch_size", labelled_batch_size, 1)
        if activation not in _ACTIVATIONS:
            raise TaskConfigError(f"task.activation must be one of "
                                  f"{', '.join(_ACTIVATIONS)}; got {activation!r}")
        dim, k, dz = int(data.dim), self.k, self.latent_dim

        labelled = self._choose_labelled(data, label_seed)  # before any parameter init

        # q(y|x)
        self.classifier = _mlp([dim, *_sizes("task.classifier_hidden", classifier_hidden), k],
                               activation)
        # q(z|x,y): the first layer acts on [x, y] as W_x x + W_y y, so that x's part
        # is computed once when y takes all K values
        enc = _sizes("task.encoder_hidden", encoder_hidden)
        first = enc[0] if enc else 2 * dz
        self.enc_x = nn.Linear(dim, first)
        self.enc_y = nn.Linear(k, first, bias=False)
        self.enc_rest = (nn.Sequential(_ACTIVATIONS[activation](), _mlp([*enc, 2 * dz],
                                                                         activation))
                         if enc else nn.Identity())
        # p(x|y,z)
        self.decoder = _mlp([k + dz, *_sizes("task.decoder_hidden", decoder_hidden), dim],
                            activation)

        # the labelled set: its indices are saved with the model, the images and
        # labels are buffers so that .to(device) / .double() carry them along
        self.register_buffer("labelled_index", labelled[0])
        self.register_buffer("_lab_x", labelled[1], persistent=False)
        self.register_buffer("_lab_y", labelled[2], persistent=False)
        self._dynamic = bool(getattr(data, "dynamic", False))
        self.to(device)

    # --- data ----------------------------------------------------------------
    def _choose_labelled(self, data, label_seed):
        """labels_per_class training examples of every class, chosen by the seed."""
        empty = (torch.zeros(0, dtype=torch.long), None, None)
        if not hasattr(data, "splits"):
            return empty  # config validation builds the task on a stand-in
        labels = getattr(data, "labels", {}) or {}
        if "train" not in labels:
            raise TaskConfigError(
                f"task 'semisupervised' needs a dataset with labels (digits, mnist, "
                f"fashion_mnist); dataset {getattr(data, 'name', '?')!r} has none")
        y = labels["train"].cpu()
        if int(y.min()) < 0 or int(y.max()) >= self.k:
            raise TaskConfigError(
                f"task.categories={self.k} but the training labels span "
                f"{int(y.min())}..{int(y.max())}")
        if label_seed is None:  # the run's seed, through torch's global RNG
            label_seed = int(torch.randint(0, 2 ** 31 - 1, ()).item())
        g = torch.Generator().manual_seed(int(label_seed))
        chosen = []
        for c in range(self.k):
            idx = (y == c).nonzero().flatten()
            if len(idx) < self.labels_per_class:
                raise TaskConfigError(
                    f"task.labels_per_class={self.labels_per_class} but class {c} has only "
                    f"{len(idx)} training examples")
            chosen.append(idx[torch.randperm(len(idx), generator=g)[:self.labels_per_class]])
        index = torch.cat(chosen)
        return index, data.splits["train"][index.to(data.splits["train"].device)], y[index]

    def labelled_batch(self) -> tuple[Tensor, Tensor]:
        """A minibatch of labelled examples (binarised afresh for dynamic datasets)."""
        if self._lab_x is None:
            raise TaskConfigError("task 'semisupervised' was built without labelled data")
        n = self._lab_x.shape[0]
        if self.labelled_batch_size >= n:
            x, y = self._lab_x, self._lab_y
        else:
            idx = torch.randperm(n, device=self._lab_x.device)[:self.labelled_batch_size]
            x, y = self._lab_x[idx], self._lab_y[idx]
        return (binarize(x) if self._dynamic else x), y

    # --- the model -----------------------------------------------------------
    @property
    def latent_shape(self) -> tuple[int, int]:
        return 1, self.k

    def encoder_parameters(self):
        """The parameters of q(y|x): the distribution the estimator differentiates."""
        return list(self.classifier.parameters())

    def class_logits(self, x: Tensor) -> Tensor:
        """Logits of q(y|x) in the estimator's layout, (B, 1, K)."""
        return self.classifier(x).unsqueeze(1)

    def neg_elbo_given_y(self, x: Tensor, y: Tensor, eps: Tensor | None = None,
                         parts: bool = False) -> Tensor:
        """L'(x, y) = -log p(x|y,z) + KL(q(z|x,y) || N(0, I)) at one z = mu + sigma * eps.

        x: (B, D); y: (*S, B, K), one-hot or a relaxed point of the simplex;
        returns (*S, B). ``eps`` defaults to fresh standard normal noise.
        """
        h = self.enc_x(x) + self.enc_y(y)
        mu, logvar = self.enc_rest(h).chunk(2, -1)
        if eps is None:
            eps = torch.randn_like(mu)
        z = mu + torch.exp(0.5 * logvar) * eps
        out = self.decoder(torch.cat([y, z], -1))
        rec = F.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none").sum(-1)
        if parts:  # the two terms apart, (*S, B, 2)
            return torch.stack([rec, gaussian_kl(mu, logvar)], -1)
        return rec + gaussian_kl(mu, logvar)

    def _kl_y(self, estimator, out, logits):
        if estimator.kl == "concrete":
            return estimator.relaxed_kl(out, logits, None)
        return categorical_kl(logits)

    def unlabelled_loss(self, x: Tensor, estimator, logits: Tensor | None = None):
        """The estimator's surrogate of mean_b U(x_b), and its output."""
        if logits is None:
            logits = self.class_logits(x)
        out = estimator(logits, lambda y: self.neg_elbo_given_y(x, y.squeeze(-2)))
        return out.surrogate + self._kl_y(estimator, out, kl_logits(logits, estimator)).mean(), out

    def labelled_loss(self, x: Tensor, y: Tensor, class_logits: Tensor) -> tuple[Tensor, Tensor]:
        """(mean L(x, y), mean cross-entropy -log q(y|x)) over a labelled batch."""
        onehot = F.one_hot(y, self.k).to(x.dtype)
        elbo = self.neg_elbo_given_y(x, onehot).mean() + math.log(self.k)
        return elbo, F.cross_entropy(class_logits, y)

    def loss(self, x: Tensor, estimator):
        xl, yl = self.labelled_batch()
        b = x.shape[0]
        both = self.classifier(torch.cat([x, xl]))  # one pass of q(y|x) for both batches
        unl, out = self.unlabelled_loss(x, estimator, both[:b].unsqueeze(1))
        lab, ce = self.labelled_loss(xl, yl, both[b:])
        return self.unlabelled_weight * unl + lab + self.alpha * ce, out

    # --- evaluation on the discrete model --------------------------------------
    @torch.no_grad()
    def neg_elbo(self, x: Tensor) -> Tensor:
        """U(x) with y summed exactly over its K values, (B, D) -> (B,)."""
        logits = self.classifier(x)
        states = torch.eye(self.k, device=x.device, dtype=x.dtype)[:, None, :]  # (K, 1, K)
        per_y = self.neg_elbo_given_y(x, states.expand(-1, x.shape[0], -1))  # (K, B)
        q = logits.softmax(-1).transpose(0, 1)
        return (q * per_y).sum(0) + categorical_kl(logits.unsqueeze(1))

    def _batched(self, fn, x, batch_size) -> Tensor:
        return torch.cat([fn(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])

    @torch.no_grad()
    def neg_elbo_parts(self, x: Tensor) -> Tensor:
        """U(x)'s two parts per example, (B, 2), from the same draws as ``neg_elbo``:
        the reconstruction sum_y q(y|x) (-log p(x|y,z)), and the KL terms
        sum_y q(y|x) KL(q(z|x,y) || N(0, I)) + KL(q(y|x) || uniform)."""
        logits = self.classifier(x)
        states = torch.eye(self.k, device=x.device, dtype=x.dtype)[:, None, :]
        per_y = self.neg_elbo_given_y(x, states.expand(-1, x.shape[0], -1), parts=True)
        q = logits.softmax(-1).transpose(0, 1).unsqueeze(-1)
        rec, kl_z = (q * per_y).sum(0).unbind(-1)
        return torch.stack([rec, kl_z + categorical_kl(logits.unsqueeze(1))], -1)

    def _mean_neg_elbo(self, x, batch_size) -> float:
        return self._batched(self.neg_elbo, x, batch_size).double().mean().item()

    def evaluate(self, data, eval_cfg, final: bool = False) -> dict[str, float]:
        bs = int(eval_cfg.get("batch_size", 1000))
        bs_elbo = max(1, min(bs, _EVAL_ROWS // self.k))
        was = self.training
        self.eval()
        out = {}
        with torch.no_grad():
            for split in ("valid", "test"):
                x = data.eval_split(split)
                logits = self._batched(self.classifier, x, bs)
                out[f"{split}_accuracy"] = accuracy(logits, data.labels[split])
                if split == "test":  # with its two parts, recon + kl
                    parts = self._batched(self.neg_elbo_parts, x, bs_elbo).double().mean(0)
                    out["recon"], out["kl"] = parts.tolist()
                    out["test_neg_elbo"] = out["recon"] + out["kl"]
                else:
                    out[f"{split}_neg_elbo"] = self._mean_neg_elbo(x, bs_elbo)
            train = data.eval_split("train")[: int(eval_cfg.get("train_subset", 10000))]
            out["train_neg_elbo"] = self._mean_neg_elbo(train, bs_elbo)
            if self._lab_x is not None:
                lab = data.eval_split("train")[self.labelled_index]
                out["labelled_accuracy"] = accuracy(self.classifier(lab), self._lab_y)
        self.train(was)
        return out

    def grad_variance(self, x: Tensor, estimator, m: int) -> float:
        """Mean over the parameters of q(y|x) of the variance, across m independent
        estimates on the unlabelled minibatch x, of the estimator's gradient of
        mean_b U(x_b) (the labelled terms do not depend on the estimator).

        The classifier is run once; the m estimates are drawn in chunks of stacked
        copies of the batch, and pulled back to the parameters by batched
        vector-Jacobian products.
        """
        b = x.shape[0]
        logits = self.class_logits(x)
        chunk = max(1, _EVAL_ROWS // (b * self.k))
        gs = []
        with estimator.frozen():
            for c0 in range(0, m, chunk):
                c = min(chunk, m - c0)
                rep = logits.detach().repeat(c, 1, 1).requires_grad_(True)
                obj, _ = self.unlabelled_loss(x.repeat(c, 1), estimator, rep)
                (g,) = torch.autograd.grad(obj * c, rep)
                gs.append(g.view(c, b, 1, self.k))
        g = torch.cat(gs)
        params = self.encoder_parameters()
        grads = torch.autograd.grad(logits, params, grad_outputs=g, is_grads_batched=True)
        total = sum(gp.var(0).sum().item() for gp in grads)
        return total / sum(p.numel() for p in params)
