"""VAE.grad_variance (the Gram-matrix form) is the same number as its definition
(VAE.grad_variance_vjp: the M per-estimate encoder gradients, their variance,
averaged over parameters) on the same samples; `python -m bench gradvar_cost` runs."""

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

import estimators
import tasks
from bench.studies import gradvar_cost


def tiny_vae(latents=3, categories=4, dim=12, batch=5):
    torch.manual_seed(0)
    vae = tasks.build({"name": "categorical_vae", "latents": latents, "categories": categories,
                       "encoder_hidden": [16, 8], "decoder_hidden": [8]},
                      SimpleNamespace(dim=dim))
    vae.double()
    x = torch.bernoulli(torch.full((batch, dim), 0.4, dtype=torch.float64))
    return vae, x


@pytest.mark.parametrize("name", ["gumbel_softmax", "reinforce", "straight_through",
                                  "concrete_kl", "vimco"])
def test_gram_form_equals_the_definition_on_the_same_samples(name):
    if name not in estimators.names():
        pytest.skip(f"{name} not registered")
    vae, x = tiny_vae()
    est = estimators.get(name)
    m = 7
    torch.manual_seed(1)
    ref = vae.grad_variance_vjp(x, est, m)
    torch.manual_seed(1)
    alt = vae.grad_variance(x, est, m)
    assert ref > 0
    # double precision: anything but the same formula (1/M instead of 1/(M-1), a layer's
    # bias left out, no centring) misses by far more than this
    assert alt == pytest.approx(ref, rel=1e-10)
    torch.manual_seed(2)  # and other samples give another value
    assert vae.grad_variance(x, est, m) != pytest.approx(ref, rel=1e-3)


def test_gram_form_without_bias():
    vae, x = tiny_vae()
    vae.encoder[2] = nn.Linear(16, 8, bias=False, dtype=torch.float64)
    est = estimators.get("reinforce")
    torch.manual_seed(1)
    ref = vae.grad_variance_vjp(x, est, 6)
    torch.manual_seed(1)
    assert vae.grad_variance(x, est, 6) == pytest.approx(ref, rel=1e-10)


def test_falls_back_to_the_task_when_the_encoder_is_not_all_linear_layers():
    vae, x = tiny_vae()
    vae.encoder.append(nn.LayerNorm(12, dtype=torch.float64))  # parameters outside nn.Linear
    est = estimators.get("reinforce")
    torch.manual_seed(1)
    ref = vae.grad_variance_vjp(x, est, 5)
    torch.manual_seed(1)
    assert vae.grad_variance(x, est, 5) == ref


def test_script_prints_the_ratios(tmp_path, capsys):
    out = tmp_path / "cost.json"
    rc = gradvar_cost.main(["--estimators", "reinforce", "--m", "3", "--rounds", "1",
                            "--steps", "1", "--data_dir", str(tmp_path), "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "synthetic stand-in" in text and "grad_var" in text and "x" in text
    info = json.loads(out.read_text())
    ratios = info["estimators"]["reinforce"]["ratio_to_step"]
    assert set(ratios) == {"step", "grad_var", "vjp", "f", "f+df/dz"}
    assert ratios["step"] == 1 and all(r > 0 for r in ratios.values())
