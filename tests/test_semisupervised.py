"""The M2 semi-supervised task: marginalisation against the explicit sum over
classes, the ELBO against its definition (library densities, Monte Carlo), the
accuracy metric on a known confusion, config errors, and a tiny end-to-end run
on digits."""

import math

import pytest
import torch
import torch.nn as nn
from torch import distributions as D

import estimators
import tasks
from bench.config import ConfigError, validate
from tasks.datasets import Data
from tasks.semisupervised import SemiSupervised, accuracy

Z_MAX = 4.5


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread is faster than two on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def toy_data(n=40, dim=12, k=4, seed=0, labels=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.bernoulli(torch.full((n, dim), 0.4), generator=g)
    y = torch.arange(n) % k
    splits = {"train": x, "valid": x[:10], "test": x[10:30]}
    lab = {"train": y, "valid": y[:10], "test": y[10:30]} if labels else {}
    return Data(name="toy", splits=splits, labels=lab, dynamic=False, num_classes=k)


def toy_task(data=None, **kw):
    data = data or toy_data()
    cfg = dict(latent_dim=2, classifier_hidden=[8], encoder_hidden=[8], decoder_hidden=[8],
               labels_per_class=2, label_seed=0, activation="tanh")
    cfg.update(kw)
    return SemiSupervised(data=data, **cfg).double(), data


def explicit_sum(task, x, eps, weights=None):
    """U(x) = sum_k q(k|x) L'(x, e_k) + sum_k q(k|x) log(K q(k|x)), one loop per class."""
    k = task.k
    q = task.classifier(x).softmax(-1)  # (B, K)
    w = q if weights is None else weights
    total = 0.0
    for c in range(k):
        e = torch.zeros(x.shape[0], k, dtype=x.dtype)
        e[:, c] = 1.0
        total = total + w[:, c] * task.neg_elbo_given_y(x, e, eps[c])
    return total + (q * torch.log(k * q)).sum(-1)


def test_marginalisation_equals_explicit_sum_over_classes():
    task, data = toy_task()
    x = data.splits["train"][:6].double()
    exact = estimators.get("exact")
    torch.manual_seed(7)
    obj, out = task.unlabelled_loss(x, exact)
    torch.manual_seed(7)
    eps = torch.randn(task.k, x.shape[0], task.latent_dim, dtype=torch.float64)
    ref = explicit_sum(task, x, eps)
    assert obj.item() == pytest.approx(ref.mean().item(), rel=1e-10)
    # the gradient w.r.t. every parameter (classifier, q(z|x,y), decoder) agrees too
    params = list(task.parameters())
    g_obj = torch.autograd.grad(obj, params)
    g_ref = torch.autograd.grad(ref.mean(), params)
    for a, b in zip(g_obj, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)
    # the evaluation path (y summed with no estimator) gives the same number
    torch.manual_seed(7)
    torch.testing.assert_close(task.neg_elbo(x), ref.detach(), rtol=1e-10, atol=1e-10)
    # power: a wrong weighting of the classes or mixed-up noise would be caught
    uniform = torch.full((x.shape[0], task.k), 1.0 / task.k, dtype=torch.float64)
    assert abs(explicit_sum(task, x, eps, uniform).mean().item() - obj.item()) > 1e-4
    assert abs(explicit_sum(task, x, eps.flip(0)).mean().item() - obj.item()) > 1e-4


def test_neg_elbo_matches_its_definition():
    """U(x) = E_{q(y,z|x)}[-log p(x|y,z) - log p(y) - log p(z) + log q(y|x) + log q(z|x,y)],
    estimated with torch.distributions' densities from pure samples of y and z."""
    task, data = toy_task(toy_data(k=3))
    x = data.splits["train"][:4].double()
    s = 10000
    with torch.no_grad():
        ours = torch.stack([task.neg_elbo(x) for _ in range(100)])  # y summed, analytic KLs
        logits = task.classifier(x)
        y = D.Categorical(logits=logits).sample((s,))  # (S, B)
        e = nn.functional.one_hot(y, task.k).double()
        mu, logvar = task.enc_rest(task.enc_x(x) + task.enc_y(e)).chunk(2, -1)
        qz = D.Normal(mu, torch.exp(0.5 * logvar))
        z = qz.sample()
        px = D.Bernoulli(logits=task.decoder(torch.cat([e, z], -1)))
        ref = (-px.log_prob(x).sum(-1) + math.log(task.k) - D.Normal(0.0, 1.0).log_prob(z).sum(-1)
               + D.Categorical(logits=logits).log_prob(y) + qz.log_prob(z).sum(-1))
    se = torch.sqrt(ours.var(0) / ours.shape[0] + ref.var(0) / s)
    z_score = ((ours.mean(0) - ref.mean(0)).abs() / se).max().item()
    assert z_score < Z_MAX
    # power: forgetting -log p(y) = log K would be detected
    assert ((ours.mean(0) - math.log(task.k) - ref.mean(0)).abs() / se).min().item() > Z_MAX


def test_accuracy_on_a_known_confusion():
    # rows: true class, columns: predicted class
    conf_test = torch.tensor([[5, 1, 0], [2, 3, 1], [0, 0, 4]])  # 12 / 16 right
    conf_valid = torch.tensor([[1, 1, 0], [0, 1, 1], [1, 0, 1]])  # 3 / 6 right

    def split(conf):
        true, pred = [], []
        for t in range(3):
            for p in range(3):
                true += [t] * int(conf[t, p])
                pred += [p] * int(conf[t, p])
        return nn.functional.one_hot(torch.tensor(pred), 3).float(), torch.tensor(true)

    (xt, yt), (xv, yv) = split(conf_test), split(conf_valid)
    assert accuracy(xt, yt) == pytest.approx(12 / 16)
    xtr = torch.eye(3).repeat(4, 1)
    data = Data(name="toy", splits={"train": xtr, "valid": xv, "test": xt},
                labels={"train": torch.arange(12) % 3, "valid": yv, "test": yt}, num_classes=3)
    task = SemiSupervised(data=data, latent_dim=2, classifier_hidden=[4], encoder_hidden=[4],
                          decoder_hidden=[4], labels_per_class=1, label_seed=0)
    task.classifier = nn.Identity()  # predicts the class the input encodes
    m = task.evaluate(data, {"batch_size": 5})
    assert m["test_accuracy"] == pytest.approx(12 / 16)
    assert m["valid_accuracy"] == pytest.approx(3 / 6)
    assert m["labelled_accuracy"] == 1.0
    assert all(math.isfinite(m[k]) for k in ("test_neg_elbo", "valid_neg_elbo", "train_neg_elbo"))


def test_labelled_set_is_balanced_and_chosen_by_the_seed():
    data = toy_data(n=60, k=4)
    a, _ = toy_task(data, labels_per_class=3, label_seed=1)
    b, _ = toy_task(data, labels_per_class=3, label_seed=1)
    c, _ = toy_task(data, labels_per_class=3, label_seed=2)
    assert torch.equal(a.labelled_index, b.labelled_index)
    assert not torch.equal(a.labelled_index, c.labelled_index)
    assert torch.bincount(data.labels["train"][a.labelled_index], minlength=4).tolist() == [3] * 4
    assert torch.equal(a._lab_y, data.labels["train"][a.labelled_index])
    # label_seed=None: the run's seed decides, through torch's global RNG
    idx = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        idx.append(toy_task(data, labels_per_class=3, label_seed=None)[0].labelled_index)
    assert torch.equal(idx[0], idx[1]) and not torch.equal(idx[0], idx[2])


@pytest.mark.parametrize("name", estimators.names())
def test_every_registered_estimator_applies_or_is_refused(name):
    task, data = toy_task()
    est = estimators.get(name)
    if est.binary_only:
        with pytest.raises(estimators.EstimatorConfigError, match="binary-only"):
            est.check_latents(*task.latent_shape)
        return
    est.check_latents(*task.latent_shape)
    obj, out = task.loss(data.train_batch(torch.arange(8)).double(), est)
    obj.backward()
    assert torch.isfinite(obj) and out.loss.shape == (8,)
    g = [p.grad for p in task.encoder_parameters()]
    assert all(torch.isfinite(x).all() for x in g) and any(x.abs().sum() > 0 for x in g)


def test_binary_only_estimator_is_refused_for_k_above_2():
    class BinaryOnly(estimators.Estimator):  # not registered
        binary_only = True

    task, _ = toy_task()
    with pytest.raises(estimators.EstimatorConfigError, match="binary-only"):
        BinaryOnly().check_latents(*task.latent_shape)


def test_grad_variance_ranks_reinforce_above_gumbel_softmax():
    task, data = toy_task()
    x = data.splits["train"][:10].double()
    gv = {n: task.grad_variance(x, estimators.get(n), 20)
          for n in ("reinforce", "gumbel_softmax")}
    assert all(v > 0 and math.isfinite(v) for v in gv.values())
    assert gv["reinforce"] > 10 * gv["gumbel_softmax"]


def test_dataset_without_labels_is_refused():
    with pytest.raises(tasks.TaskConfigError, match="needs a dataset with labels"):
        toy_task(toy_data(labels=False))
    with pytest.raises(tasks.TaskConfigError, match="labels_per_class"):
        toy_task(labels_per_class=50)
    with pytest.raises(tasks.TaskConfigError, match="task.categories"):
        toy_task(categories=3)  # labels go up to 3


def _cfg(*overrides):
    from bench.cli import job_configs

    return job_configs(["task=semisupervised", "dataset=digits", *overrides], False)[0]


def test_config_validation_on_the_stub():
    validate(_cfg("estimator=gumbel_softmax"))
    validate(_cfg("estimator=exact"))
    for bad, key in (("task.alpha=-1", "task.alpha"), ("task.labels_per_class=0",
                     "task.labels_per_class"), ("task.activation=sigmoid", "task.activation"),
                     ("task.classifier_hidden=[0]", "task.classifier_hidden"),
                     ("task.categories=1", "task.categories"),
                     ("task.latent_dim=0", "task.latent_dim"),
                     ("task.unlabelled_weight=-1", "task.unlabelled_weight")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate(_cfg(bad))


def test_tiny_end_to_end_runs_on_digits_and_alpha_selection(tmp_path):
    """exact and gumbel_softmax train M2 on digits (100 labels) through the runner;
    then alpha is chosen on validation from the stored runs."""
    import pandas as pd

    from bench.cli import job_configs
    from bench.jobs import run
    from bench.results import load
    from bench.studies.ssl_select import main

    common = ["task=semisupervised", "dataset=digits", "task.classifier_hidden=[64]",
              "task.encoder_hidden=[64]", "task.decoder_hidden=[64]", "task.latent_dim=8",
              "train.steps=120", "eval.every=120", "eval.grad_samples=4",
              "train.save_model=false", f"results_dir={tmp_path}"]
    cfgs = (job_configs([*common, "estimator=exact", "task.alpha=1.0"], True)
            + job_configs([*common, "estimator=gumbel_softmax", "task.alpha=0.3,1.0"], True))
    assert [run(c) for c in cfgs] == ["complete"] * 3
    df = load(tmp_path)
    for _, g in df.groupby("run_id"):
        final = g[g.step == 120].set_index("metric")["value"]
        start = g[g.step == 0].set_index("metric")["value"]
        for m in ("test_accuracy", "valid_accuracy", "test_neg_elbo", "grad_var", "step_time_s"):
            assert m in final and math.isfinite(final[m])
        assert start["test_accuracy"] < 0.35  # untrained: about chance (0.1)
        assert final["test_accuracy"] > 0.6   # 100 labels of 8x8 digits
        assert final["test_neg_elbo"] < start["test_neg_elbo"] - 5

    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    grid = pd.read_csv(tmp_path / "out" / "grid.csv")
    chosen = pd.read_csv(tmp_path / "out" / "selected.csv").set_index("estimator")
    gs = grid[grid.estimator == "gumbel_softmax"]
    assert sorted(gs["alpha"]) == [0.3, 1.0] and len(chosen) == 2
    assert chosen.loc["gumbel_softmax", "valid_accuracy"] == gs["valid_accuracy"].max()
    assert (tmp_path / "out" / "curves.png").stat().st_size > 0


def test_alpha_is_chosen_on_validation_never_on_test():
    import pandas as pd

    from bench.studies.ssl_select import select

    grid = pd.DataFrame({"dataset": "mnist", "estimator": ["exact"] * 3 + ["gumbel_softmax"] * 2,
                         "seed": 0, "alpha": [0.1, 0.3, 1.0, 0.1, 0.2],
                         "valid_accuracy": [0.80, 0.85, 0.70, 0.6, 0.6],
                         "test_accuracy": [0.90, 0.60, 0.95, 0.1, 0.9]})
    chosen = select(grid).set_index("estimator")
    assert chosen.loc["exact", "alpha"] == 0.3 and chosen.loc["exact", "test_accuracy"] == 0.60
    assert chosen.loc["gumbel_softmax", "alpha"] == 0.1  # a tie: the smaller alpha
