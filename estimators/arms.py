"""ARMS (Dimitriev & Zhou 2021, "ARMS: antithetic-REINFORCE-multi-sample gradient
for binary variables", the ARMS estimator with the Dirichlet copula):
n negatively correlated Bernoulli(p) samples per variable from n antithetic
uniforms, and the leave-one-out REINFORCE estimator divided by 1 - rho, the
correction for their correlation rho:

    d ~ Dirichlet(1, ..., 1) (n components),  u_i = (1 - d_i)^(n-1) ~ U(0, 1),
    b_i = 1[u_i < p]  (1[1 - u_i < p] when p >= 1/2: the more antithetic side),

    g_alpha = n / (n - 1) / (1 - rho) * 1/n sum_i (f(b_i) - mean_j f(b_j)) (b_i - p),

    1 - rho = (r - C(r)) / (p (1 - p)),  r = min(p, 1 - p),
    C(r) = P(u_i < r, u_j < r) = max(0, 2 r^(1/(n-1)) - 1)^(n-1),

with alpha = logits[..., 1] - logits[..., 0] and p = sigmoid(alpha). The
copula acts per variable (independently across variables), so
E[f(b_j) (b_i - p)] = rho dE f/dalpha for j != i: dividing by 1 - rho removes the
bias of the correlated baseline. For n = 2 the pair is (u, 1 - u), C(r) = 0 and
g equals DisARM exactly. Unbiased; binary-only; n = ``samples`` >= 2
evaluations of f in one call. Parameters inside f get the mean of d f(b_i)
(each b_i is marginally ~ q). ``out.loss`` is the mean of f over the n samples.
"""

import torch

from ._conditional import exponential_like
from ._multisample import check_samples
from .base import Estimator, EstimatorOutput, register


def dirichlet_copula(n: int, like: torch.Tensor) -> torch.Tensor:
    """n uniforms per element of ``like``, jointly from the Dirichlet copula:
    (n, *like.shape), each marginally U(0, 1) (d_i ~ Beta(1, n - 1)), negatively
    dependent across the n."""
    e = exponential_like(like, (n, *like.shape))
    d = e / e.sum(0, keepdim=True)
    return (1.0 - d).pow(n - 1)


def one_minus_rho(alpha: torch.Tensor, n: int) -> torch.Tensor:
    """1 - rho for the copula samples at logit alpha, as (r - C(r)) / (p (1 - p))
    written without cancellation: sigmoid(|alpha|)^-1 (1 - C(r) / r)."""
    r = torch.sigmoid(-alpha.abs())
    c = (2.0 * r.pow(1.0 / (n - 1)) - 1.0).clamp(min=0.0).pow(n - 1)
    ratio = torch.where(c > 0, c / r.clamp(min=torch.finfo(r.dtype).tiny), torch.zeros_like(r))
    return (1.0 - ratio) / torch.sigmoid(alpha.abs())


def arms_signal(alpha: torch.Tensor, b: torch.Tensor, fs: torch.Tensor) -> torch.Tensor:
    """g_alpha (B, N) from the n samples b (n, B, N) and their losses fs (n, B)."""
    n = b.shape[0]
    p = torch.sigmoid(alpha)
    centred = (fs - fs.mean(0))[..., None]  # (n, B, 1)
    loo = (centred * (b - p)).sum(0) / (n - 1)
    return loo / one_minus_rho(alpha, n)


@register("arms")
class ARMS(Estimator):
    unbiased = True
    hard_forward = True
    binary_only = True

    def __init__(self, samples: int = 4):
        super().__init__()
        self.samples = check_samples(samples)

    def estimate(self, logits, f):
        alpha = logits[..., 1] - logits[..., 0]
        a = alpha.detach()
        u = dirichlet_copula(self.samples, a)  # (n, B, N)
        u = torch.where(a >= 0, 1.0 - u, u)  # p >= 1/2: the antithetic side
        b = (u < torch.sigmoid(a)).to(a.dtype)
        fs = f(torch.stack([1.0 - b, b], -1))  # (n, B)
        g = arms_signal(a, b, fs.detach())
        loss = fs.mean(0)
        surrogate = loss.mean() + (g * (alpha - a)).sum() / a.shape[0]
        return EstimatorOutput(loss=loss, surrogate=surrogate, sample=torch.stack([1.0 - b, b], -1))
