"""The results store against damage, with real files and processes: every planted
damage found by `python -m bench store verify` (and nothing else), damaged runs
skipped by load() and the report with one line each, --repair so that the grid
trains those configs again; non-finite metrics stored as gaps; older stores read.

An unreadable folder cannot be planted for root (root reads anything): the
commands that must meet it then run with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
dropped from their capability bounding set, so chmod 000 binds them as it binds a
user.
"""

import ctypes
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench import results
from bench.paths import REPO_DIR
from bench.store.files import ROWS_NAME
from bench.store.verify import check_run, verify

SMALL = ["task.encoder_hidden=[16]", "task.decoder_hidden=[16]", "train.batch_size=50",
         "eval.grad_samples=4", "eval.nll_samples=4", "threads=1", "train.steps=20",
         "eval.every=10"]
SEEDS = list(range(8))


def _drop_dac():
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def bench(*args, unprivileged=False, timeout=300, **kw):
    pre = _drop_dac if unprivileged and os.geteuid() == 0 else None
    return subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=REPO_DIR,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=pre, **kw)


def py(code, *args, unprivileged=False):
    pre = _drop_dac if unprivileged and os.geteuid() == 0 else None
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=REPO_DIR,
                          capture_output=True, text=True, timeout=300, preexec_fn=pre,
                          env={**os.environ, "PYTHONPATH": str(REPO_DIR)})


def grid(root, *extra):
    return bench("run", "-m", f"seed={','.join(map(str, SEEDS))}", *SMALL,
                 f"results_dir={root}", *extra)


@pytest.fixture(scope="module")
def clean_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean") / "store"
    res = grid(root)
    assert res.returncode == 0, res.stderr[-3000:]
    return root


def run_of(root, seed) -> Path:
    for meta in (Path(root) / "runs").glob("*/*/meta.json"):
        if json.loads(meta.read_text())["seed"] == seed:
            return meta.parent
    raise AssertionError(seed)


def rows_files(d):
    return sorted(d.glob("rows-*.csv"))


