"""Packaging: the package built as a wheel is (bench/conf/ inside it, found by
bench.paths from any folder), the `bench` console command, and Hydra's shell
completion through `bench run`. (.ci/run installs the real wheel in a fresh venv.)"""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_build_ships_conf_and_finds_it_outside_the_checkout(tmp_path):
    lib = tmp_path / "lib"
    res = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(lib)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert (lib / "bench" / "conf" / "config.yaml").is_file()
    assert sorted(p.name for p in (lib / "bench" / "conf" / "estimator").glob("*.yaml")) == \
        sorted(p.name for p in (REPO / "conf" / "estimator").glob("*.yaml"))
    assert (lib / "bench" / "report" / "published.yaml").is_file()
    env = {**os.environ, "PYTHONPATH": str(lib)}
    code = "import bench.paths as p; print(p.CONF_DIR)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert Path(out.stdout.strip()) == lib / "bench" / "conf", out.stderr


def test_bench_console_command_is_declared():
    text = (REPO / "pyproject.toml").read_text()
    scripts = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    assert 'bench = "bench.cli:entry"' in scripts
    from bench import cli

    assert callable(cli.entry)


def _query(line: str) -> list[str]:
    env = {**os.environ, "COMP_LINE": line, "COMP_POINT": str(len(line)),
           "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "bench", "-sc", "query=bash"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def test_shell_completion_through_the_run_subcommand():
    res = subprocess.run([sys.executable, "-m", "bench", "run", "-sc", "install=bash"],
                         cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr
    assert res.stdout.rstrip().endswith("-F hydra_bash_completion bench")
    assert "estimator=reinforce" in _query("bench run estimator=rei")
    assert "train.steps=" in _query("bench run estimator=reinforce train.st")
