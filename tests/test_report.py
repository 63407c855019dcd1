"""`python -m bench report`: the interval arithmetic on known numbers, and every
file from a small synthetic store (rows written through the results store,
two tiny trained-from-nothing models for the sample figures), with gaps where
estimators, metrics or models are missing."""

import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

import tasks
from bench.report import page as report
from bench.report.published import published
from bench.report.stats import mean_ci
from bench.results import Store


def test_mean_ci_on_known_numbers():
    # n = 3, mean 2, sd 1: half-width t_{0.975, 2} / sqrt(3) = 4.302653 / 1.732051
    m, h, n = mean_ci([1.0, 2.0, 3.0])
    assert (m, n) == (2.0, 3)
    assert h == pytest.approx(4.302652729911275 / math.sqrt(3), rel=1e-9)
    # n = 4: values 10, 12, 14, 16 -> mean 13, sd sqrt(20/3), t_{0.975, 3} = 3.182446
    m, h, n = mean_ci([10, 12, 14, 16])
    assert m == 13.0 and h == pytest.approx(3.182446305284263 * math.sqrt(20 / 3) / 2, rel=1e-9)
    # 90% level: t_{0.95, 2} = 2.919986
    assert mean_ci([1, 2, 3], level=0.90)[1] == pytest.approx(2.919985580355516 / math.sqrt(3))
    # one value: no interval; none: nothing; NaNs are dropped
    assert mean_ci([5.0])[0] == 5.0 and math.isnan(mean_ci([5.0])[1])
    assert mean_ci([])[2] == 0
    # 1 and 3: sd sqrt(2), half-width t_{0.975, 1} sqrt(2) / sqrt(2) = 12.706205
    assert mean_ci([1.0, float("nan"), 3.0])[:2] == (2.0, pytest.approx(12.706204736174694))


