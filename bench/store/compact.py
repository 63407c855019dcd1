"""Compacted parts: the rows of many finished runs in one Parquet file, so a store
of thousands of runs is read in seconds (`python -m bench store compact`, and at
the end of every `python -m bench run`).

A part is ``index/part-<time>-<id>.parquet`` plus ``.json`` beside it (its SHA-256,
its row count, and the runs it holds with their status); the ``.json`` is written
last, so a part without one is an interrupted compaction and is ignored. Parts
are a copy: the run folders stay as they are (older readers read them), a run is
read from the first valid part that holds it, and a part that fails its checksum
is named and passed over (its runs are read from their folders).
"""

from __future__ import annotations

import io
import json
import time
import uuid
from pathlib import Path

import pandas as pd

from .files import COLUMNS, atomic_write, sha256
from .parts import check_parts, parse_rows
from .verify import FINISHED, check_run, run_dirs, runs_root


def compact(root, min_runs: int = 1) -> tuple[Path | None, int]:
    """Write one new part with every finished, undamaged run that no valid part holds
    yet (if there are at least ``min_runs``); returns (part, number of runs)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    good, _ = check_parts(root)
    covered = {r for _, info, _ in good for r in info["runs"]}
    groups, runs = {}, {}
    for d in run_dirs(runs_root(root)):
        if d.name in covered:
            continue
        chk = check_run(d, models=False, keep_rows=True)
        if chk.problems or chk.status not in FINISHED:
            continue
        runs[d.name] = [d.parent.name, chk.status]
        for _, header, body in chk.rows:
            groups.setdefault(header, []).append(body)
    if len(runs) < max(1, min_runs):
        return None, 0
    frames = parse_rows(groups)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    df = df.sort_values(["config_hash", "run_id", "step"], kind="stable")
    df["status"] = df["run_id"].map({r: st for r, (_, st) in runs.items()})
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
    data = buf.getvalue()
    name = f"part-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    part = root / "index" / f"{name}.parquet"
    atomic_write(part, data)
    atomic_write(part.with_suffix(".json"), json.dumps(
        {"sha256": sha256(data), "rows": len(df), "runs": runs, "time": time.time()}))
    return part, len(runs)
