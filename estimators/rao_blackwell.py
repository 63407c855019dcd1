"""Sum-and-sample Rao-Blackwellisation (Liu, Regier, Tripuraneni, Jordan &
McAuliffe 2019, "Rao-Blackwellized stochastic gradients for discrete
distributions", sum-and-sample with the score-function estimator), applied to each
variable i with the others sampled: C_i = the k most probable categories of
q_i, and

    E f = E_{z_{-i}} [ sum_{c in C_i} q_i(c) f(z^{i <- c})
                       + (1 - q_i(C_i)) E_{c ~ q_i | not C_i} f(z^{i <- c}) ],

    g_i = sum_{c in C_i} d q_i(c) f(z^{i <- c})
          + (1 - q_i(C_i)) f(z^{i <- c_i}) d log q_i(c_i),   c_i ~ q_i restricted to not C_i,

with one joint sample z ~ q (per draw) as the context z_{-i} for every i and
an independent c_i per variable. C_i changes with theta only where the order of
q_i changes (a null set), so g is unbiased. Parameters inside f get the same
sum with q held fixed, averaged over i. k = ``summed``; with k >= K - 1 the
remainder holds at most one category and g is exact per variable (IndeCateR).
Cost per draw: N (k + 1) evaluations of f (N K when k >= K), plus f(z) for
``out.loss``, in one call; ``samples`` draws are averaged.
"""

import torch
import torch.nn.functional as F

from ._local import f_at_alternatives
from ._multisample import check_samples
from .base import (
    Estimator,
    EstimatorConfigError,
    EstimatorOutput,
    gumbel_like,
    log_softmax,
    one_hot_argmax,
    register,
    sample_one_hot,
    softmax,
)


@register("rao_blackwell")
class RaoBlackwell(Estimator):
    unbiased = True
    hard_forward = True

    def __init__(self, summed: int = 1, samples: int = 1):
        super().__init__()
        if isinstance(summed, bool) or not isinstance(summed, int) or summed < 1:
            raise EstimatorConfigError(f"estimator.summed must be an integer >= 1, got {summed!r}")
        self.summed = summed
        self.samples = check_samples(samples, minimum=1)

    def estimate(self, logits, f):
        s, (b, n, k) = self.samples, logits.shape
        top = min(self.summed, k)
        lg = logits.detach()
        z = sample_one_hot(lg.expand(s, b, n, k))  # (S, B, N, K): the context
        chosen = F.one_hot(lg.topk(top, -1).indices, k).to(lg.dtype)  # (B, N, k, K)
        in_c = chosen.sum(-2)  # (B, N, K): 1 on C_i
        values = [chosen.expand(s, b, n, top, k)]
        rest = top < k
        if rest:  # c_i ~ q_i restricted to the complement of C_i
            c = one_hot_argmax(lg.masked_fill(in_c.bool(), float("-inf")) + gumbel_like(z))
            values.append(c.unsqueeze(-2))
        fz, f_sample = f_at_alternatives(f, z, torch.cat(values, -2), with_sample=True)
        q = softmax(logits)
        q_c = (q.unsqueeze(-2) * chosen).sum(-1)  # (B, N, k): q_i(c), c in C_i
        summed_v = fz[..., :top]
        value = (q_c.detach() * summed_v).sum(-1)  # (S, B, N)
        score = ((q_c - q_c.detach()) * summed_v.detach()).sum(-1)
        if rest:
            remainder = (q.detach() * (1.0 - in_c)).sum(-1)  # 1 - q_i(C_i), stable
            log_qc = (log_softmax(logits) * c).sum(-1)  # (S, B, N)
            value = value + remainder * fz[..., top]
            score = score + remainder * fz[..., top].detach() * (log_qc - log_qc.detach())
        loss = f_sample.detach().mean(0)
        surrogate = value.mean((0, 2)).mean() + score.sum(-1).mean()
        return EstimatorOutput(loss=loss, surrogate=surrogate, sample=z)
