"""Every YAML in conf/ composes and instantiates; bad settings are refused."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import estimators
import tasks
from bench.config import ConfigError, config_hash, validate
from bench.paths import CONF_DIR


def groups(name):
    return sorted(p.stem for p in (CONF_DIR / name).glob("*.yaml"))


def compose_cfg(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=list(overrides)), resolve=True)


def test_default_config_composes_and_validates():
    validate(compose_cfg())


@pytest.mark.parametrize("est", groups("estimator"))
def test_every_estimator_yaml_composes(est):
    cfg = compose_cfg(f"estimator={est}")
    estimators.get(**cfg["estimator"])


@pytest.mark.parametrize("task", groups("task"))
def test_every_task_yaml_composes_and_builds(task):
    from tasks import datasets

    cfg = compose_cfg(f"task={task}")
    data = datasets.load({"name": "digits"})
    t = tasks.build(cfg["task"], data)
    assert len(t.latent_shape) == 2


@pytest.mark.parametrize("ds", groups("dataset"))
def test_every_dataset_yaml_composes(ds):
    cfg = compose_cfg(f"dataset={ds}")
    assert cfg["dataset"]["name"] == ds


@pytest.mark.parametrize("exp", groups("experiment"))
def test_every_experiment_composes(exp):
    compose_cfg(f"+experiment={exp}")


@pytest.mark.parametrize("override,key", [
    ("estimator.temperature=0", "estimator.temperature"),
    ("task.categories=1", "task.categories"),
    ("train.steps=0", "train.steps"),
    ("train.lr=-1", "train.lr"),
    ("eval.grad_samples=1", "eval.grad_samples"),
    ("device=tpu", "device"),
    ("train.optimizer=rmsprop", "train.optimizer"),
    ("train.optimizer=sgd train.momentum=-0.1", "train.momentum"),
    ("train.optimizer=sgd train.momentum=1.0", "train.momentum"),
    ("train.optimizer=sgd train.nesterov=true", "train.nesterov"),
    ("train.optimizer=sgd train.nesterov=yes", "train.nesterov"),
    ("train.optimizer=adam train.momentum=0.9", "train.momentum"),
    ("train.weight_decay=-1", "train.weight_decay"),
    ("train.betas=[0.9]", "train.betas"),
    ("train.betas=[0.9,1.0]", "train.betas"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(compose_cfg(*override.split()))


def test_sgd_with_momentum_and_nesterov_validates():
    validate(compose_cfg("train.optimizer=sgd", "train.momentum=0.9", "train.nesterov=true",
                         "train.weight_decay=1e-4"))


def test_optimizer_keys_at_their_defaults_keep_the_old_hash():
    """Configs stored before train.optimizer existed keep their hash (and so are
    still skipped on re-run); any other value changes it."""
    from bench.config import ADDED_DEFAULTS

    a = compose_cfg()
    old = {**a, "train": {k: v for k, v in a["train"].items()
                          if k not in ADDED_DEFAULTS["train"]}}
    assert config_hash(a) == config_hash(old)
    for over in ("train.optimizer=sgd", "train.weight_decay=0.1", "train.betas=[0.5,0.999]"):
        assert config_hash(compose_cfg(over)) != config_hash(a), over


def test_config_hash_ignores_paths_only():
    a = compose_cfg()
    b = compose_cfg("results_dir=/elsewhere", "data_dir=/x")
    c = compose_cfg("seed=1")
    assert config_hash(a) == config_hash(b) != config_hash(c)


def test_conf_dir_is_the_repo_conf():
    assert CONF_DIR == Path(__file__).resolve().parent.parent / "conf"
