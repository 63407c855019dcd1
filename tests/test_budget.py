"""The equal-cost report (bench.report.budget): interpolation at a budget of
evaluations of f, gaps with reasons, the --budget-evals page and cost figures."""

import math
import subprocess
import sys

import pytest

from bench.paths import REPO_DIR
from bench.report.budget import budget_table, cost_rows, interpolate
from bench.report.runs import load_runs
from bench.results import Store


def test_interpolation_is_linear_in_log_evals():
    # a curve that is exactly linear in log10(evals) is recovered between points
    ev = [1e3, 1e4, 1e5]
    val = [10 - 2 * math.log10(e) for e in ev]
    for b in (2e3, 3e4, 9.9e4, 1e4):
        assert interpolate(ev, val, b) == pytest.approx(10 - 2 * math.log10(b), abs=1e-12)
    # linear-in-evals interpolation would give a different value (the test has power)
    lin = val[0] + (val[1] - val[0]) * (3e3 - 1e3) / (1e4 - 1e3)
    assert abs(interpolate(ev, val, 3e3) - lin) > 0.3
    # never extrapolated
    assert math.isnan(interpolate(ev, val, 2e5)) and math.isnan(interpolate(ev, val, 5e2))
    # from the untrained point at 0 evaluations: linear in evals
    assert interpolate([0, 100], [5.0, 3.0], 25) == pytest.approx(4.5)


def _store(root):
    """Three estimators of cost 10, 40 and 10 f-evaluations a step, evaluations every
    100 steps, metric y = 100 - 10 log10(f_evals) (y = 100 at step 0); the third run
    diverges at step 200, a fourth has no f_evals (an old run)."""
    st = Store(root)
    runs = [("cheap", 0, 10, 1000, "complete"), ("cheap", 1, 10, 1000, "complete"),
            ("dear", 0, 40, 1000, "complete"), ("broken", 0, 10, 200, "diverged"),
            ("old", 0, None, 1000, "complete")]
    for est, seed, cost, last, status in runs:
        meta = {"estimator": est, "task": "categorical_vae", "dataset": "digits", "seed": seed,
                "git_sha": "abc", "device": "cpu", "temperature": math.nan,
                "config": {"train": {"steps": 1000}, "estimator": {"name": est}}}
        rec = st.start(f"{est}{seed}", meta)
        for step in range(0, last + 1, 100):
            drop = 10 * math.log10((cost or 10) * step) if step else 0
            m = {"test_neg_elbo": 100.0 - drop + seed,
                 "train_time_s": 0.01 * step * (cost or 1)}
            if cost:
                m["f_evals"] = float(cost * step)
                if step:
                    m["f_evals_per_step"] = float(cost)
            rec.write(step, m, 0.0)
        rec.finish(status)
    return root


def test_budget_table_values_and_gaps(tmp_path):
    df = load_runs(_store(tmp_path)).rows
    t = budget_table(df, 2500.0, ["test_neg_elbo"]).set_index("cell")
    want = 100 - 10 * math.log10(2500)
    # cheap: seeds 0 and 1 (offset +1), mean + 0.5; reached at step 250
    assert t.loc["cheap", "mean"] == pytest.approx(want + 0.5)
    assert t.loc["cheap", "seeds"] == 2 and t.loc["cheap", "steps"] == pytest.approx(250)
    assert t.loc["cheap", "train_time_s"] == pytest.approx(0.01 * 250 * 10)
    # dear: 40 a step, so the budget falls at step 62.5, between the untrained
    # point and step 100 (linear in evals on that first segment)
    assert t.loc["dear", "steps"] == pytest.approx(62.5)
    v100 = 100 - 10 * math.log10(4000)
    assert t.loc["dear", "mean"] == pytest.approx(100 + 0.625 * (v100 - 100))
    # the diverged run stopped at 2000 evaluations: a gap with its reason
    assert math.isnan(t.loc["broken", "mean"]) and "diverged" in t.loc["broken", "gaps"]
    assert math.isnan(t.loc["old", "mean"]) and "no f_evals" in t.loc["old", "gaps"]
    beyond = budget_table(df, 2e4, ["test_neg_elbo"]).set_index("cell")
    assert math.isnan(beyond.loc["cheap", "mean"]) and "stopped at" in beyond.loc["cheap", "gaps"]
    assert not math.isnan(beyond.loc["dear", "mean"])


def test_runs_of_different_lengths_share_a_row_at_equal_cost(tmp_path):
    st = Store(tmp_path)
    for i, (est, opts, steps) in enumerate([("reinforce", {}, 1000),
                                            ("loo", {"samples": 4}, 1000),
                                            ("loo", {"samples": 8}, 500)]):
        cfg = {"train": {"steps": steps}, "eval": {"every": steps // 5},
               "estimator": {"name": est, **opts}}
        rec = st.start(f"h{i}", {"estimator": est, "task": "toy", "dataset": "digits", "seed": 0,
                                 "git_sha": "abc", "device": "cpu", "config": cfg})
        rec.write(0, {"expected_loss": 1.0, "f_evals": 0.0}, 0.0)
        rec.finish("complete")
    runs = load_runs(tmp_path)
    assert runs.rows["row"].nunique() == 2  # the report's rows: one per length
    df = cost_rows(runs)
    assert df["row"].nunique() == 1
    assert set(df["cell"]) == {"reinforce", "loo[samples=4]", "loo[samples=8]"}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "bench", "report", *args],
                          capture_output=True, text=True, cwd=REPO_DIR, timeout=300)


@pytest.mark.slow
def test_report_budget_page_and_figures(tmp_path):
    store = _store(tmp_path / "store")
    out = tmp_path / "out"
    res = _cli(str(store), "--out", str(out), "--no-samples", "--budget-evals", "2500,2e4")
    assert res.returncode == 0, res.stderr[-2000:]
    page = (out / "REPORT.md").read_text()
    assert "at 2.5e+03 evaluations of f" in page and "at 2e+04 evaluations of f" in page
    assert "diverged at step 200" in page
    assert (out / "figures" / "test_neg_elbo_vs_f_evals.png").is_file()
    assert (out / "tables" / "budget_20000.csv").is_file()


def test_bad_budget_is_one_line(tmp_path):
    res = _cli(str(_store(tmp_path / "store")), "--out", str(tmp_path / "o"),
               "--budget-evals", "lots")
    assert res.returncode == 2 and "--budget-evals" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
