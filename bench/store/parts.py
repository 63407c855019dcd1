"""Reading compacted parts (index/part-*.parquet with their .json manifests) and
turning rows files' bytes into the tidy frame; bench/store/compact.py writes parts."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from .files import COLUMNS, read_json, sha256

# the dtypes of the tidy frame (numbers inferred: seed/step int, the rest float)
STR_COLUMNS = ("run_id", "estimator", "task", "dataset", "metric", "device", "git_sha",
               "config_hash", "note")


def parse_rows(groups: dict) -> list[pd.DataFrame]:
    """Rows files' bodies grouped by header -> frames with COLUMNS (older files get
    an empty ``note``)."""
    frames = []
    for header, bodies in groups.items():
        if not bodies:
            continue
        df = pd.read_csv(io.BytesIO(header + b"".join(bodies)),
                         dtype={c: str for c in STR_COLUMNS})
        df["note"] = df["note"].fillna("") if "note" in df else ""
        bad = ~np.isfinite(df["value"]) & (df["note"] == "")  # an older store's inf or nan
        if bad.any():
            df.loc[bad, "note"] = "nonfinite: " + df.loc[bad, "value"].map(repr)
            df.loc[bad, "value"] = np.nan
        frames.append(df[COLUMNS])
    return frames


def part_files(root: Path) -> list[Path]:
    return sorted((Path(root) / "index").glob("part-*.json"))


def check_parts(root, read: bool = False):
    """([(json path, info, frame or None)] of the valid parts, [(path, problem)])."""
    good, bad = [], []
    for j in part_files(root):
        info, err = read_json(j)
        if err or not isinstance(info, dict) or not isinstance(info.get("runs"), dict):
            bad.append((j, err or "not a part manifest"))
            continue
        pq_path = j.with_suffix(".parquet")
        try:
            data = pq_path.read_bytes()
        except OSError as e:
            bad.append((pq_path, f"cannot be read ({e.strerror})"))
            continue
        if sha256(data) != info.get("sha256"):
            bad.append((pq_path, f"checksum mismatch ({len(data)} bytes): truncated or altered"))
            continue
        frame = None
        if read:
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                frame = pq.read_table(pa.BufferReader(data)).to_pandas()
            except Exception as e:  # noqa: BLE001 - a file that does not parse is damaged
                bad.append((pq_path, f"does not parse ({str(e)[:80]})"))
                continue
            if len(frame) != info.get("rows"):
                bad.append((pq_path, f"{len(frame)} rows, its manifest says {info.get('rows')}"))
                continue
        good.append((j, info, frame))
    return good, bad


