"""python -m bench select (bench/report/select.py) on planted stores: the choice is
made on validation (where validation and test disagree), ties follow the documented
rule, one setting is a choice, a diverged seed scores worst, an edge choice is
flagged, early stopping reads the test metrics at the best validation step, and bad
requests are one line."""

import copy
import itertools

import pandas as pd
import pytest

from bench.report.select import main, select_store
from bench.results import Store

BASE = {"seed": 0, "device": "cpu", "results_dir": "r",
        "estimator": {"name": "reinforce", "normalize": False},
        "task": {"name": "categorical_vae"}, "dataset": {"name": "binarized_mnist"},
        "train": {"steps": 1000, "lr": 1e-3, "optimizer": "sgd"},
        "report": {"protocol": "p"}}
_ids = itertools.count()


def put(store, *, lr, seed, valid, test, estimator="reinforce", status="complete",
        steps=(1000,), protocol="p", **over):
    """One run; valid/test are numbers (every step) or {step: value}."""
    cfg = copy.deepcopy(BASE)
    cfg["estimator"]["name"], cfg["seed"], cfg["train"]["lr"] = estimator, seed, lr
    cfg["report"]["protocol"] = protocol
    for k, v in over.items():
        group, key = k.split("__")
        cfg[group][key] = v
    meta = {"estimator": estimator, "task": "categorical_vae", "dataset": "binarized_mnist",
            "seed": seed, "config": cfg}
    rec = store.start(f"{next(_ids):016x}", meta)
    for step in steps:
        m = {}
        for name, v in (("valid_neg_elbo", valid), ("test_neg_elbo", test)):
            if v is not None:
                m[name] = v[step] if isinstance(v, dict) else v
        if status == "diverged":
            m = {"diverged": step}  # what the runner writes
        rec.write(step, m, 1.0)
    rec.finish(status)


def table(tmp_path, **kw):
    return select_store(tmp_path, **kw)[0].set_index("estimator")


def test_chooses_on_validation_where_validation_and_test_disagree(tmp_path):
    s = Store(tmp_path)
    for seed in (0, 1):
        put(s, lr=1e-3, seed=seed, valid=100 + seed, test=120 + seed)   # best on validation
        put(s, lr=3e-3, seed=seed, valid=110 + seed, test=90 + seed)    # best on test
    t = table(tmp_path)
    assert t.loc["reinforce", "chosen"] == "train.lr=0.001"
    assert t.loc["reinforce", "test_neg_elbo"] == pytest.approx(120.5)
    assert t.loc["reinforce", "valid_neg_elbo"] == pytest.approx(100.5)
    assert t.loc["reinforce", "seeds"] == 2 and t.loc["reinforce", "settings"] == 2
    assert t.loc["reinforce", "test_neg_elbo_ci95"] > 0  # a t interval over 2 seeds


def test_ties_go_to_more_seeds_then_the_smaller_value(tmp_path):
    s = Store(tmp_path)
    put(s, lr=3e-3, seed=0, valid=100.0, test=1.0)
    put(s, lr=1e-3, seed=0, valid=100.0, test=2.0)
    put(s, lr=1e-4, seed=0, valid=100.0, test=3.0, estimator="nvil")
    put(s, lr=1e-4, seed=1, valid=100.0, test=3.0, estimator="nvil")
    put(s, lr=1e-3, seed=0, valid=100.0, test=4.0, estimator="nvil")
    t = table(tmp_path)
    assert t.loc["reinforce", "chosen"] == "train.lr=0.001"  # equal: the smaller lr
    assert t.loc["nvil", "chosen"] == "train.lr=0.0001"  # equal: the one with more seeds
    notes = select_store(tmp_path)[3]
    assert any(n.startswith("categorical_vae · binarized_mnist · nvil") and "unequal" in n
               for n in notes) and not any("· reinforce" in n for n in notes)


def test_one_setting_is_its_own_choice(tmp_path):
    s = Store(tmp_path)
    put(s, lr=1e-3, seed=0, valid=100.0, test=101.0)
    put(s, lr=1e-3, seed=1, valid=102.0, test=103.0)
    t = table(tmp_path)
    assert t.loc["reinforce", "chosen"] == "(one setting)"
    assert t.loc["reinforce", "settings"] == 1 and t.loc["reinforce", "edge"] == ""


