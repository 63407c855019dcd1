"""Live progress: the ETA counts the evaluations still to come (the final test_nll
pass from the measured cost of one test pass), progress is shown inside a long
evaluation, a bar on a terminal, and a grid ends with its summary table. And the
VAE's test -ELBO split into its two parts, the KL against enumeration."""

import itertools
import logging
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import tasks
from bench import cli
from bench.paths import CONF_DIR
from bench.progress import Progress
from bench.train import run

SMALL = ["task.encoder_hidden=[16]", "task.decoder_hidden=[16]", "train.batch_size=50",
         "eval.grad_samples=0"]


def cfg_for(tmp_path, *overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*SMALL, f"results_dir={tmp_path}", *overrides])
        return OmegaConf.to_container(cfg, resolve=True)


def test_eta_counts_evaluations_and_the_final_nll_pass():
    p = Progress(steps=1000, every_s=1e9, eval_cfg={"every": 250, "nll_samples": 100},
                 bar=False)
    p.trained(500, 5.0, "x")           # 100 steps/s: 5 s of training left
    p.eval_times = [2.0, 2.0]          # evaluations so far: 2 s each
    p.pass_times["test_neg_elbo"] = 0.1  # one single-sample test pass: 0.1 s
    # left: 5 s training + 1 regular evaluation (step 750) + the final one with
    # test_nll (2 s + 100 x 0.1 s)
    assert p.eta() == pytest.approx(5.0 + 2.0 + 12.0)
    # without test_nll at the end, only the evaluations
    q = Progress(steps=1000, every_s=1e9, eval_cfg={"every": 250, "nll_samples": 0},
                 bar=False)
    q.trained(500, 5.0, "x")
    q.eval_times = [2.0]
    assert q.eta() == pytest.approx(5.0 + 2.0 + 2.0)
    # at the last step, during the final evaluation: what is left of its estimate
    p.trained(1000, 10.0, "x")
    p.eval_start(1000, "x")
    assert 0 < p.eta() <= 12.0


def test_progress_lines_inside_the_final_evaluation(tmp_path, caplog):
    cfg = cfg_for(tmp_path, "train.steps=20", "eval.every=10", "eval.nll_samples=50",
                  "progress.every_s=0", "eval.batch_size=100")
    with caplog.at_level(logging.INFO, logger="bench"):
        assert run(cfg) == "complete"
    lines = [r.getMessage() for r in caplog.records]
    inside = [ln for ln in lines if "evaluating at step 20: test_nll" in ln]
    assert inside, lines[-10:]
    assert any("ETA" in ln for ln in inside)
    # the per-pass progress counts examples up to the test split's size
    assert inside[-1].split("(")[-1].split(")")[0].split("/")[0] == \
        inside[-1].split("(")[-1].split(")")[0].split("/")[1]


def test_bar_on_a_terminal(capsys):
    p = Progress(steps=10, every_s=1e9, eval_cfg={"every": 5}, bar=True)
    for s in range(1, 11):
        p.trained(s, 0.01 * s, "est|task")
    p.eval_start(10, "est|task")
    p.eval_tick(5, 10, "test_nll")
    p.eval_end(10)
    p.close()
    err = capsys.readouterr().err
    assert "est|task" in err and "10/10" in err


def test_grid_ends_with_a_summary_and_the_next_command(tmp_path, capsys):
    rc = cli.main(["run", "-m", "estimator=reinforce,gumbel_softmax", *SMALL, "train.steps=4",
                   "eval.every=2", "eval.nll_samples=0", f"results_dir={tmp_path}"])
    assert rc == 0
    err = capsys.readouterr().err
    table = err[err.index("status "):]
    assert "complete" in table and "reinforce categorical_vae digits seed=0" in table
    assert "gumbel_softmax categorical_vae digits seed=0" in table
    assert f"next: python -m bench report {tmp_path}" in table


def test_vae_test_elbo_parts_add_up_and_the_kl_is_exact():
    torch.manual_seed(0)
    n, k = 2, 3
    vae = tasks.build({"name": "categorical_vae", "latents": n, "categories": k,
                       "encoder_hidden": [8], "decoder_hidden": [8], "learn_prior": True},
                      SimpleNamespace(dim=6)).double()
    with torch.no_grad():
        vae.prior_logits.copy_(torch.randn(n, k))
    x = torch.bernoulli(torch.full((7, 6), 0.4, dtype=torch.float64))
    data = SimpleNamespace(eval_split=lambda split: x)
    m = vae.evaluate(data, {"batch_size": 3, "nll_samples": 0})
    assert m["recon"] + m["kl"] == pytest.approx(m["test_neg_elbo"], rel=1e-12)
    # KL(q(z|x) || p(z)) by summing q log q/p over all K^N states, averaged over x
    log_q = torch.log_softmax(vae.logits(x), -1).detach()
    log_p = torch.log_softmax(vae.prior_logits, -1).detach()
    kl = torch.zeros(x.shape[0], dtype=torch.float64)
    for s in itertools.product(range(k), repeat=n):
        lq = log_q[:, range(n), list(s)].sum(-1)
        lp = log_p[range(n), list(s)].sum(-1)
        kl += lq.exp() * (lq - lp)
    assert m["kl"] == pytest.approx(kl.mean().item(), rel=1e-10)
    assert m["recon"] > 0


def test_m2_test_elbo_parts_add_up_to_the_bound():
    torch.manual_seed(0)
    from tasks.datasets import Data

    x = torch.bernoulli(torch.full((30, 6), 0.4))
    y = torch.arange(30) % 3
    data = Data(name="toy", splits={"train": x, "valid": x[:5], "test": x[5:]},
                labels={"train": y, "valid": y[:5], "test": y[5:]}, dynamic=False,
                num_classes=3)
    m2 = tasks.build({"name": "semisupervised", "latent_dim": 2, "classifier_hidden": [8],
                      "encoder_hidden": [8], "decoder_hidden": [8], "labels_per_class": 2,
                      "label_seed": 0}, data)
    x = x[:5]
    torch.manual_seed(1)
    total = m2.neg_elbo(x)
    torch.manual_seed(1)
    parts = m2.neg_elbo_parts(x)
    assert parts.shape == (5, 2)
    assert parts.sum(-1) == pytest.approx(total, rel=1e-5)
    assert (parts[:, 1] >= 0).all()  # both KL terms are KLs
    torch.manual_seed(2)
    m = m2.evaluate(data, {"batch_size": 10})
    assert m["recon"] + m["kl"] == pytest.approx(m["test_neg_elbo"], rel=1e-12)
