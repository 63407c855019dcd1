"""bench.optim.FusedAdam and FusedSGD: the same update and state as torch.optim.Adam and
torch.optim.SGD (fused), bit for bit, through the fast path and its fall-backs; SGD
also against the momentum recursion written out by hand."""

import copy

import pytest
import torch

from bench.optim import FusedAdam, FusedSGD, make_optimizer, optimizer_options


def params_and_grads(seed: int, steps: int):
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 7), (3,)]
    ps = [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in shapes]
    grads = [[torch.randn(*s, generator=g) for s in shapes] for _ in range(steps)]
    return ps, grads


def run(opt_cls, ps, grads, missing=(), **kw):
    """Apply the gradient sequence; at the steps in ``missing`` the last parameter has
    no gradient (so the fast path must fall back)."""
    ps = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    opt = opt_cls(ps, **kw)
    for t, gs in enumerate(grads):
        opt.zero_grad(set_to_none=True)
        for i, (p, gr) in enumerate(zip(ps, gs)):
            if not (t in missing and i == len(ps) - 1):
                p.grad = gr.clone()
        opt.step()
    return ps, opt


def assert_same(a_ps, a_opt, b_ps, b_opt):
    for p, q in zip(a_ps, b_ps):
        assert torch.equal(p, q)
        sa, sb = a_opt.state[p], b_opt.state[q]
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


def test_fused_adam_is_torch_fused_adam_bit_for_bit():
    ps, grads = params_and_grads(0, 12)
    ref = run(torch.optim.Adam, ps, grads, missing={3, 4, 9}, lr=1e-2, fused=True)
    new = run(FusedAdam, ps, grads, missing={3, 4, 9}, lr=1e-2)
    assert_same(*ref, *new)
    # and it agrees with the default (foreach) Adam to rounding
    plain = run(torch.optim.Adam, ps, grads, missing={3, 4, 9}, lr=1e-2)
    for p, q in zip(ref[0], plain[0]):
        torch.testing.assert_close(p, q)


def test_fused_adam_takes_the_fast_path_and_moves_the_parameters():
    ps, grads = params_and_grads(1, 4)
    calls = []
    orig = torch.optim.Adam.step

    def counted(self, *a, **k):
        calls.append(1)
        return orig(self, *a, **k)

    torch.optim.Adam.step = counted
    try:
        new_ps, opt = run(FusedAdam, ps, grads, lr=1e-2)
    finally:
        torch.optim.Adam.step = orig
    assert len(calls) == 1  # only the first step, which creates the state
    assert all(not torch.equal(p, q) for p, q in zip(ps, new_ps))
    assert all(float(opt.state[p]["step"]) == 4 for p in new_ps)


def test_fused_adam_state_dict_round_trip_and_lr_change():
    ps, grads = params_and_grads(2, 8)
    a_ps, a_opt = run(FusedAdam, ps, grads[:4], lr=1e-2)
    b_ps = [torch.nn.Parameter(p.detach().clone()) for p in a_ps]
    b_opt = FusedAdam(b_ps, lr=1e-2)
    b_opt.load_state_dict(copy.deepcopy(a_opt.state_dict()))
    ref_ps = [torch.nn.Parameter(p.detach().clone()) for p in a_ps]
    ref_opt = torch.optim.Adam(ref_ps, lr=1e-2, fused=True)
    ref_opt.load_state_dict(copy.deepcopy(a_opt.state_dict()))
    for opt in (b_opt, ref_opt):
        for g in opt.param_groups:
            g["lr"] = 3e-3  # a schedule changing the learning rate is followed
    for gs in grads[4:]:
        for opt, qs in ((b_opt, b_ps), (ref_opt, ref_ps)):
            for q, gr in zip(qs, gs):
                q.grad = gr.clone()
            opt.step()
    assert_same(ref_ps, ref_opt, b_ps, b_opt)


def test_make_optimizer_gives_fused_adam_on_cpu():
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(3))], 1e-3)
    assert isinstance(opt, FusedAdam) and opt.defaults["lr"] == 1e-3


# --- SGD with momentum (Jang et al.'s optimiser) and the options of make_optimizer ---

SGD_SETTINGS = [dict(momentum=0.9), dict(momentum=0.9, nesterov=True),
                dict(momentum=0.9, weight_decay=1e-3), dict(momentum=0.0),
                dict(momentum=0.5, dampening=0.1)]


