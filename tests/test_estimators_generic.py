"""Generic tests that every registered estimator must pass.

Parametrised over ``estimators.names()``: a new estimator module is picked up
with no edit here. What is checked depends on what the estimator declares:
``unbiased`` estimators must match the exact gradient (by enumeration) within a
z-score bound, ``relaxed`` ones the gradient of the Gumbel-Softmax relaxed
objective (by quadrature), ``hard_forward`` ones must only show one-hot samples
to f.
"""

import math
from pathlib import Path

import pytest
import torch
import yaml

import estimators
from tests.mathref import all_one_hot_states, exact_objective, relaxed_objective_k2

CONF = Path(__file__).resolve().parent.parent / "conf" / "estimator"
NAMES = estimators.names()
Z_MAX = 4.5


def conf_kwargs(name: str) -> dict:
    cfg = yaml.safe_load((CONF / f"{name}.yaml").read_text()) or {}
    cfg.pop("name", None)
    return cfg


def make(name: str, **over) -> estimators.Estimator:
    kwargs = conf_kwargs(name)
    kwargs.update({k: v for k, v in over.items() if k in estimators.get_class(name).options()})
    return estimators.get(name, **kwargs)


def ks_for(name):
    return [2] if estimators.get_class(name).binary_only else [2, 3]


A = torch.tensor([[0.9, -0.4, 1.3], [-1.1, 0.6, 0.2], [0.5, 1.7, -0.8]], dtype=torch.float64)


