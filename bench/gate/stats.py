"""The statistical decision: an exact one-sided rank test per pair on log group
variances, Bonferroni over the pairs compared (docs/ci_gate.md)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

import estimators

from .settings import ZERO_VAR, CheckError

# --- the statistical gate ---------------------------------------------------------

def _logs(values) -> np.ndarray:
    return np.log(np.maximum(np.asarray(values, dtype=float), 1e-300))


def min_p_value(groups: int) -> float:
    """The smallest one-sided p-value the exact rank test can give with R vs R."""
    return 1.0 / math.comb(2 * groups, groups)


def rank_test(current, baseline, tolerance: float) -> tuple[float, float, float]:
    """(p_up, p_down, ratio): exact one-sided Mann-Whitney p-values of
    H0 "current/baseline <= tolerance" (p_up) and "current/baseline >= 1/tolerance"
    (p_down) on log group variances, and the Hodges-Lehmann estimate of the ratio."""
    from scipy.stats import mannwhitneyu

    c, b = _logs(current), _logs(baseline)
    shift = math.log(tolerance)
    method = "exact" if len(np.unique(np.concatenate([c - shift, b]))) == len(c) + len(b) \
        else "asymptotic"
    p_up = float(mannwhitneyu(c - shift, b, alternative="greater", method=method).pvalue)
    method = "exact" if len(np.unique(np.concatenate([c + shift, b]))) == len(c) + len(b) \
        else "asymptotic"
    p_down = float(mannwhitneyu(c + shift, b, alternative="less", method=method).pvalue)
    ratio = float(np.exp(np.median(c[:, None] - b[None, :])))
    return p_up, p_down, ratio


@dataclasses.dataclass
class Row:
    task: str
    estimator: str
    status: str  # ok | REGRESSION | improved | new | skipped | ERROR | gone
    base_var: float = math.nan
    cur_var: float = math.nan
    ratio: float = math.nan
    p_value: float = math.nan
    note: str = ""

    @property
    def fails(self) -> bool:
        return self.status in ("REGRESSION", "ERROR")


def compare(baseline: dict, current: dict, tolerance: float = 1.2,
            alpha: float = 1e-3) -> tuple[list[Row], dict]:
    """Verdict per measured pair; returns (rows, summary)."""
    if not tolerance >= 1.0:
        raise CheckError(f"--tolerance must be >= 1 (a ratio), got {tolerance}")
    if not 0.0 < alpha < 1.0:
        raise CheckError(f"--alpha must be in (0, 1), got {alpha}")
    bpairs = baseline.get("pairs", {})
    rows, compared = [], []
    for key, cur in current["pairs"].items():
        row = Row(cur["task"], cur["estimator"], "ok")
        base = bpairs.get(key)
        if cur["status"] == "skipped":
            row.status, row.note = "skipped", cur["reason"]
        elif cur["status"] == "error":
            row.status, row.note = "ERROR", cur["reason"]
        elif base is None or base.get("status") != "measured":
            row.status, row.cur_var = "new", cur["grad_var"]
            row.note = "no baseline yet: add it with --update-missing"
        elif (len(base["groups"]) != len(cur["groups"]) or base.get("m") != cur["m"]):
            row.status = "ERROR"
            row.note = (f"baseline measured with R={len(base['groups'])}, m={base.get('m')}; "
                        f"now R={len(cur['groups'])}, m={cur['m']}: "
                        f"run --update {cur['estimator']}")
        else:
            row.base_var, row.cur_var = float(np.mean(base["groups"])), cur["grad_var"]
            if base.get("estimator_config") != cur.get("estimator_config"):
                row.note = (f"config changed: {base.get('estimator_config')} -> "
                            f"{cur.get('estimator_config')}")
            compared.append((row, base, cur))
        rows.append(row)
    n = len(compared)
    per_pair = alpha / max(n, 1)
    for row, base, cur in compared:
        b, c = np.asarray(base["groups"]), np.asarray(cur["groups"])
        b_zero, c_zero = bool((b <= ZERO_VAR).all()), bool((c <= ZERO_VAR).all())
        if b_zero or c_zero:
            row.ratio = math.nan if b_zero and c_zero else (math.inf if b_zero else 0.0)
            row.status = ("ok" if c_zero and b_zero else "REGRESSION" if b_zero else "improved")
            row.note = _join(row.note, "zero variance" if b_zero and c_zero else
                             "baseline had zero variance" if b_zero else "now zero variance")
            continue
        p_up, p_down, row.ratio = rank_test(c, b, tolerance)
        row.p_value = p_up
        if p_up < per_pair:
            row.status = "REGRESSION"
        elif p_down < per_pair:
            row.status = "improved"
            row.note = _join(row.note, "lower variance: lock it in with --update "
                             f"{row.estimator}")
    seen = set(current["pairs"])
    tasks_now = {p["task"] for p in current["pairs"].values()}
    names_now = set(estimators.names())
    for key, base in bpairs.items():
        if key not in seen and base["task"] in tasks_now and base["estimator"] not in names_now:
            rows.append(Row(base["task"], base["estimator"], "gone",
                            note="in the baseline but no longer registered"))
    summary = {"compared": n, "alpha": alpha, "per_pair_alpha": per_pair,
               "tolerance": tolerance, "groups": len(compared[0][2]["groups"]) if n else None}
    if n and per_pair < min_p_value(summary["groups"]):
        raise CheckError(f"with R={summary['groups']} groups the exact test cannot reach "
                         f"alpha/n={per_pair:.2g}; raise --alpha or the number of groups")
    return rows, summary


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b
