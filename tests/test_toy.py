"""The exact-gradient toy tasks: their exact quantities against enumeration, the
task contract, config checks, and every estimator driving them towards the
optimum (with a power check: straight-through's known bias stalls it)."""

import pytest
import torch

import estimators
import tasks
from bench.config import ConfigError, validate
from tasks.toy import Toy
from tests.mathref import exact_objective


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_registered_and_ignores_data():
    assert {"toy_bernoulli", "toy_categorical"} <= set(tasks.names())
    task = tasks.build({"name": "toy_bernoulli", "latents": 3}, data=object(), device="cpu")
    assert task.latent_shape == (3, 2)
    assert [p.shape for p in task.encoder_parameters()] == [(3, 1)]


@pytest.mark.parametrize("k,n,t", [(2, 3, 0.499), (3, 2, 0.45), (4, 2, 0.499)])
def test_exact_loss_gradient_and_optimum_against_enumeration(k, n, t):
    task = Toy(latents=n, categories=k, target=t, init_scale=1.0, init_seed=3).double()
    theta = task.theta.detach().clone().requires_grad_(True)
    enum = exact_objective(task.logits(theta)[None], task.f)  # B = 1
    (g,) = torch.autograd.grad(enum, theta)
    assert torch.allclose(task.expected_loss().double(), enum)
    assert torch.allclose(task.exact_gradient(), g.flatten())
    values = [i / (k - 1) for i in range(k)]
    assert task.optimum() == pytest.approx(n * min((v - t) ** 2 for v in values))
    ev = task.evaluate()
    assert set(ev) == {"expected_loss", "optimality_gap", "prob_optimal", "exact_grad_norm"}
    assert ev["optimality_gap"] > 0 and 0 < ev["prob_optimal"] < 1
    assert ev["exact_grad_norm"] == pytest.approx(float(g.norm()))


def test_bernoulli_toy_is_the_rebar_problem():
    """K = 2: f(z) = (b - t)^2 with b the bit; d/dtheta E f = s(1-s)(1 - 2t)."""
    task = Toy(target=0.45, init_logit=0.3)
    s = torch.sigmoid(torch.tensor(0.3))
    exact = s * 0.55 ** 2 + (1 - s) * 0.45 ** 2
    assert float(task.expected_loss().detach()) == pytest.approx(float(exact))
    assert float(task.exact_gradient()) == pytest.approx(float(s * (1 - s) * 0.1))


def test_estimator_gradients_and_grad_variance():
    task = Toy(latents=3, categories=3, target=0.45, init_scale=1.0, batch_size=2)
    exact = estimators.get("exact")
    g = task.estimator_gradients(None, exact, 5)
    assert g.shape == (5, 6)
    assert torch.allclose(g, task.exact_gradient().expand_as(g), atol=1e-6)
    assert task.grad_variance(None, exact, 5) == pytest.approx(0.0, abs=1e-12)
    torch.manual_seed(0)
    r = task.estimator_gradients(None, estimators.get("reinforce"), 4000)
    se = r.std(0) / 4000 ** 0.5
    assert ((r.mean(0) - task.exact_gradient()).abs() / se).max() < 4.5
    assert task.grad_variance(None, estimators.get("reinforce"), 200) > 0


def test_loss_is_the_estimators_surrogate_over_the_batch():
    task = Toy(latents=2, batch_size=7)
    obj, out = task.loss(None, estimators.get("reinforce"))
    assert obj.dim() == 0 and out.loss.shape == (7,)
    obj.backward()
    assert task.theta.grad is not None


def _cfg(**task):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from bench.paths import CONF_DIR

    over = [f"task.{k}={v}" for k, v in task.items()]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["task=toy_bernoulli", "estimator=reinforce", *over])
    return OmegaConf.to_container(cfg, resolve=True)


def test_config_validation_names_the_key():
    validate(_cfg())
    validate(_cfg(target=0.45, latents=4))
    for key, bad in (("target", "abc"), ("latents", 0), ("categories", 1), ("batch_size", 0),
                     ("init_scale", -1)):
        with pytest.raises(ConfigError, match=rf"task\.{key}"):
            validate(_cfg(**{key: bad}))
    cfg = _cfg(categories=3)
    cfg["estimator"] = {"name": "arm"}
    with pytest.raises(ConfigError, match="binary-only"):
        validate(cfg)


def _train(name, steps, k=2, target=0.45):
    torch.manual_seed(0)
    task = Toy(latents=4, categories=k, target=target, batch_size=4)
    est = estimators.get(name)
    opt = torch.optim.Adam(task.parameters(), lr=0.1)
    start = task.evaluate()
    for step in range(steps):
        est.set_step(step)
        obj, _ = task.loss(None, est)
        opt.zero_grad()
        obj.backward()
        opt.step()
    return start, task.evaluate()