def plant(root) -> dict:
    """One damage per run of seeds 1..7 (seed 0 stays whole); {run folder: what}."""
    planted = {}
    d = run_of(root, 1)  # a rows file cut inside a value
    f = rows_files(d)[-1]
    text = f.read_bytes()
    last = text.rstrip(b"\n").rsplit(b"\n", 1)[1]
    cut = text.rfind(last) + last.index(b".") + 2  # two characters into a number
    f.write_bytes(text[:cut])
    planted[d] = "checksum mismatch"
    d = run_of(root, 2)  # a damaged header
    f = rows_files(d)[0]
    f.write_bytes(f.read_bytes().replace(b"run_id,", b"run_xd,", 1))
    planted[d] = "checksum mismatch"
    d = run_of(root, 3)  # garbage in status.json
    (d / "status.json").write_bytes(b"{\x00garbage")
    planted[d] = "status.json: not valid JSON"
    d = run_of(root, 4)  # an empty rows file
    rows_files(d)[1].write_bytes(b"")
    planted[d] = "checksum mismatch"
    d = run_of(root, 5)  # an unreadable run folder
    os.chmod(d, 0)
    planted[d] = "cannot read the folder"
    d = run_of(root, 6)  # a truncated model
    m = d / "model.pt"
    m.write_bytes(m.read_bytes()[: m.stat().st_size // 2])
    planted[d] = "model.pt: checksum mismatch"
    d = run_of(root, 7)  # a rows file gone
    rows_files(d)[1].unlink()
    planted[d] = "listed in status.json but missing"
    return planted


@pytest.fixture
def damaged(clean_store, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(clean_store, root)
    planted = plant(root)
    yield root, planted
    for d in planted:  # let pytest clean up
        if d.exists():
            os.chmod(d, 0o755)


def test_grid_writes_self_checking_files(clean_store):
    v = verify(clean_store)
    assert v.runs == len(SEEDS) and not v.damaged and not v.leftovers
    for d in (clean_store / "runs").glob("*/*"):
        st = json.loads((d / "status.json").read_text())
        assert st["status"] == "complete"
        assert set(st["files"]) == {p.name for p in rows_files(d)} | {"model.pt"}
        for f in rows_files(d):
            m = ROWS_NAME.match(f.name)
            assert m and len(pd.read_csv(f)) == int(m[2])
            assert list(pd.read_csv(f).columns) == results.COLUMNS


@pytest.mark.slow
def test_verify_finds_every_planted_damage_and_nothing_else(damaged):
    root, planted = damaged
    res = bench("store", "verify", root, unprivileged=True)
    assert res.returncode == 1, res.stdout + res.stderr
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("damaged: ")]
    named = {Path(ln.split(": ")[1]) for ln in lines}
    assert named == set(planted), res.stdout  # each damaged run, and no whole one
    for d, what in planted.items():
        assert any(ln.startswith(f"damaged: {d}: ") and what in ln for ln in lines), (d, what)
    assert f"{len(SEEDS)} runs checked" in res.stdout and "7 damaged" in res.stdout


@pytest.mark.slow
def test_load_and_report_skip_damaged_runs_with_one_line_each(damaged):
    root, planted = damaged
    code = ("import sys; from bench.results import load; df = load(sys.argv[1]); "
            "print(sorted(df.seed.unique().tolist())); "
            "print(sorted(df.loc[df.value.isna(), 'note'].unique().tolist()))")
    res = py(code, root, unprivileged=True)
    assert res.returncode == 0, res.stderr[-3000:]
    warned = [ln for ln in res.stderr.splitlines() if "skipped damaged" in ln]
    # the run with a damaged model keeps its (whole) rows: only the rows count for load
    rows_damaged = {d for d, what in planted.items() if "model.pt" not in what}
    assert len(warned) == len(rows_damaged)
    assert all(any(str(d) in ln for ln in warned) for d in rows_damaged)
    assert res.stdout.splitlines()[0] == "[0, 6]"
    strict = py("import sys; from bench.results import load; load(sys.argv[1], strict=True)",
                root, unprivileged=True)
    assert strict.returncode == 1 and "DamagedRunError: damaged: " in strict.stderr
    # the report: no error, the damaged runs named, a damaged model a gap in the samples
    m = run_of(root, 0) / "model.pt"  # the run the sample figure picks
    m.write_bytes(m.read_bytes()[:100])
    out = root.parent / "report"
    rep = bench("report", root, "--out", out, unprivileged=True)
    assert rep.returncode == 0, rep.stderr[-3000:]
    page = (out / "REPORT.md").read_text()
    assert "Every run completed" not in page
    assert all(str(d) in page for d in rows_damaged)
    assert "model.pt not loaded" in page


@pytest.mark.slow
def test_repair_moves_damage_aside_and_the_grid_trains_those_configs_again(damaged):
    root, planted = damaged
    rep = bench("store", "verify", root, "--repair", unprivileged=True)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert sum(ln.startswith("moved aside: ") for ln in rep.stdout.splitlines()) == 7
    assert sorted(p.name for p in (root / "quarantine").glob("*/runs/*/*")) == \
        sorted(d.name for d in planted)
    assert bench("store", "verify", root).returncode == 0
    again = grid(root)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("skipped: config") == 1  # seed 0 only
    df = results.load(root)
    assert sorted(df["seed"].unique()) == SEEDS and set(df["status"]) == {"complete"}
    assert bench("store", "verify", root).returncode == 0


@pytest.mark.slow
def test_a_clone_without_model_files_is_whole_and_its_grid_is_not_retrained(clean_store,
                                                                           tmp_path):
    """model.pt is git-ignored, so a clone of a committed store has none: its runs are
    whole (rows checked), load() keeps them, the grid skips them, the report has a gap
    for the samples only. A model that is there but altered is still damage."""
    root = tmp_path / "store"
    shutil.copytree(clean_store, root)
    models = sorted((root / "runs").glob("*/*/model.pt"))
    assert len(models) == len(SEEDS)
    for m in models[1:]:
        m.unlink()
    altered = models[0]
    altered.write_bytes(altered.read_bytes()[:-1])
    res = bench("store", "verify", root)
    assert res.returncode == 1, res.stdout + res.stderr
    assert [ln for ln in res.stdout.splitlines() if ln.startswith("damaged: ")] == \
        [f"damaged: {altered.parent}: model.pt: checksum mismatch (truncated or altered)"]
    assert f"{len(SEEDS) - 1} finished runs have no model.pt here" in res.stdout
    altered.unlink()  # now as a clone has it
    res = bench("store", "verify", root)
    assert res.returncode == 0 and "0 damaged" in res.stdout, res.stdout
    assert f"{len(SEEDS)} finished runs have no model.pt here" in res.stdout
    assert all(not check_run(d).problems for d in (root / "runs").glob("*/*"))
    load = py("import sys; from bench.results import load; "
              "print(sorted(load(sys.argv[1], strict=True).seed.unique().tolist()))", root)
    assert load.returncode == 0 and "skipped damaged" not in load.stderr, load.stderr[-2000:]
    assert load.stdout.splitlines()[0] == str(SEEDS)
    again = grid(root)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("skipped: config") == len(SEEDS)
    assert len(list((root / "runs").glob("*/*"))) == len(SEEDS)  # nothing trained again
    out = tmp_path / "report"
    rep = bench("report", root, "--out", out)
    assert rep.returncode == 0, rep.stderr[-3000:]
    page = (out / "REPORT.md").read_text()
    assert "Every run completed" in page, page[:2000]  # no run listed as damaged
    assert "no saved model" in page


def test_nonfinite_metrics_are_stored_as_gaps_with_a_note(tmp_path):
    st = results.Store(tmp_path)
    rec = st.start("h" * 16, {"estimator": "e", "task": "t", "dataset": "d", "seed": 0})
    f = rec.write(10, {"grad_var": math.nan, "log10_grad_var": -math.inf, "kl": math.inf,
                       "test_neg_elbo": 25.299}, wall_s=1.0)
    rec.finish("complete")
    text = f.read_text()
    assert "nan" not in text.lower().replace("nonfinite: nan", "") and "inf," not in text
    df = results.load(tmp_path)
    got = df.set_index("metric")
    assert got.loc["test_neg_elbo", "value"] == 25.299 and got.loc["test_neg_elbo", "note"] == ""
    for m, note in (("grad_var", "nonfinite: nan"), ("log10_grad_var", "nonfinite: -inf"),
                    ("kl", "nonfinite: inf")):
        assert math.isnan(got.loc[m, "value"]) and got.loc[m, "note"] == note
    st_json = json.loads((rec.dir / "status.json").read_text())
    assert st_json["nonfinite"] == ["grad_var@10", "log10_grad_var@10", "kl@10"]


@pytest.mark.slow
def test_nan_gradient_variance_is_a_gap_not_the_lowest_variance(tmp_path):
    """The issue's case: temperature 1e-30 makes every grad_var NaN."""
    res = bench("run", "estimator=concrete_kl", "estimator.temperature=1e-30", *SMALL,
                "train.save_model=false", f"results_dir={tmp_path}")
    assert res.returncode == 0, res.stderr[-3000:]
    df = results.load(tmp_path)
    gv = df[df["metric"].isin(["grad_var", "log10_grad_var"])]
    assert len(gv) == 2 * 3 and gv["value"].isna().all()
    assert set(gv["note"]) == {"nonfinite: nan"}
    assert df["value"].dropna().map(math.isfinite).all()  # no -inf stored anywhere
    out = tmp_path / "report"
    assert bench("report", tmp_path, "--out", out, "--tables-only").returncode == 0
    summ = pd.read_csv(out / "tables" / "summary.csv")
    lv = summ[summ["metric"] == "log10_grad_var"]
    assert lv.empty or (lv["seeds"].eq(0).all() and lv["mean"].isna().all())
    assert "values stored as gaps (nonfinite: nan)" in (out / "REPORT.md").read_text()


def test_older_stores_load_as_before_and_their_damage_is_found(tmp_path):
    src = REPO_DIR / "results" / "jang_vae_100ep" / "store"
    root = tmp_path / "old"
    shutil.copytree(src, root, ignore=shutil.ignore_patterns("*.pt"))
    assert not verify(root).damaged
    before = results.load(root)
    assert len(before) == 116 and (before["note"].isin(["", "nonfinite: nan"])).all()
    runs = sorted((root / "runs").glob("*/*"))
    legacy = rows_files(runs[0])
    assert all(ROWS_NAME.match(f.name) is None for f in legacy)  # the older names
    text = legacy[-1].read_bytes()
    legacy[-1].write_bytes(text[: text.rfind(b".") + 2])  # cut inside a value
    h = legacy[0]
    h.write_bytes(h.read_bytes().replace(b"run_id,", b"run_xd,", 1))
    problems = check_run(runs[0]).problems
    assert any("truncated" in p for p in problems) and any("bad header" in p for p in problems)
    assert runs[0] in {d for d, _ in verify(root).damaged}
    assert runs[0].name not in set(results.load(root)["run_id"])


def test_compacted_store_loads_the_same_and_a_damaged_part_falls_back(clean_store, tmp_path):
    from bench.store.compact import compact

    root = tmp_path / "store"
    shutil.copytree(clean_store, root)
    before = results.load(root)
    part, n = compact(root)
    assert n == len(SEEDS) and part.exists() and compact(root) == (None, 0)
    after = results.load(root)
    pd.testing.assert_frame_equal(before, after)
    assert not verify(root).damaged
    # a run moved out of the store leaves the part's copy unread
    gone = run_of(root, 3)
    shutil.move(gone, tmp_path / "aside")
    assert 3 not in set(results.load(root)["seed"])
    shutil.move(tmp_path / "aside", gone)
    # a damaged part: named, passed over, its runs read from their folders
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])
    v = verify(root)
    assert [d for d, _ in v.damaged] == [part]
    again = results.load(root)
    assert again.attrs["damaged"][0][0] == str(part)
    pd.testing.assert_frame_equal(before, again)
