"""Lazy Adam for hash tables (issue 16): the native op against its torch twin, and
LazyTableAdam against torch.optim.Adam over many steps with random sparse gradients,
a changing learning rate, rows skipped for long stretches, and a checkpoint in between."""

from __future__ import annotations

import copy

import pytest
import torch

from switchnerf.ops import native_available
from switchnerf.ops.adam_sparse import adam_sparse_step, adam_sparse_step_torch, replay_limit
from switchnerf.train.optim import LazyTableAdam, attach_flush

needs_native = pytest.mark.skipif(not native_available(), reason="native ops unavailable")
BETAS, EPS = (0.9, 0.99), 1e-15


def _sparse_grad(gen, rows: int, f: int, frac: float, hot: int = 0) -> torch.Tensor:
    """A gradient [rows, f] non-zero on a random fraction of rows (always on the first
    ``hot`` rows; never on the last quarter)."""
    g = torch.randn(rows, f, generator=gen)
    keep = torch.rand(rows, generator=gen) < frac
    keep[:hot] = True
    keep[3 * rows // 4:] = False
    return g * keep[:, None]


def _lr(t: int) -> float:
    return 1e-2 * (0.5 + 0.5 * torch.cos(torch.tensor(t / 40.0)).item())


def _history(steps: int):
    b1, b2 = BETAS
    ss = torch.tensor([_lr(t) / (1 - b1 ** t) for t in range(1, steps + 1)], dtype=torch.float64)
    bc = torch.tensor([(1 - b2 ** t) ** 0.5 for t in range(1, steps + 1)], dtype=torch.float64)
    return ss, bc


@needs_native
@pytest.mark.parametrize("max_replay", [3, 190])
def test_native_op_equals_torch_twin(max_replay):
    gen = torch.Generator().manual_seed(0)
    rows, f, steps = 3000, 2, 30
    ss, bc = _history(steps)
    states = []
    for _ in range(2):
        states.append([torch.randn(rows, f, generator=torch.Generator().manual_seed(1)) * 0.1,
                       torch.zeros(rows, f), torch.zeros(rows, f),
                       torch.zeros(rows, dtype=torch.int64)])
    for t in range(1, steps + 1):
        g = _sparse_grad(gen, rows, f, 0.1 if t % 7 else 0.9)
        for fn, st in zip((adam_sparse_step, adam_sparse_step_torch), states, strict=True):
            n = fn(st[0], g, st[1], st[2], st[3], ss, bc, base=0, step=t, beta1=BETAS[0],
                   beta2=BETAS[1], eps=EPS, max_replay=max_replay)
            assert n == int((g != 0).any(1).sum())
    for fn, st in zip((adam_sparse_step, adam_sparse_step_torch), states, strict=True):
        fn(st[0], None, st[1], st[2], st[3], ss, bc, base=0, step=steps, beta1=BETAS[0],
           beta2=BETAS[1], eps=EPS, max_replay=max_replay)
    (pa, ma, va, la), (pb, mb, vb, lb) = states
    assert torch.equal(la, lb) and bool((la == steps).all())
    torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ma, mb, rtol=1e-5, atol=1e-6)  # |g| ~ 1: float32 rounding
    torch.testing.assert_close(va, vb, rtol=1e-5, atol=1e-6)


@needs_native
def test_native_op_checks_its_arguments():
    p = torch.zeros(4, 2)
    ss, bc = _history(3)
    with pytest.raises(RuntimeError, match="grad"):
        adam_sparse_step(p, torch.zeros(5, 2), torch.zeros(4, 2), torch.zeros(4, 2),
                         torch.zeros(4, dtype=torch.int64), ss, bc, base=0, step=1,
                         beta1=0.9, beta2=0.99, eps=EPS, max_replay=5)
    with pytest.raises(RuntimeError, match="outside the history"):
        adam_sparse_step(p, torch.ones(4, 2), torch.zeros(4, 2), torch.zeros(4, 2),
                         torch.zeros(4, dtype=torch.int64), ss, bc, base=0, step=4,
                         beta1=0.9, beta2=0.99, eps=EPS, max_replay=5)
    with pytest.raises(RuntimeError, match="before the history starts"):
        adam_sparse_step(p, torch.ones(4, 2), torch.zeros(4, 2), torch.zeros(4, 2),
                         torch.zeros(4, dtype=torch.int64), ss[1:], bc[1:], base=1, step=2,
                         beta1=0.9, beta2=0.99, eps=EPS, max_replay=5)


def test_replay_limit_bounds_the_dropped_updates():
    k = replay_limit(0.9, 0.99)
    r = 0.9 / 0.99 ** 0.5
    assert r ** k / (1 - r) <= 2.0 ** -24 < r ** (k - 1) / (1 - r)
    assert replay_limit(0.99, 0.9) == 1 << 20  # r >= 1: no truncation


def _pair(native: bool, seed: int = 0):
    torch.manual_seed(seed)
    table = torch.nn.Parameter(torch.randn(4000) * 1e-2)
    small = torch.nn.Parameter(torch.randn(96) * 1e-1)
    lin = torch.nn.Parameter(torch.randn(8, 12) * 0.3)
    params = [table, small, lin]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in params]
    lazy = LazyTableAdam([{"params": params[:2], "lr": 1e-2, "weight_decay": 0.0, "lazy": True},
                          {"params": params[2:], "lr": 5e-3, "weight_decay": 1e-6}],
                         betas=BETAS, eps=EPS, native=native)
    dense = torch.optim.Adam([{"params": ref[:2], "lr": 1e-2, "weight_decay": 0.0},
                              {"params": ref[2:], "lr": 5e-3, "weight_decay": 1e-6}],
                             betas=BETAS, eps=EPS)
    return params, lazy, ref, dense


