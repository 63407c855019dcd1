"""Where `python -m bench report` writes, with real files: a fresh folder by default
(never over a store's committed REPORT.md), planted symbolic links replaced rather
than followed, and config strings from a run's meta.json kept as one-line data."""

from pathlib import Path

import torch

from bench.config import config_hash
from bench.report import page
from bench.results import Store


def _store(root: Path, experiment: str = "quick") -> Path:
    st = Store(root)
    for est, seed in (("reinforce", 0), ("gumbel_softmax", 0)):
        cfg = {"seed": seed, "estimator": {"name": est}, "task": {"name": "bernoulli_vae"},
               "dataset": {"name": "digits"}, "train": {"steps": 10},
               "report": {"experiment": experiment, "reduced": True}}
        meta = {"estimator": est, "task": "bernoulli_vae", "dataset": "digits", "seed": seed,
                "temperature": 1.0, "device": "cpu", "git_sha": "abc", "config": cfg,
                "torch": torch.__version__}
        rec = st.start(config_hash(cfg), meta)
        rec.write(0, {"test_neg_elbo": 50.0}, wall_s=0.0)
        rec.write(10, {"test_neg_elbo": 40.0 + seed, "wall_s": 1.0}, wall_s=1.0)
        rec.finish("complete")
    return root


def test_default_output_is_a_fresh_folder_not_the_store(tmp_path, capsys):
    store = _store(tmp_path / "results")
    committed = {"REPORT.md": "committed page\n", "tables/rows.csv": "committed rows\n"}
    for rel, text in committed.items():
        (store / rel).parent.mkdir(parents=True, exist_ok=True)
        (store / rel).write_text(text)
    assert page.main([str(store), "--tables-only"]) == 0
    for rel, text in committed.items():  # untouched
        assert (store / rel).read_text() == text
    assert (store / "report" / "REPORT.md").is_file()
    assert (store / "report" / "tables" / "rows.csv").is_file()
    assert str(store / "report" / "REPORT.md") in capsys.readouterr().out
    # asked for explicitly, the store itself is written
    assert page.main([str(store), "--tables-only", "--out", str(store)]) == 0
    assert (store / "REPORT.md").read_text() != committed["REPORT.md"]


def test_planted_symlinks_are_replaced_not_followed(tmp_path):
    store = _store(tmp_path / "s")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    (out / "tables").mkdir(parents=True)
    (out / "REPORT.md").symlink_to(victim)
    (out / "tables" / "main.md").symlink_to(victim)
    assert page.main([str(store), "--tables-only", "--out", str(out)]) == 0
    assert victim.read_text() == "precious\n"
    for p in (out / "REPORT.md", out / "tables" / "main.md"):
        assert p.is_file() and not p.is_symlink()
    assert "Results report" in (out / "REPORT.md").read_text()


def test_a_linked_subfolder_is_refused(tmp_path, capsys):
    store = _store(tmp_path / "s")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "figures").symlink_to(elsewhere, target_is_directory=True)
    assert page.main([str(store), "--no-samples", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "figures" in err and "symbolic link" in err and len(err.strip().splitlines()) == 1
    assert list(elsewhere.iterdir()) == []


def test_a_newline_in_the_experiment_label_stays_data(tmp_path):
    label = "quick\n# Planted heading\n`rm -rf ~` | x"
    store = _store(tmp_path / "s", experiment=label)
    out = tmp_path / "out"
    assert page.main([str(store), "--tables-only", "--out", str(out)]) == 0
    text = (out / "REPORT.md").read_text()
    lines = text.splitlines()
    assert "# Planted heading" not in lines
    assert not any(ln.startswith("# Planted") or ln.startswith("`rm") for ln in lines)
    # the label appears escaped, on one line, as inline code
    assert any("quick\\n# Planted heading\\n" in ln for ln in lines)
    for rel in ("tables/main.md", "tables/test_neg_elbo.md"):
        assert not any(ln.startswith("# Planted") for ln in (out / rel).read_text().splitlines())
    # every table line of the page still has the same number of cells as its header
    table = [ln for ln in lines if ln.startswith("| experiment |")]
    assert table
    i = lines.index(table[0])
    n = lines[i].replace("\\|", "").count("|")
    assert lines[i + 2].replace("\\|", "").count("|") == n


def test_figure_formats(tmp_path):
    store = _store(tmp_path / "s")
    out = tmp_path / "out"
    assert page.main([str(store), "--no-samples", "--out", str(out), "--format", "svg"]) == 0
    figs = sorted(p.suffix for p in (out / "figures").iterdir())
    assert figs and set(figs) == {".svg"}
    assert "figures/test_neg_elbo_vs_steps.svg" in (out / "REPORT.md").read_text()
    assert page.main([str(store), "--out", str(out), "--format", "gif"]) == 2
