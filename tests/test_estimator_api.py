"""The estimator contract's edges: bad settings, schedules, noise, state."""

import math

import pytest
import torch

import estimators
from estimators.base import Temperature, gumbel_like


def test_names_and_unknown_name():
    assert {"reinforce", "straight_through", "gumbel_softmax", "st_gumbel_softmax",
            "concrete_kl", "exact"} <= set(estimators.names())
    with pytest.raises(estimators.EstimatorConfigError, match="unknown estimator 'nope'; allowed"):
        estimators.get("nope")


def test_unknown_option_names_the_key():
    with pytest.raises(estimators.EstimatorConfigError, match=r"estimator\.temprature"):
        estimators.get("gumbel_softmax", temprature=0.5)


@pytest.mark.parametrize("tau", [0, -1, float("nan"), float("inf"), "abc"])
@pytest.mark.parametrize("name", ["gumbel_softmax", "st_gumbel_softmax", "concrete_kl"])
def test_bad_temperature_refused(name, tau):
    with pytest.raises(estimators.EstimatorConfigError, match=r"estimator\.temperature"):
        estimators.get(name, temperature=tau)


def test_bad_prior_temperature_and_baseline_refused():
    with pytest.raises(estimators.EstimatorConfigError, match="prior_temperature"):
        estimators.get("concrete_kl", prior_temperature=0)
    with pytest.raises(estimators.EstimatorConfigError, match="baseline"):
        estimators.get("reinforce", baseline="mean")


def test_annealing_schedule():
    s = Temperature(1.0, anneal_rate=1e-4, anneal_every=1000, min_temperature=0.5)
    assert s.at(0) == 1.0 and s.at(999) == 1.0
    assert s.at(1000) == pytest.approx(math.exp(-0.1))
    assert s.at(2500) == pytest.approx(math.exp(-0.2))
    assert s.at(10 ** 6) == 0.5
    est = estimators.get("gumbel_softmax", temperature=1.0, anneal_rate=1e-4,
                         anneal_every=1000, min_temperature=0.5)
    est.set_step(3000)
    assert est.temperature == pytest.approx(math.exp(-0.3))


def test_gumbel_noise_never_takes_log_of_zero(monkeypatch):
    for edge in (0.0, 1.0):
        monkeypatch.setattr(torch, "rand", lambda n, dtype=None, device=None, edge=edge:
                            torch.full((n,), edge, dtype=dtype, device=device))
        assert torch.isfinite(gumbel_like(torch.zeros(5))).all()
        assert torch.isfinite(gumbel_like(torch.zeros(3, 2, 5))).all()


@pytest.mark.parametrize("shape", [(200000,), (500, 40, 10)])
def test_gumbel_noise_distribution(shape):
    g = gumbel_like(torch.zeros(shape, dtype=torch.float64)).flatten()
    assert g.shape == (200000,)
    # Gumbel(0, 1): mean = Euler-Mascheroni, variance = pi^2 / 6
    assert abs(g.mean().item() - 0.5772156649) < 4.5 * math.sqrt(math.pi ** 2 / 6 / 2e5)
    assert abs(g.var().item() - math.pi ** 2 / 6) < 0.05


def test_exact_refuses_large_enumeration():
    est = estimators.get("exact", max_states=100)
    with pytest.raises(estimators.EstimatorConfigError, match="max_states"):
        est.check_latents(7, 2)
    with pytest.raises(estimators.EstimatorConfigError, match="max_states"):
        est(torch.zeros(1, 7, 2), lambda z: z.sum((-1, -2)))


def test_ema_baseline_tracks_loss_and_freezes():
    est = estimators.get("reinforce", baseline="ema", ema_decay=0.5)
    logits = torch.zeros(4, 2, 2)
    est(logits, lambda z: torch.full(z.shape[:-2], 3.0))
    assert est.b.item() == pytest.approx(3.0)
    est(logits, lambda z: torch.full(z.shape[:-2], 1.0))
    assert est.b.item() == pytest.approx(2.0)
    with est.frozen():
        est(logits, lambda z: torch.full(z.shape[:-2], 100.0))
    assert est.b.item() == pytest.approx(2.0)


def test_estimators_importable_without_torchvision():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torchvision'] = None; import estimators, tasks; "
            "print(len(estimators.names()))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