def _cfg(task, estimator, seed, steps, setting="jang_vae", experiment="jang_vae_quick",
         dataset="digits", task_opts=None):
    return {"seed": seed, "device": "cpu", "results_dir": "x", "data_dir": None,
            "estimator": {"name": estimator},
            "task": {"name": task, **(task_opts or {})},
            "dataset": {"name": dataset},
            "train": {"steps": steps, "batch_size": 10, "lr": 1e-3},
            "eval": {"every": steps // 2, "nll_samples": 5, "grad_samples": 2},
            "report": {"setting": setting, "experiment": experiment, "reduced": True}}


def _run(store, cfg, curve, status="complete", model=None):
    from bench.config import config_hash

    meta = {"estimator": cfg["estimator"]["name"], "task": cfg["task"]["name"],
            "dataset": cfg["dataset"]["name"], "seed": cfg["seed"], "temperature": 1.0,
            "device": "cpu", "git_sha": "abc123", "config": cfg, "torch": torch.__version__}
    rec = store.start(config_hash(cfg), meta)
    steps = cfg["train"]["steps"]
    for i, step in enumerate((0, steps // 2, steps)):
        if status != "complete" and step == steps:
            break
        m = {"test_neg_elbo": curve[i], "train_neg_elbo": curve[i] - 1,
             "grad_var": 10.0 ** -(i + 1), "log10_grad_var": -(i + 1.0)}
        if step:
            m["step_time_s"] = 0.01 * (1 + cfg["seed"])
        if step == steps:
            m["test_nll"] = curve[i] - 2
            m["wall_s"] = 3.0
        rec.write(step, m, wall_s=float(step))
    if model is not None:
        rec.save_model(model.state_dict())
    rec.finish(status)
    return rec


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Bernoulli VAE row: reinforce (3 seeds), gumbel_softmax (1 seed, with a model),
    straight_through (an unfinished run only). SBN row: one seed with a model.
    Models are untrained tiny networks on the bundled digits."""
    root = tmp_path_factory.mktemp("store")
    st = Store(root)
    digits = SimpleNamespace(dim=64, num_classes=10, image_shape=(8, 8))
    small = {"latents": 4, "categories": 2, "encoder_hidden": [8], "decoder_hidden": [8]}
    for seed, final in ((0, 100.0), (1, 102.0), (2, 104.0)):
        _run(st, _cfg("bernoulli_vae", "reinforce", seed, 20, task_opts=small),
             [200.0, 150.0, final])
    vae = tasks.build({"name": "bernoulli_vae", **small}, digits)
    _run(st, _cfg("bernoulli_vae", "gumbel_softmax", 0, 20, task_opts=small),
         [200.0, 140.0, 95.0], model=vae)
    _run(st, _cfg("bernoulli_vae", "straight_through", 0, 20, task_opts=small),
         [200.0, 150.0], status="incomplete")
    sbn_opts = {"latents": 3, "categories": 2}
    sbn = tasks.build({"name": "sbn", **sbn_opts}, digits)
    _run(st, _cfg("sbn", "gumbel_softmax", 0, 20, setting="jang_sbn",
                  experiment="jang_sbn_quick", task_opts=sbn_opts), [80.0, 60.0, 50.0], model=sbn)
    return root


@pytest.mark.slow
def test_report_writes_every_file(store, tmp_path):
    out = tmp_path / "out"
    assert report.main([str(store), "--out", str(out)]) == 0
    for name in ("main", "test_neg_elbo", "test_nll", "train_neg_elbo", "log10_grad_var",
                 "step_time_s", "wall_s"):
        for ext in ("md", "tex", "csv"):
            assert (out / "tables" / f"{name}.{ext}").stat().st_size > 0, (name, ext)
    for name in ("test_neg_elbo_vs_steps", "test_neg_elbo_vs_time", "grad_var_vs_steps",
                 "step_time"):
        for ext in ("png", "pdf"):
            assert (out / "figures" / f"{name}.{ext}").stat().st_size > 1000, (name, ext)
    samples = sorted(p.name for p in (out / "figures").glob("samples_*.png"))
    assert len(samples) == 2, samples  # the VAE row and the SBN row
    page = (out / "REPORT.md").read_text()
    for link in ("tables/main.tex", "tables/main.csv", "figures/test_neg_elbo_vs_steps.png",
                 "figures/grad_var_vs_steps.pdf", f"figures/{samples[0]}"):
        assert link in page
    assert "Reduced runs" in page and "jang_vae_quick" in page
    assert "\\begin{tabular}" in (out / "tables" / "main.tex").read_text()


def test_provenance_names_the_real_command_or_the_label(tmp_path):
    """An experiment with a config file is shown as its command; a label set with
    report.experiment=... (no such file) is not passed off as one."""
    st = Store(tmp_path / "s")
    small = {"latents": 4, "categories": 2, "encoder_hidden": [8], "decoder_hidden": [8]}
    _run(st, _cfg("bernoulli_vae", "reinforce", 0, 20, task_opts=small), [200.0, 150.0, 100.0])
    _run(st, _cfg("bernoulli_vae", "reinforce", 0, 40, experiment="my_40ep_label",
                  task_opts=small), [200.0, 150.0, 90.0])
    report.build(tmp_path / "s", tmp_path / "out", figures=False)
    page = (tmp_path / "out" / "REPORT.md").read_text()
    assert "python -m bench run +experiment=jang_vae_quick" in page
    assert "+experiment=my_40ep_label" not in page
    assert "label `my_40ep_label` set on the command line" in page
    assert "The rows of `jang_vae_quick`, `my_40ep_label` come from reduced runs" in page
    assert "python -m bench run +experiment=jang_vae device=cuda" in page  # its setting's


def test_table_numbers_gaps_and_published(store, tmp_path):
    report.build(store, tmp_path, figures=False)
    summ = pd.read_csv(tmp_path / "tables" / "summary.csv")
    r = summ[(summ["cell"] == "reinforce") & (summ["metric"] == "test_neg_elbo")].iloc[0]
    assert (r["mean"], r["seeds"]) == (102.0, 3)
    assert r["ci95"] == pytest.approx(4.302652729911275 * 2 / math.sqrt(3))
    # one seed: a value and no interval
    g = summ[(summ["cell"] == "gumbel_softmax") & (summ["task"] == "bernoulli_vae")
             & (summ["metric"] == "test_neg_elbo")].iloc[0]
    assert g["mean"] == 95.0 and math.isnan(g["ci95"])
    # the unfinished run is left out of the tables and listed on the page
    assert not (summ["cell"] == "straight_through").any()
    page = (tmp_path / "REPORT.md").read_text()
    assert "| straight_through | 0 | incomplete |" in page
    main = (tmp_path / "tables" / "main.md").read_text()
    # digits is not the papers' dataset: no published values beside ours
    assert "[112.2]" not in main
    assert "102.0 ± 5.0" in main and "| 95.0 |" in main
    # an estimator missing from a row is an empty cell, not an error
    sbn_line = next(line for line in main.splitlines() if line.startswith("| sbn"))
    assert "|  |" in sbn_line


def test_published_values_sit_beside_ours_on_the_papers_dataset(tmp_path):
    st = Store(tmp_path / "s")
    for seed in (0, 1):
        _run(st, _cfg("bernoulli_vae", "gumbel_softmax", seed, 20, dataset="binarized_mnist"),
             [200.0, 150.0, 120.0 + seed])
    report.build(tmp_path / "s", tmp_path / "o", figures=False)
    main = (tmp_path / "o" / "tables" / "main.md").read_text()
    assert "120.5 ± 6.4 [105.0]" in main  # t_{0.975,1} * 0.5 = 6.35
    assert "— [112.2]" in main            # reinforce: published, not run here (a gap)
    nums = pd.read_csv(tmp_path / "o" / "tables" / "main.csv")
    assert nums["gumbel_softmax:published"].iloc[0] == 105.0
    assert nums["metric"].iloc[0] == "test_neg_elbo"


def test_rows_csv_round_trip_and_empty_and_missing_store(store, tmp_path, capsys):
    report.build(store, tmp_path / "a", figures=False)
    assert report.main([str(tmp_path / "a" / "tables" / "rows.csv"), "--out",
                        str(tmp_path / "b"), "--tables-only"]) == 0
    a = pd.read_csv(tmp_path / "a" / "tables" / "summary.csv")
    b = pd.read_csv(tmp_path / "b" / "tables" / "summary.csv")
    pd.testing.assert_frame_equal(a, b)
    assert report.main([str(tmp_path / "nowhere")]) == 2
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty")]) == 2
    assert "no results" in capsys.readouterr().err


EXPERIMENTS = ["jang_vae", "jang_vae_quick", "jang_sbn", "jang_sbn_quick", "concrete_vae",
               "concrete_vae_quick"]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_paper_experiments_name_registered_estimators(name):
    """Each grid runs as a grid even without -m, names only registered
    estimators (directly or through conf/experiment/jang_estimator/), and its
    report labels match the published numbers' keys."""
    from hydra import compose, initialize_config_dir

    import estimators
    from bench.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"+experiment={name}"], return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    params = dict(cfg.hydra.sweeper.params)
    assert cfg.report.experiment == name and cfg.report.reduced == name.endswith("_quick")
    names = params.get("estimator") or params.get("+experiment/jang_estimator") or ""
    for est in [n.strip() for n in str(names).split(",") if n.strip()]:
        assert est in estimators.names(), est
    for est in str(params.get("+experiment/jang_estimator", "")).split(","):
        if est:
            assert (CONF_DIR / "experiment" / "jang_estimator" / f"{est}.yaml").is_file()
    for task in str(params.get("task", cfg.task.name)).split(","):
        for arch in str(params.get("+experiment/concrete_arch", "")).split(","):
            setting = cfg.report.get("setting") or f"concrete_vae_{arch}"
            assert (setting, task) in published()


@pytest.mark.parametrize("name,overrides,n_jobs", [
    ("jang_vae_quick",
     ["task=bernoulli_vae", "+experiment/jang_estimator=reinforce,gumbel_softmax"], 2),
    ("jang_sbn_quick", ["task=sbn"], 7),
    ("concrete_vae_quick", [], 2)])
def test_quick_experiments_expand_and_validate(name, overrides, n_jobs):
    """Job by job as the runner composes them: settings reach every job."""
    from bench.cli import job_configs
    from bench.config import validate

    jobs = job_configs([f"+experiment={name}", "seed=0", "dataset=digits", *overrides], True)
    assert len(jobs) == n_jobs
    for cfg in jobs:
        validate(cfg)
    for cfg in jobs:
        if cfg["estimator"]["name"] == "gumbel_softmax" and name == "jang_vae_quick":
            assert cfg["estimator"]["anneal_rate"] == 1e-5
        if cfg["estimator"]["name"] == "reinforce" and name == "jang_vae_quick":
            assert cfg["estimator"]["baseline"] == "ema"
    if name == "concrete_vae_quick":
        arch = {c["report"]["setting"]: c["task"]["encoder_hidden"] for c in jobs}
        assert arch == {"concrete_vae_linear": [], "concrete_vae_nonlinear": [200, 200]}
