"""The full-length check of a Table-1 cell (bench/report/table1.py): the selection grid
is short (5,000 steps) and favours learning rates that learn fast early, so its choice
may not be the best at 50,000. The next smaller learning rate of the grid (same tau
schedule) is run at full length with seed 0 too, and the cell's setting becomes the
one whose seed-0 run ends with the lower validation -ELBO -- still a choice on
validation, made at the final length; while the smallest run so far is unstable (its
validation -ELBO ends more than UNSTABLE nats above its best) or diverged, the next
smaller is checked as well. ``mode="all"`` checks every cell this way (one more
seed-0 run each, the same treatment for every estimator); ``mode="unstable"`` only
the cells whose selected run is unstable or diverged. Seeds 1, 2, ... run at the
setting this settles on."""

from __future__ import annotations

import math

import pandas as pd

from .table1_runs import LRS, same_setting, setting_label

UNSTABLE = 2.0  # nats of validation -ELBO at the end above the curve's best
MODES = ("all", "unstable")  # which cells get the full-length check (module docstring)


def curve_rise(c: pd.DataFrame) -> tuple[float, int | None, float]:
    """(end minus best, the best's step, the end value) of one run's validation curve
    (columns step, value); NaNs where the curve is empty."""
    c = c.sort_values("step")
    if c.empty:
        return math.nan, None, math.nan
    best = c.loc[c["value"].idxmin()]
    end = float(c["value"].iloc[-1])
    return end - float(best["value"]), int(best["step"]), end


def _smaller(setting: dict) -> dict | None:
    lr = setting["lr"]
    below = [x for x in LRS if x < lr * (1 - 1e-9)]
    return {**setting, "lr": below[-1]} if below else None


def full_length(runs, curves, task, est, chosen, final_steps, mode="all") -> dict:
    """The settling of one cell. Walks down from the selected setting through the
    learning rates whose seed-0 final run exists, and takes the lowest final valid
    -ELBO among them. A next smaller learning rate is asked for (``pending``) when the
    smallest run so far is unstable or diverged, and with ``mode="all"`` also once
    for every cell (whether or not the selected run is finished). Returns
    ``setting`` (the hyperparameters the cell reports and its seeds 1+ use;
    selection keys only), ``pending`` (a seed-0 run still needed before seeds 1+ can
    be placed, or None), ``why`` (its reason) and ``unstable`` (asked for by an
    unstable or diverged run), ``checked`` (one line per run looked at) and
    ``changed``."""
    if mode not in MODES:
        raise ValueError(f"--check must be one of {', '.join(MODES)}, got {mode!r}")
    hyper = {k: v for k, v in chosen.items() if not k.startswith("_")}
    mine = runs[(runs["task"] == task) & (runs["estimator"] == est)
                & (runs["steps"] == final_steps) & (runs["seed"] == 0)
                & runs["status"].isin(["complete", "diverged"])]
    best, setting, checked, last_bad = None, hyper, [], False
    while setting is not None:
        r = mine[same_setting(mine, setting)]
        if r.empty:
            break
        rise, step, end = curve_rise(curves[curves["run_id"] == r["run_id"].iloc[0]])
        bad = r["status"].iloc[0] == "diverged" or not math.isfinite(end)
        label = setting_label(setting)
        checked.append(f"{label}: diverged" if bad else
                       f"{label}: valid −ELBO {end:.1f} at the end (best {end - rise:.1f} "
                       f"at step {step})")
        if not bad and (best is None or end < best[1]):
            best = (setting, end)
        last_bad, checked_setting = bad or rise > UNSTABLE, setting
        setting = _smaller(setting)
    if not checked:  # the selected seed 0 is not finished
        wanted = _smaller(hyper) if mode == "all" else None
    else:
        wanted = setting if last_bad or (mode == "all" and len(checked) == 1) else None
    final = best[0] if best else hyper
    unstable = wanted is not None and bool(checked) and last_bad
    why = None if wanted is None else (
        f"seed 0 at {setting_label(checked_setting)} is unstable or diverged" if unstable
        else "every cell gets one")
    return {"setting": final, "pending": wanted, "checked": checked,
            "changed": final != hyper, "why": why, "unstable": unstable}
