"""Estimator.state_dict / load_state_dict, over every registered estimator (and the
stateful variants of configurable ones): an estimator trained a few steps, saved
through torch.save (weights_only) and loaded into a fresh instance, then continues
exactly as the original does -- same surrogate, same gradients, bit for bit, for
several more training steps. For estimators with state, a fresh instance that was
not loaded continues differently (so the comparison can fail)."""

import io

import pytest
import torch

import estimators

# configurations with state beyond the defaults
VARIANTS = {"reinforce": [{"baseline": "ema"}],
            "annealed_st": [{"anneal_rate": 0.1, "anneal_every": 1}],
            "gumbel_softmax": [{"anneal_rate": 0.1, "anneal_every": 1}]}


def cases():
    for name in estimators.names():
        yield name, {}
        for kw in VARIANTS.get(name, []):
            yield name, kw


def shape_for(est):
    return (3, 2) if est.binary_only else (3, 3)


class Problem:
    """Logits and a small decoder inside f, both trained by plain SGD."""

    def __init__(self, n, k):
        g = torch.Generator().manual_seed(1)
        self.logits = torch.randn(4, n, k, generator=g).requires_grad_(True)
        self.w = torch.randn(n * k, 5, generator=g).requires_grad_(True)
        self.t = torch.rand(5, generator=g)

    def f(self, z):
        return ((z.flatten(-2) @ self.w - self.t) ** 2).sum(-1)

    def step(self, est, t):
        est.set_step(t)
        out = est(self.logits, self.f)
        self.logits.grad = self.w.grad = None
        out.surrogate.backward()
        grads = (self.logits.grad.clone(), self.w.grad.clone())
        with torch.no_grad():
            self.logits -= 0.05 * self.logits.grad
            self.w -= 0.05 * self.w.grad
        return (out.surrogate.detach(), *grads)

    def copy(self):
        new = Problem.__new__(Problem)
        new.logits = self.logits.detach().clone().requires_grad_(True)
        new.w = self.w.detach().clone().requires_grad_(True)
        new.t = self.t
        return new


def roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def continue_from(est, prob, seed, start, steps=3):
    torch.manual_seed(seed)
    return [prob.step(est, t) for t in range(start, start + steps)]


def same(a, b):
    return all(torch.equal(x, y) for ra, rb in zip(a, b, strict=True)
               for x, y in zip(ra, rb, strict=True))


@pytest.mark.parametrize("name,kw", list(cases()),
                         ids=[f"{n}-{k}" if k else n for n, k in cases()])
def test_loaded_estimator_continues_exactly(name, kw):
    torch.manual_seed(0)
    est = estimators.get(name, **kw)
    n, k = shape_for(est)
    prob = Problem(n, k)
    for t in range(4):
        prob.step(est, t)
    state = roundtrip(est.state_dict())

    loaded = estimators.get(name, **kw)
    loaded.load_state_dict(state, latents=(n, k))
    want = continue_from(est, prob.copy(), 7, 4)
    got = continue_from(loaded, prob.copy(), 7, 4)
    assert same(want, got), f"{name}: a loaded estimator does not continue as the original"

    fresh = estimators.get(name, **kw)
    if any(v[0] in ("tensor", "param", "module", "optim") for v in state.values()):
        if fresh.state_dict().keys() == state.keys():
            fresh.materialize(n, k)
        torch.manual_seed(123)  # materialize drew numbers; then the same stream
        other = continue_from(fresh, prob.copy(), 7, 4)
        assert not same(want, other), f"{name}: its state makes no difference (test has no power)"


def test_state_of_an_unsupported_type_is_named():
    est = estimators.get("reinforce")
    est.callback = lambda: None
    with pytest.raises(TypeError, match="reinforce.callback"):
        est.state_dict()


def test_lazy_state_without_latents_is_refused_with_a_clear_line():
    torch.manual_seed(0)
    est = estimators.get("relax")
    prob = Problem(3, 3)
    prob.step(est, 0)
    with pytest.raises(ValueError, match="latents"):
        estimators.get("relax").load_state_dict(est.state_dict())
