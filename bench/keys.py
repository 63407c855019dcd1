"""Strict config keys for `python -m bench run`: every key an override names must be
one the app uses, known from the composed config (conf/config.yaml, the selected
groups and experiments), so a misspelt key -- ``estimatr=...`` or
``+train.stepz=10`` -- stops the command with one line and a suggestion instead of
training something else."""

from __future__ import annotations

import difflib

from .config import ConfigError

# subtrees whose options their own builders check (with the allowed names): the
# estimator's keyword arguments, the task class's signature
DELEGATED = ("estimator", "task")
# free-form namespaces: Hydra's own settings, and the labels the report reads
FREE = ("hydra", "report")


def _key(override: str) -> str:
    key = override.lstrip("+~").partition("=")[0].strip()
    return key.split("@", 1)[0]


def is_group(key: str, conf_dir) -> bool:
    """A config-group choice (estimator=..., +experiment=..., hydra/launcher=...)."""
    return key.startswith("hydra/") or (conf_dir / key).is_dir()


def paths(node, prefix: str = "") -> set[str]:
    """Every dotted key of a nested dict, inner nodes included."""
    out = set()
    if isinstance(node, dict):
        for k, v in node.items():
            p = f"{prefix}{k}"
            out.add(p)
            out |= paths(v, p + ".")
    return out


def group_overrides(overrides: list[str], conf_dir) -> list[str]:
    return [o for o in overrides if "=" in o and is_group(_key(o), conf_dir)]


def check(overrides: list[str], schema: dict, conf_dir) -> None:
    """Raise ConfigError for the first override whose key ``schema`` (the config
    composed from the same group choices) does not have."""
    known = paths(schema)
    groups = sorted(p.name for p in conf_dir.iterdir() if p.is_dir())
    for o in overrides:
        if "=" not in o and not o.startswith("~"):
            continue
        key = _key(o)
        if not key or is_group(key, conf_dir):
            continue
        top = key.split(".", 1)[0]
        if top in FREE or key in known:
            continue
        if top in DELEGATED and top in known and "." in key and o.startswith("+"):
            continue  # estimator.foo / task.foo: named by their own checks
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        if parent and parent in known and _is_free_dict(schema, parent):
            continue
        raise ConfigError(_unknown(key, known | set(groups)))


def _is_free_dict(schema: dict, dotted: str) -> bool:
    """A node the config leaves empty ({}) takes any keys (none such today)."""
    node = schema
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node == {}


def _unknown(key: str, candidates: set[str]) -> str:
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    siblings = sorted(c for c in candidates if parent and c.startswith(parent + ".")
                      and "." not in c[len(parent) + 1:])
    leaf = key[len(parent) + 1:] if parent else key
    close = [f"{parent}.{c}" for c in difflib.get_close_matches(
        leaf, [s[len(parent) + 1:] for s in siblings], n=1, cutoff=0.6)]
    close = close or difflib.get_close_matches(key, sorted(candidates), n=1, cutoff=0.6)
    if close and close[0] != parent:
        hint = f"; did you mean {close[0]}?"
    elif siblings:
        hint = f"; the options of {parent}: {', '.join(s[len(parent) + 1:] for s in siblings)}"
    else:
        hint = " (`python -m bench run --cfg job` lists every key)"
    return f"unknown config key {key}{hint}"
