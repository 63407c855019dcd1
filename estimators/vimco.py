"""VIMCO (Mnih & Rezende 2016, "Variational inference for Monte Carlo
objectives"), in this suite's loss convention.

VIMCO optimises a *different objective* from the other estimators: the
S-sample bound. With z_1..z_S ~ q i.i.d. and log-weights -f(z_s), it estimates
the gradient of

    L_S = E[ l ],   l = -log (1/S sum_s exp(-f(z_s)))        (<= E_q f by Jensen)

as
    g = sum_s (l - l_{-s}) d log q(z_s) + sum_s w_s d f(z_s),   w = softmax_s(-f(z_s)),

where l_{-s} is l with -f(z_s) replaced by the mean of the other log-weights
(their geometric mean), a baseline independent of z_s. g is unbiased for the
gradient of L_S -- not for E_q f, which is why ``unbiased`` is False (the extra
tests check it against L_S by enumeration). With S = 1 L_S would be E_q f.

VIMCO declares ``kl = "sampled"``: a task then puts the sampled KL term
log q(z) - log p(z) inside f, so that on a VAE L_S is the negative S-sample
importance-weighted bound of log p(x) (Burda et al. 2016), the objective VIMCO
was designed for. Models are still compared on the single-sample discrete ELBO.
``out.loss`` is the mean of f over the samples; the surrogate's value is l
averaged over the batch.
"""

import math

import torch

from ._multisample import check_samples
from .base import Estimator, EstimatorOutput, log_prob_one_hot, register, sample_one_hot


def multi_sample_loss(fz: torch.Tensor) -> torch.Tensor:
    """l = -log mean_s exp(-f_s), (S, B) -> (B,)."""
    return -(torch.logsumexp(-fz, 0) - math.log(fz.shape[0]))


@register("vimco")
class VIMCO(Estimator):
    hard_forward = True
    kl = "sampled"  # the task puts log q(z) - log p(z) inside f
    multi_sample_objective = True  # documents that the surrogate targets L_S

    def __init__(self, samples: int = 4):
        super().__init__()
        self.samples = check_samples(samples)

    def estimate(self, logits, f):
        s = self.samples
        z = sample_one_hot(logits.detach().expand(s, *logits.shape))  # (S, B, N, K)
        fz = f(z)  # (S, B)
        log_q = log_prob_one_hot(logits, z)
        ell = multi_sample_loss(fz)  # pathwise part: sum_s w_s d f(z_s)
        with torch.no_grad():
            lw = -fz
            loo_mean = (lw.sum(0, keepdim=True) - lw) / (s - 1)  # mean of the others, (S, B)
            eye = torch.eye(s, dtype=torch.bool, device=lw.device)[:, :, None]  # (S, S, 1)
            replaced = torch.where(eye, loo_mean[:, None], lw[None])  # row s: z_s replaced
            ell_minus = -(torch.logsumexp(replaced, 1) - math.log(s))  # (S, B)
            signal = ell[None] - ell_minus
        surrogate = ell.mean() + (signal * (log_q - log_q.detach())).sum(0).mean()
        return EstimatorOutput(loss=fz.mean(0), surrogate=surrogate, sample=z)
