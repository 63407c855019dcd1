"""DARN's gradient estimator (Gregor, Danihelka, Mnih, Blundell & Wierstra
2014, "Deep AutoRegressive Networks"), in the form later comparisons use (Gu
et al. 2016; Jang et al. 2017): REINFORCE whose learning signal for each
variable is replaced by its first-order Taylor approximation around xbar,

    g_n = [f'(z)_n^T (z_n - xbar)] d log q_n(z_n),   xbar = (1/K, ..., 1/K)

(xbar = 1/2 for binary units), with f' the gradient of f at the *sample*
(backpropagation through the sampled network). For K = 2 this is
(df/db_n)(b_n - 1/2) d log q(b_n). Unbiased when f is linear in z; biased
otherwise, as in Jang et al.'s (2017) "DARN" column. Parameters inside f get
d f(z) at the sample. ``normalize: true``: the gradient reaching the logits is
divided by max(1, sigma), sigma^2 a moving average of the variance of the
per-variable signals g_n's coefficients (``estimators._normalize``).
"""

import torch

from ._normalize import VarianceNormalized
from .base import Estimator, EstimatorOutput, log_softmax, register, sample_one_hot


@register("darn")
class DARN(VarianceNormalized, Estimator):
    hard_forward = True

    def __init__(self, normalize: bool = False, normalize_decay: float = 0.8):
        super().__init__()
        self.init_normalize(normalize, normalize_decay)

    def estimate(self, logits, f):
        k = logits.shape[-1]
        with torch.enable_grad():
            z = sample_one_hot(logits.detach()).requires_grad_(True)
            fz = f(z)
            (fp,) = torch.autograd.grad(fz.sum(), z, retain_graph=True)
        signal = (fp * (z.detach() - 1.0 / k)).sum(-1)  # (B, N)
        log_q = (log_softmax(self.normalized(logits)) * z.detach()).sum(-1)  # per variable
        surrogate = fz.mean() + (signal * (log_q - log_q.detach())).sum() / logits.shape[0]
        self.update_variance(signal)
        return EstimatorOutput(loss=fz, surrogate=surrogate, sample=z.detach())