@pytest.mark.parametrize("kw", SGD_SETTINGS)
def test_fused_sgd_is_torch_fused_sgd_bit_for_bit(kw):
    ps, grads = params_and_grads(3, 12)
    ref = run(torch.optim.SGD, ps, grads, missing={3, 4, 9}, lr=1e-2, fused=True, **kw)
    new = run(FusedSGD, ps, grads, missing={3, 4, 9}, lr=1e-2, **kw)
    assert_same(*ref, *new)
    plain = run(torch.optim.SGD, ps, grads, missing={3, 4, 9}, lr=1e-2, **kw)  # foreach
    for p, q in zip(ref[0], plain[0]):
        torch.testing.assert_close(p, q)


def test_fused_sgd_matches_the_momentum_recursion():
    """v <- mu v + g, p <- p - lr v (nesterov: p <- p - lr (g + mu v)), by hand."""
    ps, grads = params_and_grads(4, 6)
    for nesterov in (False, True):
        new_ps, _ = run(FusedSGD, ps, grads, lr=0.1, momentum=0.9, nesterov=nesterov)
        for i, p0 in enumerate(ps):
            p, v = p0.detach().clone().double(), None
            for gs in grads:
                g = gs[i].double()
                v = g.clone() if v is None else 0.9 * v + g
                p = p - 0.1 * ((g + 0.9 * v) if nesterov else v)
            torch.testing.assert_close(new_ps[i].double(), p, rtol=1e-5, atol=1e-6)


def test_fused_sgd_takes_the_fast_path_after_the_first_step():
    ps, grads = params_and_grads(5, 4)
    calls = []
    orig = torch.optim.SGD.step

    def counted(self, *a, **k):
        calls.append(1)
        return orig(self, *a, **k)

    torch.optim.SGD.step = counted
    try:
        new_ps, opt = run(FusedSGD, ps, grads, lr=1e-2, momentum=0.9)
    finally:
        torch.optim.SGD.step = orig
    assert len(calls) == 1
    assert all(not torch.equal(p, q) for p, q in zip(ps, new_ps))


def test_fused_sgd_state_dict_round_trip():
    ps, grads = params_and_grads(6, 8)
    a_ps, a_opt = run(FusedSGD, ps, grads[:4], lr=1e-2, momentum=0.9, nesterov=True)
    b_ps = [torch.nn.Parameter(p.detach().clone()) for p in a_ps]
    b_opt = FusedSGD(b_ps, lr=1e-2, momentum=0.9, nesterov=True)
    b_opt.load_state_dict(copy.deepcopy(a_opt.state_dict()))
    ref_ps = [torch.nn.Parameter(p.detach().clone()) for p in a_ps]
    ref_opt = torch.optim.SGD(ref_ps, lr=1e-2, momentum=0.9, nesterov=True, fused=True)
    ref_opt.load_state_dict(copy.deepcopy(a_opt.state_dict()))
    for gs in grads[4:]:
        for opt, qs in ((b_opt, b_ps), (ref_opt, ref_ps)):
            for q, gr in zip(qs, gs):
                q.grad = gr.clone()
            opt.step()
    assert_same(ref_ps, ref_opt, b_ps, b_opt)


def test_make_optimizer_options_reach_the_optimizer():
    p = [torch.nn.Parameter(torch.zeros(3))]
    sgd = make_optimizer(p, 0.1, optimizer="sgd", momentum=0.9, nesterov=True,
                         weight_decay=1e-4)
    assert isinstance(sgd, FusedSGD)
    assert sgd.defaults["momentum"] == 0.9 and sgd.defaults["nesterov"]
    assert sgd.defaults["weight_decay"] == 1e-4 and sgd.defaults["lr"] == 0.1
    adam = make_optimizer(p, 1e-3, optimizer="adam", betas=[0.5, 0.9], weight_decay=0.01)
    assert isinstance(adam, FusedAdam) and adam.defaults["betas"] == (0.5, 0.9)
    assert adam.defaults["weight_decay"] == 0.01
    assert optimizer_options({"optimizer": "sgd", "momentum": 0.9, "lr": 1}) == {
        "optimizer": "sgd", "momentum": 0.9}
