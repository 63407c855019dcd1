"""The estimators of issue 5 against mathematics, beyond the generic suite
(which already z-tests every ``unbiased`` one against enumeration).

* VIMCO against the exact gradient of its own S-sample objective (enumerating
  all S-tuples of states), and not of the single-sample one;
* the conditional Gumbel sampler against the Gumbel law it must reproduce;
* REBAR/RELAX: the dependence of z~ on theta matters (dropping it is caught),
  control-variate and model gradients never mix, training the control variate
  lowers the variance;
* closed forms: MuProp is exact with zero variance for linear f, ReinMax (tau=1)
  and binary DARN are unbiased for quadratic f while straight-through is not,
  Gumbel-Rao has the mean of ST Gumbel-Softmax with less variance, DisARM has
  less variance than ARM, annealed ST backpropagates softmax(logits / tau).
"""

import itertools
import math

import pytest
import torch
from scipy import stats

import estimators
import estimators._control as control
from estimators._conditional import conditional_gumbel
from estimators.vimco import multi_sample_loss
from tests.mathref import exact_objective
from tests.test_estimators_generic import (
    Z_MAX,
    exact_gradients,
    logits_for,
    make,
    objective,
    per_copy_gradients,
    z_test,
)

ISSUE5 = ["reinforce_loo", "vimco", "muprop", "darn", "annealed_st", "rebar", "relax", "arm",
          "disarm", "gumbel_rao", "reinmax"]
