"""The VAE's metrics against enumeration of every latent state."""

import itertools
import math
from types import SimpleNamespace

import torch

import estimators
import tasks


def tiny_vae(n=2, k=3, dim=6, learn_prior=True):
    torch.manual_seed(0)
    vae = tasks.build({"name": "categorical_vae", "latents": n, "categories": k,
                       "encoder_hidden": [8], "decoder_hidden": [8], "learn_prior": learn_prior},
                      SimpleNamespace(dim=dim))
    if learn_prior:
        with torch.no_grad():
            vae.prior_logits.copy_(torch.randn(n, k))
    vae.double()
    x = torch.bernoulli(torch.full((4, dim), 0.4, dtype=torch.float64))
    return vae, x


def enumerate_states(n, k):
    for s in itertools.product(range(k), repeat=n):
        z = torch.zeros(n, k, dtype=torch.float64)
        z[range(n), list(s)] = 1
        yield z


def exact_terms(vae, x):
    """Exact -ELBO and -log p(x) per example by summing over all K^N states."""
    n, k = vae.latent_shape
    with torch.no_grad():
        log_q = torch.log_softmax(vae.logits(x), -1)
        log_p = torch.log_softmax(vae.prior_logits, -1)
        elbo = torch.zeros(x.shape[0], dtype=torch.float64)
        joint = []
        for z in enumerate_states(n, k):
            zb = z.expand(x.shape[0], n, k)
            lq = (zb * log_q).sum((-1, -2))
            lp = (z * log_p).sum()
            lx = -vae.recon(x, zb)
            elbo += lq.exp() * (lx + lp - lq)
            joint.append(lx + lp)
        return -elbo, -torch.logsumexp(torch.stack(joint), 0)


def test_neg_elbo_is_unbiased_for_the_exact_elbo():
    vae, x = tiny_vae()
    want, _ = exact_terms(vae, x)
    draws = torch.stack([vae.neg_elbo(x) for _ in range(4000)])
    se = draws.std(0) / math.sqrt(draws.shape[0])
    assert ((draws.mean(0) - want).abs() < 4.5 * se).all()


def test_importance_sampled_nll_approaches_exact_log_likelihood():
    vae, x = tiny_vae()
    neg_elbo, nll = exact_terms(vae, x)
    assert (nll <= neg_elbo + 1e-9).all()
    est = vae.nll(x, samples=20000)
    assert torch.allclose(est, nll, atol=0.02)
    # with one sample the bound is the single-sample ELBO: looser on average
    one = torch.stack([vae.nll(x, samples=1) for _ in range(2000)]).mean(0)
    assert (one > est).all()


def test_training_loss_with_exact_estimator_is_the_exact_neg_elbo():
    vae, x = tiny_vae()
    want, _ = exact_terms(vae, x)
    obj, out = vae.loss(x, estimators.get("exact"))
    assert torch.allclose(obj, want.mean())


def test_grad_variance_is_zero_for_exact_and_matches_a_loop_for_reinforce():
    vae, x = tiny_vae(learn_prior=False)
    assert vae.grad_variance(x, estimators.get("exact"), 8) < 1e-20
    est = estimators.get("reinforce")
    torch.manual_seed(1)
    vectorised = vae.grad_variance(x, est, 2000)
    # the plain way: one backward per estimate
    params = vae.encoder_parameters()
    grads = []
    for _ in range(2000):
        obj, _ = vae.loss(x, est)
        grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(obj, params)]))
    looped = torch.stack(grads).var(0).mean().item()
    assert abs(vectorised / looped - 1) < 0.15


def test_vimco_objective_on_the_vae_is_the_importance_weighted_bound():
    """With kl = "sampled", VIMCO's S-sample objective on the VAE is
    -E log (1/S) sum_s p(x, z_s) / q(z_s | x): compare with enumeration of all
    S-tuples of latent states."""
    vae, x = tiny_vae(n=1, k=3)
    est = estimators.get("vimco", samples=2)
    with torch.no_grad():
        log_q = torch.log_softmax(vae.logits(x), -1)[:, 0]  # (B, K)
        log_p = torch.log_softmax(vae.prior_logits, -1)[0]
        log_w = []
        for c in range(3):
            z = torch.zeros(x.shape[0], 1, 3, dtype=torch.float64)
            z[:, 0, c] = 1
            log_w.append(-vae.recon(x, z) + log_p[c] - log_q[:, c])
        log_w = torch.stack(log_w, 1)  # (B, K)
        want = torch.zeros(x.shape[0], dtype=torch.float64)
        for a in range(3):
            for b in range(3):
                pair = torch.stack([log_w[:, a], log_w[:, b]], 0)
                want -= (log_q[:, a] + log_q[:, b]).exp() * (torch.logsumexp(pair, 0) - math.log(2))
        draws = torch.stack([vae.loss(x, est)[0] for _ in range(4000)])
    se = draws.std() / math.sqrt(len(draws))
    assert abs(draws.mean() - want.mean()) < 4.5 * se
    _, nll = exact_terms(vae, x)
    assert want.mean() >= nll.mean() - 1e-9
