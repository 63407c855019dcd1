"""The full-length check of a Table-1 cell (bench/report/table1.py): the selection grid
is short (5,000 steps), so a learning rate it chose may not hold for 50,000. When a
cell's seed-0 final run is unstable (its validation -ELBO ends more than UNSTABLE nats
above its best) or diverged, the next smaller learning rate of the grid (same tau
schedule) is run at full length with seed 0 too, and the cell's setting becomes the
one whose seed-0 run ends with the lower validation -ELBO -- still a choice on
validation, now at the final length; if that one is unstable too, the next smaller
is checked, and so on. Seeds 1, 2, ... run at the setting this settles on."""

from __future__ import annotations

import math

import pandas as pd

from .table1_runs import LRS, same_setting, setting_label

UNSTABLE = 2.0  # nats of validation -ELBO at the end above the curve's best


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


def full_length(runs, curves, task, est, chosen, final_steps) -> dict:
    """The settling of one cell. Returns ``setting`` (the hyperparameters its final
    runs use, selection keys only), ``pending`` (a setting whose seed-0 run must
    finish before seeds 1+ can be placed; None when settled), ``checked``
    (one line per setting looked at, for the report) and ``changed`` (bool)."""
    hyper = {k: v for k, v in chosen.items() if not k.startswith("_")}
    mine = runs[(runs["task"] == task) & (runs["estimator"] == est)
                & (runs["steps"] == final_steps) & (runs["seed"] == 0)]
    best, setting, checked = None, hyper, []
    while setting is not None:
        r = mine[same_setting(mine, setting) & mine["status"].isin(["complete", "diverged"])]
        if r.empty:
            if not checked:  # the selection's own seed 0 is not finished: nothing to check
                return {"setting": hyper, "pending": None, "checked": [], "changed": False}
            return {"setting": best[0] if best else hyper, "pending": setting,
                    "checked": checked, "changed": False}
        rid = r["run_id"].iloc[0]
        rise, step, end = curve_rise(curves[curves["run_id"] == rid])
        bad = r["status"].iloc[0] == "diverged" or not math.isfinite(end)
        label = setting_label(setting)
        checked.append(f"{label}: diverged" if bad else
                       f"{label}: valid −ELBO {end:.1f} at the end (best {end - rise:.1f} "
                       f"at step {step})")
        if not bad and (best is None or end < best[1]):
            best = (setting, end)
        if not bad and rise <= UNSTABLE:
            break  # stable: no smaller learning rate is needed
        setting = _smaller(setting)
    if best is None:  # every setting down to the grid's smallest diverged
        return {"setting": hyper, "pending": None, "checked": checked, "changed": False}
    return {"setting": best[0], "pending": None, "checked": checked,
            "changed": best[0] != hyper}
