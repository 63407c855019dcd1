"""Checkpoints and resume (bench/checkpoint.py): a run stopped mid-way -- by an
exception in-process, by a real SIGKILL or SIGTERM of ``python -m bench run`` --
and run again resumes from its last checkpoint and writes exactly the values an
uninterrupted run with the same seed writes (timings aside); a damaged checkpoint
is named and passed over; checkpoints are gone once the run has ended."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bench import checkpoint, results
from bench.config import config_hash
from bench.jobs import run
from bench.loop import Trainer
from bench.paths import CONF_DIR, REPO_DIR

VAE = ["task.encoder_hidden=[32]", "task.decoder_hidden=[32]"]
SMALL = ["train.batch_size=50",
         "eval.grad_samples=4", "eval.nll_samples=4", "train.save_model=false",
         "eval.nll_every_eval=true"]
TIMING = {"step_time_s", "steps_per_s", "train_time_s", "wall_s"}
KEY = ["step", "metric"]


def cfg_for(root, *overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*SMALL, f"results_dir={root}", *overrides])
        return OmegaConf.to_container(cfg, resolve=True)


def values(root):
    df = results.load(root)
    assert df["run_id"].nunique() == 1 and set(df["status"]) == {"complete"}
    df = df[~df["metric"].isin(TIMING)]
    assert not df.duplicated(KEY).any()
    return df.set_index(KEY)["value"].sort_index()


def assert_identical(a, b):
    assert a.index.equals(b.index), (a.index.difference(b.index), b.index.difference(a.index))
    same = (a == b) | (a.isna() & b.isna())
    assert same.all(), pd.DataFrame({"a": a, "b": b})[~same]


def ckpt_files(root):
    return sorted(Path(root).rglob("checkpoint*.pt"))


@pytest.fixture(autouse=True)
def _restore_fp_mode():
    yield
    torch.set_flush_denormal(False)


# (task, estimator overrides): state in the model, in an estimator's tensors (EMA
# baseline, one per SBN layer), in a lazily built control-variate network and optimizer
CASES = {
    "vae-relax": ["task=categorical_vae", *VAE, "estimator=relax"],
    "sbn-reinforce-ema": ["task=sbn", "task.latents=8", "task.hidden=[]", "estimator=reinforce",
                          "estimator.baseline=ema"],
    "bvae-gs-annealed": ["task=bernoulli_vae", *VAE, "task.latents=16", "estimator=gumbel_softmax",
                         "estimator.anneal_rate=0.01", "estimator.anneal_every=7"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_resumed_run_equals_uninterrupted_run(tmp_path, monkeypatch, case):
    over = [*CASES[case], "train.steps=120", "eval.every=30", "train.checkpoint_every=40"]
    assert run(cfg_for(tmp_path / "straight", *over)) == "complete"
    assert not ckpt_files(tmp_path / "straight")  # removed once complete

    real = Trainer.step

    def killed_at_100(self, step, check=False):
        if step == 99:  # after the step-90 rows, 20 steps past the step-80 checkpoint
            raise KeyboardInterrupt
        return real(self, step, check)

    monkeypatch.setattr(Trainer, "step", killed_at_100)
    cfg = cfg_for(tmp_path / "faulted", *over)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    (ck,) = [p for p in ckpt_files(tmp_path / "faulted") if p.name == checkpoint.LATEST]
    assert checkpoint.read(ck)["step"] == 80
    monkeypatch.setattr(Trainer, "step", real)
    assert run(cfg) == "complete"
    assert results.load(tmp_path / "faulted", all_runs=True)["run_id"].nunique() == 1
    assert not ckpt_files(tmp_path / "faulted")
    assert_identical(values(tmp_path / "straight"), values(tmp_path / "faulted"))


def test_without_checkpoint_resume_differs(tmp_path, monkeypatch):
    """Power: had the run restarted from the checkpointed model but a fresh estimator
    (its control variate lost), the numbers would differ."""
    over = [*CASES["vae-relax"], "train.steps=120", "eval.every=30", "train.checkpoint_every=40"]
    run(cfg_for(tmp_path / "straight", *over))
    real_restore = checkpoint.restore

    def forgetful(state, task, est, trainer, clock):
        state["estimators"] = [type(est)().state_dict()]
        return real_restore(state, task, est, trainer, clock)

    real = Trainer.step

    def killed(self, step, check=False):
        if step == 99:
            raise KeyboardInterrupt
        return real(self, step, check)

    cfg = cfg_for(tmp_path / "faulted", *over)
    monkeypatch.setattr(Trainer, "step", killed)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    monkeypatch.setattr(Trainer, "step", real)
    monkeypatch.setattr(checkpoint, "restore", forgetful)
    run(cfg)
    with pytest.raises(AssertionError):
        assert_identical(values(tmp_path / "straight"), values(tmp_path / "faulted"))


def test_damaged_checkpoint_is_named_and_the_previous_one_used(tmp_path, monkeypatch, caplog):
    over = [*VAE, "train.steps=120", "eval.every=30", "train.checkpoint_every=40"]
    run(cfg_for(tmp_path / "straight", *over))
    real = Trainer.step

    def killed(self, step, check=False):
        if step == 99:
            raise KeyboardInterrupt
        return real(self, step, check)

    cfg = cfg_for(tmp_path / "faulted", *over)
    monkeypatch.setattr(Trainer, "step", killed)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    monkeypatch.setattr(Trainer, "step", real)
    run_dir = next((tmp_path / "faulted" / "runs").glob("*/*"))
    latest = run_dir / checkpoint.LATEST
    data = bytearray(latest.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    latest.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match="damaged"):
        checkpoint.read(latest)
    assert checkpoint.read(run_dir / checkpoint.PREVIOUS)["step"] == 40
    with caplog.at_level("INFO", logger="bench"):
        assert run(cfg) == "complete"
    warned = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(warned) == 1 and str(latest) in warned[0]
    assert any("at step 40" in r.getMessage() for r in caplog.records)
    assert_identical(values(tmp_path / "straight"), values(tmp_path / "faulted"))


def test_all_checkpoints_damaged_starts_afresh(tmp_path, monkeypatch):
    over = [*VAE, "train.steps=60", "eval.every=30", "train.checkpoint_every=20"]
    real = Trainer.step

    def killed(self, step, check=False):
        if step == 50:
            raise KeyboardInterrupt
        return real(self, step, check)

    cfg = cfg_for(tmp_path, *over)
    monkeypatch.setattr(Trainer, "step", killed)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    monkeypatch.setattr(Trainer, "step", real)
    for p in ckpt_files(tmp_path):
        p.write_bytes(p.read_bytes()[:100])  # truncated
    assert run(cfg) == "complete"
    df = results.load(tmp_path, all_runs=True)
    assert df["run_id"].nunique() == 2  # a fresh run; the first one's rows stay on disk


def test_checkpoint_every_does_not_change_the_config_hash(tmp_path):
    a = cfg_for(tmp_path, "train.checkpoint_every=0")
    b = cfg_for(tmp_path, "train.checkpoint_every=7")
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(cfg_for(tmp_path, "train.check_every=2"))


def test_bad_checkpoint_every_is_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "bench", "run", f"results_dir={tmp_path}",
                          "train.checkpoint_every=-1"], capture_output=True, text=True,
                         cwd=REPO_DIR, timeout=120)
    assert res.returncode != 0 and "train.checkpoint_every" in res.stderr
    assert "Traceback" not in res.stderr


# --- real processes --------------------------------------------------------------

PROC = [*SMALL, *VAE, "task=categorical_vae", "estimator=reinforce", "estimator.baseline=ema",
        "train.steps=3000", "eval.every=250", "train.checkpoint_every=200", "threads=1"]


def bench(root, log_name, **kw):
    log = open(f"{root}.{log_name}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "bench", "run", *PROC, f"results_dir={root}"],
                            cwd=REPO_DIR, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, **kw)


def wait_for(proc, cond, what, timeout=240):
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc={proc.returncode}) before {what}")
        if time.monotonic() - t0 > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"never reached {what}")
        time.sleep(0.01)


def checkpointed_mid_run(root):
    def cond():
        dirs = [d for d in (Path(root) / "runs").glob("*/*") if d.is_dir()]
        return any((d / checkpoint.LATEST).exists() and not (d / "status.json").exists()
                   and any(s > 0 for s in checkpoint.recorded_steps(d)) for d in dirs)
    return cond


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt") / "straight"
    proc = bench(root, "straight")
    assert proc.wait(timeout=600) == 0
    return values(root)


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_bit_identically(tmp_path, straight):
    root = tmp_path / "killed"
    proc = bench(root, "first")
    wait_for(proc, checkpointed_mid_run(root), "a checkpoint mid-run")
    time.sleep(0.3)  # land somewhere after the checkpoint
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    (run_dir,) = [d for d in (root / "runs").glob("*/*")]
    assert not (run_dir / "status.json").exists()
    step = checkpoint.usable(run_dir, run_dir.parent.name)["step"]
    assert 0 < step < 3000
    proc = bench(root, "second")
    assert proc.wait(timeout=600) == 0
    log = Path(f"{root}.second.log").read_text()
    assert f"from its checkpoint at step {step}" in log
    assert not ckpt_files(root)
    assert_identical(straight, values(root))


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_exits_and_resumes_bit_identically(tmp_path, straight):
    root = tmp_path / "termed"
    proc = bench(root, "first")
    wait_for(proc, checkpointed_mid_run(root), "a checkpoint mid-run")
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    log = Path(f"{root}.first.log").read_text()
    assert "SIGTERM: checkpoint written at step" in log and "Traceback" not in log
    step = int(log.split("SIGTERM: checkpoint written at step ")[1].split(";")[0])
    (run_dir,) = [d for d in (root / "runs").glob("*/*")]
    assert checkpoint.read(run_dir / checkpoint.LATEST)["step"] == step
    proc = bench(root, "second")
    assert proc.wait(timeout=600) == 0
    assert f"from its checkpoint at step {step}" in Path(f"{root}.second.log").read_text()
    assert_identical(straight, values(root))
