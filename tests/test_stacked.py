"""Several seeds trained together (``seeds=[...]``, bench.stacked)."""

import copy
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import estimators
import tasks
from bench import results
from bench.config import config_hash
from bench.jobs import run
from bench.loop import Trainer
from bench.paths import CONF_DIR, REPO_DIR
from bench.stacked import StackedTrainer, seed_config
from tasks import datasets

SMALL = ["task.encoder_hidden=[32]", "task.decoder_hidden=[32]", "train.steps=12",
         "eval.every=6", "eval.grad_samples=4", "eval.nll_samples=4", "train.batch_size=50"]
TIMES = {"step_time_s", "steps_per_s", "train_time_s", "wall_s"}


def cfg_for(tmp_path, *overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*SMALL, f"results_dir={tmp_path}", *overrides])
        return OmegaConf.to_container(cfg, resolve=True)


def rows(path, seed):
    df = results.load(path)
    df = df[(df["seed"] == seed) & ~df["metric"].isin(TIMES)]
    return df.sort_values(["step", "metric"])[["step", "metric", "value"]].reset_index(drop=True)


def _tiny_tasks(seeds, data):
    out = []
    for s in seeds:
        torch.manual_seed(s)
        t = tasks.build({"name": "bernoulli_vae", "latents": 3, "categories": 2,
                         "encoder_hidden": [16], "decoder_hidden": [16]}, data, "cpu")
        out.append(t.double())
    return out


def test_stacked_step_equals_independent_steps():
    """With no noise in the estimate (exact enumeration) and the same batches, three
    stacked steps give each seed the parameters of three separate Trainer steps."""
    data = datasets.load({"name": "digits"}, None, "cpu")
    seeds, b, n_steps = [0, 1, 2], 20, 3
    est = estimators.get("exact")
    singles = _tiny_tasks(seeds, data)
    stack = StackedTrainer([copy.deepcopy(t) for t in singles], est, data, b, 1e-2,
                           [torch.Generator() for _ in seeds])
    x = data.eval_split("train")[:n_steps * len(seeds) * b].double()
    x = x.view(n_steps, len(seeds), b, -1)
    batches = iter(x)
    stack.next_batch = lambda: next(batches)
    objs = torch.stack([stack.step(t) for t in range(n_steps)])  # (steps, S)
    for i, task in enumerate(singles):
        tr = Trainer(task, est, data, b, 1e-2)
        own = iter(x[:, i])
        tr.next_batch = lambda own=own: next(own)
        obj_i = torch.stack([tr.step(t) for t in range(n_steps)])
        torch.testing.assert_close(objs[:, i], obj_i, rtol=1e-12, atol=1e-12)
        moved = copy.deepcopy(task)
        stack.load_into(i, moved)
        for (name, p), q in zip(task.named_parameters(), moved.parameters()):
            torch.testing.assert_close(q, p, rtol=1e-10, atol=1e-12, msg=name)
        assert not torch.equal(p, _tiny_tasks([seeds[i]], data)[0].decoder[-1].bias)


def test_runs_recorded_as_single_seed_runs_and_skipped(tmp_path):
    single, stacked = tmp_path / "single", tmp_path / "stacked"
    assert run(cfg_for(single, "seed=0")) == "complete"
    # seed 0 is complete in this store: only seed 1 is trained
    assert run(cfg_for(single, "seeds=[0,1]")) == {0: "skipped", 1: "complete"}
    assert run(cfg_for(stacked, "seeds=[0,1]")) == {0: "complete", 1: "complete"}
    assert run(cfg_for(stacked, "seeds=[0,1]")) == {0: "skipped", 1: "skipped"}
    df = results.load(stacked)
    for s in (0, 1):
        h = config_hash(cfg_for(stacked, f"seed={s}"))
        assert h == config_hash(seed_config(cfg_for(stacked, "seeds=[0,1]"), s))
        assert set(df[df["seed"] == s]["config_hash"]) == {h}
        assert set(df[df["seed"] == s]["status"]) == {"complete"}
    assert len(list((stacked / "runs").glob("*/*"))) == 2
    assert {"train_neg_elbo", "test_neg_elbo", "test_nll", "grad_var", "train_objective",
            "step_time_s", "temperature"} <= set(df["metric"])
    # each seed starts from the single run's initial parameters: step-0 rows equal
    a, b = rows(single, 0), rows(stacked, 0)
    assert a[a["step"] == 0].equals(b[b["step"] == 0])


