"""The tables' dense Adam step that zeroes its gradient (issue 16): the native op against
torch's fused Adam (bit for bit) and its torch twin, NativeTableAdam against
torch.optim.Adam with mixed groups and a checkpoint either way, and the recycling of the
zeroed gradients into the hash encoding's next backward."""

from __future__ import annotations

import copy

import pytest
import torch

from switchnerf.ops import native_available, zeroed_grads
from switchnerf.ops.adam_dense import adam_dense_step, adam_dense_step_torch
from switchnerf.train.optim import TORCH_ADAM_VECTOR, NativeTableAdam

needs_native = pytest.mark.skipif(not native_available(), reason="native ops unavailable")
BETAS, EPS = (0.9, 0.99), 1e-15


@pytest.fixture(autouse=True)
def _empty_pool():
    zeroed_grads.clear()
    yield
    zeroed_grads.clear()


def _grad(gen, n: int, frac: float = 0.2) -> torch.Tensor:
    """A gradient of n values, non-zero on a random fraction (as a table's at one step)."""
    return torch.randn(n, generator=gen) * (torch.rand(n, generator=gen) < frac)


def _lr(t: int) -> float:
    return 1e-2 * 0.97 ** t


@needs_native
@pytest.mark.parametrize("n", [100_003, 64, 5])  # vectors and a remainder; one vector; none
def test_native_op_equals_torch_fused_adam(n):
    """Bit for bit on torch's vector loop (all but the last n % 16 values); torch's scalar
    remainder rounds v differently, so there only to float32 rounding."""
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(n, generator=gen)
    m0, v0 = torch.randn(n, generator=gen) * 0.1, torch.rand(n, generator=gen) * 0.01
    ref = torch.nn.Parameter(start.clone())
    opt = torch.optim.Adam([ref], lr=_lr(0), betas=BETAS, eps=EPS, fused=True)
    opt.state[ref] = {"step": torch.tensor(0.0), "exp_avg": m0.clone(),
                      "exp_avg_sq": v0.clone()}
    p, m, v = start.clone(), m0.clone(), v0.clone()
    for t in range(1, 26):
        g = _grad(gen, n, 0.9 if t % 5 == 0 else 0.2)
        ref.grad = g.clone()
        opt.param_groups[0]["lr"] = _lr(t)
        opt.step()
        mine = g.clone()
        adam_dense_step(p, mine, m, v, step=t, lr=_lr(t), beta1=BETAS[0], beta2=BETAS[1],
                        eps=EPS, zero_grad=True)
        assert torch.equal(mine, torch.zeros(n))  # the gradient was zeroed in the pass
    st = opt.state[ref]
    head = n - n % TORCH_ADAM_VECTOR
    for mine_t, theirs in ((p, ref.detach()), (m, st["exp_avg"]), (v, st["exp_avg_sq"])):
        assert torch.equal(mine_t[:head], theirs[:head])
        torch.testing.assert_close(mine_t[head:], theirs[head:], rtol=1e-5, atol=1e-7)
    assert not torch.equal(p, start)


@needs_native
def test_native_op_equals_torch_twin_and_keeps_grad_without_zero_grad():
    gen = torch.Generator().manual_seed(1)
    n = 4099
    states = [[torch.randn(n, generator=torch.Generator().manual_seed(2)),
               torch.zeros(n), torch.zeros(n)] for _ in range(2)]
    for t in range(1, 15):
        g = _grad(gen, n)
        for fn, (p, m, v) in zip((adam_dense_step, adam_dense_step_torch), states, strict=True):
            kept = g.clone()
            fn(p, kept, m, v, step=t, lr=_lr(t), beta1=BETAS[0], beta2=BETAS[1], eps=EPS,
               zero_grad=False)
            assert torch.equal(kept, g)
    (p1, m1, v1), (p2, m2, v2) = states
    assert torch.equal(m1, m2) and torch.equal(v1, v2)
    # the twin's elementwise division may round differently from IEEE's in the last bit
    torch.testing.assert_close(p1, p2, rtol=1e-6, atol=1e-7)
    assert not torch.equal(p1, torch.randn(n, generator=torch.Generator().manual_seed(2)))


