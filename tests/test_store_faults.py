"""Faults around the store, with real processes: two grids at once (one trainer per
config, each grid its own Hydra folder), stale and live locks, SIGTERM, a full disk,
an unwritable results_dir, and Hydra input that would run code.

The full disk is simulated with a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) in
the child process: its writes past the limit fail with EFBIG, as writes to a full
disk fail with ENOSPC, through the same code path -- no disk is filled.
"""

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import results
from bench.paths import REPO_DIR
from bench.store.lock import ConfigLock
from bench.store.verify import verify

SMALL = ["task.encoder_hidden=[16]", "task.decoder_hidden=[16]", "train.batch_size=50",
         "eval.grad_samples=4", "eval.nll_samples=4", "threads=1", "train.steps=20",
         "eval.every=10", "train.save_model=false"]


def cmd(*args):
    return [sys.executable, "-m", "bench", *map(str, args)]


def bench(*args, timeout=300, **kw):
    return subprocess.run(cmd(*args), cwd=REPO_DIR, capture_output=True, text=True,
                          timeout=timeout, **kw)


def leftovers(root):
    return [p for p in Path(root).rglob("*") if p.name.startswith((".tmp-", ".lock"))]


@pytest.mark.slow
def test_two_identical_grids_split_the_work(tmp_path):
    args = cmd("run", "-m", "seed=0,1,2,3,4,5", *SMALL, f"results_dir={tmp_path}")
    procs = [subprocess.Popen(args, cwd=REPO_DIR, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    runs = list((tmp_path / "runs").glob("*/*"))
    assert len(runs) == 6  # every config trained once, by one of the two
    assert len({r.parent for r in runs}) == 6
    df = results.load(tmp_path)
    assert df.groupby("config_hash")["run_id"].nunique().eq(1).all()
    assert set(df["status"]) == {"complete"}
    # each config was trained by one grid and skipped by the other, with one line
    skipped = sum(o.count("skipped: config") for o in outs)
    assert skipped == 6, outs
    # two Hydra log folders, one per grid
    assert len(list((tmp_path / "hydra" / "multirun").glob("*/*"))) == 2
    assert not leftovers(tmp_path)


def test_an_in_process_run_does_not_hand_its_grid_id_to_later_processes(tmp_path, monkeypatch):
    """`bench run` sets BENCH_RUN_ID (its Hydra folder) for itself only: a process that
    ran it in-process would otherwise give every `bench run` it starts later the same
    log folder (two grids, one folder)."""
    from bench import cli

    monkeypatch.delenv("BENCH_RUN_ID", raising=False)
    assert cli.main(["run", *SMALL, "train.steps=2", "eval.every=2",
                     f"results_dir={tmp_path}"]) == 0
    assert "BENCH_RUN_ID" not in os.environ
    monkeypatch.setenv("BENCH_RUN_ID", "mine")  # a user's own id is kept
    assert cli.main(["run", *SMALL, "train.steps=2", "eval.every=2", "seed=1",
                     f"results_dir={tmp_path}"]) == 0
    assert os.environ["BENCH_RUN_ID"] == "mine"
    assert list((tmp_path / "hydra").glob("*/*-mine"))


def test_lock_heartbeat_stale_takeover_and_live_owner(tmp_path):
    path = tmp_path / "runs" / "h" / ".lock"
    a = ConfigLock(path, stale_s=0.6)
    assert a.acquire()
    t0 = path.stat().st_mtime
    time.sleep(1.0)  # > stale_s: only the heartbeat keeps it fresh
    assert path.stat().st_mtime > t0
    b = ConfigLock(path, stale_s=0.6)
    assert not b.acquire() and b.owner()["token"] == a.token
    a.release()
    assert not path.exists()
    # a lock left by a crashed process of this host: taken over at once
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "token": "x"}))
    c = ConfigLock(path, stale_s=300)
    assert c.acquire() and json.loads(path.read_text())["token"] == c.token
    c.release()
    # another host's lock: live while it beats, taken over once older than stale_s
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "y"}))
    assert not ConfigLock(path, stale_s=300).acquire()
    old = time.time() - 301
    os.utime(path, (old, old))
    d = ConfigLock(path, stale_s=300)
    assert d.acquire()
    d.release()