def test_edge_of_the_grid_is_flagged(tmp_path):
    s = Store(tmp_path)
    for lr, v in ((1e-4, 103.0), (1e-3, 101.0), (3e-3, 100.0)):
        put(s, lr=lr, seed=0, valid=v, test=v)
    for lr, v in ((1e-4, 103.0), (1e-3, 100.0), (3e-3, 101.0)):
        put(s, lr=lr, seed=0, valid=v, test=v, estimator="nvil")
    t = table(tmp_path)
    assert t.loc["reinforce", "edge"] == "train.lr=max"
    assert t.loc["nvil", "edge"] == ""


def test_a_diverged_seed_scores_worst(tmp_path):
    s = Store(tmp_path)
    put(s, lr=3e-3, seed=0, valid=90.0, test=90.0)
    put(s, lr=3e-3, seed=1, valid=None, test=None, status="diverged")
    put(s, lr=1e-3, seed=0, valid=100.0, test=100.0)
    put(s, lr=1e-3, seed=1, valid=100.0, test=100.0)
    assert table(tmp_path).loc["reinforce", "chosen"] == "train.lr=0.001"


def test_early_stopping_reads_test_at_the_best_validation_step(tmp_path):
    s = Store(tmp_path)
    put(s, lr=1e-3, seed=0, steps=(500, 1000), valid={500: 95.0, 1000: 105.0},
        test={500: 96.0, 1000: 104.0})
    put(s, lr=3e-3, seed=0, steps=(500, 1000), valid={500: 110.0, 1000: 100.0},
        test={500: 111.0, 1000: 99.0})
    final = table(tmp_path)
    assert final.loc["reinforce", "chosen"] == "train.lr=0.003"
    early = table(tmp_path, early_stopping=True)
    assert early.loc["reinforce", "chosen"] == "train.lr=0.001"
    assert early.loc["reinforce", "test_neg_elbo"] == 96.0
    assert early.loc["reinforce", "steps"] == "500"


def test_protocol_and_by_keys_make_rows(tmp_path, capsys):
    s = Store(tmp_path)
    for proto, norm, lr in itertools.product(("jang2017-sgd", "ours-adam"), (False, True),
                                             (1e-3, 3e-3)):
        v = 100 + lr * 1000 * (1 if norm else -1) + (proto == "ours-adam")
        put(s, lr=lr, seed=0, valid=v, test=v, protocol=proto, estimator__normalize=norm)
    t = select_store(tmp_path, by=["estimator.normalize"])[0]
    assert len(t) == 4 and set(t["report.protocol"]) == {"jang2017-sgd", "ours-adam"}
    picked = dict(zip(zip(t["report.protocol"], t["estimator.normalize"]), t["chosen"]))
    assert picked[("ours-adam", True)] == "train.lr=0.001"
    assert picked[("ours-adam", False)] == "train.lr=0.003"
    # without --by, normalize is a swept hyperparameter of the row
    t2 = select_store(tmp_path)[0]
    assert len(t2) == 2 and all("estimator.normalize" in c for c in t2["chosen"])
    out = tmp_path / "out"
    assert main([str(tmp_path), "--by", "estimator.normalize", "--out", str(out)]) == 0
    md = (out / "table.md").read_text()
    assert "| protocol |" in md and "jang2017-sgd" in md and "ours-adam" in md
    assert len(pd.read_csv(out / "selected.csv")) == 4 and (out / "grid.csv").exists()


def test_the_protocol_is_shown_even_where_every_run_has_the_same(tmp_path, capsys):
    put(Store(tmp_path), lr=1e-3, seed=0, valid=100.0, test=100.0, protocol="jang2017-sgd")
    assert main([str(tmp_path)]) == 0
    assert "| protocol |" in capsys.readouterr().out


@pytest.mark.parametrize("args,key", [
    (["--metric", "valid_accuracy"], "valid_accuracy"),
    (["--metric", "test_neg_elbo"], "test_neg_elbo"),
    (["--by", "train.nope"], "train.nope"),
])
def test_bad_requests_are_one_line(tmp_path, capsys, args, key):
    put(Store(tmp_path), lr=1e-3, seed=0, valid=100.0, test=100.0)
    assert main([str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and key in err and "\n" not in err


def test_a_store_without_the_validation_metric_is_one_line(tmp_path, capsys):
    put(Store(tmp_path), lr=1e-3, seed=0, valid=None, test=100.0)
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "valid_neg_elbo" in err and "\n" not in err
