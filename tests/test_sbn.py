"""The SBN task (structured output prediction) against hand computation.

A tiny network -- one upper pixel, one lower pixel, two stochastic layers of
one Bernoulli unit -- with hand-set weights has every quantity in closed form:

    p(h1 = 1) = sigmoid(w0 x_u + b0) = 1/2,
    p(h2 = 1 | h1) = sigmoid(w1 h1 + b1) = 1/2 or 3/4,   so p(h2 = 1) = 5/8,
    p(x_l = 1 | h2) = sigmoid(w2 h2 + b2) = 1/2 or 3/4,

    E[-log p(x_l = 1 | h2)] = 3/8 log 2 + 5/8 log(4/3),
    -log p(x_l = 1 | x_u)   = -log(3/8 * 1/2 + 5/8 * 3/4) = -log(21/32).
"""

import math
from types import SimpleNamespace

import pytest
import torch

import estimators
import tasks
from tasks import TaskConfigError

LN3 = math.log(3.0)
OBJECTIVE = 3 / 8 * math.log(2) + 5 / 8 * math.log(4 / 3)
NLL = -math.log(21 / 32)


def tiny(layers=2, k=2, n=1):
    data = SimpleNamespace(dim=2, num_classes=10, image_shape=(2, 1))
    task = tasks.build({"name": "sbn", "latents": n, "categories": k, "layers": layers}, data)
    return task.double()


def set_hand_weights(task):
    """w0 = 1, b0 = -1; w1 = log 3, b1 = 0; w2 = log 3, b2 = 0 (see the module doc)."""
    (l0,), (l1,), (lo,) = task.nets[0], task.nets[1], task.out
    with torch.no_grad():
        for lin, w, b in ((l0, 1.0, -1.0), (l1, LN3, 0.0), (lo, LN3, 0.0)):
            lin.weight.fill_(w)
            lin.bias.fill_(b)
    return task


def closed_form(task):
    """E[-log p(x_l=1 | h2)] for x = (1, 1), by enumerating h1, h2 with the
    task's current parameters; differentiable in them."""
    (l0,), (l1,), (lo,) = task.nets[0], task.nets[1], task.out
    p1 = torch.sigmoid(l0.weight[0, 0] + l0.bias[0])
    total = 0.0
    for h1, q1 in ((1.0, p1), (0.0, 1 - p1)):
        p2 = torch.sigmoid(l1.weight[0, 0] * h1 + l1.bias[0])
        for h2, q2 in ((1.0, p2), (0.0, 1 - p2)):
            px = torch.sigmoid(lo.weight[0, 0] * h2 + lo.bias[0])
            total = total + q1 * q2 * -torch.log(px)
    return total


def ones(b):
    return torch.ones(b, 2, dtype=torch.float64)


def test_hand_weights_give_the_hand_numbers():
    task = set_hand_weights(tiny())
    assert closed_form(task).item() == pytest.approx(OBJECTIVE, abs=1e-12)
    # the task's own pieces at fixed samples
    x_l = torch.ones(1, 1, dtype=torch.float64)
    h = torch.tensor([[[0.0, 1.0]]], dtype=torch.float64)  # h2 = 1
    assert task.recon(x_l, h).item() == pytest.approx(math.log(4 / 3), abs=1e-12)
    assert task.recon(x_l, 1 - h).item() == pytest.approx(math.log(2), abs=1e-12)
    lg = task.logits(1, h)  # layer 2 given h1 = 1
    assert torch.softmax(lg, -1)[0, 0, 1].item() == pytest.approx(0.75, abs=1e-12)


def test_single_sample_bound_and_m_sample_bound_match_the_closed_forms():
    torch.manual_seed(1)
    task = set_hand_weights(tiny())
    x = ones(200_000)
    vals = task.neg_elbo(x)
    se = vals.std().item() / math.sqrt(len(vals))
    assert abs(vals.mean().item() - OBJECTIVE) < 4.5 * se
    # the m-sample bound decreases towards -log p(x_l | x_u) and stays above it
    b1 = task.nll(x[:20_000], 1).mean().item()
    b1000 = task.nll(x[:200], 1000).mean().item()
    assert abs(b1 - OBJECTIVE) < 0.02
    assert NLL - 1e-3 < b1000 < NLL + 0.01 < b1


