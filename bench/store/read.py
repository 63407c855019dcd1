"""Reading the store: every run's rows as one tidy DataFrame."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .write import COLUMNS


def load(path="results", all_runs: bool = False) -> pd.DataFrame:
    """Every recorded row under ``path`` as a tidy DataFrame (COLUMNS + status)."""
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
    return df.reset_index(drop=True)


def _chosen_runs(df: pd.DataFrame) -> set[str]:
    """One run per config: the first to finish, else the latest started."""
    chosen = set()
    runs = df[["config_hash", "run_id", "status"]].drop_duplicates()
    for _, g in runs.groupby("config_hash"):
        done = g[g["status"] != "incomplete"]
        chosen.add(done["run_id"].min() if len(done) else g["run_id"].max())
    return chosen
