"""Faults with real processes and signals (tests/test_runner.py covers the in-process
cases): a grid killed with SIGKILL, then interrupted with SIGINT, then re-run to the end;
runs that really diverge (no injected NaN) inside a grid that goes on; bit-identical
numbers from separate processes with the same seed on CPU.

One small grid is run twice, each time as ``python -m bench run -m ...`` processes in
their own process group (tiny models, the embedded ``digits`` data, one torch thread):

  straight   run through once;
  faulted    run, SIGKILL mid-run; re-run, SIGINT mid-run; re-run to the end.

Its first job diverges for real (learning rate 1e15), so the same grid also shows a
divergence being recorded while the grid goes on.
"""

import json
import math
import os
import shutil
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

import tasks
from bench import results
from bench.config import apply_cpu_settings, build_estimator
from bench.loop import Trainer
from bench.paths import CONF_DIR, REPO_DIR
from tasks import datasets

SMALL = ["task.encoder_hidden=[32]", "task.decoder_hidden=[32]", "train.batch_size=50",
         "eval.grad_samples=4", "eval.nll_samples=4", "threads=1", "train.save_model=false"]
GRID = ["estimator=gumbel_softmax,concrete_kl", "train.lr=1e15,0.001", "train.steps=300",
        "eval.every=50", "eval.nll_every_eval=true"]
STEPS = list(range(0, 301, 50))
# measured times: the only values allowed to differ
TIMING = {"step_time_s", "steps_per_s", "train_time_s", "wall_s"}
KEY = ["config_hash", "step", "metric"]


def bench_args(root):
    return [sys.executable, "-m", "bench", "run", "-m", *SMALL, f"results_dir={root}", *GRID]


