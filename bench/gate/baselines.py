"""The committed baselines (results/baselines/): reading, checking that they apply
to this measurement, and writing them atomically."""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

import torch

from .problems import _same_fingerprint
from .settings import SCHEMA, CheckError


def check_compatible(baseline: dict, current: dict) -> None:
    """Refuse (CheckError) a baseline measured with other settings or model state."""
    if baseline.get("schema") != SCHEMA:
        raise CheckError(f"baseline schema {baseline.get('schema')!r} != {SCHEMA}; "
                         "rewrite it with --update")
    if baseline.get("settings") != current["settings"]:
        diff = sorted(k for k in set(baseline.get("settings", {})) | set(current["settings"])
                      if baseline.get("settings", {}).get(k) != current["settings"].get(k))
        raise CheckError(f"baseline measured with other settings ({', '.join(diff)}); "
                         "rewrite it with --update")
    for task, fp in current["fingerprints"].items():
        bfp = baseline.get("fingerprints", {}).get(task)
        if bfp is not None and not _same_fingerprint(bfp, fp):
            raise CheckError(f"the fixed {task} model/data differ from the baseline's "
                             f"(fingerprint {bfp} != {fp}): the task changed; if intended, "
                             "rewrite the baselines with --update")


# --- files ------------------------------------------------------------------------

def _git_sha() -> str:
    try:
        from ..loop import git_sha
        return git_sha()
    except Exception:
        return "unknown"


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckError(f"no baseline at {path}; create it with `python -m bench check "
                         "--update`") from None
    except json.JSONDecodeError as e:
        raise CheckError(f"{path} is not valid JSON ({e})") from None


def write_json(path: Path, obj: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def baseline_record(measured: dict, old: dict | None) -> dict:
    """The baseline file: measured pairs replace (or join) the old ones."""
    pairs = dict(old["pairs"]) if old else {}
    for key, entry in measured["pairs"].items():
        if entry["status"] == "measured":
            pairs[key] = entry
        elif entry["status"] == "skipped":
            pairs.pop(key, None)
    fps = dict(old.get("fingerprints", {})) if old else {}
    fps.update(measured["fingerprints"])
    return {"schema": SCHEMA,
            "note": "gradient-variance baselines for `python -m bench check`; "
                    "regenerate with `python -m bench check --update` (docs/ci_gate.md)",
            "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "git_sha": _git_sha(), "torch": torch.__version__,
            "seed": measured["seed"], "settings": measured["settings"], "fingerprints": fps,
            "pairs": dict(sorted(pairs.items()))}
