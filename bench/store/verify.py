"""Checking a store: every file of a run against its name or its run's manifest, the
compacted parts against their checksums; moving damaged runs aside (``--repair``).

A run is *damaged* when any of its files cannot be read, does not parse, or does
not match the checksum its name or its status file records; what is damaged is
named with its path and never read as data. Temporary files left by a killed
writer (``.tmp-*``) are *leftovers*: harmless, listed, and removed by repair.
A listed ``model.pt`` that is absent is *not kept*, not damage: model files are
git-ignored, so every clone of a committed store lacks them, and the rows (which
carry every metric) do not depend on them; a model.pt that is there but does not
match its checksum is damage.
"""

from __future__ import annotations

import csv
import io
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .files import COLUMNS, LEGACY_COLUMNS, LEGACY_ROWS_NAME, ROWS_NAME, read_json, sha256
from .parts import check_parts

FINISHED = ("complete", "diverged")
LEFTOVER_AGE_S = 600  # a temporary file older than this has no live writer
_HEADERS = {",".join(COLUMNS).encode() + b"\n": COLUMNS,
            ",".join(LEGACY_COLUMNS).encode() + b"\n": LEGACY_COLUMNS}


@dataclass
class RunCheck:
    path: Path
    problems: list = field(default_factory=list)   # what is wrong, one line each
    status: str | None = None                      # from status.json; None: still going
    leftovers: list = field(default_factory=list)  # temporary files
    model_not_kept: bool = False                   # model.pt listed, absent (a clone)
    rows: list = field(default_factory=list)       # (name, header bytes, body bytes)
    meta: dict | None = None


def check_rows(name: str, data: bytes, run_id: str) -> tuple[str | None, bytes, bytes]:
    """(problem or None, header, body) of one rows file."""
    m = ROWS_NAME.match(name)
    if m:
        n, digest = int(m[2]), m[3]
        if sha256(data)[:12] != digest:
            lines = data.count(b"\n") - 1
            return (f"{name}: checksum mismatch ({len(data)} bytes, {max(lines, 0)} of {n} "
                    f"rows): truncated or altered", b"", b"")
        header, _, body = data.partition(b"\n")
        return None, header + b"\n", body
    m = LEGACY_ROWS_NAME.match(name)
    if not m:
        return f"{name}: not a rows file name", b"", b""
    return _check_legacy(name, data, int(m[1]), run_id)


def _check_legacy(name, data, step, run_id):
    """Structural checks for a rows file of an older store (no checksum)."""
    if not data:
        return f"{name}: empty file", b"", b""
    header, nl, body = data.partition(b"\n")
    cols = _HEADERS.get(header + nl)
    if cols is None:
        return f"{name}: bad header {header[:60]!r}", b"", b""
    if not data.endswith(b"\n"):
        return f"{name}: truncated (no newline at the end)", b"", b""
    try:
        rows = list(csv.reader(io.StringIO(body.decode())))
    except (UnicodeDecodeError, csv.Error) as e:
        return f"{name}: does not parse ({e})", b"", b""
    if not rows:
        return f"{name}: no rows", b"", b""
    iv, ist, irun = cols.index("value"), cols.index("step"), cols.index("run_id")
    for i, r in enumerate(rows, 2):
        if len(r) != len(cols):
            return f"{name}: line {i} has {len(r)} fields, not {len(cols)}", b"", b""
        try:
            if r[iv] != "" or len(cols) == len(LEGACY_COLUMNS):
                float(r[iv])
            if int(r[ist]) != step:
                return f"{name}: line {i} is for step {r[ist]}, not {step}", b"", b""
        except ValueError:
            return f"{name}: line {i}: value {r[iv]!r} is not a number", b"", b""
        if r[irun] != run_id:
            return f"{name}: line {i} belongs to run {r[irun]!r}", b"", b""
    return None, header + nl, body


