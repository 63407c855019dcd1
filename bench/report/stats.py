"""Summary statistics over seeds: mean and Student-t interval, each run's final rows."""

from __future__ import annotations

import math

import pandas as pd

# --- statistics ---------------------------------------------------------------

def mean_ci(values, level: float = 0.95) -> tuple[float, float, int]:
    """Mean and half-width of the Student-t confidence interval (nan for n < 2)."""
    from scipy import stats

    v = pd.Series(values, dtype=float).dropna()
    n = len(v)
    if n == 0:
        return math.nan, math.nan, 0
    if n == 1:
        return float(v.iloc[0]), math.nan, 1
    half = stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n)
    return float(v.mean()), float(half), n


def ci_halfwidth(sd, n, level: float = 0.95):
    """Half-widths of Student-t intervals from per-group sd (ddof=1) and counts; nan
    where n < 2 (vectorised ``mean_ci``)."""
    import numpy as np
    from scipy import stats

    n = np.asarray(n, dtype=float)
    sd = np.asarray(sd, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)) * sd / np.sqrt(n)
    return np.where(n >= 2, half, np.nan)


def final_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Each run's rows at its last evaluated step."""
    last = df.groupby("run_id")["step"].transform("max")
    return df[df["step"] == last]
