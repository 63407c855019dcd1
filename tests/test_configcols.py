"""bench.results.load(path, config=True): the config keys that vary between a store's
runs as columns (bench/configcols.py), on a store written through the Store API."""

import copy

import pandas as pd

from bench.configcols import flatten, varying
from bench.results import Store, load

BASE = {"seed": 0, "device": "cpu", "results_dir": "r", "data_dir": "d", "threads": 1,
        "estimator": {"name": "reinforce", "baseline": "none"},
        "task": {"name": "categorical_vae", "learn_prior": False},
        "dataset": {"name": "digits"},
        "train": {"steps": 10, "lr": 1e-3, "optimizer": "adam", "betas": [0.9, 0.999]}}


def write_run(store, cfg, h, value):
    meta = {"estimator": cfg["estimator"]["name"], "task": cfg["task"]["name"],
            "dataset": cfg["dataset"]["name"], "seed": cfg["seed"], "config": cfg}
    rec = store.start(h, meta)
    rec.write(10, {"valid_neg_elbo": value}, 1.0)
    rec.finish("complete")


def test_flatten_uses_dotted_keys_and_json_lists():
    flat = flatten(BASE)
    assert flat["train.lr"] == 1e-3 and flat["task.learn_prior"] is False
    assert flat["train.betas"] == "[0.9, 0.999]"


def test_load_attaches_the_varying_keys_only(tmp_path):
    store = Store(tmp_path)
    n = 0
    for lr in (1e-3, 3e-4):
        for opt in ("adam", "sgd"):
            for seed in (0, 1):
                cfg = copy.deepcopy(BASE)
                cfg["train"].update(lr=lr, optimizer=opt)
                cfg["seed"], cfg["results_dir"] = seed, f"elsewhere{seed}"
                n += 1
                write_run(store, cfg, f"{n:016x}", float(n))
    df = load(tmp_path, config=True)
    assert {"train.lr", "train.optimizer"} <= set(df.columns)
    # constant keys, columns already there and paths are not added
    for absent in ("train.steps", "results_dir", "estimator.name", "task.learn_prior"):
        assert absent not in df.columns
    g = df.groupby(["train.optimizer", "train.lr"]).value.mean()
    assert len(g) == 4
    assert list(load(tmp_path).columns) == [c for c in df.columns
                                            if c not in ("train.lr", "train.optimizer")]


def test_a_key_missing_from_older_runs_takes_its_old_default(tmp_path):
    store = Store(tmp_path)
    old = copy.deepcopy(BASE)
    del old["train"]["optimizer"]  # stored before train.optimizer existed
    new = copy.deepcopy(BASE)
    new["train"]["optimizer"] = "sgd"
    write_run(store, old, "a" * 16, 1.0)
    write_run(store, new, "b" * 16, 2.0)
    df = load(tmp_path, config=True)
    assert dict(zip(df.value, df["train.optimizer"])) == {1.0: "adam", 2.0: "sgd"}
    # and a store where that is the only difference in appearance varies in nothing
    assert varying({"x": old, "y": BASE}) == []


def test_an_empty_store_loads_with_config(tmp_path):
    df = load(tmp_path, config=True)
    assert isinstance(df, pd.DataFrame) and df.empty