@pytest.mark.parametrize("name", ["reinforce", "straight_through", "gumbel_softmax"])
def test_training_loss_value_is_the_sampled_objective(name):
    torch.manual_seed(2)
    task = set_hand_weights(tiny())
    _, out = task.loss(ones(100_000), estimators.get(name))
    # hard estimators see one-hot samples: the mean loss estimates E[-log p(x_l | h2)]
    if not estimators.get_class(name).relaxed:
        se = out.loss.std().item() / math.sqrt(out.loss.numel())
        assert abs(out.loss.mean().item() - OBJECTIVE) < 4.5 * se


def batch_gradient_means(task, est, batches=30, size=4000):
    params = list(task.parameters())
    rows = []
    for _ in range(batches):
        obj, _ = task.loss(ones(size), est)
        grads = torch.autograd.grad(obj, params, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).flatten()
                               for p, g in zip(params, grads, strict=True)]))
    return torch.stack(rows)


def exact_gradient(task):
    params = list(task.parameters())
    return torch.cat([g.flatten() for g in torch.autograd.grad(closed_form(task), params)])


def max_z(samples, exact):
    se = samples.std(0) / math.sqrt(samples.shape[0])
    return float(((samples.mean(0) - exact).abs() / (se + 1e-9)).max())


UNBIASED = [n for n in estimators.names()
            if estimators.get_class(n).unbiased and n != "exact"]


@pytest.mark.parametrize("name", UNBIASED)
def test_nested_unbiased_estimators_match_the_exact_gradient(name):
    """Gradients of both stochastic layers and of the output layer, averaged over
    many draws, match the exact gradient of the enumerated objective (estimators
    that stack samples -- MuProp, ARM, ... -- go through the per-slice nesting)."""
    torch.manual_seed(3)
    task = set_hand_weights(tiny())
    exact = exact_gradient(task)
    assert (exact.abs() > 1e-3).sum() >= 4  # the check has something to find
    # a learned temperature inside a control variate is refused by the nesting
    opts = {"learn_temperature": False} if "learn_temperature" in estimators.get_class(
        name).options() else {}
    est = estimators.get(name, **opts)
    try:
        grads = batch_gradient_means(task, est, batches=20, size=1000)
    except TaskConfigError as e:  # refused, with its one-line reason
        pytest.skip(str(e))
    z = max_z(grads, exact)
    assert z < 4.5, z


def test_the_gradient_check_has_power():
    """Straight-through is biased on this network; the same check must see it."""
    torch.manual_seed(4)
    task = set_hand_weights(tiny())
    z = max_z(batch_gradient_means(task, estimators.get("straight_through")), exact_gradient(task))
    assert z > 10, z


def test_the_check_sees_a_nesting_that_drops_the_inner_gradient(monkeypatch):
    """Power check for the layer-by-layer nesting: returning the inner loss
    without the inner surrogate's gradient loses layer 2's score-function term."""
    from tasks.sbn import SBN

    def broken(self, layer, h, x_lower, ests):
        if layer == self.depth - 1:
            return self.recon(x_lower, h)
        inner = ests[layer + 1](self.logits(layer + 1, h),
                                lambda z: broken(self, layer + 1, z, x_lower, ests))
        return inner.loss

    monkeypatch.setattr(SBN, "_rest", broken)
    torch.manual_seed(5)
    task = set_hand_weights(tiny())
    z = max_z(batch_gradient_means(task, estimators.get("reinforce"), batches=10),
              exact_gradient(task))
    assert z > 10, z


def test_one_layer_exact_estimator_gives_the_exact_gradient():
    """With one stochastic layer no nesting is needed: 'exact' (enumeration)
    reproduces the closed form and its gradient."""
    task = tiny(layers=1)
    (l0,), (lo,) = task.nets[0], task.out
    with torch.no_grad():
        l0.weight.fill_(0.7)
        l0.bias.fill_(-0.2)
        lo.weight.fill_(LN3)
        lo.bias.fill_(0.3)
    obj, _ = task.loss(ones(3), estimators.get("exact"))
    p = torch.sigmoid(l0.weight[0, 0] + l0.bias[0])
    ref = p * -torch.log(torch.sigmoid(lo.weight[0, 0] + lo.bias[0])) \
        + (1 - p) * -torch.log(torch.sigmoid(lo.bias[0]))
    assert obj.item() == pytest.approx(ref.item(), abs=1e-12)
    params = list(task.parameters())
    for g, r in zip(torch.autograd.grad(obj, params), torch.autograd.grad(ref, params),
                    strict=True):
        assert torch.allclose(g, r, atol=1e-12)


