"""What the gate measures and where: its settings, file names and seeds, and the
estimators as configured in conf/estimator/."""

from __future__ import annotations

import dataclasses
import json
from functools import lru_cache

import torch
import yaml

import estimators

from ..paths import CONF_DIR, REPO_DIR

SCHEMA = 1
BASELINE_DIR = REPO_DIR / "results" / "baselines"
VARIANCE_FILE = "grad_variance.json"
TIMING_FILE = "timing.json"
BENCH_DIR = REPO_DIR / "benchmarks"
DEFAULT_OUT = REPO_DIR / ".benchmarks" / "check"
TASKS = ("toy", "bernoulli_vae", "categorical_vae")
UPDATE_SEED = 0  # sampling seed of `--update`
CHECK_SEED = 1  # sampling seed of a check: independent of the baseline's
ZERO_VAR = 1e-30  # a group variance at or below this counts as exactly zero


class CheckError(RuntimeError):
    """The check cannot be made (bad option, missing or incompatible baseline)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that fixes what is measured; a baseline applies only to a
    measurement with the same settings (and the same model fingerprint)."""

    groups: int = 10  # R independent groups per pair
    m: tuple = (("toy", 256), ("bernoulli_vae", 16), ("categorical_vae", 16))
    batch: int = 16  # fixed minibatch: the first rows of digits' training split
    model_seed: int = 0  # initialises the VAEs and the estimators' own parameters
    # ((task, ((key, value), ...)), ...) applied on conf/task/*.yaml: smaller MLPs
    # than the paper's keep the gate fast; the latent spaces stay as configured
    task_overrides: tuple = tuple(
        (t, (("encoder_hidden", (128, 64)), ("decoder_hidden", (64, 128))))
        for t in ("bernoulli_vae", "categorical_vae"))
    toy_logits: tuple = (-1.0, -0.25, 0.5, 1.5)  # a_i: z_i ~ Bernoulli(sigmoid(a_i))
    toy_target: float = 0.499
    timing_batch: int = 100  # batch for the time per estimate (a training step)

    def m_for(self, task: str) -> int:
        return dict(self.m)[task]

    def overrides_for(self, task: str) -> dict:
        return dict(dict(self.task_overrides).get(task, ()))

    def to_json(self) -> dict:
        return json.loads(json.dumps({
            "groups": self.groups,
            "m": dict(self.m),
            "batch": self.batch,
            "model_seed": self.model_seed,
            "task_overrides": {t: dict(kv) for t, kv in self.task_overrides},
            "toy_logits": list(self.toy_logits),
            "toy_target": self.toy_target,
            "timing_batch": self.timing_batch,
        }))


# --- estimators --------------------------------------------------------------

def estimator_config(name: str) -> dict:
    """The estimator's options as in conf/estimator/NAME.yaml (defaults if none)."""
    return json.loads(_estimator_config(name))


@lru_cache(maxsize=None)
def _estimator_config(name: str) -> str:
    path = CONF_DIR / "estimator" / f"{name}.yaml"
    cfg = dict(yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    cfg.pop("name", None)
    return json.dumps(cfg)


def make_estimator(name: str, seed: int = 0) -> estimators.Estimator:
    """A fresh estimator as configured; its own parameters (if any) from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return estimators.get(name, **estimator_config(name))