@needs_native
def test_native_op_names_bad_arguments():
    p = torch.zeros(10)
    with pytest.raises(RuntimeError, match="adam_dense_step: argument 'exp_avg' has shape"):
        adam_dense_step(p, torch.zeros(10), torch.zeros(9), torch.zeros(10), step=1, lr=1e-2,
                        beta1=0.9, beta2=0.99, eps=1e-15, zero_grad=True)
    with pytest.raises(RuntimeError, match="argument 'grad' has dtype"):
        adam_dense_step(p, torch.zeros(10, dtype=torch.float64), torch.zeros(10),
                        torch.zeros(10), step=1, lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-15,
                        zero_grad=True)
    with pytest.raises(RuntimeError, match="step is 0"):
        adam_dense_step(p, torch.zeros(10), torch.zeros(10), torch.zeros(10), step=0, lr=1e-2,
                        beta1=0.9, beta2=0.99, eps=1e-15, zero_grad=True)


def _params(seed: int) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*s, generator=gen) * 0.1)
            for s in ((3000,), (1000, 2), (16, 8), (8,))]


def _groups(params, native: bool) -> list[dict]:
    tables = {"params": params[:2], "lr": 1e-2, "weight_decay": 0.0}
    if native:
        tables["native"] = True
    return [tables, {"params": params[2:], "lr": 5e-3, "weight_decay": 1e-6}]


def _train(opt, params, gen, steps: int, first: int = 1) -> None:
    for t in range(first, first + steps):
        for p in params:
            p.grad = _grad(gen, p.numel(), 0.3).view(p.shape)
        opt.param_groups[0]["lr"] = _lr(t)
        opt.step()


@pytest.mark.parametrize("native", [True, False], ids=["native-op", "torch-twin"])
def test_native_table_adam_equals_torch_adam_with_checkpoints_either_way(native):
    if native and not native_available():
        pytest.skip("native ops unavailable")
    ref_p, mine_p = _params(3), _params(3)
    ref = torch.optim.Adam(_groups(ref_p, False), betas=BETAS, eps=EPS, fused=True)
    mine = NativeTableAdam(_groups(mine_p, True), native=native, betas=BETAS, eps=EPS,
                           fused=True)
    _train(ref, ref_p, torch.Generator().manual_seed(4), 12)
    _train(mine, mine_p, torch.Generator().manual_seed(4), 12)
    # the table group's gradients were consumed; the plain group's are still there
    assert mine_p[0].grad is None and mine_p[1].grad is None
    assert mine_p[2].grad is not None

    # checkpoints cross over: torch Adam's state into NativeTableAdam and back
    ref_again_p, mine_again_p = _params(9), _params(9)
    with torch.no_grad():
        for a, b, c, d in zip(ref_again_p, mine_again_p, ref_p, mine_p, strict=True):
            a.copy_(d)
            b.copy_(c)
    ref_again = torch.optim.Adam(_groups(ref_again_p, False), betas=BETAS, eps=EPS, fused=True)
    ref_again.load_state_dict(copy.deepcopy(mine.state_dict()))  # as through a file
    mine_again = NativeTableAdam(_groups(mine_again_p, True), native=native, betas=BETAS,
                                 eps=EPS, fused=True)
    mine_again.load_state_dict(copy.deepcopy(ref.state_dict()))
    assert mine_again.param_groups[0]["native"]
    for opt, params in ((ref, ref_p), (mine, mine_p), (ref_again, ref_again_p),
                        (mine_again, mine_again_p)):
        _train(opt, params, torch.Generator().manual_seed(5), 6, first=13)
    for a, b, c, d in zip(ref_p, mine_p, ref_again_p, mine_again_p, strict=True):
        if native:  # the native op is torch's fused Adam bit for bit
            assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(a, d)
        else:
            for x in (b, c, d):
                torch.testing.assert_close(x, a, rtol=1e-6, atol=1e-7)
    assert not torch.equal(ref_p[0], _params(3)[0])


