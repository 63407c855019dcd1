"""NVIL and variance normalisation (estimators/nvil.py, estimators/_normalize.py)
against mathematics, beyond the generic suite:

* with a non-trivial state (moving averages and baseline trained on another
  loss), ``logit_scale`` times the estimate is unbiased for the exact gradient
  (enumeration), for nvil and the ``normalize`` option of reinforce and muprop --
  and the z-test rejects the same estimate without the scale (it has power);
* normalisation divides the logits' gradient by exactly max(1, sigma) and leaves
  the decoder's gradient bit for bit alone;
* the baseline network gets no gradient from the model's loss, the model none
  from the baseline's, nothing moves under ``frozen()``, and the baseline learns;
* NVIL's devices lower the variance against plain REINFORCE on an offset loss;
* bad options are refused with one line naming the key.
"""

import pytest
import torch

import estimators
from tests.mathref import exact_objective
from tests.test_estimators_extra import Model
from tests.test_estimators_generic import (
    Z_MAX,
    exact_gradients,
    logits_for,
    objective,
    per_copy_gradients,
    z_test,
)

W = torch.tensor(0.7, dtype=torch.float64)

NORMALIZED = [("nvil", {}), ("nvil", {"input_baseline": False}),
              ("reinforce", {"normalize": True}),
              ("reinforce", {"normalize": True, "baseline": "ema"}),
              ("muprop", {"normalize": True})]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def warmed(name, kw, logits, spread=30.0, calls=6):
    """An estimator whose state comes from a loss of larger spread than the test's,
    so that sigma > 1 (the scale is not trivial) and its baselines do not fit."""
    est = estimators.get(name, **kw)
    big = logits.detach().repeat(50, 1, 1)
    for _ in range(calls):
        est(big, lambda z: spread * objective(z, W) + 5.0)
    return est


@pytest.mark.parametrize("name,kw", NORMALIZED)
def test_scale_times_estimate_is_unbiased(name, kw):
    torch.manual_seed(3)
    logits = logits_for(3, n=2)
    est = warmed(name, kw, logits)
    gl, gw = per_copy_gradients(est, logits, W, m=20000)
    scale = float(est.logit_scale)
    assert scale > 2.0, "the state should make the scale non-trivial"
    el, ew = exact_gradients(logits, W, exact_objective)
    assert z_test(gl * scale, el) < Z_MAX
    assert z_test(gw[:, None], ew[None]) < Z_MAX  # the decoder's gradient is not scaled
    # the same check without the scale must fail: it has power
    assert z_test(gl, el) > 3 * Z_MAX


@pytest.mark.parametrize("name", ["reinforce", "darn", "muprop", "nvil"])
def test_normalisation_divides_the_logits_gradient_only(name):
    model = Model()
    grads = {}
    for normalize in (False, True):
        est = estimators.get(name, normalize=normalize)
        est.signal_var = torch.tensor(16.0)  # sigma = 4
        if name == "nvil":
            est.input_baseline = False
        model.zero_grad()
        torch.manual_seed(0)
        out = est(model.logits(), model.f)
        out.surrogate.backward()
        grads[normalize] = (model.enc.weight.grad.clone(), model.w.grad.clone())
        assert float(est.logit_scale) == (4.0 if normalize else 1.0)
    torch.testing.assert_close(grads[True][0] * 4, grads[False][0], rtol=1e-6, atol=1e-7)
    assert torch.equal(grads[True][1], grads[False][1])


def test_sigma_is_the_moving_average_of_the_signal_variance():
    est = estimators.get("reinforce", normalize=True, normalize_decay=0.5)
    logits = torch.zeros(400, 1, 2)
    values = []
    for c in (1.0, 3.0):  # f(z) = c * z_0: batch variance c^2 p (1 - p), p = 1/2
        torch.manual_seed(0)
        out = est(logits, lambda z, c=c: c * z[..., 0].sum(-1))
        values.append(out.loss.var(correction=0))
    assert float(est.signal_var) == pytest.approx(0.5 * float(values[0]) + 0.5 * float(values[1]))
    # the scale of a call is the one before its own update
    est(logits, lambda z: z[..., 0].sum(-1))
    assert float(est.logit_scale) == pytest.approx(max(1.0, float(est.signal_var) ** 0.5),
                                                   rel=0.5)


def test_nvil_baseline_and_model_gradients_never_mix_and_frozen_moves_nothing():
    torch.manual_seed(6)
    model = Model()
    est = estimators.get("nvil", baseline_lr=0.05)
    out = est(model.logits(), model.f)  # fits the baseline once
    psi = est.extra_parameters()
    assert psi and all(p.grad is None for p in psi)
    assert all(p.grad is None for p in model.parameters())  # the fit gave the model nothing
    before = [p.detach().clone() for p in psi]
    out.surrogate.backward()  # the model's loss gives the baseline nothing
    assert all(p.grad is None for p in psi)
    assert all(torch.equal(a, p) for a, p in zip(before, psi, strict=True))
    assert model.enc.weight.grad is not None and model.w.grad is not None
    est(model.logits(), model.f)
    state = (est.signal_mean.clone(), est.signal_var.clone(),
             [p.detach().clone() for p in est.extra_parameters()])
    with est.frozen():
        for _ in range(3):
            est(model.logits(), model.f)
    assert torch.equal(state[0], est.signal_mean) and torch.equal(state[1], est.signal_var)
    assert all(torch.equal(a, p) for a, p in zip(state[2], est.extra_parameters(), strict=True))
    est(model.logits(), model.f)
    assert not torch.equal(state[1], est.signal_var)
    assert any(not torch.equal(a, p) for a, p in zip(state[2], est.extra_parameters(), strict=True))


