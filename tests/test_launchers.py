"""Launcher presets (conf/launcher/*.yaml, used as ``launcher=NAME``): each one selects a
Hydra launcher plugin and gives every job one torch thread. Grids run end to end with
the Joblib launcher and submitit's local executor; the Slurm preset is taken as far as
the ``sbatch`` call (a stand-in ``sbatch`` records the job array it is given); Ray runs
where hydra-ray-launcher is installed. Plugins that are not installed are skipped."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from bench import cli, results
from bench.paths import CONF_DIR, REPO_DIR

SMALL = ["task.encoder_hidden=[32]", "task.decoder_hidden=[32]", "train.steps=20",
         "eval.every=10", "eval.grad_samples=4", "eval.nll_samples=4", "train.batch_size=50",
         "train.save_model=false"]
PLUGINS = {"joblib": "hydra_plugins.hydra_joblib_launcher",
           "submitit_local": "hydra_plugins.hydra_submitit_launcher",
           "submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
           "ray": "hydra_plugins.hydra_ray_launcher"}
PRESETS = sorted(p.stem for p in (CONF_DIR / "launcher").glob("*.yaml"))


def installed(preset):
    try:
        return importlib.util.find_spec(PLUGINS[preset]) is not None
    except ModuleNotFoundError:
        return False


def needs(preset):
    return pytest.mark.skipif(not installed(preset),
                              reason=f"{PLUGINS[preset]} (launcher plugin) not installed")


def bench_run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "bench", "run", *args], cwd=REPO_DIR,
                          capture_output=True, text=True, timeout=300, env=env)


def test_every_preset_has_a_known_plugin():
    assert set(PRESETS) == set(PLUGINS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_selects_its_plugin_with_one_thread_per_job(preset, tmp_path):
    if not installed(preset):
        # a missing plugin is refused before anything runs, in one line naming it
        rc = cli.main(["run", "-m", f"launcher={preset}", f"results_dir={tmp_path}"])
        assert rc == 2 and not (tmp_path / "runs").exists()
        pytest.skip(f"{PLUGINS[preset]} not installed (refused cleanly)")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"launcher={preset}"], return_hydra_config=True)
    assert cfg.threads == 1
    assert cfg.hydra.launcher._target_.startswith(PLUGINS[preset] + ".")
    launcher = instantiate(cfg.hydra.launcher)  # the plugin accepts every setting
    if preset.startswith("submitit"):
        assert launcher.params["cpus_per_task"] == cfg.threads
    if preset == "ray":
        assert cfg.hydra.launcher.ray.remote.num_cpus == cfg.threads


@pytest.mark.slow
@needs("joblib")
@needs("submitit_local")
def test_joblib_then_submitit_local_grid_and_rerun_skips(tmp_path):
    first = bench_run("-m", "launcher=joblib", "seed=0,1", f"results_dir={tmp_path}", *SMALL)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=-1" in first.stdout + first.stderr
    df = results.load(tmp_path)
    assert sorted(df["seed"].unique()) == [0, 1] and set(df["status"]) == {"complete"}
    assert sorted(df["step"].unique()) == [0, 10, 20]
    for meta in (tmp_path / "runs").glob("*/*/meta.json"):
        assert json.loads(meta.read_text())["config"]["threads"] == 1
    runs_before = set(df["run_id"])

    # the same store through submitit: seed 1 is already complete, seed 2 is new
    second = bench_run("-m", "launcher=submitit_local", "seed=1,2", f"results_dir={tmp_path}",
                       *SMALL)
    assert second.returncode == 0, second.stderr[-3000:]
    assert list(tmp_path.glob("hydra/multirun/*/*/.submitit/*/*_result.pkl"))
    df = results.load(tmp_path, all_runs=True)
    assert sorted(df["seed"].unique()) == [0, 1, 2] and set(df["status"]) == {"complete"}
    assert df.groupby("seed")["run_id"].nunique().eq(1).all()  # seed 1 was not redone
    assert runs_before < set(df["run_id"])
    assert not df.duplicated(["config_hash", "step", "metric"]).any()


FAKE_SBATCH = """#!/bin/sh
# stands in for Slurm's sbatch: keeps the submitted script, then refuses it
cp "$1" "$CAPTURE"
echo "sbatch: error: stand-in sbatch of tests/test_launchers.py" >&2
exit 1
"""


@pytest.mark.slow
@needs("submitit_slurm")
def test_submitit_slurm_preset_submits_one_job_array(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for it
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "CAPTURE": str(tmp_path / "submitted.sh")}
    res = bench_run("-m", "launcher=submitit_slurm", "hydra.launcher.partition=debug",
                    "seed=0,1,2", f"results_dir={tmp_path / 'store'}", *SMALL, env=env)
    assert res.returncode != 0 and "stand-in sbatch" in res.stderr
    script = Path(env["CAPTURE"]).read_text()
    for line in ("#SBATCH --array=0-2%3", "#SBATCH --cpus-per-task=1",
                 "#SBATCH --mem=4GB", "#SBATCH --time=120", "#SBATCH --partition=debug"):
        assert line in script, (line, script)
    assert "submitit.core._submit" in script
    assert not (tmp_path / "store" / "runs").exists()  # nothing ran here


@pytest.mark.slow
@needs("ray")
def test_ray_grid(tmp_path):
    res = bench_run("-m", "launcher=ray", "seed=0,1", f"results_dir={tmp_path}", *SMALL)
    assert res.returncode == 0, res.stderr[-3000:]
    df = results.load(tmp_path)
    assert sorted(df["seed"].unique()) == [0, 1] and set(df["status"]) == {"complete"}
    assert sorted(df["step"].unique()) == [0, 10, 20]
