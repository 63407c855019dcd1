"""Sum-and-sample Rao-Blackwellisation (Liu, Regier, Tripuraneni, Jordan &
McAuliffe 2019, "Rao-Blackwellized stochastic gradients for discrete
distributions"), applied to each variable i with the others sampled: C_i = the
k most probable categories of q_i, qt_i = q_i restricted to the rest and
renormalised, and

    E f = E_{z_{-i}} [ sum_{c in C_i} q_i(c) f(z^{i <- c})
                       + (1 - q_i(C_i)) E_{c ~ qt_i} f(z^{i <- c}) ],

    g_i = sum_{c in C_i} d q_i(c) f(z^{i <- c}) + d(1 - q_i(C_i)) f(z^{i <- c_i})
          + (1 - q_i(C_i)) [f(z^{i <- c_i}) - b_i] d log qt_i(c_i),      c_i ~ qt_i,

    b_i = sum_{c in C_i} q_i(c) f(z^{i <- c}) / q_i(C_i),

the sampled remainder handled by REINFORCE on qt_i with a baseline b_i that
does not depend on c_i (so E_{qt_i}[b_i d log qt_i] = 0; without it, the
remainder would carry the whole scale of f, like REINFORCE without a baseline).
One joint sample z ~ q (per draw) is the context z_{-i} for every i, with an
independent c_i per variable. C_i changes with theta only where the order of q_i
changes (a null set), so g is unbiased. Parameters inside f get the same sum
with q held fixed, averaged over i. k = ``summed``; with k >= K - 1 the
remainder holds at most one category (d log qt_i = 0) and g is exact per
variable: IndeCateR. Cost per draw: N (k + 1) evaluations of f (N K when
k >= K), plus f(z) for ``out.loss``, in one call; ``samples`` draws are averaged.
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
        in_c = chosen.sum(-2).bool()  # (B, N, K): C_i
        values = [chosen.expand(s, b, n, top, k)]
        rest = top < k
        if rest:  # c_i ~ qt_i
            c = one_hot_argmax(lg.masked_fill(in_c, float("-inf")) + gumbel_like(z))
            values.append(c.unsqueeze(-2))
        fz, f_sample = f_at_alternatives(f, z, torch.cat(values, -2), with_sample=True)
        q = softmax(logits)
        q_c = (q.unsqueeze(-2) * chosen).sum(-1)  # (B, N, k): q_i(c), c in C_i
        summed_v = fz[..., :top]  # (S, B, N, k)
        value = (q_c.detach() * summed_v).sum(-1)  # (S, B, N)
        score = ((q_c - q_c.detach()) * summed_v.detach()).sum(-1)
        if rest:
            log_q = log_softmax(logits)
            log_rem = torch.logsumexp(log_q.masked_fill(in_c, float("-inf")), -1)  # log(1 - q(C))
            rem = log_rem.exp()
            f_c = fz[..., top]  # (S, B, N): f(z^{i <- c_i})
            v_c = f_c.detach()
            base = (q_c.detach() * summed_v.detach()).sum(-1) / q_c.detach().sum(-1)
            log_qt = (log_q * c).sum(-1) - log_rem  # log qt_i(c_i)
            value = value + rem.detach() * f_c
            score = (score + (rem - rem.detach()) * v_c
                     + rem.detach() * (v_c - base) * (log_qt - log_qt.detach()))
        loss = f_sample.detach().mean(0)
        surrogate = value.mean((0, 2)).mean() + score.sum(-1).mean()
        return EstimatorOutput(loss=loss, surrogate=surrogate, sample=z)
