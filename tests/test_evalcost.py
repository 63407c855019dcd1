"""The faster evaluation (tasks/_hard.py) computes the same numbers as the one-hot
reference (bench/studies/evalcost.py: the code it replaced): from the same seed it
draws the same samples, and test_nll / neg_elbo agree per image to float32 rounding
(|diff| <= 2e-3 nats on values of ~50-600 nats, i.e. a few ulps summed over the
pixels); another seed, or a planted bug, differs by far more. `python -m bench
evalcost` runs."""

from types import SimpleNamespace

import pytest
import torch

import tasks
from bench.studies import evalcost
from tasks import _hard

TOL = 2e-3  # nats per image


def small(name):
    torch.manual_seed(0)
    data = SimpleNamespace(dim=64, num_classes=10, image_shape=(8, 8))
    kw = {"categorical_vae": dict(latents=6, categories=5, encoder_hidden=[32],
                                  decoder_hidden=[32, 24]),
          "bernoulli_vae": dict(latents=12, categories=2, encoder_hidden=[32],
                                decoder_hidden=[32], learn_prior=True),
          "sbn": dict(latents=12, categories=2, layers=2),
          "sbn_categorical": dict(latents=4, categories=5, layers=3, hidden=[16])}[name]
    task = tasks.get_class(name)(data=data, **kw).eval()
    with torch.no_grad():  # larger weights than at initialisation: a model that uses z
        for p in task.parameters():
            p.mul_(4.0)
        if name == "bernoulli_vae":
            task.prior_logits.normal_()
    x = (torch.rand(30, 64) < 0.3).float()
    return task, x


def both(task, x, seed, fn_before, fn_after):
    torch.manual_seed(seed)
    a = fn_before(task, x)
    torch.manual_seed(seed)
    b = fn_after(task, x)
    return a, b


NAMES = ["categorical_vae", "bernoulli_vae", "sbn", "sbn_categorical"]
METRICS = {
    "nll": (lambda t, x: evalcost.nll_before(t, x, 50), lambda t, x: t.nll(x, 50)),
    "neg_elbo": (evalcost.neg_elbo_before, lambda t, x: t.neg_elbo(x)),
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("metric", list(METRICS))
def test_same_samples_same_value(name, metric):
    task, x = small(name)
    a, b = both(task, x, 3, *METRICS[metric])
    assert a.shape == b.shape == (30,)
    assert (a - b).abs().max() <= TOL, (a - b).abs().max()
    # power: other samples differ by much more than the tolerance
    torch.manual_seed(4)
    other = METRICS[metric][1](task, x)
    assert (a - other).abs().max() > 50 * TOL


def test_a_planted_bug_in_the_one_hot_layer_is_seen(monkeypatch):
    task, x = small("categorical_vae")
    real = _hard.OneHotLinear.__init__

    def off_by_one(self, *a, **k):
        real(self, *a, **k)
        if hasattr(self, "offsets"):
            self.offsets = self.offsets.flip(0)  # variable n read from the wrong block

    monkeypatch.setattr(_hard.OneHotLinear, "__init__", off_by_one)
    a, b = both(task, x, 3, *METRICS["nll"])
    assert (a - b).abs().max() > 50 * TOL


def test_vae_bound_does_not_depend_on_the_chunking():
    task, x = small("categorical_vae")
    torch.manual_seed(5)
    a = task.nll(x, 64)
    torch.manual_seed(5)
    b = task.nll(x, 64, max_floats=64 * 30 * 3)  # chunks of 3 samples
    assert (a - b).abs().max() <= TOL


def test_gumbel_argmax_draws_what_sample_one_hot_draws():
    from estimators.base import sample_one_hot

    for k in (2, 3, 10):
        logits = torch.randn(7, 5, k)
        torch.manual_seed(9)
        z = sample_one_hot(logits.expand(11, *logits.shape))
        torch.manual_seed(9)
        idx = _hard.gumbel_argmax(logits, 11)
        assert torch.equal(z.argmax(-1), idx)


def test_evalcost_runs(tmp_path, capsys):
    out = tmp_path / "evalcost.txt"
    assert evalcost.main(["--tasks", "categorical_vae", "sbn", "--images", "2", "--samples",
                          "3", "--rounds", "1", "--data_dir", str(tmp_path), "--out",
                          str(out)]) == 0
    text = out.read_text()
    assert "categorical_vae  test_nll" in text and "sbn " in text and "x " in text
