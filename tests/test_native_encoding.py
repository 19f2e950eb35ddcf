"""The fused hash encoding (native CPU op) against the pure-torch reference."""

from __future__ import annotations

import pytest
import torch

from switchnerf.ops.hash_encode_torch import hash_encode_reference
from switchnerf.ops.hash_levels import GridSpec, LevelTable


def fused(*args):
    from switchnerf.ops.hash_encode import fused_hash_encode

    return fused_hash_encode(*args)


def expert_levels(n_experts: int, n_levels: int = 6, n_features: int = 2) -> LevelTable:
    """Heterogeneous experts with small tables: coarse levels dense, fine levels hashed, and
    some levels dense for one expert and hashed for another."""
    specs = [
        GridSpec(2 + e, 9 + (e % 3), max_resolution=float(24 + 40 * e))
        for e in range(n_experts)
    ]
    return LevelTable.for_experts(specs, n_levels=n_levels, n_features=n_features)


def random_table(levels: LevelTable, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(levels.n_rows, levels.n_features, generator=gen) * 2 - 1  # [R, F]


def ray_points(n: int, gen: torch.Generator) -> torch.Tensor:
    """Points [n, 3] in [0, 1]^3 with the cube's corners and faces among them."""
    x = torch.rand(n, 3, generator=gen)
    edge = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.5], [0.5, 1.0, 0.0]])
    k = min(n, edge.shape[0])
    x[:k] = edge[:k]
    return x


