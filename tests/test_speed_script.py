"""bench.speed runs (on its synthetic stand-in when binarized MNIST is absent) and
reports every variant and ratio it documents; the ratios are the quotients of the
rates it reports."""

import json

import pytest

from bench import speed


def test_speed_script_prints_and_writes_the_ratios(tmp_path, capsys):
    out = tmp_path / "speed.json"
    rc = speed.main(["--steps", "2", "--rounds", "1", "--stack", "2", "--clock", "cpu",
                     "--data_dir", str(tmp_path), "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    for line in ("runner", "plain", "matmul", "stacked", "runner / plain", "synthetic"):
        assert line in text
    info = json.loads(out.read_text())
    rate = info["steps_per_s"]
    assert set(rate) >= {"runner", "plain", "matmul", "stacked"}
    assert all(v > 0 for v in rate.values())
    assert info["runner_over_plain"] == pytest.approx(rate["runner"] / rate["plain"])
    assert info["runner_over_matmul_bound"] == pytest.approx(rate["runner"] / rate["matmul"])
    assert info["stacked_over_plain"] == pytest.approx(rate["stacked"] / rate["plain"])


def test_cpu_clock_needs_one_thread():
    with pytest.raises(SystemExit):
        speed.main(["--clock", "cpu", "--threads", "2", "--steps", "1", "--rounds", "1"])
