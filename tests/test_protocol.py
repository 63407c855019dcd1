"""The training protocols as configs (conf/experiment/*protocol*.yaml): Jang, Gu &
Poole's (2017, §4) -- SGD with momentum 0.9, their learning-rate grid, a learned
prior on the VAEs, the tau-schedule grid for the Gumbel-Softmax family, tau = 1 on
the SBNs, variance normalisation for SF/DARN/MuProp -- and ours beside it; every
job validates; the report marks each row's protocol."""

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bench.paths import CONF_DIR

PAPER_LRS = {3e-5, 1e-5, 3e-4, 1e-4, 3e-3, 1e-3}
PROTOCOLS = ["jang_vae_protocol", "jang_sbn_protocol", "adam_vae_protocol", "adam_sbn_protocol"]


def composed(name, *over):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"+experiment={name}", *over],
                      return_hydra_config=True)
    return cfg, dict(cfg.hydra.sweeper.params)


def sweep(params, key):
    return [v.strip() for v in str(params[key]).split(",")]


@pytest.mark.parametrize("name", PROTOCOLS)
def test_protocol_grids_are_labelled_and_name_existing_files(name):
    cfg, params = composed(name)
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.report.protocol == ("jang2017-sgd" if name.startswith("jang") else "ours-adam")
    assert cfg.report.experiment == name
    for group in ("jang_protocol_estimator", "jang_estimator"):
        for f in sweep(params, f"+experiment/{group}") if f"+experiment/{group}" in params else []:
            assert (CONF_DIR / "experiment" / group / f"{f}.yaml").is_file(), f
    assert len(sweep(params, "train.lr")) >= 4 and len(sweep(params, "seed")) == 5


@pytest.mark.parametrize("name", ["jang_vae_protocol", "jang_sbn_protocol"])
def test_jang_protocol_is_the_papers(name):
    cfg, params = composed(name)
    assert cfg.train.optimizer == "sgd" and cfg.train.momentum == 0.9
    assert {float(v) for v in sweep(params, "train.lr")} == PAPER_LRS
    files = sweep(params, "+experiment/jang_protocol_estimator")
    for est in ("reinforce", "darn", "muprop"):
        job, _ = composed(name, f"+experiment/jang_protocol_estimator={est}")
        assert job.estimator.name == est and job.estimator.normalize is True
    assert "nvil" in files
    relaxed = [f for f in files if "gumbel" in f or "annealed" in f]
    schedules = set()
    for f in relaxed:
        job, _ = composed(name, f"+experiment/jang_protocol_estimator={f}")
        e = job.estimator
        schedules.add((e.anneal_rate, e.get("anneal_every")) if e.anneal_rate else "fixed")
        if name == "jang_sbn_protocol":
            assert e.temperature == 1.0 and e.anneal_rate == 0.0
        else:
            assert e.temperature == 1.0 and e.min_temperature == 0.5
    if name == "jang_vae_protocol":
        assert cfg.task.learn_prior is True
        assert schedules == {(r, n) for r in (1e-5, 1e-4) for n in (500, 1000)}
        assert len(relaxed) == 12  # 3 estimators x 4 schedules
    else:
        assert schedules == {"fixed"}


def test_adam_protocol_differs_only_where_documented():
    jang, _ = composed("jang_vae_protocol")
    ours, _ = composed("adam_vae_protocol")
    assert ours.train.optimizer == "adam" and ours.task.learn_prior is False
    a = OmegaConf.to_container(jang.eval)
    assert a == OmegaConf.to_container(ours.eval)
    assert jang.train.steps == ours.train.steps and jang.train.batch_size == ours.train.batch_size


@pytest.mark.parametrize("name", PROTOCOLS)
def test_one_job_per_estimator_validates(name):
    from bench.cli import job_configs
    from bench.config import validate

    jobs = job_configs([f"+experiment={name}", "seed=0", "dataset=digits", "train.lr=1e-3"],
                       True)
    tasks_ = {j["task"]["name"] for j in jobs}
    assert len(tasks_) == 2
    seen = set()
    for cfg in jobs:
        key = (cfg["estimator"]["name"], cfg["task"]["name"])
        if key not in seen and cfg["task"]["name"] == sorted(tasks_)[0]:
            seen.add(key)
            validate(cfg)
    assert "nvil" in {k[0] for k in seen}


def test_the_report_marks_each_rows_protocol(tmp_path):
    from bench.report import page
    from bench.results import Store
    from tests.test_report import _cfg, _run

    st = Store(tmp_path / "s")
    small = {"latents": 4, "categories": 2, "encoder_hidden": [8], "decoder_hidden": [8]}
    for proto in ("jang2017-sgd", "ours-adam"):
        cfg = _cfg("bernoulli_vae", "reinforce", 0, 20, task_opts=small)
        cfg["report"]["protocol"] = proto
        _run(st, cfg, [200.0, 150.0, 100.0])
    page.build(tmp_path / "s", tmp_path / "out", figures=False)
    text = (tmp_path / "out" / "REPORT.md").read_text()
    assert "protocol jang2017-sgd" in text and "protocol ours-adam" in text