def check_against_reference(x, table, expert_id, levels, gen):
    ref_table = table.clone().requires_grad_()
    nat_table = table.clone().requires_grad_()
    ref = hash_encode_reference(x, ref_table, expert_id, levels)
    out = fused(x, nat_table, expert_id, levels)
    assert out.shape == ref.shape == (x.shape[0], levels.output_dim)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    grad = torch.randn(ref.shape, generator=gen)
    (g_ref,) = torch.autograd.grad(ref, ref_table, grad)
    (g_nat,) = torch.autograd.grad(out, nat_table, grad)
    torch.testing.assert_close(g_nat, g_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_experts", [1, 2, 3, 8])
@pytest.mark.parametrize("n_points", [0, 1, 1000, 8193])
def test_experts_forward_and_table_gradient(native, n_experts, n_points):
    gen = torch.Generator().manual_seed(n_experts * 1000 + n_points)
    levels = expert_levels(n_experts)
    assert {"dense", "hashed"} <= set(levels.level_kinds) | {"mixed"}
    x = ray_points(n_points, gen)
    eid = torch.randint(0, n_experts, (n_points,), generator=gen)
    check_against_reference(x, random_table(levels, gen), eid, levels, gen)


@pytest.mark.parametrize("n_experts", [1, 3, 8])
def test_non_power_of_two_tables(native, n_experts):
    """Explicit hashmap sizes (the baselines' equal-parameter tables): modulo, not mask."""
    gen = torch.Generator().manual_seed(40 + n_experts)
    specs = [GridSpec(2 + e, 9, max_resolution=float(24 + 40 * e), hashmap_size=333 + 100 * e)
             for e in range(n_experts)]
    levels = LevelTable.for_experts(specs, n_levels=6, n_features=2)
    assert all(s & (s - 1) for s in levels.size[levels.hashed].tolist())  # hashed: not 2^k
    assert levels.hashed.any()
    x = ray_points(4000, gen)
    eid = torch.randint(0, n_experts, (4000,), generator=gen)
    check_against_reference(x, random_table(levels, gen), eid, levels, gen)


@pytest.mark.parametrize("n_points", [3, 8, 9, 100, 5000])
def test_sparse_visits_of_large_tables(native, n_points):
    """Few points against large hashed levels (a training batch: the kernel computes the
    corners ahead of use and prefetches their rows) and the same points against small
    tables (the plain loop); some points' output gradient is zero (skipped rows)."""
    gen = torch.Generator().manual_seed(70 + n_points)
    x = ray_points(n_points, gen)
    eid = torch.randint(0, 3, (n_points,), generator=gen)
    for log2_size in (16, 9):  # 2 n < 2^16 rows: sparse; 2^9 rows: dense for the larger n
        specs = [GridSpec(4, log2_size, max_resolution=float(512 + 256 * e)) for e in range(3)]
        levels = LevelTable.for_experts(specs, n_levels=4, n_features=2)
        table = random_table(levels, gen)
        ref_table, nat_table = table.clone().requires_grad_(), table.clone().requires_grad_()
        ref = hash_encode_reference(x, ref_table, eid, levels)
        out = fused(x, nat_table, eid, levels)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
        grad = torch.randn(ref.shape, generator=gen)
        grad[::3] = 0.0
        (g_ref,) = torch.autograd.grad(ref, ref_table, grad)
        (g_nat,) = torch.autograd.grad(out, nat_table, grad)
        torch.testing.assert_close(g_nat, g_ref, rtol=1e-5, atol=1e-5)


def test_levels_cover_dense_hashed_and_mixed():
    kinds = set(expert_levels(8).level_kinds)
    assert kinds == {"dense", "hashed", "mixed"}


@pytest.mark.parametrize("n_features", [1, 2, 4, 8])
def test_gate_single_grid(native, n_features):
    gen = torch.Generator().manual_seed(n_features)
    levels = LevelTable.for_grid(n_levels=8, n_features=n_features, log2_hashmap_size=11,
                                 base_resolution=4, per_level_scale=1.6)
    assert "dense" in levels.level_kinds and "hashed" in levels.level_kinds
    x = ray_points(3001, gen)
    table = random_table(levels, gen)
    check_against_reference(x, table, None, levels, gen)
    zeros = torch.zeros(3001, dtype=torch.int64)
    check_against_reference(x, table, zeros, levels, gen)


@pytest.mark.parametrize("empty", [[0], [1, 2], [0, 3, 4, 5, 6, 7]])
def test_empty_experts(native, empty):
    gen = torch.Generator().manual_seed(len(empty))
    levels = expert_levels(8)
    used = torch.tensor([e for e in range(8) if e not in empty])
    eid = used[torch.randint(0, used.numel(), (2500,), generator=gen)]
    x = ray_points(2500, gen)
    table = random_table(levels, gen)
    check_against_reference(x, table, eid, levels, gen)
    nat_table = table.clone().requires_grad_()
    fused(x, nat_table, eid, levels).sum().backward()
    for e in empty:  # no gradient reaches an expert without points
        first, end = levels.expert_rows(e)
        assert not nat_table.grad[first:end].any()


def test_ray_ordered_samples_sorted_by_expert_blocks(native):
    """Coherent input: samples along rays, experts by octant (what the model feeds)."""
    gen = torch.Generator().manual_seed(7)
    a, b = torch.rand(64, 3, generator=gen), torch.rand(64, 3, generator=gen)
    t = torch.linspace(0, 1, 77)
    x = (a[:, None] + t[None, :, None] * (b - a)[:, None]).reshape(-1, 3)
    bits = (x >= 0.5).long()
    eid = bits[:, 0] + 2 * bits[:, 1] + 4 * bits[:, 2]
    levels = expert_levels(8)
    check_against_reference(x, random_table(levels, gen), eid, levels, gen)


def test_non_contiguous_inputs(native):
    gen = torch.Generator().manual_seed(3)
    levels = expert_levels(4)
    big = torch.rand(3, 1500, generator=gen)
    x = big.t()  # [1500, 3], not contiguous
    assert not x.is_contiguous()
    eid = torch.randint(0, 4, (3000,), generator=gen)[::2]  # stride 2
    table_big = torch.rand(levels.n_rows, levels.n_features * 2, generator=gen)
    table = table_big[:, ::2]  # [R, F] with stride
    assert not table.is_contiguous()
    ref = hash_encode_reference(x, table, eid, levels)
    torch.testing.assert_close(fused(x, table, eid, levels), ref, rtol=1e-5, atol=1e-6)
    leaf = table_big.clone().requires_grad_()
    fused(x, leaf[:, ::2], eid, levels).sum().backward()
    leaf_ref = table_big.clone().requires_grad_()
    hash_encode_reference(x, leaf_ref[:, ::2], eid, levels).sum().backward()
    torch.testing.assert_close(leaf.grad, leaf_ref.grad, rtol=1e-5, atol=1e-5)


def test_backward_is_deterministic(native):
    gen = torch.Generator().manual_seed(11)
    levels = expert_levels(8)
    x = ray_points(20000, gen)
    eid = torch.randint(0, 8, (20000,), generator=gen)
    grads = []
    for _ in range(2):
        table = random_table(levels, torch.Generator().manual_seed(0)).requires_grad_()
        fused(x, table, eid, levels).pow(2).sum().backward()
        grads.append(table.grad)
    assert torch.equal(grads[0], grads[1])


def test_points_outside_the_cube_follow_tcnn(native):
    """tcnn does not clamp: cells below 0 wrap in uint32, as the reference emulates."""
    gen = torch.Generator().manual_seed(5)
    levels = expert_levels(2)
    x = torch.rand(500, 3, generator=gen) * 1.4 - 0.2
    eid = torch.randint(0, 2, (500,), generator=gen)
    check_against_reference(x, random_table(levels, gen), eid, levels, gen)


def test_refuses_what_it_cannot_do(native):
    levels = expert_levels(2)
    table = torch.zeros(levels.n_rows, levels.n_features)
    x = torch.rand(10, 3)
    with pytest.raises(ValueError, match="no gradient w.r.t. x"):
        fused(x.clone().requires_grad_(), table, None, levels)
    with pytest.raises(ValueError, match="float32"):
        fused(x.double(), table, None, levels)
    with pytest.raises(ValueError, match="table has shape"):
        fused(x, table[:-1], None, levels)
    with pytest.raises(ValueError, match="expert_id"):
        fused(x, table, torch.zeros(10, dtype=torch.int32), levels)
    with pytest.raises(RuntimeError, match=r"expert_id holds values in \[0, 2\]"):
        fused(x, table, torch.tensor([0, 1, 2] + [0] * 7), levels)
    with pytest.raises(RuntimeError, match="features per level is 3"):
        lv3 = LevelTable.for_grid(n_levels=2, n_features=3, log2_hashmap_size=8,
                                  base_resolution=4, per_level_scale=2.0)
        fused(x, torch.zeros(lv3.n_rows, 3), None, lv3)


def test_boundary_checks_name_the_argument(native):
    levels = expert_levels(1)
    t = levels.tensors()
    x = torch.rand(4, 3)
    table = torch.zeros(levels.n_rows, levels.n_features)
    args = {"scale": t["scale"], "resolution": t["resolution"], "size": t["size"], "offset": t["offset"]}
    with pytest.raises(RuntimeError, match="'x' has shape"):
        native.hash_encode_forward(torch.rand(4, 2), table, None, **args)
    with pytest.raises(RuntimeError, match="'x' is not contiguous"):
        native.hash_encode_forward(torch.rand(3, 4).t(), table, None, **args)
    with pytest.raises(RuntimeError, match="'levels.resolution' has dtype"):
        native.hash_encode_forward(x, table, None, **{**args, "resolution": t["resolution"].long()})
    with pytest.raises(RuntimeError, match="does not fit the table"):
        native.hash_encode_forward(x, table[:10], None, **args)
    with pytest.raises(RuntimeError, match="'grad_out' has shape"):
        native.hash_encode_backward(torch.zeros(4, 1), x, None, **args,
                                    n_rows=levels.n_rows, n_features=levels.n_features)
