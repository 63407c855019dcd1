"""The configuration of each run as columns of the tidy rows: ``load(path, config=True)``.

Every run's ``meta.json`` holds its resolved config. ``flatten`` turns one into
dotted keys (``train.lr``, ``estimator.temperature``, ``task.learn_prior``, ...;
lists become their JSON text, so they can be grouped by), ``varying`` finds the
keys whose values differ between the runs of a store, and ``attach`` adds those
as columns, so that ``df.groupby(["estimator", "train.lr"])`` works. Keys already
columns of the rows (estimator, task, dataset names, seed, device) and keys that
do not change a run's numbers (paths, threads, progress; bench.config.NON_SEMANTIC)
are left out. A key that a run's config lacks because it was stored before the key
existed (train.optimizer, ...) takes the value it had then (bench.config
ADDED_DEFAULTS); any other missing key is NaN.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .config import ADDED_DEFAULTS, NON_SEMANTIC, NON_SEMANTIC_TRAIN

# dotted keys the tidy rows already have as columns
_AS_COLUMNS = {"estimator.name", "task.name", "dataset.name", "seed", "device"}


def flatten(cfg: dict, prefix: str = "") -> dict:
    """{'train': {'lr': 1e-3}} -> {'train.lr': 1e-3}; lists as JSON text."""
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(list(v), default=str)
        else:
            out[key] = v
    return out


def _skipped(key: str) -> bool:
    return (key in _AS_COLUMNS or key.split(".")[0] in NON_SEMANTIC
            or key in {f"train.{k}" for k in NON_SEMANTIC_TRAIN})


def _defaults() -> dict:
    return flatten(ADDED_DEFAULTS)


def varying(configs: dict) -> list[str]:
    """The dotted keys whose values differ between the configs (run_id -> config),
    in a stable order (sorted)."""
    flat = [flatten(c) for c in configs.values() if isinstance(c, dict)]
    defaults = _defaults()
    keys = sorted({k for f in flat for k in f if not _skipped(k)})
    out = []
    for k in keys:
        values = {json.dumps(f.get(k, defaults.get(k)), sort_keys=True, default=str)
                  for f in flat}
        if len(values) > 1:
            out.append(k)
    return out


def run_configs(root, run_ids) -> dict:
    """run_id -> its config, read from ``runs/*/<run_id>/meta.json`` under root."""
    root = Path(root)
    runs = root / "runs" if (root / "runs").is_dir() else root
    out = {}
    for run_id in run_ids:
        for meta in runs.glob(f"*/{run_id}/meta.json"):
            out[run_id] = json.loads(meta.read_text()).get("config") or {}
            break
    return out


def attach(df: pd.DataFrame, root, keys: list[str] | None = None) -> pd.DataFrame:
    """df with one column per config key that varies between its runs (or the
    given ``keys``), the value of each row's run."""
    configs = run_configs(root, df["run_id"].dropna().unique()) if len(df) else {}
    keys = varying(configs) if keys is None else list(keys)
    defaults = _defaults()
    flat = {r: flatten(c) for r, c in configs.items()}
    df = df.copy()
    for k in keys:
        if k in df.columns:
            continue
        values = {r: f.get(k, defaults.get(k)) for r, f in flat.items()}
        df[k] = df["run_id"].map(values)
    return df