def test_exact_through_two_layers_gives_the_exact_gradient():
    """'exact' passes f a stack of all states, weighted by q per example; on a
    batch of identical examples the weights are equal across the batch and the
    layer-by-layer nesting must reproduce the closed form and its gradient exactly."""
    task = set_hand_weights(tiny())
    obj, _ = task.loss(ones(3), estimators.get("exact"))
    assert obj.item() == pytest.approx(OBJECTIVE, abs=1e-12)
    params = list(task.parameters())
    got = torch.cat([g.flatten() for g in torch.autograd.grad(obj, params)])
    assert torch.allclose(got, exact_gradient(task), atol=1e-12)


def enumerated_objective(task, x_u, x_l):
    """E[-log p(x_l | h2)] for a one-variable K-way two-layer SBN, from its weight
    matrices by enumerating the K x K states (independent of the task's code)."""
    (l0,), (l1,), (lo,) = task.nets[0], task.nets[1], task.out
    k = task.k
    eye = torch.eye(k, dtype=torch.float64)
    q1 = torch.softmax(l0.weight @ x_u + l0.bias, -1)
    total = 0.0
    for i in range(k):
        q2 = torch.softmax(l1.weight @ eye[i] + l1.bias, -1)
        for j in range(k):
            logit = lo.weight @ eye[j] + lo.bias
            nll = torch.nn.functional.binary_cross_entropy_with_logits(logit, x_l, reduction="sum")
            total = total + q1[i] * q2[j] * nll
    return total


def test_categorical_layers_match_enumeration():
    """K = 3: the nested 'exact' estimator gives the enumerated objective and its
    gradient; nested REINFORCE matches that gradient in expectation."""
    torch.manual_seed(6)
    data = SimpleNamespace(dim=2, num_classes=10, image_shape=(2, 1))
    task = tasks.build({"name": "sbn_categorical", "latents": 1, "categories": 3}, data).double()
    with torch.no_grad():
        for p in task.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    ref = enumerated_objective(task, x[0, :1], x[0, 1:])
    params = list(task.parameters())
    exact = torch.cat([g.flatten() for g in torch.autograd.grad(ref, params)])
    obj, _ = task.loss(x.expand(2, 2), estimators.get("exact"))
    assert obj.item() == pytest.approx(ref.item(), abs=1e-12)
    got = torch.cat([g.flatten() for g in torch.autograd.grad(obj, params)])
    assert torch.allclose(got, exact, atol=1e-12)
    rows = []
    for _ in range(20):
        obj, _ = task.loss(x.expand(1000, 2), estimators.get("reinforce"))
        rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(obj, params)]))
    assert max_z(torch.stack(rows), exact) < 4.5


def test_unequal_weights_per_example_are_refused_with_one_line():
    """Different examples get different enumeration weights, which a batch-mean
    inner surrogate cannot attribute: a clear error, not a wrong gradient."""
    task = set_hand_weights(tiny())
    x = torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    obj, _ = task.loss(x, estimators.get("exact"))
    with pytest.raises(TaskConfigError, match="estimator 'exact'.*unequal weights"):
        obj.backward()


def test_categorical_layers_and_shapes():
    data = SimpleNamespace(dim=64, num_classes=10, image_shape=(8, 8))
    task = tasks.build({"name": "sbn_categorical", "latents": 3, "categories": 4}, data)
    assert task.latent_shape == (3, 4)
    assert (task.n_upper, task.n_lower) == (32, 32)
    x = torch.bernoulli(torch.full((5, 64), 0.5))
    obj, out = task.loss(x, estimators.get("st_gumbel_softmax"))
    obj.backward()
    assert all(p.grad is not None for p in task.parameters())
    assert out.loss.shape == (5,)
    img = task.complete(x, samples=2)
    assert img.shape == (2, 5, 64) and torch.equal(img[0, :, :32], x[:, :32])
    assert task.grad_variance(x, estimators.get("gumbel_softmax"), 4) > 0


@pytest.mark.parametrize("key,value", [("latents", 0), ("categories", 1), ("layers", 0),
                                       ("activation", "swish"), ("hidden", ["a"])])
def test_bad_options_fail_with_the_key(key, value):
    data = SimpleNamespace(dim=1, num_classes=10, image_shape=(1, 1))
    with pytest.raises(TaskConfigError, match=f"task.{key}"):
        tasks.build({"name": "sbn", key: value}, data)