def objective(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """A loss coupling the variables, with a parameter w inside: (*S, B, N, K) -> (*S, B)."""
    n, k = z.shape[-2:]
    s = (z * A[:n, :k]).sum((-1, -2))
    return (s - w) ** 2 + 0.5 * s


def per_copy_gradients(est, logits, w, m):
    """m independent estimates of d/d(logits, w) of mean_b E f, from one call on m
    stacked copies (the copies' surrogates separate, so the gradient of their
    mean times m is each copy's own)."""
    b = logits.shape[0]
    big = logits.detach().repeat(m, 1, 1).requires_grad_(True)
    ws = w.detach().repeat(m).requires_grad_(True)
    out = est(big, lambda z: objective(z, ws.repeat_interleave(b)))
    out.surrogate.backward()
    return big.grad.view(m, *logits.shape) * m, ws.grad * m


def exact_gradients(logits, w, fn):
    lg = logits.detach().clone().requires_grad_(True)
    wg = w.detach().clone().requires_grad_(True)
    val = fn(lg, lambda z: objective(z, wg))
    gl, gw = torch.autograd.grad(val, (lg, wg))
    return gl, gw


def z_test(samples: torch.Tensor, exact: torch.Tensor) -> float:
    """Largest |mean - exact| / (standard error), with a tiny absolute floor."""
    m = samples.shape[0]
    mean = samples.mean(0)
    se = samples.std(0) / math.sqrt(m)
    floor = 1e-6 * (1 + exact.abs())
    return float(((mean - exact).abs() / (se + floor)).max())


def logits_for(k, n=2, b=2):
    g = torch.Generator().manual_seed(123 + k)
    return torch.randn(b, n, k, generator=g, dtype=torch.float64)


# --- every estimator ------------------------------------------------------

def test_every_estimator_has_a_yaml_and_every_yaml_an_estimator():
    yamls = {p.stem for p in CONF.glob("*.yaml")}
    assert yamls == set(NAMES)
    for p in CONF.glob("*.yaml"):
        assert (yaml.safe_load(p.read_text()) or {}).get("name") == p.stem


@pytest.mark.parametrize("name", NAMES)
def test_yaml_instantiates(name):
    est = make(name)
    assert isinstance(est, estimators.Estimator) and est.name == name


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("k", [2, 3])
def test_shapes_finite_gradients_and_parameters_inside_f(name, k):
    if k not in ks_for(name):
        pytest.skip("binary-only")
    est = make(name)
    logits = logits_for(k, n=3, b=4).requires_grad_(True)
    w = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    seen = []

    def f(z):
        seen.append(z)
        assert z.shape[-3:] == (4, 3, k)
        out = objective(z, w)
        assert out.shape == z.shape[:-2]
        return out

    out = est(logits, f)
    assert out.loss.shape == (4,)
    assert out.surrogate.dim() == 0
    assert torch.isfinite(out.loss).all() and torch.isfinite(out.surrogate)
    out.surrogate.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0
    assert w.grad is not None and torch.isfinite(w.grad) and w.grad != 0
    assert seen, "f was never called"


@pytest.mark.parametrize("name", NAMES)
def test_samples_are_one_hot_or_on_the_simplex(name):
    est = make(name)
    logits = logits_for(3 if 3 in ks_for(name) else 2, n=4, b=8)
    seen = []
    est(logits, lambda z: (seen.append(z.detach()), z.sum((-1, -2)))[1])
    for z in seen:
        assert (z >= -1e-6).all() and torch.allclose(z.sum(-1), torch.ones(()).double())
        if est.hard_forward:
            assert torch.allclose(z, z.round(), atol=1e-6), "hard_forward but f saw a soft sample"


@pytest.mark.parametrize("name", NAMES)
def test_refuses_one_category(name):
    with pytest.raises(estimators.EstimatorConfigError, match="K|categories"):
        make(name)(torch.zeros(2, 3, 1), lambda z: z.sum((-1, -2)))


@pytest.mark.parametrize("name", NAMES)
def test_extreme_logits_and_temperature_stay_finite(name):
    try:
        est = make(name, temperature=0.01)
    except estimators.EstimatorConfigError as e:  # a clear refusal is fine (reinmax: tau >= 1)
        assert "estimator.temperature" in str(e)
        est = make(name)
    for scale in (1e4, -1e4):
        logits = (torch.randn(3, 2, 2) * scale).requires_grad_(True)
        out = est(logits, lambda z: ((z * torch.tensor([1.0, -2.0])).sum((-1, -2)) - 0.3) ** 2)
        out.surrogate.backward()
        assert torch.isfinite(out.loss).all() and torch.isfinite(out.surrogate)
        assert torch.isfinite(logits.grad).all()


# --- unbiased estimators: the exact gradient, by enumeration ---------------

UNBIASED = [n for n in NAMES if estimators.get_class(n).unbiased]
RELAXED = [n for n in NAMES if estimators.get_class(n).relaxed]


@pytest.mark.parametrize("name", UNBIASED)
@pytest.mark.parametrize("k,n", [(3, 2), (2, 3)])
def test_unbiased_matches_exact_gradient(name, k, n):
    if k not in ks_for(name):
        pytest.skip("binary-only")
    torch.manual_seed(1)
    logits = logits_for(k, n=n)
    w = torch.tensor(0.7, dtype=torch.float64)
    est = make(name)
    warm_up(est, logits, w)
    gl, gw = per_copy_gradients(est, logits, w, m=20000)
    el, ew = exact_gradients(logits, w, exact_objective)
    assert z_test(gl * float(getattr(est, "logit_scale", 1.0)), el) < Z_MAX
    assert z_test(gw[:, None], ew[None]) < Z_MAX


def warm_up(est, logits, w, calls: int = 4) -> None:
    """Move a stateful estimator (baselines, variance normalisation) off its start with
    a few calls on a loss of larger spread, so its state is not trivial when tested."""
    big = logits.detach().repeat(50, 1, 1)
    for _ in range(calls):
        est(big, lambda z: 30 * objective(z, w))


def test_z_test_has_power_against_a_biased_estimator():
    """The same check must reject straight-through and Gumbel-Softmax on the
    discrete objective: otherwise the unbiasedness test could not fail."""
    logits = logits_for(3)
    w = torch.tensor(0.7, dtype=torch.float64)
    el, _ = exact_gradients(logits, w, exact_objective)
    for name in ("straight_through", "gumbel_softmax"):
        torch.manual_seed(1)
        gl, _ = per_copy_gradients(make(name), logits, w, m=20000)
        assert z_test(gl, el) > 3 * Z_MAX, name


# --- relaxed estimators: the relaxed objective, by quadrature ---------------

@pytest.mark.parametrize("name", RELAXED)
@pytest.mark.parametrize("tau", [0.5, 1.0])
def test_relaxed_matches_relaxed_objective(name, tau):
    torch.manual_seed(2)
    est = make(name, temperature=tau)
    logits = torch.tensor([[[0.4, -0.3]]], dtype=torch.float64)
    w = torch.tensor(0.2, dtype=torch.float64)
    gl, gw = per_copy_gradients(est, logits, w, m=40000)
    el, ew = exact_gradients(logits, w,
                             lambda lg, f: relaxed_objective_k2(lg, f, est.temperature))
    assert z_test(gl, el) < Z_MAX
    assert z_test(gw[:, None], ew[None]) < Z_MAX


def test_quadrature_check_has_power_against_the_wrong_temperature():
    torch.manual_seed(2)
    logits = torch.tensor([[[0.4, -0.3]]], dtype=torch.float64)
    w = torch.tensor(0.2, dtype=torch.float64)
    gl, _ = per_copy_gradients(make("gumbel_softmax", temperature=0.5), logits, w, m=40000)
    el, _ = exact_gradients(logits, w, lambda lg, f: relaxed_objective_k2(lg, f, 1.0))
    assert z_test(gl, el) > 2 * Z_MAX


# --- biased estimators: their own expectation, by enumeration or quadrature -----

SAMPLE_NOISE = [n for n in NAMES if estimators.get_class(n).noise == "sample"]
GUMBEL_NOISE = [n for n in NAMES if estimators.get_class(n).noise == "gumbel"]


def _rowwise_gradients(est, big, noise, m, b):
    """Per-row gradients of ``est.estimate_given`` on m stacked copies of a batch
    of b examples (row r = copy r // b, example r % b): each row's own estimate
    of d/d(logits_r, w) for that example, (m*b, N, K) and (m*b,)."""
    big = big.detach().clone().requires_grad_(True)
    ws = W0.repeat(m * b).requires_grad_(True)
    out = est.estimate_given(big, lambda z: objective(z, ws), noise)
    out.surrogate.backward()
    return big.grad * m * b, ws.grad * m * b


W0 = torch.tensor(0.7, dtype=torch.float64)


def expectation_by_enumeration(est, logits):
    """E[g] = sum_z q(z) g(z) for an estimator whose estimate is a function of the
    one-hot sample z (per example of the batch): every joint state as one copy."""
    b, n, k = logits.shape
    states = all_one_hot_states(n, k, logits.dtype)  # (S, N, K)
    s = states.shape[0]
    z = states.repeat_interleave(b, 0)  # row r: state r // b
    big = logits.repeat(s, 1, 1)  # row r: example r % b
    gl, gw = _rowwise_gradients(est, big, z, s, b)
    q = (torch.log_softmax(big, -1) * z).sum((-1, -2)).exp()  # q_b(state) per row
    el = (q[:, None, None] * gl).view(s, b, n, k).sum(0) / b  # the batch-mean gradient
    ew = (q * gw).sum() / b
    return el, ew


def expectation_by_quadrature(est, logits, points=200001, bound=40.0):
    """E_G[g(G)] for B = N = 1, K = 2: g depends on G only through the logistic
    difference L = G_1 - G_0, so G = (0, L) with L on a trapezoid grid."""
    assert logits.shape == (1, 1, 2)
    grid = torch.linspace(-bound, bound, points, dtype=torch.float64)
    weight = torch.sigmoid(grid) * torch.sigmoid(-grid)  # logistic density
    weight = weight * (grid[1] - grid[0])
    weight[0] = weight[-1] = weight[0] / 2
    noise = torch.stack([torch.zeros_like(grid), grid], -1)[:, None, :]  # (U, 1, 2)
    gl, gw = _rowwise_gradients(est, logits.repeat(points, 1, 1), noise, points, 1)
    return (weight[:, None, None] * gl).sum(0, keepdim=True), (weight * gw).sum()


@pytest.mark.parametrize("name", SAMPLE_NOISE)
@pytest.mark.parametrize("k,n", [(3, 2), (2, 3)])
def test_matches_its_own_expectation_by_enumeration(name, k, n):
    if k not in ks_for(name):
        pytest.skip("binary-only")
    torch.manual_seed(3)
    logits = logits_for(k, n=n)
    gl, gw = per_copy_gradients(make(name), logits, W0, m=20000)
    el, ew = expectation_by_enumeration(make(name), logits)
    assert z_test(gl, el) < Z_MAX
    assert z_test(gw[:, None], ew[None]) < Z_MAX


@pytest.mark.parametrize("name", GUMBEL_NOISE)
@pytest.mark.parametrize("tau", [0.5, 1.0])
def test_matches_its_own_expectation_by_quadrature(name, tau):
    torch.manual_seed(4)
    est = make(name, temperature=tau)
    logits = torch.tensor([[[0.4, -0.3]]], dtype=torch.float64)
    gl, gw = per_copy_gradients(est, logits, W0, m=40000)
    el, ew = expectation_by_quadrature(est, logits)
    assert z_test(gl, el) < Z_MAX
    assert z_test(gw[:, None], ew[None]) < Z_MAX


def test_own_expectation_checks_have_power_against_a_wrong_variant():
    """The enumeration check rejects gst's estimates against plain
    straight-through's expectation, and against gst's with another gap; the
    quadrature check rejects decoupled_st at tau_b = 0.5 against tau_b = 1 and
    against another forward temperature."""
    logits = logits_for(3)
    torch.manual_seed(3)
    gl, _ = per_copy_gradients(make("gst"), logits, W0, m=20000)
    for wrong in (make("straight_through"), make("gst", gap=3.0)):
        el, _ = expectation_by_enumeration(wrong, logits)
        assert z_test(gl, el) > 3 * Z_MAX, wrong.name
    logits = torch.tensor([[[0.4, -0.3]]], dtype=torch.float64)
    torch.manual_seed(4)
    gl, _ = per_copy_gradients(make("decoupled_st", temperature=0.5), logits, W0, m=40000)
    for wrong in (make("decoupled_st", temperature=1.0),
                  make("decoupled_st", temperature=0.5, forward_temperature=0.5)):
        el, _ = expectation_by_quadrature(wrong, logits)
        assert z_test(gl, el) > 2 * Z_MAX
