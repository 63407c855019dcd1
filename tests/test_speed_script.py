"""`python -m bench speed` runs (on its synthetic stand-in when binarized MNIST is absent) and
reports every variant and ratio it documents; the ratios are the quotients of the
rates it reports."""

import json

import pytest
import torch

from bench.studies import speed


def test_speed_script_prints_and_writes_the_ratios(tmp_path, capsys):
    out = tmp_path / "speed.json"
    rc = speed.main(["--steps", "2", "--rounds", "1", "--warmup", "2", "--stack", "2",
                     "--clock", "cpu", "--data_dir", str(tmp_path), "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    for line in ("runner", "plain", "plain_ftz", "matmul", "stacked", "runner / plain",
                 "runner / plain_ftz", "synthetic", "after 2 warm-up steps"):
        assert line in text
    info = json.loads(out.read_text())
    rate = info["steps_per_s"]
    assert set(rate) >= {"runner", "plain", "plain_ftz", "matmul", "stacked"}
    assert all(v > 0 for v in rate.values())
    assert info["runner_over_plain"] == pytest.approx(rate["runner"] / rate["plain"])
    assert info["runner_over_matmul_bound"] == pytest.approx(rate["runner"] / rate["matmul"])
    assert info["stacked_over_plain"] == pytest.approx(rate["stacked"] / rate["plain"])
    assert info["runner_over_plain_ftz"] == pytest.approx(rate["runner"] / rate["plain_ftz"])


def flushed() -> bool:
    """Whether this thread flushes subnormal floats to zero (2 * 1e-39 is subnormal)."""
    return (torch.tensor([1e-39]) * 2.0).item() == 0.0


def test_each_variant_runs_in_its_own_floating_point_mode():
    seen = {}

    def fn(name):
        return lambda n: seen.setdefault(name, set()).add(flushed())

    fns = {k: fn(k) for k in ("runner", "plain", "plain_ftz")}
    speed.measure(fns, 1, 2, torch.device("cpu"), flush={"runner": True, "plain_ftz": True},
                  warmup=1)
    assert seen == {"runner": {True}, "plain": {False}, "plain_ftz": {True}}
    assert not flushed()  # left as torch's default


def test_cpu_clock_needs_one_thread():
    with pytest.raises(SystemExit):
        speed.main(["--clock", "cpu", "--threads", "2", "--steps", "1", "--rounds", "1"])
