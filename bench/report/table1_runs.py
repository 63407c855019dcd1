"""The runs of the Table-1 stores (bench/report/table1.py) and the settings chosen on
validation: a run table with each run's hyperparameters and the choice read from a
selection CSV or made here (lowest mean final valid_neg_elbo over seeds); the final
runs' commands are in bench/report/table1_commands.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from ..results import load
from .select import choose

HYPER = {"lr": ("train", "lr"), "anneal_rate": ("estimator", "anneal_rate"),
         "anneal_every": ("estimator", "anneal_every")}
# the planned selection grid (results/jang_table1/README.md): the paper's six learning
# rates; for the Gumbel-Softmax family on the VAE rows the annealing rate r; on the SBN
# rows tau = 1 fixed, and for Annealed ST (which at a fixed tau = 1 is ST itself) also
# the VAE rows' slope schedules, validation choosing among the three
LRS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3)
RATES = (1e-5, 1e-4)
ANNEALED = ("annealed_st", "gumbel_softmax", "st_gumbel_softmax")


def planned_rates(task: str, est: str) -> tuple:
    """The tau schedules of a cell's planned grid (None: tau fixed)."""
    if est not in ANNEALED:
        return (None,)
    if not task.startswith("sbn"):
        return RATES
    return (None, *RATES) if est == "annealed_st" else (None,)


def run_table(store: Path) -> pd.DataFrame:
    """One line per run: task, estimator, seed, steps, status and its hyperparameters."""
    recs = []
    for meta_file in sorted((Path(store) / "runs").glob("*/*/meta.json")):
        try:
            meta = json.loads(meta_file.read_text())
        except ValueError:
            continue  # damaged: `python -m bench store verify` names it
        cfg = meta.get("config", {})
        st = meta_file.with_name("status.json")
        done = json.loads(st.read_text()) if st.exists() else {}
        status = done.get("status", "incomplete")
        rec = {"run_id": meta["run_id"], "task": meta.get("task"),
               "estimator": meta.get("estimator"), "seed": meta.get("seed"),
               "steps": int(cfg.get("train", {}).get("steps", 0)), "status": status,
               "protocol": (cfg.get("report") or {}).get("protocol", ""),
               "wall_s": done.get("wall_s", math.nan)}  # whole run, resumes included
        for k, (group, key) in HYPER.items():
            rec[k] = (cfg.get(group) or {}).get(key, math.nan)
        recs.append(rec)
    cols = ["run_id", "task", "estimator", "seed", "steps", "status", "protocol", "wall_s",
            *HYPER]
    runs = pd.DataFrame(recs, columns=cols)
    for k in (*HYPER, "wall_s"):
        runs[k] = pd.to_numeric(runs[k], errors="coerce")
    return runs


def setting_label(s) -> str:
    parts = [f"lr={s['lr']:g}"] if not pd.isna(s.get("lr")) else []
    if s.get("anneal_rate", 0) and not pd.isna(s.get("anneal_rate")):
        parts.append(f"r={s['anneal_rate']:g}, N={int(s['anneal_every'])}")
    return ", ".join(parts) or "-"


def same_setting(runs: pd.DataFrame, chosen: dict) -> pd.Series:
    ok = pd.Series(True, index=runs.index)
    for k, v in chosen.items():
        if pd.isna(v):
            ok &= runs[k].isna()
        else:
            ok &= (runs[k] - v).abs() <= 1e-9 * abs(v)
    return ok


def read_select(path: Path) -> dict:
    """{(task, estimator): {hyper: value}} from a selection CSV."""
    df = pd.read_csv(path)
    if not {"task", "estimator"} <= set(df.columns):
        raise ValueError(f"{path}: a selection CSV needs columns task and estimator")
    out = {}
    for _, r in df.iterrows():
        chosen = {}
        for k, (group, key) in HYPER.items():
            for col in (f"{group}.{key}", k):
                if col in df.columns and not pd.isna(r[col]):
                    chosen[k] = float(r[col])
                    break
        out[(r["task"], r["estimator"])] = chosen
    return out


def setting_key(lr: float, rate) -> tuple[str, str]:
    """A setting as it is matched against the planned grid: (lr, r), r '' for a fixed
    tau (anneal_rate absent, NaN or 0)."""
    fixed = rate is None or pd.isna(rate) or not rate
    return f"{lr:g}", "" if fixed else f"{rate:g}"


def selection_runs(src: Path, final_steps: int) -> pd.DataFrame:
    """The selection runs of a store (every run not of ``final_steps`` steps, whatever
    its status), each with its final valid_neg_elbo."""
    runs = run_table(src)
    runs = runs[runs["steps"] != final_steps]
    if runs.empty:
        return runs.assign(valid_neg_elbo=pd.Series(dtype=float))
    df = load(src, all_runs=True)
    last = df[df["step"] == df.groupby("run_id")["step"].transform("max")]
    valid = last[last["metric"] == "valid_neg_elbo"].set_index("run_id")["value"]
    return runs.assign(valid_neg_elbo=runs["run_id"].map(valid))


def select_here(sel: pd.DataFrame) -> dict:
    """The choice of ``python -m bench select`` (bench/report/select.py, the same rule)
    among ``selection_runs``: per (task, estimator), the setting with the lowest mean
    final valid_neg_elbo over seeds; a diverged run scores worst; ties go to more seeds,
    then smaller values. Never a test metric."""
    sel = sel[sel["status"].isin(["complete", "diverged"])]
    chosen, _ = choose(sel, "valid_neg_elbo", False, ["task", "estimator"],
                       config_cols=list(HYPER))
    out = {}
    if chosen.empty:
        return out
    for (task, est), g in chosen.groupby(["task", "estimator"]):
        swept = [k for k in g["swept"].iloc[0].split(", ") if k]
        keys = [k for k in HYPER if k in swept or g[k].notna().all()]
        cell = sel[(sel["task"] == task) & (sel["estimator"] == est)]
        out[(task, est)] = {k: float(g[k].iloc[0]) for k in keys}
        out[(task, est)]["_tried"] = sorted(cell["lr"].dropna().unique())
        out[(task, est)]["_settings"] = {setting_key(lr, r) for lr, r in
                                         zip(cell["lr"], cell["anneal_rate"], strict=True)}
        out[(task, est)]["_valid"] = float(g["score"].iloc[0])
    return out


def _sci(v: float) -> str:
    m, e = f"{v:e}".split("e")
    return f"{float(m):g}e{int(e)}"


def missing_settings(task: str, est: str, chosen: dict) -> list[str]:
    """The settings of the planned grid with no finished selection run (none where the
    choice came from a CSV, which says nothing of the grid behind it). A fixed tau
    (anneal_rate 0 or absent) is no schedule."""
    if "_settings" not in chosen:
        return []
    missing = []
    for lr in LRS:
        for r in planned_rates(task, est):
            if setting_key(lr, r) not in chosen["_settings"]:
                missing.append(f"lr={lr:g}" + ("" if r is None else f", r={r:g}"))
    return missing


def chosen_settings(store, select=None, selection=None, final_steps=50_000) -> dict:
    """From a selection CSV, else chosen here among the shorter runs of ``selection``
    (a store of its own) or of ``store``."""
    if select:
        return read_select(Path(select))
    return select_here(selection_runs(Path(selection) if selection else Path(store),
                                      final_steps))
