"""The estimators of issue 15 against mathematics, beyond the generic suite
(which z-tests every ``unbiased`` one against enumeration, and gst / zgr /
decoupled_st / straight_through against their own expectations).

Structural facts tested here: IndeCateR is exact with zero variance for N = 1
and evaluates its N K alternatives in one call of f; the sum-and-sample
estimator equals IndeCateR when nothing is left to sample; ARMS with n = 2 is
DisARM sample by sample, its copula has the stated law and its 1/(1 - rho)
correction is needed; ZGR is exact for quadratic f (not for cubic), equals DARN
for K = 2; GST's shifted logits have the stated gap; decoupled ST with tau_f = 1
is ST Gumbel-Softmax and with tau_f != 1 samples softmax(logits / tau_f);
double_cv is exact for linear f at alpha = 1, is reinforce_loo at alpha = 0 and
unbiased at any alpha; RODEO's Stein control variates are unbiased when they are
switched on (and a wrong Stein operator is caught); the online-fitted control
variates never mix with the model's gradients, freeze under ``frozen()`` and
lower the variance.
"""

import math

import pytest
import torch
from scipy import stats

import estimators
import estimators.arms as arms_mod
from estimators.arm import DisARM
from estimators.gst import gapped_logits
from estimators.rodeo import Rodeo
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

ISSUE15 = ["indecater", "gst", "zgr", "double_cv", "rodeo", "arms", "unordered_set",
           "rao_blackwell", "decoupled_st"]
UNBIASED = {"indecater", "double_cv", "rodeo", "arms", "unordered_set", "rao_blackwell"}
W = torch.tensor(0.7, dtype=torch.float64)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def registered():
    return [n for n in ISSUE15 if n in estimators.names()]


def test_registered_with_honest_flags():
    for name in registered():
        cls = estimators.get_class(name)
        assert cls.unbiased == (name in UNBIASED), name
        assert cls.binary_only == (name == "arms"), name
        assert (cls.noise is not None) == (name in {"gst", "zgr", "decoupled_st"}), name


@pytest.mark.parametrize("name,minimum", [("indecater", 1), ("rao_blackwell", 1), ("arms", 2),
                                          ("double_cv", 2), ("rodeo", 2), ("unordered_set", 2)])
def test_sample_count_is_checked_naming_the_key(name, minimum):
    if name not in estimators.names():
        pytest.skip("not registered")
    for bad in (minimum - 1, 2.5, "4", True):
        with pytest.raises(estimators.EstimatorConfigError, match=r"estimator\.samples.*>= " +
                           str(minimum)):
            estimators.get(name, samples=bad)


def test_other_options_are_checked_naming_the_key():
    for name, bad, key in [("gst", {"gap": -1}, "gap"), ("gst", {"gap": "x"}, "gap"),
                           ("decoupled_st", {"forward_temperature": 0}, "forward_temperature"),
                           ("rao_blackwell", {"summed": 0}, "summed"),
                           ("rodeo", {"hidden": 0}, "hidden"), ("rodeo", {"cv_lr": 0}, "cv_lr"),
                           ("double_cv", {"cv_lr": -1}, "cv_lr")]:
        with pytest.raises(estimators.EstimatorConfigError, match=r"estimator\." + key):
            estimators.get(name, **bad)


def test_arms_refuses_k3_naming_the_key():
    with pytest.raises(estimators.EstimatorConfigError, match=r"binary-only.*task\.categories=3"):
        make("arms")(torch.zeros(2, 3, 3), lambda z: z.sum((-1, -2)))


# --- IndeCateR and sum-and-sample ---------------------------------------------------

def test_indecater_is_exact_with_zero_variance_for_one_variable():
    logits = logits_for(3, n=1, b=2)
    gl, gw = per_copy_gradients(make("indecater"), logits, W, m=200)
    el, ew = exact_gradients(logits, W, exact_objective)
    assert torch.allclose(gl, el.expand_as(gl), atol=1e-12)
    assert torch.allclose(gw, ew.expand_as(gw), atol=1e-12)
    # and with N = 2 it is random (so the check above could fail)
    gl2, _ = per_copy_gradients(make("indecater"), logits_for(3, n=2), W, m=200)
    assert gl2.var(0).max() > 1e-4