def test_native_group_refuses_what_it_cannot_step():
    p = torch.nn.Parameter(torch.zeros(8))
    with pytest.raises(ValueError, match="weight decay"):
        NativeTableAdam([{"params": [p], "native": True, "weight_decay": 1e-3}], lr=1e-2)
    q = torch.nn.Parameter(torch.zeros(8, dtype=torch.float64))
    with pytest.raises(ValueError, match="contiguous float32 CPU tensor"):
        NativeTableAdam([{"params": [q], "native": True}], lr=1e-2)


def test_pool_takes_back_only_sole_owners_and_hands_each_out_once():
    t = torch.zeros(6, 2)
    assert not zeroed_grads.give(t.view(-1))  # `t` still shares the storage: refused
    assert zeroed_grads.take((12,), torch.float32, torch.device("cpu")) is None
    alone = torch.zeros(12)
    assert zeroed_grads.give(alone)
    got = zeroed_grads.take((6, 2), torch.float32, torch.device("cpu"))
    assert got is not None and got.shape == (6, 2) and got.data_ptr() == alone.data_ptr()
    assert zeroed_grads.take((6, 2), torch.float32, torch.device("cpu")) is None
    assert not zeroed_grads.give(torch.zeros(20)[:12])  # part of a larger storage
    assert zeroed_grads.take((12,), torch.float64, torch.device("cpu")) is None
    kept = [zeroed_grads.give(torch.zeros(3)) for _ in range(zeroed_grads.MAX_PER_KEY + 2)]
    assert kept == [True] * zeroed_grads.MAX_PER_KEY + [False, False]
    zeroed_grads.clear()
    assert zeroed_grads.take((3,), torch.float32, torch.device("cpu")) is None


@needs_native
def test_encoding_backward_fills_the_recycled_gradient_from_zero():
    from switchnerf.encoding.hashgrid import HashGrid
    from switchnerf.ops.hash_encode_torch import hash_encode_reference

    torch.manual_seed(0)
    grid = HashGrid(n_levels=4, n_features_per_level=2, log2_hashmap_size=10,
                    base_resolution=4, per_level_scale=2.0)
    opt = NativeTableAdam([{"params": [grid.params], "native": True, "weight_decay": 0.0}],
                          lr=1e-2, betas=BETAS, eps=EPS)
    x = torch.rand(500, 3)
    w = torch.randn(500, 8)
    (grid(x) * w).sum().backward()
    first = grid.params.grad
    first_ptr = first.data_ptr()
    del first
    opt.step()
    assert grid.params.grad is None
    (grid(x) * w).sum().backward()  # the native backward, into the recycled tensor
    assert grid.params.grad.data_ptr() == first_ptr
    table = grid.params.detach().clone().requires_grad_()
    lv = grid.levels
    (hash_encode_reference(x, table.view(lv.n_rows, lv.n_features), None, lv) * w).sum().backward()
    torch.testing.assert_close(grid.params.grad, table.grad, rtol=1e-5, atol=1e-6)
    assert grid.params.grad.abs().sum() > 0


@needs_native
def test_build_optimizer_steps_cpu_tables_natively():
    from switchnerf.config import load_config
    from switchnerf.model import SwitchField
    from switchnerf.train.builder import build_optimizer

    cfg = load_config(None, ["model.experts.n_experts=2", "model.experts.n_levels=4",
                             "model.experts.log2_hashmap_size=10",
                             "model.routing.gate.n_levels=2"])
    field = SwitchField(cfg.model, n_images=2)
    opt = build_optimizer(cfg, field)
    assert isinstance(opt, NativeTableAdam)
    assert opt.param_groups[0]["native"] and not opt.param_groups[1]["native"]
    assert any(p is field.experts.params for p in opt.param_groups[0]["params"])
