"""Writing the store: atomic files, self-checking rows files, non-finite metrics kept
as gaps with a note, and the manifest a finished run leaves in its status.

Layout under the results directory::

    runs/<config_hash>/.lock                                  held while a process trains it
    runs/<config_hash>/<run_id>/meta.json                     the run's config, written at start
    runs/<config_hash>/<run_id>/rows-<step>-n<rows>-<sha>.csv one file per evaluation step
    runs/<config_hash>/<run_id>/model.pt                      the final model's state_dict
    runs/<config_hash>/<run_id>/status.json                   written once the run has ended
    index/part-*.parquet (+ .json)                            compacted copies of finished runs

Every file is written to a temporary name and renamed into place, so a reader
never sees half a file and a killed run loses nothing it had already recorded.
A rows file's name carries its row count and the first 12 hex digits of the
SHA-256 of its bytes, so any rows file can be checked on its own, even in a run
that is still going; ``status.json`` lists every file of the finished run (rows
files by name, model.pt with its SHA-256), so a missing or altered file is found
too (an absent model.pt is "not kept", not damage: model files are never committed).
Older stores (``rows-<step>.csv``, no list) are still read, with structural
checks only. A config is complete when one of its runs has a valid status file
(``complete`` or ``diverged``); re-running it is skipped.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
import uuid
from pathlib import Path

from .files import COLUMNS, FORMAT, atomic_write, rows_name, sha256


def clean_value(value) -> tuple[str, str]:
    """(value, note) as stored: a finite number as its repr, anything else as an
    empty value with a note saying what it was (``nonfinite: nan``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "", f"not a number: {str(value)[:40]}"
    if math.isfinite(v):
        return repr(v), ""
    return "", f"nonfinite: {v!r}"


class Store:
    def __init__(self, root, fsync: bool = True):
        self.root = Path(root)
        self.runs = self.root / "runs"
        self.fsync = fsync  # False only for synthetic stores (bench.studies.storebench)

    def status(self, config_hash: str, log=None) -> str | None:
        """``complete``/``diverged`` if a run of this config has finished and its
        files check out, else None. A damaged run is named on ``log`` and not
        counted, so the config is trained again."""
        from .verify import check_run

        for st in sorted((self.runs / config_hash).glob("*/status.json")):
            chk = check_run(st.parent)
            if chk.problems:
                if log is not None:
                    log.warning(f"damaged run {st.parent}: {chk.problems[0]} (not counted; "
                                f"`python -m bench store verify --repair` moves it aside)")
                continue
            if chk.status in ("complete", "diverged"):
                return chk.status
        return None

    def lock(self, config_hash: str, stale_s: float = 300.0, heartbeat_s: float | None = None):
        from .lock import ConfigLock

        return ConfigLock(self.runs / config_hash / ".lock", stale_s, heartbeat_s)

    def claim(self, config_hash: str, label: str, log, stale_s: float = 300.0,
              skip_complete: bool = True):
        """The config's lock, held, if no live process holds it and (with
        ``skip_complete``) no run of it has finished meanwhile; else None, with one
        log line saying why it is skipped."""
        lock = self.lock(config_hash, stale_s)
        if not lock.acquire():
            o = lock.owner() or {}
            log.info(f"[{label}] skipped: config {config_hash} is being trained by "
                     f"{o.get('host', '?')}:{o.get('pid', '?')} (lock {lock.path}, last "
                     f"heartbeat {o.get('age_s', 0):.0f}s ago)")
            return None
        if skip_complete and (done := self.status(config_hash)):  # finished meanwhile
            lock.release()
            log.info(f"[{label}] skipped: config {config_hash} already {done} in {self.root}")
            return None
        return lock

    def start(self, config_hash: str, meta: dict) -> "Run":
        run_id = f"{config_hash[:10]}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        run = Run(self.runs / config_hash / run_id, run_id, config_hash, meta, self.fsync)
        atomic_write(run.dir / "meta.json", json.dumps(
            {"run_id": run_id, "config_hash": config_hash, **meta}, indent=1, default=str),
            self.fsync)
        return run


class Run:
    def __init__(self, path: Path, run_id: str, config_hash: str, meta: dict, fsync=True):
        self.dir = Path(path)
        self.run_id = run_id
        self.config_hash = config_hash
        self.base = {c: meta.get(c) for c in COLUMNS if c in meta}
        self.base.update(run_id=run_id, config_hash=config_hash)
        self.fsync = fsync
        self.nonfinite: list[str] = []  # "metric@step" of every value stored as a gap

    def write(self, step: int, metrics: dict, wall_s: float) -> Path:
        """One evaluation's metrics as one rows file; a value that is not a finite
        number is stored empty with a note (never as a valid-looking number)."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        for name, value in metrics.items():
            v, note = clean_value(value)
            if note:
                self.nonfinite.append(f"{name}@{step}")
            w.writerow({**self.base, "step": step, "metric": name, "value": v, "note": note,
                        "wall_s": f"{wall_s:.4f}"})
        data = buf.getvalue().encode()
        path = self.dir / rows_name(step, len(metrics), data)
        atomic_write(path, data, self.fsync)
        return path

    def save_model(self, state_dict) -> None:
        """The final model's state_dict as ``model.pt`` (written atomically)."""
        import torch

        buf = io.BytesIO()
        torch.save(state_dict, buf)
        atomic_write(self.dir / "model.pt", buf.getvalue(), self.fsync)

    def manifest(self) -> dict:
        """Every file of the run: rows files (self-checking names) and binary files
        with their SHA-256; checkpoints are the resume machinery's, not listed."""
        files = {}
        for p in sorted(self.dir.iterdir()):
            if p.name.startswith("rows-") and p.suffix == ".csv":
                files[p.name] = {}
            elif p.name == "model.pt":
                data = p.read_bytes()
                files[p.name] = {"bytes": len(data), "sha256": sha256(data)}
        return files

    def finish(self, status: str, **info) -> None:
        if self.nonfinite:
            info["nonfinite"] = self.nonfinite
        atomic_write(self.dir / "status.json", json.dumps(
            {"status": status, "time": time.time(), "format": FORMAT, **info,
             "files": self.manifest()}), self.fsync)