@pytest.mark.parametrize("name", estimators.names())
def test_every_estimator_drives_the_toy_towards_its_optimum(name):
    """t = 0.45 from p = 1/2: every estimator lowers the exact expected loss and
    raises the probability of the optimum; the unbiased ones get close to it."""
    start, end = _train(name, 150)
    assert end["expected_loss"] < start["expected_loss"]
    assert end["prob_optimal"] > start["prob_optimal"] + 0.04
    if estimators.get_class(name).unbiased:
        assert end["prob_optimal"] > 0.8, end


def test_straight_through_stalls_where_its_bias_says():
    """Power check: for f = (b - t)^2 straight-through's expected gradient is
    2 (p - t) p (1 - p), zero at p = t, so it stalls near p(b=1) = 0.45 instead
    of reaching the optimum p = 0 -- and the test above would see the difference."""
    _, end = _train("straight_through", 300)
    assert 0.45 < end["prob_optimal"] < 0.65
    _, ref = _train("reinforce_loo", 300)
    assert ref["prob_optimal"] > 0.95


# --- the bias/variance study (bench/studies/biasvar.py) --------------------------------

def test_study_statistics_against_known_distributions():
    from bench.studies.biasvar import summarise

    torch.manual_seed(0)
    g = torch.tensor([1.0, -2.0, 0.5, 0.0])
    noise = torch.randn(4000, 4) * torch.tensor([0.5, 1.0, 2.0, 0.1])
    s = summarise(g + noise, g)
    assert not s["bias_detected"] and s["rel_bias"] < 2 * s["noise_floor"]
    assert s["variance"] == pytest.approx((0.25 + 1 + 4 + 0.01) / 4, rel=0.05)
    assert s["rel_std"] == pytest.approx((0.25 + 1 + 4 + 0.01) ** 0.5 / g.norm().item(), rel=0.05)
    # MSE = bias^2 + variance (up to the (M-1)/M of the sample variance)
    assert s["rel_rmse"] ** 2 == pytest.approx(s["rel_bias"] ** 2 + s["rel_std"] ** 2, rel=0.01)
    # power: a bias of a tenth of |g| along one coordinate is found and measured
    shift = torch.tensor([0.0, 0.0, 0.0, 0.229])
    b = summarise(g + noise + shift, g)
    assert b["bias_detected"] and b["rel_bias_corr"] == pytest.approx(0.1, rel=0.2)
    # exact up to float32 rounding (a tiny variance and offset, as IndeCateR on a
    # separable f): T is huge but the relative bias is rounding, not a bias
    rounding = summarise(g + 1e-7 * noise + 1e-6, g)
    assert rounding["bias_stat"] > 100 and not rounding["bias_detected"]
    exact = summarise(g.expand(2, 4), g)
    assert exact["rel_bias"] == 0 and exact["variance"] == 0 and not exact["bias_detected"]
    assert exact["cosine"] == pytest.approx(1.0)


def test_study_runs_end_to_end_on_a_toy(tmp_path):
    import pandas as pd

    from bench.studies.biasvar import COLUMNS, figure, markdown, run_study

    settings = {"estimators": ["reinforce_loo", "straight_through", "rebar", "exact"],
                "estimates": 400, "warmup": 20, "timing_repeats": 3, "threads": 1, "seed": 0,
                "tasks": [{"label": "toy", "task": {"name": "toy_bernoulli", "latents": 3,
                                                    "target": 0.45, "init_scale": 1.0}}]}
    rows = run_study(settings, log=lambda *a: None)
    df = pd.DataFrame(rows, columns=COLUMNS).set_index("estimator")
    assert not df.loc["reinforce_loo", "bias_detected"]
    assert df.loc["straight_through", "bias_detected"]  # 2(p - t) p (1 - p) is not the gradient
    assert df.loc["exact", "rel_bias"] < 1e-5 and df.loc["exact", "variance"] == 0
    assert (df["ms_per_estimate"] > 0).all()
    # evaluations per estimate, counted: S = 4 samples; all 2^3 states; one sample
    assert df["evals_per_example"].to_dict() == {"reinforce_loo": 4, "straight_through": 1,
                                                 "rebar": 3, "exact": 8}
    assert df.loc["reinforce_loo", "var_x_evals"] == pytest.approx(
        4 * df.loc["reinforce_loo", "variance"])
    (tmp_path / "t.md").write_text(markdown(df.reset_index(), "# t"))
    figure(df.reset_index(), tmp_path / "t")
    assert (tmp_path / "t.png").stat().st_size > 10000 and (tmp_path / "t.pdf").exists()
    assert "| straight_through | no |" in (tmp_path / "t.md").read_text()


def test_study_settings_compose():
    from bench.studies.biasvar import load_settings

    s = load_settings(["biasvar.estimates=7"])
    assert s["estimates"] == 7 and len(s["tasks"]) >= 4
    for spec in s["tasks"]:
        tasks.get_class(spec["task"]["name"])