def test_determinism_same_seeds_same_rows(tmp_path):
    run(cfg_for(tmp_path / "a", "seeds=[0,1]"))
    run(cfg_for(tmp_path / "b", "seeds=[0,1]"))
    for s in (0, 1):
        assert rows(tmp_path / "a", s).equals(rows(tmp_path / "b", s))


def test_one_seed_diverges_the_other_completes(tmp_path, monkeypatch):
    real = StackedTrainer.next_batch
    calls = {"n": 0}

    def batch_with_nan_for_second_seed(self):
        x = real(self)
        calls["n"] += 1
        if calls["n"] == 3 and x.shape[0] == 2:  # the third training step
            x = x.clone()
            x[1, 0, 0] = float("nan")
        return x

    monkeypatch.setattr(StackedTrainer, "next_batch", batch_with_nan_for_second_seed)
    assert run(cfg_for(tmp_path, "seeds=[0,1]")) == {0: "complete", 1: "diverged"}
    df = results.load(tmp_path)
    d1 = df[df["seed"] == 1]
    assert set(d1["status"]) == {"diverged"}
    assert d1[d1["metric"] == "diverged"]["value"].tolist() == [3]
    d0 = df[df["seed"] == 0]
    assert set(d0["status"]) == {"complete"} and d0["step"].max() == 12
    assert d0["value"].notna().all() and (d0["value"].abs() < float("inf")).all()


def test_nan_in_one_seed_does_not_reach_the_other():
    """One step with seed 1's batch NaN: seed 0's update is bit for bit the one it
    gets when seed 1's batch is finite."""
    data = datasets.load({"name": "digits"}, None, "cpu")
    est = estimators.get("gumbel_softmax")
    base = _tiny_tasks([0, 1], data)
    x = data.eval_split("train")[:40].double().view(2, 20, -1)
    bad = x.clone()
    bad[1, 0, 0] = float("nan")
    out = []
    for batch in (x, bad):
        tr = StackedTrainer([copy.deepcopy(t) for t in base], est, data, 20, 1e-2,
                            [torch.Generator(), torch.Generator()])
        tr.next_batch = lambda batch=batch: batch
        torch.manual_seed(5)
        obj = tr.step(0)
        out.append((obj, {k: p.detach().clone() for k, p in tr.params.items()}))
    (obj_ok, p_ok), (obj_bad, p_bad) = out
    assert torch.isfinite(obj_ok).all() and torch.isfinite(obj_bad[0]) and obj_bad[1].isnan()
    assert obj_ok[0] == obj_bad[0]
    for k in p_ok:
        assert torch.equal(p_ok[k][0], p_bad[k][0]), k
        assert p_bad[k][1].isnan().any(), k


def bench_cli(*args):
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True,
                          text=True, cwd=REPO_DIR, timeout=300)


@pytest.mark.parametrize("override,expect", [
    ("estimator=reinforce estimator.baseline=ema", "keeps state across steps (b)"),
    ("estimator=rebar", "trains parameters of its own"),
    ("task=semisupervised", "not supported for task 'semisupervised'"),
])
def test_refusals_are_one_line(tmp_path, override, expect):
    res = bench_cli("run", "seeds=[0,1]", *override.split(), f"results_dir={tmp_path}")
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: seeds") and expect in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "runs").exists()


def test_refused_settings_in_process(tmp_path):
    from bench.config import ConfigError
    from bench.jobs import validate

    for bad, msg in (("seeds=[]", "non-empty list"), ("seeds=[1,1]", "must not repeat"),
                     ("seeds=[0,-1]", "integers >= 0"), ("seeds=[0,1] seed=2", "replaces seed"),
                     ("seeds=[0,1] estimator=darn", "vmap")):
        with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            validate(cfg_for(tmp_path, *bad.split()))