def finish(root):
    res = subprocess.run(bench_args(root), cwd=REPO_DIR, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def run_dirs(root):
    return sorted(p for p in (Path(root) / "runs").glob("*/*") if p.is_dir())


def interrupt(root, sig, timeout=240):
    """Start the grid; once some run has finished and a run started by this process has
    written >= 2 evaluations (so it has trained) but not finished, send ``sig`` to the
    whole process group."""
    seen = set(run_dirs(root))
    with open(f"{root}.{sig.name}.log", "w") as log:
        proc = subprocess.Popen(bench_args(root), cwd=REPO_DIR, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def mid_run():  # some run has finished, and a run started here is partway
        dirs = run_dirs(root)
        return (any((d / "status.json").exists() for d in dirs)
                and any(not (d / "status.json").exists()
                        and len(list(d.glob("rows-*.csv"))) >= 2
                        for d in dirs if d not in seen))

    t0 = time.monotonic()
    while not mid_run():
        if proc.poll() is not None:
            pytest.fail(f"the grid ended (rc={proc.returncode}) before it could be "
                        f"interrupted; see {root}.{sig.name}.log")
        if time.monotonic() - t0 > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the grid never reached mid-run")
        time.sleep(0.01)
    os.killpg(proc.pid, sig)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the grid did not stop within 60 s of {sig.name}")


@pytest.fixture(scope="module")
def grids(tmp_path_factory):
    base = tmp_path_factory.mktemp("grids")
    straight, faulted = base / "straight", base / "faulted"
    finish(straight)
    rc_kill = interrupt(faulted, signal.SIGKILL)
    after_kill = results.load(faulted, all_runs=True)
    rc_int = interrupt(faulted, signal.SIGINT)
    shutil.copytree(faulted, base / "after_sigint")  # the store as SIGINT left it
    finish(faulted)
    return {"straight": straight, "faulted": faulted, "after_kill": after_kill,
            "rc_kill": rc_kill, "after_sigint": base / "after_sigint", "rc_int": rc_int}


def values(df):
    """Stored values keyed by (config_hash, step, metric), timings left out."""
    df = df[~df["metric"].isin(TIMING)]
    assert not df.duplicated(KEY).any()
    return df.set_index(KEY)["value"].sort_index()


def assert_identical(a, b):
    assert a.index.equals(b.index)
    same = (a == b) | (a.isna() & b.isna())
    assert same.all(), pd.DataFrame({"a": a, "b": b})[~same]


def lr_of(root, df):
    """train.lr of each row's config, from the run's meta.json."""
    lrs = {h: json.loads(next((Path(root) / "runs" / h).glob("*/meta.json")).read_text())
           ["config"]["train"]["lr"] for h in df["config_hash"].unique()}
    return df["config_hash"].map(lrs)


@pytest.mark.slow
def test_sigkill_mid_grid_then_rerun_loses_and_duplicates_nothing(grids):
    assert grids["rc_kill"] == -signal.SIGKILL
    before = grids["after_kill"]
    done_before = set(before.loc[before["status"] != "incomplete", "run_id"])
    partial = before[before["status"] == "incomplete"]
    assert done_before and partial["step"].nunique() >= 2  # the kill landed mid-run

    df = results.load(grids["faulted"])
    # nothing lost: every config of the grid; every evaluation of the finished ones
    assert df["config_hash"].nunique() == 4
    assert df.groupby("config_hash")["run_id"].nunique().eq(1).all()
    finished = df[df["status"] == "complete"]
    assert finished["config_hash"].nunique() == 2
    assert finished.groupby("config_hash")["step"].apply(lambda s: sorted(set(s)) == STEPS).all()
    # nothing duplicated
    assert not df.duplicated(KEY).any()
    # runs finished before the kill were kept, not redone
    assert done_before <= set(df["run_id"])
    assert_identical(values(before[before["run_id"].isin(done_before)]),
                     values(df[df["run_id"].isin(done_before)]))
    # the killed run's rows stay on disk, and the re-run reproduced them exactly
    assert set(partial["run_id"]) <= set(results.load(grids["faulted"], all_runs=True)["run_id"])
    redone = df[df.set_index(KEY).index.isin(partial.set_index(KEY).index)]
    assert_identical(values(partial), values(redone))
    # the store ends exactly as if the grid had never been interrupted
    assert_identical(values(df), values(results.load(grids["straight"])))


@pytest.mark.slow
def test_sigint_leaves_a_consistent_store(grids):
    assert grids["rc_int"] != 0  # interrupted, not finished
    root = grids["after_sigint"]
    n_rows = 0
    for d in run_dirs(root):
        assert json.loads((d / "meta.json").read_text())["run_id"] == d.name
        if (d / "status.json").exists():
            assert json.loads((d / "status.json").read_text())["status"] in ("complete",
                                                                          "diverged")
        for f in sorted(d.glob("rows-*.csv")):
            rows = pd.read_csv(f)
            assert list(rows.columns) == results.COLUMNS
            assert len(rows) and rows["value"].notna().all() and rows["run_id"].eq(d.name).all()
            assert (rows["step"] == int(f.stem.split("-")[1])).all()
            n_rows += len(rows)
    leftovers = [p.name for p in root.rglob(".tmp-*")]  # half-written files are removed
    assert not leftovers, leftovers
    df = results.load(root, all_runs=True)
    assert len(df) == n_rows
    # the interrupted run is incomplete, and what it wrote is what the finished run wrote
    interrupted = df[(df["status"] == "incomplete")
                     & ~df["run_id"].isin(grids["after_kill"]["run_id"])]
    assert interrupted["run_id"].nunique() == 1 and interrupted["step"].nunique() >= 2
    final = results.load(grids["faulted"])
    assert_identical(values(interrupted),
                     values(final[final.set_index(KEY).index.isin(interrupted.set_index(KEY).index)]))


def first_nonfinite_step(cfg, steps):
    """Train as the runner does (same seed, same construction order) and return the
    first step whose objective, any gradient, or any parameter after its update is not
    finite (Adam's update can overflow from finite gradients at lr 1e15)."""
    threads = torch.get_num_threads()
    apply_cpu_settings(cfg)
    try:
        torch.manual_seed(int(cfg["seed"]))
        data = datasets.load(cfg["dataset"], cfg.get("data_dir"), torch.device("cpu"))
        task = tasks.build(cfg["task"], data, torch.device("cpu"))
        est = build_estimator(cfg)
        trainer = Trainer(task, est, data, cfg["train"]["batch_size"], cfg["train"]["lr"])
        task.train()
        for step in range(1, steps + 1):
            est.set_step(step - 1)
            obj, _ = task.loss(trainer.next_batch(), est)
            trainer.opt.zero_grad(set_to_none=True)
            obj.backward()
            grads = [p.grad for p in task.parameters() if p.grad is not None]
            if not (torch.isfinite(obj) and all(torch.isfinite(g).all() for g in grads)):
                return step
            trainer.opt.step()
            if not all(torch.isfinite(p).all() for p in task.parameters()):
                return step
        return None
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(False)


def cfg_for(root, *overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*SMALL, f"results_dir={root}", *overrides])
        return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.slow
def test_real_divergence_is_recorded_with_its_step_and_the_grid_goes_on(grids):
    """A learning rate of 1e15 really overflows. With gumbel_softmax Adam's update turns
    parameters NaN from finite gradients; with concrete_kl the gradients turn non-finite
    one step before the objective does; in each case that step is the one to record."""
    root = grids["straight"]
    df = results.load(root)
    lr = lr_of(root, df)
    for est in ("gumbel_softmax", "concrete_kl"):
        good = df[(df["estimator"] == est) & (lr == 0.001)]
        bad = df[(df["estimator"] == est) & (lr == 1e15)]
        assert set(good["status"]) == {"complete"}  # the grid went on past the failure
        assert sorted(good["step"].unique()) == STEPS
        assert set(bad["status"]) == {"diverged"}
        recorded = bad.loc[bad["metric"] == "diverged", ["step", "value"]].values.tolist()
        expected = first_nonfinite_step(cfg_for(root, f"estimator={est}", "train.lr=1e15"), 50)
        assert expected is not None
        assert recorded == [[expected, float(expected)]], (est, recorded, expected)
        # no evaluation after the divergence, and nothing non-finite stored as a result
        assert bad["step"].max() == expected
        assert bad.loc[bad["metric"] != "diverged", "value"].map(math.isfinite).all()


@pytest.mark.slow
def test_same_seed_on_cpu_gives_identical_numbers_in_two_processes(grids):
    a, b = (results.load(grids[k]) for k in ("straight", "faulted"))
    assert set(a["run_id"]).isdisjoint(b["run_id"])  # separate runs of each config
    assert {"train_neg_elbo", "test_nll", "grad_var", "train_objective",
            "diverged"} <= set(a["metric"])
    assert_identical(values(a), values(b))
    # power: the comparison sees a change in the last bit of any one value
    va = values(a)
    for i in (0, len(va) // 2, len(va) - 1):
        nudged = va.copy()
        nudged.iloc[i] = math.nextafter(nudged.iloc[i], math.inf)
        with pytest.raises(AssertionError):
            assert_identical(va, nudged)
