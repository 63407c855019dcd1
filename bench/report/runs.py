"""Loading a store (or an exported rows.csv) for the report, with row and cell
labels: a row is runs that agree on everything but the estimator and the seed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..results import load

# config keys that do not change a run's numbers (nor its row)
_NOT_IN_ROW = {"results_dir", "data_dir", "skip_complete", "progress", "threads", "device",
               "seed", "estimator", "flush_denormal", "logger", "store"}
_NOT_IN_ROW_TRAIN = {"save_model", "check_every"}


# --- loading: rows, run configs, row and cell labels ----------------------------

@dataclass
class Runs:
    rows: pd.DataFrame                      # tidy rows + row/cell columns
    configs: dict = field(default_factory=dict)   # run_id -> resolved config
    dirs: dict = field(default_factory=dict)      # run_id -> run folder
    meta: dict = field(default_factory=dict)      # run_id -> meta.json
    damaged: list = field(default_factory=list)   # (path, problem) of runs not read


def _row_signature(cfg: dict) -> str:
    c = {k: v for k, v in cfg.items() if k not in _NOT_IN_ROW}
    if isinstance(c.get("train"), dict):
        c["train"] = {k: v for k, v in c["train"].items() if k not in _NOT_IN_ROW_TRAIN}
    return hashlib.sha1(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _report_node(cfg: dict) -> dict:
    node = cfg.get("report") if isinstance(cfg, dict) else None
    return node if isinstance(node, dict) else {}


def _steps_label(steps) -> str:
    steps = int(steps)
    return f"{steps // 1000}k" if steps >= 1000 and steps % 1000 == 0 else str(steps)


def load_runs(path) -> Runs:
    """The store (or an exported rows.csv) with row and cell labels attached."""
    path = Path(path)
    if path.is_file():
        rows = pd.read_csv(path, dtype={"git_sha": str, "config_hash": str, "run_id": str})
        for col, default in (("setting", ""), ("experiment", ""), ("protocol", ""),
                             ("reduced", False),
                             ("status", "complete")):
            if col not in rows:
                rows[col] = default
        if "row" not in rows:
            rows["row"] = rows["task"].astype(str) + " · " + rows["dataset"].astype(str)
        if "cell" not in rows:
            rows["cell"] = rows["estimator"]
        rows["setting"] = rows["setting"].fillna("")
        rows["experiment"] = rows["experiment"].fillna("")
        return Runs(rows=rows)

    rows = load(path)
    root = path / "runs" if (path / "runs").is_dir() else path
    runs = Runs(rows=rows, damaged=list(rows.attrs.get("damaged", [])))
    for mf in root.glob("*/*/meta.json"):
        try:
            meta = json.loads(mf.read_text())
        except (OSError, ValueError):
            continue
        rid = meta.get("run_id", mf.parent.name)
        runs.meta[rid] = meta
        runs.configs[rid] = meta.get("config") or {}
        runs.dirs[rid] = mf.parent
    _label(runs)
    return runs


def _label(runs: Runs) -> None:
    """Attach row / cell / setting / experiment / reduced columns to runs.rows."""
    df = runs.rows
    if df.empty:
        for c in ("row", "cell", "setting", "experiment", "protocol"):
            df[c] = pd.Series(dtype=str)
        df["reduced"] = pd.Series(dtype=bool)
        return
    # one pass over the rows: each run's first row and last step
    firsts = df.drop_duplicates("run_id").set_index("run_id")
    last_step = df.groupby("run_id")["step"].max()
    info = {}
    for rid, first in zip(firsts.index, firsts.itertuples()):
        cfg = runs.configs.get(rid, {})
        rep = _report_node(cfg)
        steps = (cfg.get("train") or {}).get("steps", last_step[rid])
        info[rid] = dict(sig=_row_signature(cfg) if cfg else f"{first.task}|{first.dataset}",
                         task=str(first.task), dataset=str(first.dataset), steps=int(steps),
                         setting=str(rep.get("setting", "")),
                         experiment=str(rep.get("experiment", "")),
                         protocol=str(rep.get("protocol", "")),
                         reduced=bool(rep.get("reduced", False)),
                         est=str(first.estimator),
                         est_opts=json.dumps({k: v for k, v in (cfg.get("estimator") or {}).items()
                                              if k != "name"}, sort_keys=True, default=str))
    # row labels: task (experiment, steps); a hash suffix only where two rows collide
    by_sig = {}
    for i in info.values():
        by_sig.setdefault(i["sig"], i)
    def describe(i):
        where = i["experiment"] or i["setting"] or i["dataset"]
        if i["setting"] and not where.startswith(i["setting"]):
            where = f"{i['setting']}, {where}"  # e.g. the architecture of a grid
        proto = f", protocol {i['protocol']}" if i["protocol"] else ""  # report.protocol
        return f"{i['task']} ({where}, {_steps_label(i['steps'])} steps{proto})"

    base = {s: describe(i) for s, i in by_sig.items()}
    counts = pd.Series(list(base.values())).value_counts()
    row_label = {s: (b if counts[b] == 1 else f"{b} #{s[:6]}") for s, b in base.items()}
    # cell labels: the estimator's name, plus its options where a row holds several
    cell = {}
    members_of = {}
    for rid, i in info.items():
        members_of.setdefault(i["sig"], []).append((rid, i))
    for members in members_of.values():
        for est in {i["est"] for _, i in members}:
            variants = sorted({i["est_opts"] for _, i in members if i["est"] == est})
            others = [json.loads(v) for v in variants]
            for rid, i in members:
                if i["est"] != est:
                    continue
                if len(variants) == 1:
                    cell[rid] = est
                else:
                    mine = json.loads(i["est_opts"])
                    diff = sorted(k for k in mine if any(o.get(k) != mine[k] for o in others))
                    cell[rid] = est + "[" + ",".join(f"{k}={mine[k]}" for k in diff) + "]"
    per_run = pd.DataFrame.from_dict(info, orient="index")
    per_run["row"] = per_run["sig"].map(row_label)
    per_run["cell"] = pd.Series(cell)
    per_run = per_run.rename(columns={"steps": "train_steps"})
    at = per_run.index.get_indexer(df["run_id"])  # one lookup per row, then takes
    for key in ("row", "cell", "setting", "experiment", "protocol", "reduced", "train_steps"):
        df[key] = per_run[key].to_numpy()[at]
