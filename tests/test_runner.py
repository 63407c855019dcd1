"""The runner end to end: CLI, grids, the results store, bad input, faults."""

import math
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import estimators
from bench import results
from bench.config import ConfigError
from bench.jobs import run
from bench.paths import CONF_DIR, REPO_DIR

SMALL = ["task.encoder_hidden=[32]", "task.decoder_hidden=[32]", "train.steps=20",
         "eval.every=10", "eval.grad_samples=4", "eval.nll_samples=4", "train.batch_size=50"]


def cfg_for(tmp_path, *overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*SMALL, f"results_dir={tmp_path}", *overrides])
        return OmegaConf.to_container(cfg, resolve=True)


def bench_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True,
                          text=True, cwd=cwd or REPO_DIR, timeout=300)


@pytest.mark.slow
def test_two_job_multirun_then_rerun_skips(tmp_path):
    args = ["run", "-m", "seed=0,1", "estimator=gumbel_softmax", f"results_dir={tmp_path}", *SMALL]
    first = bench_cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    df = results.load(tmp_path)
    assert sorted(df["seed"].unique()) == [0, 1]
    assert set(df["status"]) == {"complete"}
    assert set(results.COLUMNS) <= set(df.columns)
    assert sorted(df["step"].unique()) == [0, 10, 20]
    assert {"train_neg_elbo", "test_neg_elbo", "test_nll", "grad_var", "step_time_s",
            "wall_s"} <= set(df["metric"])
    n_runs = len(list((tmp_path / "runs").glob("*/*")))
    second = bench_cli(*args)
    assert second.returncode == 0
    assert "skipped" in second.stdout + second.stderr
    assert len(list((tmp_path / "runs").glob("*/*"))) == n_runs


