"""KLs and Concrete densities against closed forms and direct sums."""

import math

import pytest
import torch

import estimators
from estimators.kl import categorical_kl, concrete_log_prob, exp_concrete_log_prob


def test_categorical_kl_is_a_sum_of_per_variable_kls():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 5, dtype=torch.float64) * 2
    prior = torch.randn(4, 5, dtype=torch.float64)
    got = categorical_kl(logits, prior)
    want = torch.zeros(3, dtype=torch.float64)
    for b in range(3):
        for n in range(4):
            q = [math.exp(v) for v in logits[b, n].tolist()]
            p = [math.exp(v) for v in prior[n].tolist()]
            q = [v / sum(q) for v in q]
            p = [v / sum(p) for v in p]
            want[b] += sum(qi * math.log(qi / pi) for qi, pi in zip(q, p))
    assert torch.allclose(got, want, atol=1e-10)
    # a uniform prior is the default
    uni = categorical_kl(logits)
    assert torch.allclose(uni, categorical_kl(logits, torch.zeros(4, 5, dtype=torch.float64)))
    # one softmax over all N*K logits (a slip seen in public code) is a different number
    flat = torch.log_softmax(logits.flatten(1), -1)
    wrong = (flat.exp() * (flat + math.log(4 * 5))).sum(-1)
    assert not torch.allclose(uni, wrong, atol=1e-3)


def binary_concrete_density(x, alpha, lam):
    """Maddison et al. (2017), eq. (binary Concrete)."""
    return (lam * alpha * x ** (-lam - 1) * (1 - x) ** (-lam - 1)
            / (alpha * x ** (-lam) + (1 - x) ** (-lam)) ** 2)


@pytest.mark.parametrize("lam", [0.3, 2 / 3, 1.0, 2.0])
@pytest.mark.parametrize("l1,l0", [(0.0, 0.0), (1.5, -0.5), (-3.0, 0.7)])
def test_concrete_density_matches_binary_closed_form(lam, l1, l0):
    x = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    pts = torch.stack([x, 1 - x], -1)
    logits = torch.tensor([l1, l0], dtype=torch.float64).expand_as(pts)
    got = concrete_log_prob(pts, logits, lam).exp()
    want = binary_concrete_density(x, math.exp(l1 - l0), lam)
    assert torch.allclose(got, want, rtol=1e-9)


@pytest.mark.parametrize("lam", [0.5, 1.0, 2.0])
def test_concrete_density_integrates_to_one_k3(lam):
    # over the 2-simplex, w.r.t. Lebesgue measure on (x1, x2), in the smooth
    # coordinates x = softmax(t1, t2, 0), whose Jacobian determinant is x1 x2 x3
    t = torch.linspace(-70, 70, 1401, dtype=torch.float64)
    t1, t2 = torch.meshgrid(t, t, indexing="ij")
    pts = torch.softmax(torch.stack([t1, t2, torch.zeros_like(t1)], -1), -1)
    logits = torch.tensor([0.3, -0.8, 1.1], dtype=torch.float64).expand_as(pts)
    dens = (concrete_log_prob(pts, logits, lam) + pts.log().sum(-1)).exp()
    total = torch.trapezoid(torch.trapezoid(dens, t), t)
    assert abs(total.item() - 1) < 1e-3


def test_exp_concrete_and_concrete_differ_by_a_jacobian_only():
    """log q - log p is the same in either representation, so the relaxed KL
    does not depend on it."""
    torch.manual_seed(0)
    x = torch.softmax(torch.randn(50, 4, dtype=torch.float64), -1)
    a, b = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    d1 = exp_concrete_log_prob(x.log(), a, 0.7) - exp_concrete_log_prob(x.log(), b, 0.4)
    d2 = concrete_log_prob(x, a, 0.7) - concrete_log_prob(x, b, 0.4)
    assert torch.allclose(d1, d2, atol=1e-10)


def test_relaxed_kl_matches_quadrature_kl_k2():
    """E_q[log q(y) - log p(y)] over the estimator's own samples equals the KL
    between the binary Concrete densities computed by quadrature."""
    lam1, lam2 = 2 / 3, 0.5
    est = estimators.get("concrete_kl", temperature=lam1, prior_temperature=lam2)
    logit = torch.tensor([[[0.9, -0.2]]], dtype=torch.float64)
    m = 200000
    torch.manual_seed(3)
    big = logit.expand(m, 1, 2).contiguous()
    out = est(big, lambda z: z.sum((-1, -2)))
    kl = est.relaxed_kl(out, big)
    mc, se = kl.mean().item(), kl.std().item() / math.sqrt(m)
    # quadrature in the logit coordinate t = log x - log(1 - x), x = sigmoid(t)
    t = torch.linspace(-60, 60, 400001, dtype=torch.float64)
    x = torch.sigmoid(t)
    jac = x * (1 - x)
    q = binary_concrete_density(x, math.exp(1.1), lam1) * jac
    p = binary_concrete_density(x, 1.0, lam2) * jac
    ok = q > 1e-300
    want = torch.trapezoid(torch.where(ok, q * (q.log() - p.log()), 0.0), t).item()
    assert abs(mc - want) < 4.5 * se + 1e-6


def test_relaxed_kl_is_zero_when_prior_equals_posterior():
    est = estimators.get("concrete_kl", temperature=0.5, prior_temperature=0.5)
    logits = torch.randn(4, 3, 5)
    out = est(logits, lambda z: z.sum((-1, -2)))
    assert torch.allclose(est.relaxed_kl(out, logits, logits), torch.zeros(4), atol=1e-4)