@pytest.mark.parametrize("name,kw,rows", [("indecater", {"samples": 3}, 3 * 3 * 3),
                                          ("rao_blackwell", {"summed": 1, "samples": 2},
                                           2 * (3 * 2 + 1))])
def test_local_alternatives_go_to_f_in_one_call(name, kw, rows):
    calls = []

    def f(z):
        calls.append(tuple(z.shape))
        return objective(z, W)

    estimators.get(name, **kw)(logits_for(3, n=3, b=5), f)
    assert calls == [(rows, 5, 3, 3)]


@pytest.mark.parametrize("k,summed", [(2, 1), (3, 3), (3, 5)])
def test_rao_blackwell_is_indecater_when_nothing_is_left_to_sample(k, summed):
    """k >= K - 1 leaves at most one unsummed category per variable: the sampled
    term is then that category's exact term, and both estimators coincide draw
    by draw (same context sample)."""
    logits = logits_for(k, n=3, b=4)
    grads = []
    for name, kw in (("indecater", {}), ("rao_blackwell", {"summed": summed})):
        torch.manual_seed(11)
        lg = logits.clone().requires_grad_(True)
        w = W.clone().requires_grad_(True)
        estimators.get(name, **kw)(lg, lambda z, w=w: objective(z, w)).surrogate.backward()
        grads.append((lg.grad, w.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-12)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-12)


@pytest.mark.parametrize("name", ["indecater", "rao_blackwell", "unordered_set", "arms",
                                  "double_cv", "reinforce"])
def test_a_constant_offset_in_f_leaves_the_logit_gradient_unchanged(name):
    """Each of these has a built-in baseline (the sum over categories, the
    remainder's baseline b_i, the unordered-set or leave-one-out baselines):
    f + 50 gives the same logit gradient, draw by draw; REINFORCE without a
    baseline does not (the negative control)."""
    k = 2 if name == "arms" else 3
    logits = logits_for(k, n=3, b=4)
    grads = []
    for offset in (0.0, 50.0):
        torch.manual_seed(28)
        lg = logits.clone().requires_grad_(True)
        est = make(name)
        with est.frozen():
            est(lg, lambda z, c=offset: objective(z, W) + c).surrogate.backward()
        grads.append(lg.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-9) == (name != "reinforce")


def test_rao_blackwell_with_two_summed_of_four_is_unbiased():
    a4 = torch.tensor([[0.9, -0.4, 1.3, 0.1], [-1.1, 0.6, 0.2, 1.4]], dtype=torch.float64)

    def f4(z, w):
        s = (z * a4).sum((-1, -2))
        return (s - w) ** 2 + 0.5 * s

    torch.manual_seed(12)
    logits = logits_for(4, n=2)
    m, b = 20000, logits.shape[0]
    big = logits.repeat(m, 1, 1).requires_grad_(True)
    ws = W.repeat(m).requires_grad_(True)
    est = estimators.get("rao_blackwell", summed=2)
    est(big, lambda z: f4(z, ws.repeat_interleave(b))).surrogate.backward()
    gl, gw = big.grad.view(m, *logits.shape) * m, ws.grad * m
    lg, wg = logits.clone().requires_grad_(True), W.clone().requires_grad_(True)
    el, ew = torch.autograd.grad(exact_objective(lg, lambda z: f4(z, wg)), (lg, wg))
    assert z_test(gl, el) < Z_MAX
    assert z_test(gw[:, None], ew[None]) < Z_MAX


# --- ARMS -------------------------------------------------------------------------------

def test_arms_with_two_samples_is_disarm_sample_by_sample():
    torch.manual_seed(13)
    alpha = torch.randn(6, 5, dtype=torch.float64) * 2
    u = torch.rand(6, 5, dtype=torch.float64)
    f1, f2 = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    p = torch.sigmoid(alpha)
    b_dis, b_tilde = (u < p).double(), (1 - u < p).double()  # DisARM's b and b~
    ref = DisARM().signal(alpha, u, b_tilde, b_dis, f1, f2)
    got = arms_mod.arms_signal(alpha, torch.stack([b_dis, b_tilde]), torch.stack([f2, f1]))
    assert torch.allclose(got, ref, atol=1e-12)
    # the copula for n = 2 is the antithetic pair (u, 1 - u)
    v = arms_mod.dirichlet_copula(2, alpha)
    assert torch.allclose(v[0] + v[1], torch.ones_like(alpha))


