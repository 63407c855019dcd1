"""The results store: tidy rows, written atomically and append-only.

Layout under the results directory::

    runs/<config_hash>/<run_id>/meta.json             the run's config, written at start
    runs/<config_hash>/<run_id>/rows-<step>.csv       one file per evaluation step
    runs/<config_hash>/<run_id>/model.pt              the final model's state_dict
    runs/<config_hash>/<run_id>/status.json           written once the run has ended

Every file is written to a temporary name and renamed into place, so a reader
never sees half a file and a killed run loses nothing it had already recorded.
A config is complete when one of its runs has a status file (``complete`` or
``diverged``); re-running it is skipped. ``load()`` returns every row of every
run as one DataFrame; where a config has several runs (an interrupted one and
the one that completed it), only the finished run's rows are kept unless
``all_runs=True``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd

COLUMNS = ["run_id", "estimator", "task", "dataset", "seed", "temperature", "step",
           "metric", "value", "wall_s", "device", "git_sha", "config_hash"]


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            raise FileExistsError(f"{path} exists; the results store is append-only")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class Store:
    def __init__(self, root):
        self.root = Path(root)
        self.runs = self.root / "runs"

    def status(self, config_hash: str) -> str | None:
        """``complete``/``diverged`` if a run of this config has finished, else None."""
        for st in sorted((self.runs / config_hash).glob("*/status.json")):
            return json.loads(st.read_text())["status"]
        return None

    def start(self, config_hash: str, meta: dict) -> "Run":
        run_id = f"{config_hash[:10]}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        run = Run(self.runs / config_hash / run_id, run_id, config_hash, meta)
        atomic_write(run.dir / "meta.json", json.dumps(
            {"run_id": run_id, "config_hash": config_hash, **meta}, indent=1, default=str))
        return run


class Run:
    def __init__(self, path: Path, run_id: str, config_hash: str, meta: dict):
        self.dir = path
        self.run_id = run_id
        self.config_hash = config_hash
        self.base = {c: meta.get(c) for c in COLUMNS if c in meta}
        self.base.update(run_id=run_id, config_hash=config_hash)

    def write(self, step: int, metrics: dict, wall_s: float) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        for name, value in metrics.items():
            w.writerow({**self.base, "step": step, "metric": name,
                        "value": repr(float(value)), "wall_s": f"{wall_s:.4f}"})
        atomic_write(self.dir / f"rows-{step:010d}.csv", buf.getvalue())

    def save_model(self, state_dict) -> None:
        """The final model's state_dict as ``model.pt`` (written atomically)."""
        import torch

        tmp = self.dir / ".tmp-model.pt"
        torch.save(state_dict, tmp)
        os.replace(tmp, self.dir / "model.pt")

    def finish(self, status: str, **info) -> None:
        atomic_write(self.dir / "status.json",
                     json.dumps({"status": status, "time": time.time(), **info}))


def load(path="results", all_runs: bool = False, config: bool = False) -> pd.DataFrame:
    """Every recorded row under ``path`` as a tidy DataFrame (COLUMNS + status); with
    ``config=True`` also one column per config key that varies between the runs
    (dotted names: ``train.lr``, ``estimator.temperature``; bench.configcols)."""
    root = Path(path)
    runs = root / "runs" if (root / "runs").is_dir() else root
    frames, statuses = [], {}
    for run_dir in sorted(p for p in runs.glob("*/*") if p.is_dir()):
        st = run_dir / "status.json"
        status = json.loads(st.read_text())["status"] if st.exists() else "incomplete"
        statuses[run_dir.name] = status
        for f in sorted(run_dir.glob("rows-*.csv")):
            frames.append(pd.read_csv(f, dtype={"git_sha": str, "config_hash": str, "run_id": str}))
    if not frames:
        return pd.DataFrame(columns=COLUMNS + ["status"])
    df = pd.concat(frames, ignore_index=True)
    df["status"] = df["run_id"].map(statuses)
    if not all_runs:
        df = df[df["run_id"].isin(_chosen_runs(df))]
    df = df.reset_index(drop=True)
    if config:
        from .configcols import attach

        df = attach(df, root)
    return df


def _chosen_runs(df: pd.DataFrame) -> set[str]:
    """One run per config: the first to finish, else the latest started."""
    chosen = set()
    runs = df[["config_hash", "run_id", "status"]].drop_duplicates()
    for _, g in runs.groupby("config_hash"):
        done = g[g["status"] != "incomplete"]
        chosen.add(done["run_id"].min() if len(done) else g["run_id"].max())
    return chosen