@pytest.mark.parametrize("override,expect", [
    ("estimator=nope", "unknown estimator 'nope'; allowed:"),
    ("task=nope", "unknown task 'nope'; allowed:"),
    ("dataset=nope", "unknown dataset 'nope'; allowed:"),
    ("estimator.temperature=-1", "estimator.temperature"),
    ("task.categories=1", "task.categories"),
    ("estimator.tempreature=1", "estimator.tempreature"),
    ("train.steps=abc", "train.steps"),
    ("estimator=exact task=bernoulli_vae", "max_states"),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, override, expect):
    res = bench_cli("run", *override.split(), f"results_dir={tmp_path}")
    assert res.returncode != 0
    err = res.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert expect in err
    assert not (tmp_path / "runs").exists()  # nothing trained


def test_missing_data_is_refused_before_training(tmp_path):
    res = bench_cli("run", "dataset=binarized_mnist", f"data_dir={tmp_path}",
                    f"results_dir={tmp_path}")
    assert res.returncode != 0
    assert str(tmp_path) in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_binary_only_estimator_on_k10_is_refused(tmp_path):
    binary = [n for n in estimators.names() if estimators.get_class(n).binary_only]
    if not binary:
        pytest.skip("no binary-only estimator registered")
    with pytest.raises(ConfigError, match="binary-only"):
        run(cfg_for(tmp_path, f"estimator={binary[0]}", "task=categorical_vae"))


@pytest.mark.parametrize("task", ["bernoulli_vae", "categorical_vae"])
@pytest.mark.parametrize("name", estimators.names())
def test_every_estimator_trains_on_both_vaes(tmp_path, name, task):
    over = [f"estimator={name}", f"task={task}", "train.steps=6", "eval.every=3"]
    if estimators.get_class(name).binary_only and task == "categorical_vae":
        pytest.skip("binary-only estimator")
    if name == "exact":  # enumeration needs a small latent space
        over.append("task.latents=8" if task == "bernoulli_vae" else "task.latents=3")
    assert run(cfg_for(tmp_path, *over)) == "complete"
    df = results.load(tmp_path)
    final = df[(df["step"] == 6) & (df["metric"] == "test_neg_elbo")]["value"]
    assert len(final) == 1 and torch.isfinite(torch.tensor(final.values)).all()


def test_divergence_is_recorded_and_not_rerun(tmp_path, monkeypatch):
    from tasks.vae import VAE

    real = VAE.loss
    calls = {"n": 0}

    def flaky(self, x, est):
        obj, out = real(self, x, est)
        calls["n"] += 1
        return (obj * float("nan") if calls["n"] >= 13 else obj), out

    monkeypatch.setattr(VAE, "loss", flaky)
    cfg = cfg_for(tmp_path)
    assert run(cfg) == "diverged"
    df = results.load(tmp_path)
    assert set(df["status"]) == {"diverged"}
    assert df.loc[df["metric"] == "diverged", "value"].tolist() == [13.0]
    assert run(cfg) == "skipped"


@pytest.mark.parametrize("bad_call", [7, 10])
def test_a_nan_gradient_under_a_finite_objective_is_recorded_at_its_step(
        tmp_path, monkeypatch, bad_call):
    """The objective stays finite; its gradient is NaN at one step (sqrt at 0 times 0).
    Step 7: the next objective is NaN and the parameters tell that step 7 did it.
    Step 10 is an evaluation step: nothing is evaluated from the NaN parameters."""
    from tasks.vae import VAE

    real = VAE.loss
    calls = {"n": 0}

    def nan_gradient(self, x, est):
        obj, out = real(self, x, est)
        calls["n"] += 1
        if calls["n"] == bad_call:
            w = next(self.parameters()).sum() * 0.0
            obj = obj + torch.sqrt(w - w.detach())  # value 0, gradient inf * 0 = nan
        return obj, out

    monkeypatch.setattr(VAE, "loss", nan_gradient)
    assert run(cfg_for(tmp_path)) == "diverged"
    df = results.load(tmp_path)
    assert df.loc[df["metric"] == "diverged", "value"].tolist() == [float(bad_call)]
    assert df["step"].max() == bad_call and sorted(df["step"].unique()) == [0, bad_call]
    assert df.loc[df["metric"] != "diverged", "value"].map(math.isfinite).all()


def test_flush_denormal_is_applied_to_the_training_steps(tmp_path, monkeypatch):
    from bench.loop import Trainer

    real = Trainer.step
    seen = set()

    def spy(self, *a, **k):
        seen.add((torch.tensor([1e-39]) * 2.0).item() == 0.0)  # subnormals flushed?
        return real(self, *a, **k)

    monkeypatch.setattr(Trainer, "step", spy)
    try:
        for flag in (False, True):
            seen.clear()
            assert run(cfg_for(tmp_path / str(flag), f"flush_denormal={flag}",
                               "eval.grad_samples=0", "eval.nll_samples=0")) == "complete"
            assert seen == {flag}
        with pytest.raises(ConfigError, match="flush_denormal must be true or false"):
            run(cfg_for(tmp_path, "flush_denormal=sometimes"))
    finally:
        torch.set_flush_denormal(False)


def test_crash_then_rerun_loses_and_duplicates_nothing(tmp_path, monkeypatch):
    from tasks.vae import VAE

    real = VAE.loss
    calls = {"n": 0}

    def crashing(self, x, est):
        calls["n"] += 1
        if calls["n"] == 15:
            raise KeyboardInterrupt  # killed mid-run, after the step-10 evaluation
        return real(self, x, est)

    monkeypatch.setattr(VAE, "loss", crashing)
    cfg = cfg_for(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    partial = results.load(tmp_path)
    assert sorted(partial["step"].unique()) == [0, 10]
    assert set(partial["status"]) == {"incomplete"}
    assert run(cfg) == "complete"
    df = results.load(tmp_path)
    assert df["run_id"].nunique() == 1 and set(df["status"]) == {"complete"}
    assert not df.duplicated(["step", "metric"]).any()
    assert sorted(df["step"].unique()) == [0, 10, 20]
    everything = results.load(tmp_path, all_runs=True)
    assert everything["run_id"].nunique() == 2  # the partial run's rows are kept on disk


def test_store_is_append_only(tmp_path):
    results.atomic_write(tmp_path / "a.csv", "x\n")
    with pytest.raises(FileExistsError):
        results.atomic_write(tmp_path / "a.csv", "y\n")
    assert (tmp_path / "a.csv").read_text() == "x\n"
    assert not list(tmp_path.glob(".tmp-*"))


def test_report_on_a_store(tmp_path):
    run(cfg_for(tmp_path))
    res = bench_cli("report", str(tmp_path), "--out", str(tmp_path / "rep"))
    assert res.returncode == 0, res.stderr
    report = (tmp_path / "rep" / "REPORT.md").read_text()
    assert "test_neg_elbo" in report and (tmp_path / "rep" / "tables" / "summary.csv").exists()
