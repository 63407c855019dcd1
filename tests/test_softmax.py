"""estimators.base.softmax / log_softmax (the categories-first path for small K on CPU)
against the definition: exp(x_k) / sum_j exp(x_j), and its derivative."""

import pytest
import torch
from torch.func import vmap

from estimators.base import _categories_first, log_softmax, softmax

SHAPES = [(100, 20, 10), (100, 200, 2), (3, 4, 10), (50, 20, 16), (7, 100), (2, 3, 600, 5)]


def reference(x):
    """softmax and log_softmax by their definition, in float64."""
    x = x.double()
    m = x.max(-1, keepdim=True).values
    e = (x - m).exp()
    s = e.sum(-1, keepdim=True)
    return e / s, (x - m) - s.log()


def test_both_paths_are_exercised():
    paths = {_categories_first(torch.zeros(s)) for s in SHAPES}
    assert paths == {True, False}


@pytest.mark.parametrize("shape", SHAPES)
def test_values_match_the_definition(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g) * 3
    x.view(-1)[::7] = 1e4  # huge logits stay finite
    x.view(-1)[1::11] = -1e4
    p, lp = reference(x)
    y, ly = softmax(x), log_softmax(x)
    assert y.shape == x.shape and ly.shape == x.shape and y.is_contiguous()
    torch.testing.assert_close(y.double(), p, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ly.double(), lp, atol=1e-4, rtol=1e-5)
    assert torch.isfinite(ly).all()


@pytest.mark.parametrize("shape", [(100, 20, 10), (50, 20, 16)])
def test_gradients_match_the_jacobian(shape):
    """d/dx <w, softmax(x)> = p * (w - <w, p>) and d/dx <w, log_softmax(x)> =
    w - p * sum(w), per row; torch's own kernels agree."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(shape, generator=g, dtype=torch.float64)
    p = torch.softmax(x.detach(), -1)
    (gs,) = torch.autograd.grad((softmax(x) * w).sum(), x)
    (gl,) = torch.autograd.grad((log_softmax(x) * w).sum(), x)
    torch.testing.assert_close(gs, p * (w - (w * p).sum(-1, keepdim=True)))
    torch.testing.assert_close(gl, w - p * w.sum(-1, keepdim=True))


def test_double_backward_and_vmap():
    """REBAR/RELAX differentiate gradients; stacked seeds run under vmap."""
    x = torch.randn(64, 20, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda v: softmax(v), (x,))
    xs = torch.randn(3, 64, 20, 4)
    torch.testing.assert_close(vmap(softmax)(xs), torch.softmax(xs, -1))
    torch.testing.assert_close(vmap(log_softmax)(xs), torch.log_softmax(xs, -1))
