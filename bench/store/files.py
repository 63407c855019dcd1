"""The store's file formats and the one way files are written (atomically): the
columns of a rows file, the self-checking rows-file name, SHA-256."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

COLUMNS = ["run_id", "estimator", "task", "dataset", "seed", "temperature", "step",
           "metric", "value", "wall_s", "device", "git_sha", "config_hash", "note"]
LEGACY_COLUMNS = COLUMNS[:-1]  # stores written before the ``note`` column
FORMAT = 2  # status.json "format": 2 lists the run's files


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# rows-<step>-n<rows>-<first 12 hex of the SHA-256 of the file>.csv; older stores: rows-<step>.csv
ROWS_NAME = re.compile(r"^rows-(\d+)-n(\d+)-([0-9a-f]{12})\.csv$")
LEGACY_ROWS_NAME = re.compile(r"^rows-(\d+)\.csv$")


def rows_name(step: int, n_rows: int, data: bytes) -> str:
    return f"rows-{int(step):010d}-n{n_rows}-{sha256(data)[:12]}.csv"


def atomic_write(path: Path, data: str | bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a
    rename; refuses to replace an existing file (append-only). On any failure the
    temporary file is removed and an OSError naming ``path`` is raised."""
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        if path.exists():
            raise FileExistsError(17, "exists; the results store is append-only", str(path))
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        if e.filename is None or str(e.filename) != str(path):
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def read_json(path: Path):
    try:
        return json.loads(path.read_bytes()), None
    except OSError as e:
        return None, f"{path.name}: cannot be read ({e.strerror})"
    except ValueError as e:
        return None, f"{path.name}: not valid JSON ({e})"
