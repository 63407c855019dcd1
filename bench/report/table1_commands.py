"""The final runs' commands of the Table-1 grid (``python -m bench table1
--final-commands``): one resumable ``python -m bench run`` per cell and seed at its
chosen setting, in passes, with the full-length checks of bench/report/table1_check.py."""

from __future__ import annotations

import pandas as pd

from ..results import load
from .table1_check import full_length
from .table1_runs import ANNEALED, _sci, missing_settings, run_table, setting_label


def protocol_file(task: str, est: str, chosen: dict) -> str:
    """The conf/experiment/jang_protocol_estimator/ file of a cell's chosen setting."""
    if est in ANNEALED:
        rate = chosen.get("anneal_rate", 0.0)
        if pd.isna(rate) or not rate:
            return f"{est}_tau1"
        return f"{est}_r{_sci(rate)}_n{int(chosen['anneal_every'])}"
    return est


def final_commands(chosen_all: dict, final_steps: int, seeds: int, store, rows,
                   columns, partial: bool = False, mode: str = "all") -> list[str]:
    """One resumable `python -m bench run` per cell and seed at its chosen setting, in
    passes: seed 0 of every cell, then seed 1 of every cell, ... so that a script stopped
    part-way has given as many cells as possible a first number. Run two copies at once
    and the store's locks split the runs between them (a copy skips a config the other
    is training), so both cores stay busy to the last run (bench/store/lock.py).
    A cell's full-length check (bench/report/table1_check.py; ``mode``: every cell, or
    only those whose seed-0 run is unstable) is a seed-0 run in pass 1, and the cell
    gets no seeds 1+ until the check is done and the commands are printed again."""
    runs = run_table(store)  # the final runs so far (none when the store is new)
    curves = pd.DataFrame(columns=["run_id", "step", "value"])
    if len(runs):
        df = load(store, all_runs=True)
        curves = df[df["metric"] == "valid_neg_elbo"]
    notes, cells, first_checks, last_checks = [], [], [], []
    for task, *_ in rows:
        for est, col in columns:
            chosen = chosen_all.get((task, est))
            if not chosen or "lr" not in chosen:
                notes.append(f"# {task} {col}: no setting chosen yet (run its selection grid)")
                continue
            missing = missing_settings(task, est, chosen)
            if missing:
                notes.append(f"# {task} {col}: selection incomplete, {len(missing)} planned "
                             f"setting(s) not run ({'; '.join(missing)})"
                             + (": chosen among those run" if partial
                                else ": command held back (--partial prints it)"))
                if not partial:
                    continue
            exp = "jang_sbn_protocol" if task.startswith("sbn") else "jang_vae_protocol"

            def command(setting, exp=exp, task=task, est=est):
                return (f"nice -n 10 python -m bench run -m +experiment={exp} "
                        f"+experiment/jang_protocol_estimator={protocol_file(task, est, setting)} "
                        f"task={task} train.lr={setting['lr']:g} train.steps={final_steps} "
                        "seed={seed} "
                        f"results_dir={store} "
                        f"data_dir=../shared/data")
            check = full_length(runs, curves, task, est, chosen, final_steps, mode)
            later = command(check["setting"])
            if check["pending"]:
                run = command(check["pending"]).replace("seed={seed}", "seed=0")
                # a check asked for by an unstable run goes first (it will likely move its
                # cell); the others after every cell's seed 0 (a first number for all)
                (first_checks if check["unstable"] else last_checks).append(run)
                notes.append(f"# {task} {col}: seeds 1+ wait for the full-length check at "
                             f"{setting_label(check['pending'])} ({check['why']}); print "
                             f"these commands again once it is done")
                later = None
            cells.append((command(chosen), later))
    out = list(notes)
    for seed in range(seeds):
        now = [first if seed == 0 else later for first, later in cells]
        now = [c.replace("seed={seed}", f"seed={seed}") for c in now if c]
        n_checks = len(first_checks) + len(last_checks) if seed == 0 else 0
        held = len(cells) - len(now)
        out.append(f"# pass {seed + 1} of {seeds}: seed {seed} of each of {len(now)} cells"
                   + (f" and {n_checks} full-length check(s)" if n_checks else "")
                   + (f" ({held} more wait for their check)" if held else ""))
        out += first_checks + now + last_checks if seed == 0 else now
    return out
