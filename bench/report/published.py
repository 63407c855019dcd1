"""The published numbers (bench/report/published.yaml) as the report uses them:
keyed by (report.setting, task), each with its metric, dataset, source and values."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

PUBLISHED_FILE = Path(__file__).with_name("published.yaml")
_KEYS = ("source", "setting", "task", "dataset", "metric", "values")


class PublishedError(ValueError):
    """published.yaml is malformed; the message names the entry and the key."""


def parse(entries, where: str = str(PUBLISHED_FILE)) -> dict:
    """{(setting, task): {metric, dataset, source, values}} from the YAML's entries."""
    if not isinstance(entries, list):
        raise PublishedError(f"{where}: expected a list of entries")
    out = {}
    for i, e in enumerate(entries):
        missing = [k for k in _KEYS if not isinstance(e, dict) or k not in e]
        if missing:
            raise PublishedError(f"{where}: entry {i} lacks {missing[0]!r}")
        if not isinstance(e["values"], dict) or not all(
                isinstance(v, (int, float)) for v in e["values"].values()):
            raise PublishedError(f"{where}: entry {i} ('values'): estimator -> number expected")
        key = (str(e["setting"]), str(e["task"]))
        if key in out:
            raise PublishedError(f"{where}: entry {i} repeats setting/task {key}")
        out[key] = {"metric": str(e["metric"]), "dataset": str(e["dataset"]),
                    "source": str(e["source"]),
                    "values": {str(k): float(v) for k, v in e["values"].items()}}
    return out


@lru_cache(maxsize=1)
def published() -> dict:
    return parse(yaml.safe_load(PUBLISHED_FILE.read_text()))


def setting_order() -> list[str]:
    """Settings in the file's order (the order of rows in the tables)."""
    return list(dict.fromkeys(s for s, _ in published()))


def published_for(setting, task, dataset):
    pub = published().get((setting, task))
    if pub is None or pub["dataset"] != dataset:
        return None
    return pub
