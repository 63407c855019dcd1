"""The gradient-variance gate (`python -m bench check`): its statistics, that it
catches a planted regression (gradient noise doubled) and passes an unchanged
tree over 20 reruns with other sampling seeds, its command line, and the
committed baselines."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import estimators
from bench.gate import baselines, cli, measure, problems, settings, stats

# A small configuration of the same code paths (the real one is settings.Settings())
SMALL = settings.Settings(
    groups=10, m=(("toy", 64), ("bernoulli_vae", 16), ("categorical_vae", 16)), batch=8,
    task_overrides=tuple((t, (("encoder_hidden", (32,)), ("decoder_hidden", (32,))))
                         for t in ("bernoulli_vae", "categorical_vae")),
    timing_batch=8)
CORE = ["reinforce", "gumbel_softmax", "straight_through"]  # the foundation's estimators
PAIRS = [("toy", n) for n in CORE] + [("categorical_vae", n) for n in CORE]
CLI_ESTIMATORS = "reinforce,gumbel_softmax,exact"


@pytest.fixture(autouse=True)
def _one_thread():
    """As `python -m bench check` does: one torch thread (steady on a busy machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def failures(rows):
    return [(r.task, r.estimator, r.status, r.note) for r in rows if r.fails]


# --- the toy problem and the planted regression, against the mathematics -----------

def test_toy_exact_gradient_matches_closed_form():
    """d/da_i E[sum_i (z_i - t)^2] = (1 - 2t) p_i (1 - p_i), p_i = sigmoid(a_i)."""
    toy = problems.ToyProblem(settings.Settings())
    a = torch.tensor(settings.Settings().toy_logits, dtype=torch.float64)
    p = torch.sigmoid(a)
    d = (1 - 2 * settings.Settings().toy_target) * p * (1 - p)
    assert torch.allclose(toy.exact, torch.stack([-d, d], -1), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("name", ["reinforce", "gumbel_softmax", "straight_through"])
def test_doubled_noise_doubles_the_variance_and_keeps_the_mean(name):
    toy = problems.ToyProblem(settings.Settings())
    m = 40000
    torch.manual_seed(3)
    g = toy.estimates(settings.make_estimator(name), m).flatten(1)
    torch.manual_seed(4)
    h = toy.estimates(measure.DoubledNoise(settings.make_estimator(name)), m).flatten(1)
    ratio = float(h.var(0).mean() / g.var(0).mean())
    assert 1.85 < ratio < 2.15, ratio
    # same expectation: |mean difference| within 4.5 standard errors, every logit
    se = (g.var(0) / m + h.var(0) / m).sqrt()
    assert float(((h.mean(0) - g.mean(0)).abs() / se).max()) < 4.5
    # power check of that z-test: a noise-scaled (not noise-doubled) estimator
    # g' = sqrt(2) g also doubles the variance, but moves the mean: rejected
    if name != "reinforce":  # reinforce's mean is too small here to show it
        s = math.sqrt(2) * g
        assert float(((s.mean(0) - g.mean(0)).abs() / se).max()) > 4.5


@pytest.mark.parametrize("name", ["reinforce", "concrete_kl"])
def test_doubled_noise_doubles_the_vae_grad_variance(name):
    """Through the task's own grad_variance; concrete_kl: its relaxed KL included."""
    prob = problems.VAEProblem("categorical_vae", SMALL)
    torch.manual_seed(5)
    v = prob.task.grad_variance(prob.x, settings.make_estimator(name), 400)
    torch.manual_seed(6)
    w = prob.task.grad_variance(prob.x, measure.DoubledNoise(settings.make_estimator(name)), 400)
    assert 1.8 < w / v < 2.2, w / v


# --- the statistical test ------------------------------------------------------------------

def test_rank_test_false_alarm_rate_is_bounded_for_skewed_data():
    """Exchangeable groups (an unchanged tree) from a heavy-tailed distribution:
    the one-sided p-value is valid, P(p < a) <= a, also with no tolerance."""
    rng = np.random.default_rng(0)
    sims, a = 400, 0.05
    p = np.array([stats.rank_test(np.exp(rng.standard_t(2, 10)), np.exp(rng.standard_t(2, 10)),
                                  1.0)[0] for _ in range(sims)])
    assert (p < a).mean() <= a + 3 * math.sqrt(a * (1 - a) / sims)
    # and it is not vacuous: its rate is near a (exact test, discrete p-values)
    assert (p < a).mean() > a / 2


def test_rank_test_power_and_ratio_estimate():
    rng = np.random.default_rng(1)
    base = np.exp(rng.normal(0, 0.1, 10))
    cur = 2.0 * np.exp(rng.normal(0, 0.1, 10))
    p_up, p_down, ratio = stats.rank_test(cur, base, 1.2)
    assert p_up == pytest.approx(stats.min_p_value(10)) and p_down > 0.5
    assert 1.7 < ratio < 2.3
    p_up, p_down, _ = stats.rank_test(base, cur, 1.2)
    assert p_down == pytest.approx(stats.min_p_value(10)) and p_up > 0.5


def test_compare_refuses_an_impossible_level():
    cur = {"pairs": {f"toy/e{i}": {"task": "toy", "estimator": f"e{i}", "status": "measured",
                                   "m": 8, "groups": [1.0, 2.0, 3.0], "grad_var": 2.0}
                     for i in range(5)}}
    with pytest.raises(settings.CheckError, match="cannot reach"):
        stats.compare(cur, cur)


def test_zero_variance_pairs():
    def doc(v):
        return {"pairs": {"toy/x": {"task": "toy", "estimator": "x", "status": "measured",
                                    "m": 8, "groups": v, "grad_var": float(np.mean(v))}}}
    zero, noisy = [0.0] * 10, [1e-3] * 10
    rows, _ = stats.compare(doc(zero), doc(zero))
    assert rows[0].status == "ok"
    rows, _ = stats.compare(doc(zero), doc(noisy))
    assert rows[0].status == "REGRESSION"


# --- the gate end to end: a planted regression, and 20 clean reruns -------------------------

@pytest.fixture(scope="module")
def small_baseline():
    return measure.measure(SMALL, PAIRS, seed=0)


@pytest.mark.parametrize("planted", CORE)
def test_gate_catches_doubled_noise(small_baseline, planted):
    factories = {planted: lambda: measure.DoubledNoise(settings.make_estimator(planted))}
    pairs = [p for p in PAIRS if p[1] == planted]
    cur = measure.measure(SMALL, pairs, seed=1, factories=factories)
    rows, _ = stats.compare(small_baseline, cur)
    assert {(r.task, r.status) for r in rows} == {(t, "REGRESSION") for t, _ in pairs}
    assert all(1.6 < r.ratio < 2.5 for r in rows)


@pytest.mark.slow
def test_unchanged_tree_passes_20_reruns(small_baseline):
    statuses = set()
    for seed in range(1, 21):
        cur = measure.measure(SMALL, PAIRS, seed=seed)
        baselines.check_compatible(dict(small_baseline, schema=settings.SCHEMA), cur)
        rows, summary = stats.compare(small_baseline, cur)
        assert not failures(rows), (seed, failures(rows))
        statuses |= {r.status for r in rows}
        assert summary["compared"] == len(PAIRS)
    assert "ok" in statuses


def test_new_estimator_is_reported_and_binary_only_is_skipped(small_baseline):
    class BinaryOnly(estimators.Estimator):  # not registered: the registry stays as it is
        binary_only = True
        hard_forward = True

        def estimate(self, logits, f):
            return settings.make_estimator("reinforce").estimate(logits, f)

    def make():
        e = BinaryOnly()
        e.name = "brand_new"
        return e
    pairs = [("toy", "brand_new"), ("categorical_vae", "brand_new")]
    cur = measure.measure(SMALL, pairs, seed=1, factories={"brand_new": make})
    rows, _ = stats.compare(small_baseline, cur)
    got = {r.task: r for r in rows}
    assert got["toy"].status == "new" and not got["toy"].fails
    skipped = got["categorical_vae"]
    assert skipped.status == "skipped" and "binary-only" in skipped.note


def test_broken_estimator_is_an_error_not_a_traceback(small_baseline):
    class Broken(estimators.Estimator):
        def estimate(self, logits, f):
            raise RuntimeError("boom")

    def make():
        e = Broken()
        e.name = "reinforce"
        return e
    cur = measure.measure(SMALL, [("toy", "reinforce")], seed=1, factories={"reinforce": make})
    rows, _ = stats.compare(small_baseline, cur)
    assert rows[0].status == "ERROR" and "boom" in rows[0].note and rows[0].fails


# --- the command line (toy task: fast) ---------------------------------------------------------

def run_main(capsys, *args):
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def toy_dirs(tmp_path, capsys):
    base, out = tmp_path / "baselines", tmp_path / "out"
    code, _, err = run_main(capsys, "--update", "--tasks", "toy", "--estimators", CLI_ESTIMATORS,
                            "--no-timing", "--baselines", str(base), "--out", str(out))
    assert code == 0, err
    return base, out


def test_cli_update_check_plant_and_missing(toy_dirs, capsys):
    base, out = toy_dirs
    common = ["--tasks", "toy", "--estimators", CLI_ESTIMATORS, "--no-timing",
              "--baselines", str(base), "--out", str(out)]
    doc = json.loads((base / settings.VARIANCE_FILE).read_text())
    assert doc["seed"] == settings.UPDATE_SEED and doc["settings"] == settings.Settings().to_json()
    assert set(doc["pairs"]) == {f"toy/{n}" for n in CLI_ESTIMATORS.split(",")}

    code, text, _ = run_main(capsys, *common)
    assert code == 0 and "passed" in text
    verdicts = json.loads((out / "grad_variance.json").read_text())["verdicts"]
    assert {v["status"] for v in verdicts} <= {"ok", "improved"}

    code, text, _ = run_main(capsys, *common, "--plant-noise", "reinforce")
    assert code == 1 and "toy/reinforce (REGRESSION)" in text

    # an estimator without a baseline is reported as new and does not fail ...
    doc["pairs"].pop("toy/gumbel_softmax")
    (base / settings.VARIANCE_FILE).write_text(json.dumps(doc))
    code, text, _ = run_main(capsys, *common)
    assert code == 0 and "new" in text and "--update-missing" in text
    # ... and --update-missing adds it, leaving the other baselines as they were
    code, _, _ = run_main(capsys, *common, "--update-missing")
    assert code == 0
    doc2 = json.loads((base / settings.VARIANCE_FILE).read_text())
    assert "toy/gumbel_softmax" in doc2["pairs"]
    assert doc2["pairs"]["toy/reinforce"] == doc["pairs"]["toy/reinforce"]
    # --update NAME rewrites that estimator's baseline only
    code, _, _ = run_main(capsys, *common, "--update", "reinforce", "--seed", "7")
    doc3 = json.loads((base / settings.VARIANCE_FILE).read_text())
    assert code == 0 and doc3["pairs"]["toy/reinforce"] != doc2["pairs"]["toy/reinforce"]
    assert doc3["pairs"]["toy/exact"] == doc2["pairs"]["toy/exact"]


@pytest.mark.parametrize("args,match", [
    (["--tasks", "nope"], "--tasks: unknown 'nope'"),
    (["--estimators", "nope"], "--estimators: unknown 'nope'"),
    (["--plant-noise", "nope"], "--plant-noise: unknown estimator 'nope'"),
    (["--tolerance", "0.5"], "--tolerance must be >= 1"),
    (["--threads", "0"], "--threads must be >= 1"),
])
def test_cli_bad_options_are_one_line_errors(toy_dirs, capsys, args, match):
    base, out = toy_dirs
    code, _, err = run_main(capsys, "--tasks", "toy", "--estimators", "reinforce", "--no-timing",
                            "--baselines", str(base), "--out", str(out), *args)
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1


def test_cli_refuses_missing_or_incompatible_baselines(toy_dirs, tmp_path, capsys):
    base, out = toy_dirs
    common = ["--tasks", "toy", "--estimators", "reinforce", "--no-timing", "--out", str(out)]
    code, _, err = run_main(capsys, *common, "--baselines", str(tmp_path / "none"))
    assert code == 2 and "no baseline" in err and "--update" in err
    path = base / settings.VARIANCE_FILE
    doc = json.loads(path.read_text())
    path.write_text(json.dumps(dict(doc, settings=dict(doc["settings"], groups=99))))
    code, _, err = run_main(capsys, *common, "--baselines", str(base))
    assert code == 2 and "other settings (groups)" in err
    fp = dict(doc["fingerprints"], toy=dict(doc["fingerprints"]["toy"], sum=1.5))
    path.write_text(json.dumps(dict(doc, fingerprints=fp)))
    code, _, err = run_main(capsys, *common, "--baselines", str(base))
    assert code == 2 and "toy model/data differ" in err


@pytest.mark.slow
def test_cli_with_timing_writes_pytest_benchmark_json(toy_dirs, tmp_path):
    """The whole command in a fresh process, the pytest-benchmark suite included."""
    base, _ = toy_dirs
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "bench", "check", "--tasks", "toy", "--estimators",
         "reinforce,exact", "--baselines", str(base), "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "time per estimate" in res.stdout and "never enforced" in res.stdout
    doc = json.loads((out / "benchmark.json").read_text())
    got = {b["extra_info"]["estimator"]: b for b in doc["benchmarks"]}
    assert set(got) == {"reinforce", "exact"}
    assert got["reinforce"]["extra_info"]["grad_var"] > 0 and got["exact"]["stats"]["median"] > 0


# --- the committed baselines ----------------------------------------------------------------

def test_committed_baselines_are_valid():
    doc = json.loads((settings.BASELINE_DIR / settings.VARIANCE_FILE).read_text())
    fixed = settings.Settings()
    assert doc["schema"] == settings.SCHEMA and doc["settings"] == fixed.to_json()
    assert doc["seed"] != settings.CHECK_SEED  # the check's samples are independent of them
    assert set(doc["fingerprints"]) == set(settings.TASKS)
    assert doc["pairs"]
    for key, e in doc["pairs"].items():
        assert e["status"] == "measured" and key == f"{e['task']}/{e['estimator']}"
        assert len(e["groups"]) == fixed.groups and e["m"] == fixed.m_for(e["task"])
        assert all(v >= 0 and math.isfinite(v) for v in e["groups"])
    timing = json.loads((settings.BASELINE_DIR / settings.TIMING_FILE).read_text())
    assert {(b["extra_info"]["task"], b["extra_info"]["estimator"])
            for b in timing["benchmarks"]} <= {tuple(k.split("/")) for k in doc["pairs"]}
