"""f_evals: the runner counts f's evaluations, checked against estimators whose
cost is known from their definition (not from the counter's code)."""

import copy

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import estimators
from bench import results
from bench.counting import attach
from bench.jobs import run
from bench.paths import CONF_DIR

B, N = 5, 3

# (estimator, options, K, evaluations of f per example in one call), from the papers:
# one sample; S samples; every joint state; the antithetic pair; sample + mean field
KNOWN = [
    ("reinforce", {}, 2, 1),
    ("reinforce", {}, 4, 1),
    ("reinforce_loo", {"samples": 3}, 4, 3),
    ("vimco", {"samples": 5}, 2, 5),
    ("exact", {}, 2, 2 ** N),
    ("exact", {}, 3, 3 ** N),
    ("arm", {}, 2, 2),
    ("disarm", {}, 2, 2),
    ("muprop", {}, 4, 2),
    ("gumbel_softmax", {}, 4, 1),
    # issue 15 (docs/estimators.md): S*N*K; N(k+1)+1; k states; n copula samples; S
    ("indecater", {"samples": 2}, 4, 2 * N * 4),
    ("rao_blackwell", {"summed": 1, "samples": 1}, 4, N * 2 + 1),
    ("unordered_set", {"samples": 3}, 2, 3),
    ("arms", {"samples": 3}, 2, 3),
    ("double_cv", {"samples": 3}, 4, 3),
    ("rodeo", {"samples": 3}, 4, 3),
    ("gst", {}, 4, 1),
    ("zgr", {}, 4, 1),
    ("decoupled_st", {}, 4, 1),
]


@pytest.mark.parametrize("name,opts,k,per_example", KNOWN)
def test_counts_match_known_costs(name, opts, k, per_example):
    est = estimators.get(name, **opts)
    counter = attach(est)
    w = torch.randn(N, k)
    logits = torch.randn(B, N, k, requires_grad=True)
    for call in range(1, 3):
        out = est(logits, lambda z: (z * w).sum((-1, -2)))
        out.surrogate.backward()
        assert counter.n == call * per_example * B
    # estimates drawn frozen (grad_var) do not count, nor does a copy (an inner layer)
    with est.frozen():
        est(logits, lambda z: (z * w).sum((-1, -2)))
    copy.deepcopy(est)(logits, lambda z: (z * w).sum((-1, -2)))
    assert counter.n == 2 * per_example * B and attach(est) is counter


def test_counting_keeps_the_estimators_identity_for_the_sbn_layer_copies():
    """The SBN keeps one estimator copy per upper layer (own baselines), made again
    when it is handed a different estimator object: training and grad_var must see
    the same object, or every evaluation would reset the copies."""
    import tasks
    from tasks import datasets

    data = datasets.load({"name": "digits"}, None, "cpu")
    task = tasks.build({"name": "sbn", "latents": 4, "layers": 2}, data, "cpu")
    est = estimators.get("reinforce", baseline="ema")
    counter = attach(est)
    x = data.eval_split("train")[:8]
    task.loss(x, est)[0].backward()
    copies = task.__dict__["_est_copies"]
    task.grad_variance(x, est, 3)
    task.loss(x, est)[0].backward()
    assert task.__dict__["_est_copies"] is copies and copies[0].b is not None
    assert counter.n == 2 * 8  # the first layer's f: the network above it, once per example


SMALL = ["train.steps=6",
         "eval.every=3", "eval.grad_samples=7", "eval.nll_samples=0", "train.batch_size=20",
         "train.save_model=false"]


def cfg_for(tmp_path, *overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*SMALL, f"results_dir={tmp_path}", *overrides])
        return OmegaConf.to_container(cfg, resolve=True)


def recorded(path, metric):
    df = results.load(path)
    df = df[df["metric"] == metric]
    return {(int(r.seed), int(r.step)): r.value for r in df.itertuples()}


@pytest.mark.parametrize("overrides,per_step", [
    (["estimator=reinforce"], 4),                              # toy batch 4: B per step
    (["estimator=reinforce_loo", "estimator.samples=3"], 12),  # S * B
    (["estimator=exact", "task.latents=3"], 4 * 2 ** 3),       # K^N * B
    (["estimator=disarm"], 8),                                 # 2 B
])
def test_runner_records_cumulative_f_evals(tmp_path, overrides, per_step):
    """Training steps count; grad_var's 7 estimates at every evaluation do not."""
    assert run(cfg_for(tmp_path, "task=toy_bernoulli", "task.batch_size=4",
                       *overrides)) == "complete"
    assert recorded(tmp_path, "f_evals") == {(0, 0): 0, (0, 3): 3 * per_step,
                                             (0, 6): 6 * per_step}
    assert recorded(tmp_path, "f_evals_per_step") == {(0, 3): per_step, (0, 6): per_step}


def test_stacked_seeds_count_per_seed(tmp_path):
    """Two seeds trained together: each run's count is its own (B per step)."""
    assert run(cfg_for(tmp_path, "task=bernoulli_vae", "task.latents=4",
                       "task.encoder_hidden=[16]", "task.decoder_hidden=[16]",
                       "estimator=reinforce_loo", "estimator.samples=3",
                       "seeds=[0,1]")) == {0: "complete", 1: "complete"}
    got = recorded(tmp_path, "f_evals")
    assert got == {(s, t): t * 3 * 20 for s in (0, 1) for t in (0, 3, 6)}
