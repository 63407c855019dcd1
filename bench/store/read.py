"""Reading the store: every run's rows as one tidy DataFrame, checked file by file;
a damaged run is skipped with one warning line naming its path (or raised, with
``strict=True``), never read as data."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from .files import COLUMNS
from .parts import check_parts, parse_rows
from .verify import check_run, run_dirs, runs_root

log = logging.getLogger("bench.store")


class DamagedRunError(ValueError):
    """A damaged run met by ``load(strict=True)``."""


def load(path="results", all_runs: bool = False, config: bool = False,
         strict: bool = False) -> pd.DataFrame:
    """Every recorded row under ``path`` as a tidy DataFrame (COLUMNS + status); with
    ``config=True`` also one column per config key that varies between the runs
    (dotted names: ``train.lr``, ``estimator.temperature``; bench.configcols).

    Where a config has several runs (an interrupted one and the one that completed
    it), only the finished run's rows are kept unless ``all_runs=True``. A value
    that was not a finite number is NaN with its ``note`` (e.g. ``nonfinite: nan``).
    Damaged runs are left out, each with one warning line (the list is in
    ``df.attrs["damaged"]`` as (path, problem) pairs); ``strict=True`` raises
    DamagedRunError at the first instead."""
    root = Path(path)
    damaged: list = []
    dirs = run_dirs(runs_root(root), damaged)
    present = {d.name for d in dirs}
    good, bad = check_parts(root, read=True)
    damaged += bad
    frames, statuses, taken = [], {}, set()
    for _, info, frame in good:  # compacted runs
        ids = [r for r in info["runs"] if r in present and r not in taken]
        if not ids:
            continue
        if len(ids) != len(info["runs"]):
            frame = frame[frame["run_id"].isin(ids)]
        frames.append(frame)
        taken.update(ids)
        statuses.update({r: tuple(info["runs"][r][:2]) for r in ids})
    groups: dict = {}
    for d in dirs:  # runs not compacted yet
        if d.name in taken:
            continue
        chk = check_run(d, models=False, keep_rows=True)
        if chk.problems:
            damaged.append((d, "; ".join(chk.problems)))
            continue
        statuses[d.name] = (d.parent.name, chk.status or "incomplete")
        for _, header, body in chk.rows:
            groups.setdefault(header, []).append(body)
    for p, what in damaged:
        if strict:
            raise DamagedRunError(f"damaged: {p}: {what}")
        log.warning(f"skipped damaged {p}: {what} (python -m bench store verify)")
    status_of = {r: st for r, (_, st) in statuses.items()}
    frames = [f if "status" in f else f.assign(status=f["run_id"].map(status_of))
              for f in frames + parse_rows(groups)]  # a part's rows carry their status
    if not frames:
        df = pd.DataFrame(columns=COLUMNS + ["status"])
    else:
        df = pd.concat(frames, ignore_index=True)
        if len(frames) > 1:  # the order of the run folders
            df = df.sort_values(["config_hash", "run_id", "step"], kind="stable")
        runs = pd.DataFrame([(r, h, st) for r, (h, st) in statuses.items()],
                            columns=["run_id", "config_hash", "status"])
        if not all_runs and runs["config_hash"].duplicated().any():
            df = df[df["run_id"].isin(_chosen_runs(runs))]
        df = df.reset_index(drop=True)
    if config and len(df):
        from ..configcols import attach  # (helper i13's module)

        df = attach(df, root)
    df.attrs["damaged"] = [(str(p), what) for p, what in damaged]
    return df


def _chosen_runs(runs: pd.DataFrame) -> set[str]:
    """One run per config: the first to finish, else the latest started."""
    done = runs[runs["status"] != "incomplete"]
    first_done = done.groupby("config_hash")["run_id"].min()
    latest = runs.groupby("config_hash")["run_id"].max()
    return set(first_done) | set(latest[~latest.index.isin(first_done.index)])