UNBIASED = {"reinforce_loo", "muprop", "rebar", "relax", "arm", "disarm"}
W = torch.tensor(0.7, dtype=torch.float64)


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests make many small calls; on a busy 2-core machine a second
    intra-op thread only adds contention (10x slower here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_all_issue_estimators_are_registered_with_honest_flags():
    assert set(ISSUE5) <= set(estimators.names())
    for name in ISSUE5:
        assert estimators.get_class(name).unbiased == (name in UNBIASED), name
    assert estimators.get_class("arm").binary_only and estimators.get_class("disarm").binary_only


@pytest.mark.parametrize("name", ["arm", "disarm"])
def test_binary_only_estimators_refuse_k3_naming_the_key(name):
    with pytest.raises(estimators.EstimatorConfigError, match=r"binary-only.*task\.categories=3"):
        make(name)(torch.zeros(2, 3, 3), lambda z: z.sum((-1, -2)))


@pytest.mark.parametrize("name", ["reinforce_loo", "vimco"])
@pytest.mark.parametrize("bad", [1, 0, 2.5, "4", True])
def test_sample_count_is_checked(name, bad):
    with pytest.raises(estimators.EstimatorConfigError, match=r"estimator\.samples"):
        estimators.get(name, samples=bad)


@pytest.mark.parametrize("kwargs,key", [
    ({"temperature": 0.5}, "estimator.temperature"),
    ({"anneal_rate": 1e-3, "min_temperature": 0.5}, "estimator.min_temperature"),
])
def test_reinmax_refuses_temperatures_below_one(kwargs, key):
    with pytest.raises(estimators.EstimatorConfigError, match=key.replace(".", r"\.")):
        estimators.get("reinmax", **kwargs)


def test_control_variate_options_are_checked():
    for bad in ({"cv_lr": 0}, {"cv_lr": "x"}, {"temperature": -1}, {"hidden": [0]},
                {"activation": "relu"}):
        with pytest.raises(estimators.EstimatorConfigError, match=r"estimator\."):
            estimators.get("relax", **bad)


# --- VIMCO: its own objective, by enumeration ---------------------------------

def exact_multi_sample(logits, f, s):
    """E[-log mean_s exp(-f(z_s))] with z_1..z_S i.i.d. ~ q, by enumerating all
    S-tuples of joint states; averaged over the batch."""
    b, n, k = logits.shape
    log_p = torch.log_softmax(logits, -1)
    states = list(itertools.product(range(k), repeat=n))
    total = 0.0
    for tup in itertools.product(states, repeat=s):
        z = torch.zeros(s, b, n, k, dtype=logits.dtype)
        for i, st in enumerate(tup):
            for v, c in enumerate(st):
                z[i, :, v, c] = 1.0
        weight = (log_p * z).sum((0, 2, 3)).exp()  # prod over samples and variables
        total = total + weight * multi_sample_loss(f(z))
    return total.mean()


def test_vimco_is_unbiased_for_its_multi_sample_objective_only():
    torch.manual_seed(3)
    logits = logits_for(2, n=2)
    est = estimators.get("vimco", samples=3)
    gl, gw = per_copy_gradients(est, logits, W, m=20000)
    el, ew = exact_gradients(logits, W, lambda lg, f: exact_multi_sample(lg, f, 3))
    assert z_test(gl, el) < Z_MAX
    assert z_test(gw[:, None], ew[None]) < Z_MAX
    # power: the same estimates are far from the single-sample objective's gradient
    sl, _ = exact_gradients(logits, W, exact_objective)
    assert z_test(gl, sl) > 3 * Z_MAX


def test_vimco_surrogate_value_is_the_multi_sample_loss():
    torch.manual_seed(0)
    logits = logits_for(3, n=2)
    out = estimators.get("vimco", samples=5)(logits, lambda z: objective(z, W))
    fz = objective(out.sample, W)
    assert torch.allclose(out.surrogate, multi_sample_loss(fz).mean())
    assert torch.allclose(out.loss, fz.mean(0))


def test_leave_one_out_baseline_removes_an_offset_that_reinforce_suffers_from():
    logits = logits_for(3, n=2)
    big = lambda z: objective(z, W) + 50.0  # noqa: E731  same gradient, large offset
    grads = {}
    for name, kw in (("reinforce", {}), ("reinforce_loo", {"samples": 4})):
        torch.manual_seed(4)
        est = estimators.get(name, **kw)
        b = logits.detach().repeat(4000, 1, 1).requires_grad_(True)
        est(b, big).surrogate.backward()
        grads[name] = (b.grad * 4000).view(4000, *logits.shape)
    assert grads["reinforce_loo"].var(0).mean() * 100 < grads["reinforce"].var(0).mean()


# --- the conditional Gumbel sampler ---------------------------------------------

def test_conditional_gumbel_reproduces_the_gumbel_law():
    torch.manual_seed(5)
    logits = torch.tensor([0.3, -1.2, 1.0], dtype=torch.float64)
    m = 40000
    b = torch.nn.functional.one_hot(
        torch.multinomial(torch.softmax(logits, -1), m, replacement=True), 3).double()
    z = conditional_gumbel(logits.expand(m, 3), b)
    assert (z.argmax(-1) == b.argmax(-1)).all()
    # b ~ q, then z | b: the pair is the unconditional perturbation, so each
    # coordinate is Gumbel(logits_k) and the maximum Gumbel(logsumexp(logits))
    for c in range(3):
        assert stats.kstest(z[:, c].numpy(), stats.gumbel_r(loc=float(logits[c])).cdf).pvalue > 1e-3
    top = stats.gumbel_r(loc=float(torch.logsumexp(logits, 0))).cdf
    assert stats.kstest(z.max(-1).values.numpy(), top).pvalue > 1e-3
    # power: conditioning on a wrong b (always category 0) breaks the marginal law
    wrong = conditional_gumbel(logits.expand(m, 3), torch.eye(3, dtype=torch.float64)[0])
    assert stats.kstest(wrong[:, 0].numpy(), stats.gumbel_r(loc=float(logits[0])).cdf).pvalue < 1e-6


def test_conditional_gumbel_is_finite_for_extreme_logits():
    logits = torch.tensor([[1e4, -1e4, 0.0]], requires_grad=True)
    for c in range(3):
        b = torch.eye(3)[c].expand(1, 3)
        z = conditional_gumbel(logits, b)
        z.sum().backward()
        assert torch.isfinite(z).all() and torch.isfinite(logits.grad).all()
        assert z.argmax(-1).item() == c


# --- REBAR / RELAX ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["rebar", "relax"])
def test_dropping_the_dependence_of_z_tilde_on_theta_is_caught(name, monkeypatch):
    """The generic z-test passes for the estimator; the same test rejects it when
    z~ is treated as constant in theta (the bug it must not have)."""
    logits = logits_for(2, n=1)
    el, _ = exact_gradients(logits, W, exact_objective)
    real = control.conditional_gumbel
    monkeypatch.setattr(control, "conditional_gumbel",
                        lambda lg, b, *a: real(lg.detach(), b, *a))
    torch.manual_seed(1)
    gl, _ = per_copy_gradients(make(name), logits, W, m=10000)
    assert z_test(gl, el) > 3 * Z_MAX


class Model(torch.nn.Module):
    """An encoder producing logits and a decoder parameter inside f."""

    def __init__(self, k=3):
        super().__init__()
        self.enc = torch.nn.Linear(4, 2 * k)
        self.w = torch.nn.Parameter(torch.tensor(0.3))
        self.k = k
        self.x = torch.randn(5, 4)

    def logits(self):
        return self.enc(self.x).view(5, 2, self.k)

    def f(self, z):
        return objective(z.double(), self.w.double()).float()


@pytest.mark.parametrize("name", ["rebar", "relax"])
def test_control_variate_and_model_gradients_never_mix(name):
    torch.manual_seed(6)
    model = Model()
    est = estimators.get(name, cv_lr=0.05)
    out = est(model.logits(), model.f)  # trains the control variate once
    phi = est.extra_parameters()
    assert phi and all(p.grad is None for p in phi)  # the optimiser cleaned up
    # the variance step gave the model nothing
    assert all(p.grad is None for p in model.parameters())
    before = [p.detach().clone() for p in phi]
    out.surrogate.backward()  # the model loss gives phi nothing
    assert all(p.grad is None for p in phi)
    assert all(torch.equal(a, p) for a, p in zip(before, phi, strict=True))
    assert model.enc.weight.grad is not None and model.w.grad is not None
    # and the control variate did learn (it moved), but not while frozen
    est2 = estimators.get(name, cv_lr=0.05)
    est2(model.logits(), model.f)
    start = [p.detach().clone() for p in est2.extra_parameters()]
    with est2.frozen():
        est2(model.logits(), model.f)
    assert all(torch.equal(a, p) for a, p in zip(start, est2.extra_parameters(), strict=True))
    est2(model.logits(), model.f)
    assert any(not torch.equal(a, p) for a, p in zip(start, est2.extra_parameters(), strict=True))


@pytest.mark.parametrize("name,kw", [("rebar", {"eta": 0.0}), ("relax", {"relaxed_f": False})])
def test_training_the_control_variate_lowers_the_variance(name, kw):
    from tasks.toy import Toy

    torch.manual_seed(7)
    task = Toy(latents=4, categories=3, target=0.45, init_scale=1.0, batch_size=8)
    est = estimators.get(name, cv_lr=0.02, **kw)
    before = task.grad_variance(None, est, 1000)
    for _ in range(100):
        task.loss(None, est)
    after = task.grad_variance(None, est, 1000)
    assert after < before / 2


def test_relax_refuses_another_latent_shape():
    est = estimators.get("relax")
    est(torch.zeros(2, 3, 2), lambda z: z.sum((-1, -2)))
    with pytest.raises(estimators.EstimatorConfigError, match="relax"):
        est(torch.zeros(2, 4, 2), lambda z: z.sum((-1, -2)))


# --- closed forms -----------------------------------------------------------------

def test_muprop_is_exact_with_zero_variance_for_linear_f():
    c = torch.tensor([[0.4, -1.0, 2.0], [1.5, 0.2, -0.7]], dtype=torch.float64)
    logits = logits_for(3, n=2)
    est = estimators.get("muprop")
    b = logits.detach().repeat(200, 1, 1).requires_grad_(True)
    est(b, lambda z: (z * c).sum((-1, -2))).surrogate.backward()
    g = (b.grad * 200).view(200, *logits.shape)
    lg = logits.clone().requires_grad_(True)
    (exact,) = torch.autograd.grad(exact_objective(lg, lambda z: (z * c).sum((-1, -2))), lg)
    assert torch.allclose(g, exact.expand_as(g), atol=1e-12)


@pytest.mark.parametrize("name,k,unbiased", [
    ("reinmax", 3, True), ("reinmax", 2, True), ("darn", 2, True), ("darn", 3, False),
    ("straight_through", 3, False), ("straight_through", 2, False)])
def test_second_order_estimators_are_unbiased_for_quadratic_f(name, k, unbiased):
    """The generic objective is quadratic in z. ReinMax at tau = 1 (Liu et al.
    2023: the trapezoid rule is exact for quadratics) and DARN for binary
    variables (centring at 1/2 makes its signal the trapezoid rule) match the
    exact gradient; straight-through (first order) and DARN for K = 3 do not."""
    torch.manual_seed(8)
    logits = logits_for(k, n=5 - k)
    el, _ = exact_gradients(logits, W, exact_objective)
    gl, _ = per_copy_gradients(make(name, temperature=1.0), logits, W, m=20000)
    z = z_test(gl, el)
    assert (z < Z_MAX) if unbiased else (z > 3 * Z_MAX)


def test_gumbel_rao_has_the_mean_of_st_gumbel_softmax_and_less_variance():
    logits = logits_for(3, n=2)
    torch.manual_seed(9)
    a, _ = per_copy_gradients(make("gumbel_rao", temperature=0.7, samples=10), logits, W, 20000)
    b, _ = per_copy_gradients(make("st_gumbel_softmax", temperature=0.7), logits, W, 20000)
    se = (a.var(0) / a.shape[0] + b.var(0) / b.shape[0]).sqrt()
    assert ((a.mean(0) - b.mean(0)).abs() / se).max() < Z_MAX
    assert (a.var(0) < b.var(0)).all()


def test_disarm_has_less_variance_than_arm():
    logits = logits_for(2, n=3)
    torch.manual_seed(10)
    a, _ = per_copy_gradients(make("arm"), logits, W, m=20000)
    d, _ = per_copy_gradients(make("disarm"), logits, W, m=20000)
    assert d.var(0).sum() < a.var(0).sum()


def test_annealed_st_backpropagates_the_tempered_softmax_on_its_schedule():
    est = estimators.get("annealed_st", temperature=1.0, anneal_rate=1e-3, anneal_every=100,
                         min_temperature=0.5)
    est.set_step(250)
    tau = math.exp(-0.2)
    assert est.temperature == pytest.approx(tau)
    c = torch.tensor([[0.4, -1.0, 2.0]], dtype=torch.float64)
    logits = torch.tensor([[[0.2, -0.5, 1.0]]], dtype=torch.float64, requires_grad=True)
    est(logits, lambda z: (z * c).sum((-1, -2))).surrogate.backward()
    p = torch.softmax(logits.detach() / tau, -1)[0, 0]
    jac = (torch.diag(p) - torch.outer(p, p)) / tau
    assert torch.allclose(logits.grad[0, 0], jac @ c[0])