@pytest.mark.parametrize("n", [3, 5])
def test_dirichlet_copula_has_uniform_marginals_and_the_stated_joint_law(n):
    torch.manual_seed(14)
    u = arms_mod.dirichlet_copula(n, torch.zeros(40000, dtype=torch.float64))
    assert stats.kstest(u[0].numpy(), "uniform").pvalue > 1e-3
    assert stats.kstest(u[-1].numpy(), "uniform").pvalue > 1e-3
    for r in (0.2, 0.4, 0.5):
        both = ((u[0] < r) & (u[1] < r)).double().mean()
        c = max(0.0, 2 * r ** (1 / (n - 1)) - 1) ** (n - 1)
        se = math.sqrt(max(c * (1 - c), 1e-4) / 40000)
        assert abs(float(both) - c) < 5 * se
    # negatively correlated: P(both < 1/2) is below the independent 1/4
    assert float(((u[0] < 0.5) & (u[1] < 0.5)).double().mean()) < 0.25 - 0.01


def test_arms_needs_its_correlation_correction(monkeypatch):
    """Without dividing by 1 - rho the correlated leave-one-out baseline is biased
    (shrunk by 1 - rho): the enumeration z-test catches it."""
    logits = logits_for(2, n=3)
    el, _ = exact_gradients(logits, W, exact_objective)
    monkeypatch.setattr(arms_mod, "one_minus_rho", lambda a, n: torch.ones_like(a))
    torch.manual_seed(15)
    gl, _ = per_copy_gradients(estimators.get("arms", samples=4), logits, W, m=20000)
    assert z_test(gl, el) > 3 * Z_MAX


def test_arms_with_more_samples_has_less_variance():
    logits = logits_for(2, n=3)
    torch.manual_seed(16)
    v2 = per_copy_gradients(estimators.get("arms", samples=2), logits, W, m=20000)[0].var(0).sum()
    v6 = per_copy_gradients(estimators.get("arms", samples=6), logits, W, m=20000)[0].var(0).sum()
    assert v6 < v2 / 2


# --- ZGR, GST, decoupled ST ------------------------------------------------------------

@pytest.mark.parametrize("k", [2, 3])
def test_zgr_is_exact_for_quadratic_f_but_not_for_cubic_f(k):
    torch.manual_seed(17)
    logits = logits_for(k, n=5 - k)
    el, _ = exact_gradients(logits, W, exact_objective)
    gl, _ = per_copy_gradients(make("zgr"), logits, W, m=20000)
    assert z_test(gl, el) < Z_MAX
    a = torch.tensor([[0.9, -0.4, 1.3], [-1.1, 0.6, 0.2], [0.5, 1.7, -0.8]], dtype=torch.float64)

    def cubic(z):
        s = (z * a[: z.shape[-2], : z.shape[-1]]).sum((-1, -2))
        return s ** 3

    lg = logits.clone().requires_grad_(True)
    (ec,) = torch.autograd.grad(exact_objective(lg, cubic), lg)
    big = logits.repeat(20000, 1, 1).requires_grad_(True)
    make("zgr")(big, cubic).surrogate.backward()
    gc = (big.grad * 20000).view(20000, *logits.shape)
    assert z_test(gc, ec) > 3 * Z_MAX


def test_zgr_is_darn_for_binary_variables():
    logits = logits_for(2, n=3, b=3)
    grads = []
    for name in ("zgr", "darn"):
        torch.manual_seed(18)
        lg = logits.clone().requires_grad_(True)
        make(name)(lg, lambda z: objective(z, W)).surrogate.backward()
        grads.append(lg.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-12)