def test_nvil_baseline_learns_an_input_dependent_offset():
    """Two inputs (different logits) whose losses differ by 40: centring alone cannot
    remove that, the input-dependent baseline does."""
    torch.manual_seed(8)
    logits = torch.tensor([[[2.0, -2.0]], [[-2.0, 2.0]]]).repeat(32, 1, 1)
    offset = torch.tensor([0.0, 40.0]).repeat(32)

    def f(z):
        return z[..., 0].sum(-1) + offset

    est = estimators.get("nvil", baseline_lr=0.03, normalize=False)
    for _ in range(600):
        est(logits, f)
    with torch.no_grad():
        bx = est.net(torch.softmax(logits, -1).flatten(1)).squeeze(-1)
    centred = offset - float(est.signal_mean)
    assert (bx[:2] - centred[:2]).abs().max() < 3.0


def test_nvil_has_far_less_variance_than_reinforce_on_an_offset_loss():
    torch.manual_seed(9)
    logits = logits_for(3, n=2)
    m = 4000

    def f(z):
        return objective(z, W) + 20.0

    def variance(est, calls):
        big = logits.repeat(m, 1, 1)
        for _ in range(calls):
            est(big, f)
        big = big.clone().requires_grad_(True)
        est(big, f).surrogate.backward()
        return float((big.grad * m * float(est.logit_scale)).var(0).mean())

    plain = variance(estimators.get("reinforce"), 0)
    nvil = variance(estimators.get("nvil", baseline_lr=0.01), 100)
    assert nvil < plain / 20


@pytest.mark.parametrize("name,kw,key", [
    ("nvil", {"ema_decay": 1.0}, "estimator.ema_decay"),
    ("nvil", {"baseline_lr": 0}, "estimator.baseline_lr"),
    ("nvil", {"hidden": [0]}, "estimator.hidden"),
    ("nvil", {"activation": "gelu"}, "estimator.activation"),
    ("nvil", {"input_baseline": "yes"}, "estimator.input_baseline"),
    ("reinforce", {"normalize": "yes"}, "estimator.normalize"),
    ("darn", {"normalize_decay": -0.1}, "estimator.normalize_decay"),
    ("muprop", {"normalize_decay": 1.5}, "estimator.normalize_decay"),
])
def test_bad_options_name_the_key(name, kw, key):
    with pytest.raises(estimators.EstimatorConfigError, match=key.replace(".", r"\.")):
        estimators.get(name, **kw)


def test_nvil_refuses_another_latent_shape():
    est = estimators.get("nvil")
    est(torch.zeros(2, 3, 2), lambda z: z.sum((-1, -2)))
    with pytest.raises(estimators.EstimatorConfigError, match="nvil"):
        est(torch.zeros(2, 4, 2), lambda z: z.sum((-1, -2)))


def test_state_is_kept_in_checkpointable_attributes():
    """Moving averages as 0-d tensors (like reinforce's EMA baseline), the baseline as
    an nn.Module: what a generic checkpoint of estimator state covers."""
    est = estimators.get("nvil")
    est(logits_for(3, n=2), lambda z: objective(z, W))
    est(logits_for(3, n=2), lambda z: objective(z, W))
    assert isinstance(est.net, torch.nn.Module)
    for attr in ("signal_mean", "signal_var"):
        v = getattr(est, attr)
        assert torch.is_tensor(v) and v.dim() == 0 and not v.requires_grad


@pytest.mark.parametrize("name", ["reinforce", "muprop", "nvil"])
def test_the_tasks_analytic_kl_is_normalised_with_the_estimator(name):
    """In the VAE the estimator handles the reconstruction and the task adds the
    analytic KL; with normalisation the encoder's WHOLE gradient (estimator part and
    KL part) is divided by s (a rescaled -ELBO gradient), while the decoder's and the
    learned prior's gradients stay bit for bit the same. Without the KL scaled as well
    (tasks.base.kl_logits) the encoder would weight the KL s times more."""
    from types import SimpleNamespace

    import tasks

    stub = SimpleNamespace(dim=12, num_classes=10, image_shape=(3, 4))
    x = (torch.rand(8, 12, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    grads = {}
    for normalize in (False, True):
        torch.manual_seed(0)
        task = tasks.get_class("categorical_vae")(
            data=stub, latents=3, categories=4, encoder_hidden=[16], decoder_hidden=[16],
            learn_prior=True)
        est = estimators.get(name, normalize=normalize)
        est.signal_var = torch.tensor(16.0)  # sigma = 4
        if name == "nvil":
            est.input_baseline = False
        torch.manual_seed(2)
        obj, _ = task.loss(x, est)
        obj.backward()
        grads[normalize] = {n: p.grad.clone() for n, p in task.named_parameters()}
    enc = [n for n in grads[True] if n.startswith("encoder")]
    rest = [n for n in grads[True] if not n.startswith("encoder")]
    assert enc and any(n.startswith("prior") for n in rest)
    for n in enc:
        torch.testing.assert_close(grads[True][n] * 4, grads[False][n], rtol=1e-5, atol=1e-7)
    for n in rest:
        assert torch.equal(grads[True][n], grads[False][n]), n