def _step(params, opt, grads, t):
    opt.param_groups[0]["lr"] = _lr(t)
    opt.param_groups[1]["lr"] = 0.5 * _lr(t)
    opt.zero_grad(set_to_none=True)
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    opt.step()


@pytest.mark.parametrize("native", [pytest.param(True, marks=needs_native), False])
def test_lazy_adam_equals_dense_adam_over_many_steps(native):
    params, lazy, ref, dense = _pair(native)
    gen = torch.Generator().manual_seed(3)
    for t in range(1, 121):
        frac = 0.02 if t < 60 else 0.3  # long skips first, then denser
        grads = [_sparse_grad(gen, 2000, 2, frac, hot=5).reshape(-1),
                 _sparse_grad(gen, 48, 2, 0.5).reshape(-1), torch.randn(8, 12, generator=gen)]
        _step(params, lazy, grads, t)
        _step(ref, dense, grads, t)
        if t == 37:  # between flushes the rows untouched since their last update lag behind
            assert not torch.allclose(params[0], ref[0], rtol=0, atol=1e-6)
    lazy.flush()
    for p, q in zip(params, ref, strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=2e-5, atol=2e-6)
    for p, q in zip(params[:2], ref[:2], strict=True):
        torch.testing.assert_close(lazy.state[p]["exp_avg"], dense.state[q]["exp_avg"],
                                   rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(lazy.state[p]["exp_avg_sq"], dense.state[q]["exp_avg_sq"],
                                   rtol=1e-4, atol=1e-6)
    assert params[0][-500:].sub(ref[0][-500:]).abs().max() == 0  # never touched: never moved


@needs_native
def test_state_dict_flushes_and_resumes(tmp_path):
    params, lazy, ref, dense = _pair(True)
    module = torch.nn.Module()
    module.table = params[0]
    attach_flush(module, lazy)
    gen = torch.Generator().manual_seed(5)
    all_grads = [[_sparse_grad(gen, 2000, 2, 0.05, hot=3).reshape(-1),
                  _sparse_grad(gen, 48, 2, 0.5).reshape(-1), torch.randn(8, 12, generator=gen)]
                 for _ in range(40)]
    for t in range(1, 21):
        _step(params, lazy, all_grads[t - 1], t)
        _step(ref, dense, all_grads[t - 1], t)
    saved_table = module.state_dict()["table"].clone()  # the pre-hook flushed first
    torch.testing.assert_close(saved_table, ref[0].detach(), rtol=2e-5, atol=2e-6)
    torch.save(lazy.state_dict(), tmp_path / "opt.pt")
    # a fresh optimiser over copies of the parameters, loaded from the checkpoint
    params2 = [torch.nn.Parameter(p.detach().clone()) for p in params]
    lazy2 = LazyTableAdam([{"params": params2[:2], "lr": 1e-2, "weight_decay": 0.0, "lazy": True},
                           {"params": params2[2:], "lr": 5e-3, "weight_decay": 1e-6}],
                          betas=BETAS, eps=EPS)
    lazy2.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    for t in range(21, 41):
        _step(params2, lazy2, all_grads[t - 1], t)
        _step(ref, dense, all_grads[t - 1], t)
    lazy2.flush()
    for p, q in zip(params2, ref, strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=2e-5, atol=2e-6)


@needs_native
def test_a_dense_adam_state_loads_as_up_to_date():
    params, lazy, ref, dense = _pair(True)
    gen = torch.Generator().manual_seed(9)
    grads = [[_sparse_grad(gen, 2000, 2, 0.1).reshape(-1), _sparse_grad(gen, 48, 2, 0.5).reshape(-1),
              torch.randn(8, 12, generator=gen)] for _ in range(10)]
    for t in range(1, 6):
        _step(ref, dense, grads[t - 1], t)
    for p, q in zip(params, ref, strict=True):
        p.data.copy_(q.detach())
    lazy.load_state_dict(copy.deepcopy(dense.state_dict()))  # not the live tensors
    for t in range(6, 11):
        _step(params, lazy, grads[t - 1], t)
        _step(ref, dense, grads[t - 1], t)
    lazy.flush()
    for p, q in zip(params, ref, strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=2e-5, atol=2e-6)


def test_lazy_group_refuses_weight_decay():
    p = torch.nn.Parameter(torch.zeros(8))
    with pytest.raises(ValueError, match="weight decay"):
        LazyTableAdam([{"params": [p], "lazy": True, "weight_decay": 1e-3}], lr=1e-2)


@needs_native
def test_build_optimizer_lazy_tables_is_opt_in():
    from switchnerf.config import load_config
    from switchnerf.model import SwitchField
    from switchnerf.train.builder import build_optimizer

    cfg = load_config(None, ["model.experts.n_experts=2", "model.experts.n_levels=4",
                             "model.experts.log2_hashmap_size=10",
                             "model.routing.gate.n_levels=2"])
    torch.manual_seed(0)
    field = SwitchField(cfg.model, n_images=2)
    assert not isinstance(build_optimizer(cfg, field), LazyTableAdam)
    opt = build_optimizer(cfg, field, lazy_tables=True)
    assert isinstance(opt, LazyTableAdam) and opt.param_groups[0]["lazy"]
    table = field.experts.params
    table.grad = torch.zeros_like(table)
    table.grad[:4] = 1.0  # rows 0 and 1 only
    opt.step()
    table.grad = torch.zeros_like(table)
    table.grad[4:6] = 1.0  # row 2 only: rows 0, 1 lag one step behind dense Adam
    opt.step()
    before = table.detach()[:4].clone()
    saved = field.state_dict()["experts.params"][:4]  # the state_dict pre-hook flushed
    assert not torch.equal(saved, before)
    assert torch.equal(saved, table.detach()[:4])