def test_gst_shifts_the_logits_as_stated():
    theta = torch.tensor([[2.0, 1.5, -1.0, 0.8]], dtype=torch.float64)
    d = torch.tensor([[0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    shifted = gapped_logits(theta, d, gap=1.0)
    # the sample is raised to the max, every other logit is at most max - gap
    assert torch.allclose(shifted, torch.tensor([[1.0, 1.0, 2.0, 0.8]], dtype=torch.float64))
    for gap in (0.0, 0.5, 3.0):
        for c in range(4):
            d = torch.eye(4, dtype=torch.float64)[c][None]
            s = gapped_logits(theta, d, gap)
            assert s.argmax().item() == c or gap == 0.0
            others = s[0][torch.arange(4) != c]
            assert (s[0, c] - others >= gap - 1e-12).all()
    # the shift is held constant: the backward pass is softmax(shifted / tau)'s Jacobian
    tau = 0.7
    cvec = torch.tensor([0.4, -1.0, 2.0, 0.3], dtype=torch.float64)
    est = estimators.get("gst", temperature=tau, gap=1.0)
    lg = theta[None].clone().requires_grad_(True)
    d = torch.eye(4, dtype=torch.float64)[2][None, None]
    est.estimate_given(lg, lambda z: (z * cvec).sum((-1, -2)), d).surrogate.backward()
    y = torch.softmax(torch.tensor([1.0, 1.0, 2.0, 0.8], dtype=torch.float64) / tau, -1)
    assert torch.allclose(lg.grad[0, 0], (torch.diag(y) - torch.outer(y, y)) @ cvec / tau)


def test_decoupled_st_with_unit_forward_temperature_is_st_gumbel_softmax():
    logits = logits_for(3, n=3, b=4)
    outs = []
    for name in ("decoupled_st", "st_gumbel_softmax"):
        torch.manual_seed(19)
        lg = logits.clone().requires_grad_(True)
        out = estimators.get(name, temperature=0.6)(lg, lambda z: objective(z, W))
        out.surrogate.backward()
        outs.append((out.sample, lg.grad))
    assert torch.equal(outs[0][0], outs[1][0])
    assert torch.allclose(outs[0][1], outs[1][1], atol=1e-12)


def test_decoupled_st_forward_temperature_sets_the_sampled_law():
    torch.manual_seed(20)
    logits = torch.tensor([[[0.5, -0.2, 1.0]]], dtype=torch.float64).expand(30000, 1, 3)
    seen = []
    estimators.get("decoupled_st", forward_temperature=2.0)(
        logits, lambda z: (seen.append(z.detach()), z.sum((-1, -2)))[1])
    counts = seen[0].sum((0, 1)).numpy()
    want = torch.softmax(logits[0, 0] / 2.0, -1).numpy() * 30000
    assert stats.chisquare(counts, want).pvalue > 1e-3
    wrong = torch.softmax(logits[0, 0], -1).numpy() * 30000
    assert stats.chisquare(counts, wrong).pvalue < 1e-6


# --- double_cv and rodeo ------------------------------------------------------------------

C_LIN = torch.tensor([[0.4, -1.0, 2.0], [1.5, 0.2, -0.7]], dtype=torch.float64)


def test_double_cv_at_alpha_one_is_exact_for_linear_f():
    logits = logits_for(3, n=2)
    est = estimators.get("double_cv", alpha=1.0)
    big = logits.repeat(300, 1, 1).requires_grad_(True)
    with est.frozen():
        est(big, lambda z: (z * C_LIN).sum((-1, -2)) + 5.0).surrogate.backward()
    g = (big.grad * 300).view(300, *logits.shape)
    lg = logits.clone().requires_grad_(True)
    (exact,) = torch.autograd.grad(exact_objective(lg, lambda z: (z * C_LIN).sum((-1, -2))), lg)
    assert torch.allclose(g, exact.expand_as(g), atol=1e-10)


def test_double_cv_at_alpha_zero_is_reinforce_loo():
    logits = logits_for(3, n=2, b=3)
    grads = []
    for name, kw in (("double_cv", {"alpha": 0.0}), ("reinforce_loo", {})):
        torch.manual_seed(21)
        lg = logits.clone().requires_grad_(True)
        est = estimators.get(name, samples=4, **kw)
        with est.frozen():
            est(lg, lambda z: objective(z, W)).surrogate.backward()
        grads.append(lg.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-12)


def test_double_cv_is_unbiased_at_any_alpha():
    torch.manual_seed(22)
    logits = logits_for(3, n=2)
    est = estimators.get("double_cv", alpha=-3.0)
    with est.frozen():
        gl, gw = per_copy_gradients(est, logits, W, m=20000)
    el, ew = exact_gradients(logits, W, exact_objective)
    assert z_test(gl, el) < Z_MAX and z_test(gw[:, None], ew[None]) < Z_MAX


def switched_on_rodeo(cls=Rodeo, seed=23):
    """A RODEO whose Stein terms are active: alpha = beta = 1 and a random network
    (at initialisation alpha = beta = 0 and the generic test sees reinforce_loo)."""
    est = cls(samples=4, hidden=8)
    torch.manual_seed(seed)
    with est.frozen():
        est(logits_for(3, n=2), lambda z: objective(z, W))
    with torch.no_grad():
        est.alpha.fill_(1.0)
        est.beta.fill_(1.0)
        for p in est.net.parameters():
            p.normal_()
    return est


@pytest.mark.parametrize("k,n", [(3, 2), (2, 3)])
def test_rodeo_with_its_stein_terms_switched_on_is_unbiased(k, n):
    est = switched_on_rodeo()
    torch.manual_seed(24)
    logits = logits_for(k, n=n)
    with est.frozen():
        gl, gw = per_copy_gradients(est, logits, W, m=20000)
    el, ew = exact_gradients(logits, W, exact_objective)
    assert z_test(gl, el) < Z_MAX and z_test(gw[:, None], ew[None]) < Z_MAX
    # the Stein terms do change the estimate (so the test above tests them)
    base = estimators.get("reinforce_loo", samples=4)
    torch.manual_seed(24)
    gb, _ = per_copy_gradients(base, logits, W, m=2000)
    assert not torch.allclose(gl[:2000], gb, atol=1e-6)


def test_a_wrong_stein_operator_is_caught():
    class WrongRodeo(Rodeo):
        def neighbour_weights(self, p):  # uniform instead of q_i(c): E[A h] != 0
            return torch.full_like(p, 1.0 / p.shape[-1])

    est = switched_on_rodeo(WrongRodeo)
    torch.manual_seed(24)
    logits = logits_for(3, n=2)
    with est.frozen():
        gl, _ = per_copy_gradients(est, logits, W, m=20000)
    el, _ = exact_gradients(logits, W, exact_objective)
    assert z_test(gl, el) > 3 * Z_MAX


class Model(torch.nn.Module):
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


@pytest.mark.parametrize("name", ["double_cv", "rodeo"])
def test_online_control_variates_never_mix_with_the_model_and_freeze(name):
    torch.manual_seed(25)
    model = Model()
    est = estimators.get(name, cv_lr=0.05)
    assert est.extra_parameters() == []
    out = est(model.logits(), model.f)  # fits the control variate once
    phi = est.extra_parameters()
    assert phi and all(p.grad is None for p in phi)
    assert all(p.grad is None for p in model.parameters())
    before = [p.detach().clone() for p in phi]
    out.surrogate.backward()
    assert all(p.grad is None for p in phi)
    assert all(torch.equal(a, p) for a, p in zip(before, phi, strict=True))
    assert model.enc.weight.grad is not None and model.w.grad is not None
    with est.frozen():
        est(model.logits(), model.f)
    assert all(torch.equal(a, p) for a, p in zip(before, est.extra_parameters(), strict=True))
    est(model.logits(), model.f)
    assert any(not torch.equal(a, p) for a, p in zip(before, est.extra_parameters(), strict=True))


@pytest.mark.parametrize("name,steps,factor", [("double_cv", 100, 0.5), ("rodeo", 200, 0.85)])
def test_fitting_the_control_variates_lowers_the_variance(name, steps, factor):
    """On the categorical toy (f quadratic in z, so the Taylor control variate
    is not exact: double_cv's best alpha there is near 0.05; started at alpha = 1,
    which has 4x the variance of alpha = 0), fitting online lowers the variance."""
    from tasks.toy import Toy

    torch.manual_seed(7)
    task = Toy(latents=4, categories=3, target=0.45, init_scale=1.0, batch_size=8)
    est = estimators.get(name, cv_lr=0.05, **({"alpha": 1.0} if name == "double_cv" else {}))
    before = task.grad_variance(None, est, 1000)
    for _ in range(steps):
        task.loss(None, est)
    after = task.grad_variance(None, est, 1000)
    assert after < factor * before


# --- the unordered set estimator ------------------------------------------------------------

def set_probability_by_orderings(p, members):
    """P(sampling |members| times without replacement gives this set), summed over
    the orderings: the definition, independent of the integral formula."""
    import itertools

    total = 0.0
    for order in itertools.permutations(members):
        prob, left = 1.0, 1.0
        for s in order:
            prob *= p[s] / left
            left -= p[s]
        total += prob
    return float(total)


def test_set_probabilities_match_their_definition():
    import estimators.unordered_set as us

    p = torch.tensor([0.4, 0.25, 0.2, 0.1, 0.05], dtype=torch.float64)
    for members in ([0, 1], [1, 3, 4], [0, 2, 3, 4], [4, 3]):
        lp = p[members].log()[:, None]  # (k, B=1)
        log_rest = torch.log1p(-p[members].sum())
        full, minus1, _ = (x.exp() for x in us.set_log_integrals(lp - log_rest))
        assert float(full) == pytest.approx(set_probability_by_orderings(p, members), rel=1e-9)
        for i, s in enumerate(members):
            rest = [t for t in members if t != s]
            q = p.clone()
            q[s] = 0
            q = q / q.sum()  # the domain without s
            assert float(minus1[i]) == pytest.approx(set_probability_by_orderings(q, rest),
                                                     rel=1e-9)


def test_beam_search_samples_sets_without_replacement_with_the_right_law():
    import itertools

    import estimators.unordered_set as us

    torch.manual_seed(26)
    logits = torch.tensor([[[0.3, -0.2], [1.0, 0.1]]], dtype=torch.float64)  # 4 joint states
    m = 20000
    idx = us.beam_sample(torch.log_softmax(logits, -1).expand(m, 2, 2), 2)  # (2, m, 2)
    code = idx[..., 0] * 2 + idx[..., 1]  # joint state 0..3
    assert (code[0] != code[1]).all()
    q = torch.softmax(logits[0], -1)
    p = [float(q[0, a] * q[1, b]) for a in range(2) for b in range(2)]
    pairs = list(itertools.combinations(range(4), 2))
    counts = [int(((code.min(0).values == i) & (code.max(0).values == j)).sum()) for i, j in pairs]
    want = [m * set_probability_by_orderings(p, [i, j]) for i, j in pairs]
    assert stats.chisquare(counts, want).pvalue > 1e-3


def test_unordered_set_is_exact_when_it_samples_the_whole_domain():
    logits = logits_for(2, n=2)  # 4 states, k = 4
    gl, gw = per_copy_gradients(estimators.get("unordered_set", samples=4), logits, W, m=100)
    el, ew = exact_gradients(logits, W, exact_objective)
    assert torch.allclose(gl, el.expand_as(gl), atol=1e-8)
    assert torch.allclose(gw, ew.expand_as(gw), atol=1e-8)
    # k larger than the domain is capped at it
    gl6, _ = per_copy_gradients(estimators.get("unordered_set", samples=6), logits, W, m=10)
    assert torch.allclose(gl6, el.expand_as(gl6), atol=1e-8)


def test_unordered_set_baseline_needs_its_own_term(monkeypatch):
    """b(S, s) must contain p(s) f(s) (R^{D\\s}(S, s) = 1): without it the
    baseline's mean depends on s and the enumeration z-test catches the bias."""
    import estimators.unordered_set as us

    real = us.leave_out_weights

    def without_own_term(log_p):
        weight, other = real(log_p)
        eye = torch.eye(log_p.shape[0], dtype=torch.bool)[..., None]
        return weight, torch.where(eye, torch.zeros_like(other), other)

    monkeypatch.setattr(us, "leave_out_weights", without_own_term)
    torch.manual_seed(27)
    logits = logits_for(3, n=2)
    gl, _ = per_copy_gradients(estimators.get("unordered_set", samples=3), logits, W, m=20000)
    el, _ = exact_gradients(logits, W, exact_objective)
    assert z_test(gl, el) > 3 * Z_MAX
