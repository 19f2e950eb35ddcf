"""SkipZeroAdam: Adam of the hash-table entries that have a gradient (native op against its
torch twin, the optimiser against torch's Adam and SparseAdam)."""

import pytest
import torch

from switchnerf.ops.adam_sparse import adam_skip_zero_step, adam_skip_zero_step_torch
from switchnerf.train.skip_zero_adam import SkipZeroAdam


def _sparse_grad(n: int, share: float, g: torch.Generator) -> torch.Tensor:
    grad = torch.randn(n, generator=g)
    grad[torch.rand(n, generator=g) >= share] = 0.0
    grad[:16] = 0.0  # whole zero vectors of 8
    return grad


@pytest.mark.parametrize("n", [1, 7, 8, 1000, 70001])
def test_native_step_equals_the_torch_twin_bit_for_bit(native, n):
    g = torch.Generator().manual_seed(n)
    states = [[torch.randn(n, generator=g), torch.zeros(n), torch.zeros(n)] for _ in range(1)]
    p, m, v = states[0]
    twin = [p.clone(), m.clone(), v.clone()]
    for t in range(1, 6):
        grad = _sparse_grad(n, 0.3, g)
        kw = dict(step_size=1e-2 / (1 - 0.9 ** t), bc2_sqrt=(1 - 0.99 ** t) ** 0.5,
                  beta1=0.9, beta2=0.99, eps=1e-15)
        a = adam_skip_zero_step(p, grad, m, v, **kw)
        b = adam_skip_zero_step_torch(*twin[:1], grad, *twin[1:], **kw)
        assert a == b == int((grad != 0).sum())
    for x, y in zip((p, m, v), twin, strict=True):
        assert torch.equal(x, y)


def test_entries_without_gradient_keep_value_and_moments(native):
    g = torch.Generator().manual_seed(3)
    p, m, v = torch.randn(64, generator=g), torch.rand(64, generator=g), torch.rand(64, generator=g)
    before = [t.clone() for t in (p, m, v)]
    grad = torch.zeros(64)
    grad[[5, 40]] = torch.tensor([0.5, -2.0])
    adam_skip_zero_step(p, grad, m, v, step_size=0.1, bc2_sqrt=0.5, beta1=0.9, beta2=0.99,
                        eps=1e-8)
    moved = torch.zeros(64, dtype=torch.bool)
    moved[[5, 40]] = True
    for now, old in zip((p, m, v), before, strict=True):
        assert torch.equal(now[~moved], old[~moved]) and (now[moved] != old[moved]).all()


def _train(opt_cls, grads, lrs, **kw):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(500))
    opt = opt_cls([{"params": [p], "lr": lrs[0], **kw.pop("group", {})}], betas=(0.9, 0.99),
                  eps=1e-15, **kw)
    for grad, lr in zip(grads, lrs, strict=True):
        opt.param_groups[0]["lr"] = lr
        p.grad = grad.to_sparse() if opt_cls is torch.optim.SparseAdam else grad.clone()
        opt.step()
    return p.detach(), opt


def test_dense_gradients_give_torch_adam_and_sparse_ones_sparse_adam(native):
    g = torch.Generator().manual_seed(5)
    lrs = [1e-2, 2e-2, 5e-3, 1e-2, 1e-2, 3e-3]
    dense = [torch.randn(500, generator=g) for _ in lrs]
    ours, _ = _train(SkipZeroAdam, dense, lrs, group={"skip_zero": True})
    ref, _ = _train(torch.optim.Adam, dense, lrs)
    assert torch.allclose(ours, ref, atol=1e-6, rtol=1e-5)
    sparse = [_sparse_grad(500, 0.2, g) for _ in lrs]
    ours, opt = _train(SkipZeroAdam, sparse, lrs, group={"skip_zero": True})
    ref, _ = _train(torch.optim.SparseAdam, sparse, lrs)
    assert torch.allclose(ours, ref, atol=1e-6, rtol=1e-5)
    plain, _ = _train(torch.optim.Adam, sparse, lrs)
    assert not torch.allclose(ours, plain, atol=1e-6)  # dense Adam moves untouched entries
    # the state has dense Adam's layout: it loads into torch's Adam and back
    dense_opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(500))], lr=1.0)
    dense_opt.load_state_dict(opt.state_dict())
    opt.load_state_dict(dense_opt.state_dict())
    assert opt.param_groups[0]["skip_zero"]


def test_skip_zero_groups_are_checked():
    p = torch.nn.Parameter(torch.zeros(4, 4).t())  # not contiguous
    with pytest.raises(ValueError, match="contiguous"):
        SkipZeroAdam([{"params": [p], "skip_zero": True}], lr=1e-2)
    q = torch.nn.Parameter(torch.zeros(4))
    with pytest.raises(ValueError, match="weight decay"):
        SkipZeroAdam([{"params": [q], "skip_zero": True, "weight_decay": 1e-3}], lr=1e-2)


def test_build_optimizer_takes_skip_zero_from_the_config(native):
    from switchnerf.config import load_config
    from switchnerf.model.field import SwitchField
    from switchnerf.train.builder import build_optimizer

    for value, cls in (("dense", torch.optim.Adam), ("skip_zero", SkipZeroAdam)):
        cfg = load_config(None, [f"optim.table_update={value}"])
        opt = build_optimizer(cfg, SwitchField(cfg.model, n_images=3))
        assert type(opt) is cls
        assert opt.param_groups[0].get("skip_zero", False) == (value == "skip_zero")
    from switchnerf.errors import SwitchNerfError

    with pytest.raises(SwitchNerfError, match="table_update"):
        load_config(None, ["optim.table_update=sparse"])