def _check_zip(path: Path) -> str | None:
    """torch.save writes a zip archive: check that it opens and every CRC matches."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        return f"{path.name}: unreadable ({e})"
    return f"{path.name}: {bad} fails its CRC" if bad else None


def check_run(path, models: bool = True, keep_rows: bool = False) -> RunCheck:
    """Every check of one run folder. ``models=False`` leaves model.pt unchecked
    (the rows do not depend on it); ``keep_rows`` keeps the rows files' bytes for
    the reader. Checkpoints (checkpoint*.pt) are not looked at here: the resume
    code checks them and passes over a damaged one."""
    path = Path(path)
    res = RunCheck(path)
    try:
        names = sorted(e.name for e in os.scandir(path))
    except OSError as e:
        res.problems.append(f"cannot read the folder ({e.strerror})")
        return res
    res.leftovers = [path / n for n in names if n.startswith(".tmp-")]
    rows_names = [n for n in names if n.startswith("rows-")]
    if "meta.json" not in names:
        if rows_names or "status.json" in names:
            res.problems.append("meta.json is missing")
        return res  # else: a run killed before it started (leftovers only)
    res.meta, err = read_json(path / "meta.json")
    if err:
        res.problems.append(err)
    elif not isinstance(res.meta, dict) or res.meta.get("run_id") != path.name:
        res.problems.append("meta.json does not belong to this run")
    listed = None
    if "status.json" in names:
        st, err = read_json(path / "status.json")
        if err:
            res.problems.append(err)
        elif not isinstance(st, dict) or not isinstance(st.get("status"), str) \
                or not st["status"]:
            res.problems.append(f"status.json: no valid status ({str(st)[:60]})")
        else:
            res.status = st["status"]
            listed = st.get("files")
    if isinstance(listed, dict):
        on_disk = set(rows_names) | ({"model.pt"} if "model.pt" in names else set())
        for n in sorted(set(listed) - on_disk):
            if n == "model.pt":  # git-ignored: a clone of the store has no model files
                res.model_not_kept = True
            else:
                res.problems.append(f"{n} is listed in status.json but missing")
        for n in sorted(on_disk - set(listed)):
            res.problems.append(f"{n} is not listed in status.json")
    for n in rows_names:
        try:
            data = (path / n).read_bytes()
        except OSError as e:
            res.problems.append(f"{n}: cannot be read ({e.strerror})")
            continue
        problem, header, body = check_rows(n, data, path.name)
        if problem:
            res.problems.append(problem)
        elif keep_rows:
            res.rows.append((n, header, body))
    if models:
        for n in names:
            if n == "model.pt" and isinstance(listed, dict) and "sha256" in listed.get(n, {}):
                try:
                    ok = sha256((path / n).read_bytes()) == listed[n]["sha256"]
                except OSError as e:
                    res.problems.append(f"{n}: cannot be read ({e.strerror})")
                    continue
                if not ok:
                    res.problems.append(f"{n}: checksum mismatch (truncated or altered)")
            elif n == "model.pt":  # (checkpoint*.pt: checked by their own reader)
                if problem := _check_zip(path / n):
                    res.problems.append(problem)
    return res


def run_dirs(runs: Path, problems: list | None = None) -> list[Path]:
    """Every run folder under ``runs`` (runs/<config_hash>/<run_id>), sorted; an
    unreadable config folder or a stray file is added to ``problems``."""
    out = []
    try:
        configs = sorted(os.scandir(runs), key=lambda e: e.name)
    except FileNotFoundError:
        return out
    for c in configs:
        if c.name.startswith("."):
            continue
        if not c.is_dir():
            if problems is not None:
                problems.append((Path(c.path), "not a config folder"))
            continue
        try:
            entries = sorted(os.scandir(c.path), key=lambda e: e.name)
        except OSError as e:
            if problems is not None:
                problems.append((Path(c.path), f"cannot read the folder ({e.strerror})"))
            continue
        for r in entries:
            if r.name.startswith("."):
                continue
            if r.is_dir():
                out.append(Path(r.path))
            elif problems is not None:
                problems.append((Path(r.path), "not a run folder"))
    return out


@dataclass
class Verdict:
    runs: int = 0
    damaged: list = field(default_factory=list)     # (path, [problems])
    leftovers: list = field(default_factory=list)   # paths of temporary files
    no_model: int = 0                               # finished runs whose model.pt is not kept


def runs_root(root: Path) -> Path:
    return root / "runs" if (root / "runs").is_dir() else root


def verify(root) -> Verdict:
    """Check every run and compacted part of the store at ``root``."""
    root = Path(root)
    v = Verdict()
    stray: list = []
    for d in run_dirs(runs_root(root), stray):
        v.runs += 1
        res = check_run(d)
        v.leftovers += res.leftovers
        v.no_model += res.model_not_kept
        if res.problems:
            v.damaged.append((d, res.problems))
    v.damaged += [(p, [what]) for p, what in stray]
    for part, what in check_parts(root)[1]:
        v.damaged.append((part, [what]))
    for sub in (root / "runs", root / "index"):
        if sub.is_dir():
            v.leftovers += sorted(p for p in sub.glob("*/.tmp-*")) + sorted(sub.glob(".tmp-*"))
    v.leftovers = sorted(set(v.leftovers))
    return v


def repair(root, verdict: Verdict) -> list[tuple[Path, Path]]:
    """Move every damaged run (or part) into ``root/quarantine/<time>/`` keeping its
    path below the store, and remove leftovers; returns (from, to) pairs."""
    root = Path(root)
    q = root / "quarantine" / time.strftime("%Y%m%dT%H%M%S")
    moved = []
    for path, _ in verdict.damaged:
        try:
            rel = path.resolve().relative_to(root.resolve())
        except ValueError:
            rel = Path(path.name)
        dest = q / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir() and not os.access(path, os.R_OK | os.W_OK | os.X_OK):
            try:  # an unreadable folder of ours: moving it needs write access to it
                os.chmod(path, 0o755)
            except OSError:
                pass
        os.replace(path, dest)
        moved.append((path, dest))
        if path.suffix == ".parquet" and path.with_suffix(".json").exists():
            os.replace(path.with_suffix(".json"), dest.with_suffix(".json"))
    for p in verdict.leftovers:  # not those of a writer that may still be at work
        try:
            if time.time() - p.stat().st_mtime > LEFTOVER_AGE_S:
                p.unlink()
        except FileNotFoundError:
            pass
    return moved