@pytest.mark.slow
def test_a_live_lock_of_another_host_skips_the_config(tmp_path):
    from bench.cli import job_configs
    from bench.config import config_hash

    cfg = job_configs([*SMALL, f"results_dir={tmp_path}"], False)[0]
    lock = tmp_path / "runs" / config_hash(cfg) / ".lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"host": "node17", "pid": 4242, "token": "z"}))
    res = bench("run", *SMALL, f"results_dir={tmp_path}")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "being trained by node17:4242" in res.stdout + res.stderr
    assert not [p for p in (tmp_path / "runs").glob("*/*") if p.is_dir()]  # none trained
    old = time.time() - 120
    os.utime(lock, (old, old))  # its owner stopped beating a while ago
    res = bench("run", *SMALL, f"results_dir={tmp_path}", "store.lock_stale_s=60")
    assert res.returncode == 0 and results.load(tmp_path)["status"].eq("complete").all()
    assert not lock.exists()


@pytest.mark.slow
def test_sigterm_is_handled_like_sigint(tmp_path):
    args = cmd("run", *SMALL, "train.steps=100000", "eval.every=20", f"results_dir={tmp_path}")
    proc = subprocess.Popen(args, cwd=REPO_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    t0 = time.monotonic()
    while len(list(tmp_path.glob("runs/*/*/rows-*.csv"))) < 2:
        assert proc.poll() is None and time.monotonic() - t0 < 200
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # what Slurm sends at preemption
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    last = err.strip().splitlines()[-1]
    assert last.startswith("terminated (SIGTERM): every row written so far is kept")
    assert not leftovers(tmp_path)  # no temporary file, and the lock released
    assert not verify(tmp_path).damaged
    df = results.load(tmp_path)
    assert set(df["status"]) == {"incomplete"} and df["step"].nunique() >= 2


def _fsize_limit(nbytes):
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit: EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return pre


@pytest.mark.slow
def test_a_full_disk_ends_with_one_line_naming_the_file_and_leaves_nothing(tmp_path):
    # the default model (~1 MB) cannot be written; rows, meta and Hydra's logs can
    args = ["train.steps=20", "eval.every=10", "eval.grad_samples=4", "eval.nll_samples=4",
            f"results_dir={tmp_path}"]
    res = subprocess.run(cmd("run", *args), cwd=REPO_DIR, capture_output=True, text=True,
                         timeout=300, preexec_fn=_fsize_limit(200_000))
    assert res.returncode == 1, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "model.pt" in last and "File too large" in last, last
    assert "Traceback" not in res.stderr
    assert not leftovers(tmp_path)
    assert not verify(tmp_path).damaged  # an unfinished run, not a damaged one
    again = bench("run", *args)
    assert again.returncode == 0, again.stderr[-2000:]
    df = results.load(tmp_path)
    assert set(df["status"]) == {"complete"}


def test_an_unwritable_results_dir_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    res = bench("run", *SMALL, f"results_dir={blocker}/store")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"error: results_dir {blocker}/store is not writable: Not a directory"]


def test_code_running_hydra_input_is_refused_unless_allowed(tmp_path):
    target = tmp_path / "copied"
    evil = ["+hydra.callbacks.x._target_=shutil.copyfile", f"+hydra.callbacks.x.src={__file__}",
            f"+hydra.callbacks.x.dst={target}"]
    res = bench("run", *SMALL, f"results_dir={tmp_path}", *evil)
    assert res.returncode == 2 and "hydra.callbacks" in res.stderr and "--allow-code" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not target.exists()
    res = bench("run", "--experimental-rerun", tmp_path / "x.pickle")
    assert res.returncode == 2 and "unpickles" in res.stderr
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "evil.yaml").write_text("# @package _global_\nhydra:\n  job_logging:\n    handlers:\n"
                                    "      h:\n        (): os.system\n")
    res = bench("run", "--config-dir", tmp_path / "conf", "+experiment=evil", *SMALL,
                f"results_dir={tmp_path}")
    assert res.returncode == 2 and "'()' factory" in res.stderr, res.stderr
    # the user's own opt-in lets the same command line through (Hydra then runs the
    # callback: the file is copied, whatever becomes of the run)
    bench("run", "--allow-code", *SMALL, f"results_dir={tmp_path}", *evil)
    assert target.exists()
