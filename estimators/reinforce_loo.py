"""REINFORCE with the leave-one-out baseline (Kool, van Hoof & Welling 2019,
"Buy 4 REINFORCE samples, get a baseline for free!"): with S samples
z_1..z_S ~ q per example,

    g = 1/S sum_s (f(z_s) - 1/(S-1) sum_{j != s} f(z_j)) d log q(z_s)
        + 1/S sum_s d f(z_s)

         = 1/(S-1) sum_s (f(z_s) - mean_j f(z_j)) d log q(z_s) + ...

Each sample's baseline is independent of that sample, so g is unbiased for the
single-sample objective E_q f(z). ``out.loss`` is the mean of f over the S samples.
"""


from ._multisample import check_samples
from .base import Estimator, EstimatorOutput, log_prob_one_hot, register, sample_one_hot


@register("reinforce_loo")
class ReinforceLOO(Estimator):
    unbiased = True
    hard_forward = True

    def __init__(self, samples: int = 4):
        super().__init__()
        self.samples = check_samples(samples)

    def estimate(self, logits, f):
        s = self.samples
        z = sample_one_hot(logits.detach().expand(s, *logits.shape))  # (S, B, N, K)
        fz = f(z)  # (S, B)
        log_q = log_prob_one_hot(logits, z)  # (S, B)
        v = fz.detach()
        signal = (v - v.mean(0)) * s / (s - 1)  # f(z_s) - mean of the others
        loss = fz.mean(0)
        surrogate = loss.mean() + (signal * (log_q - log_q.detach())).mean()
        return EstimatorOutput(loss=loss, surrogate=surrogate, sample=z)
