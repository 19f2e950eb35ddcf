"""HashExperts equals each expert run as its own HashGrid on its own points."""

import pytest
import torch

from switchnerf.encoding import GridSpec, HashExperts, HashGrid
from switchnerf.encoding.experts import geometric_expert_specs, split_table_rows

SPECS = [
    GridSpec(4, 8, max_resolution=24),
    GridSpec(3, 10, per_level_scale=1.5),
    GridSpec(8, 9, max_resolution=96),
    GridSpec(2, 7, per_level_scale=2.5),
    GridSpec(16, 11, max_resolution=200),
    GridSpec(5, 8, per_level_scale=1.2),
    GridSpec(6, 9, max_resolution=300),
    GridSpec(4, 12, per_level_scale=1.9),
]


def _assert_grid_is_expert(grid, experts, e, x, expert_id, out, upstream) -> slice:
    """``grid`` given expert ``e``'s table encodes ``e``'s points as ``out`` does, and its
    table gradient is ``e``'s slice of the experts' gradient. Returns that slice."""
    part = experts.expert_param_slice(e)
    assert grid.params.numel() == experts.param_count(e) == part.stop - part.start
    with torch.no_grad():
        grid.params.copy_(experts.params[part])
    mine = expert_id == e
    got = grid(x[mine])
    torch.testing.assert_close(out[mine], got, rtol=0, atol=1e-6)
    (got * upstream[mine]).sum().backward()
    torch.testing.assert_close(experts.params.grad[part], grid.params.grad, rtol=0, atol=1e-5)
    return part


def _check_against_grids(n_experts: int, n: int, empty_expert: int | None, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    n_levels, n_features = 4, 2
    experts = HashExperts(SPECS[:n_experts], n_levels=n_levels, n_features_per_level=n_features)
    with torch.no_grad():
        experts.params.copy_(torch.randn(experts.params.shape, generator=gen))
    x = torch.rand(n, 3, generator=gen)
    expert_id = torch.randint(0, n_experts, (n,), generator=gen)
    if empty_expert is not None:
        expert_id[expert_id == empty_expert] = (empty_expert + 1) % n_experts
    out = experts.encode(x, expert_id)
    assert out.shape == (n, n_levels * n_features)
    upstream = torch.randn(out.shape, generator=gen)
    (out * upstream).sum().backward()

    covered = 0
    for e, spec in enumerate(SPECS[:n_experts]):
        grid = HashGrid(
            n_levels=n_levels,
            n_features_per_level=n_features,
            log2_hashmap_size=spec.log2_hashmap_size,
            base_resolution=spec.base_resolution,
            per_level_scale=spec.resolve_per_level_scale(n_levels),
        )
        part = _assert_grid_is_expert(grid, experts, e, x, expert_id, out, upstream)
        assert part.start == covered
        covered = part.stop
        if empty_expert == e:
            assert torch.count_nonzero(experts.params.grad[part]) == 0
    assert covered == experts.param_count()


@pytest.mark.parametrize("n_experts", [1, 2, 3, 8])
def test_encode_equals_separate_grids(n_experts):
    _check_against_grids(n_experts, n=300, empty_expert=None, seed=n_experts)


def test_expert_without_points():
    _check_against_grids(5, n=200, empty_expert=2, seed=11)


def test_no_points():
    _check_against_grids(4, n=0, empty_expert=None, seed=12)


def test_module_moves_and_encodes_in_double():
    experts = HashExperts(SPECS[:2], n_levels=3).double()
    out = experts(torch.rand(5, 3), torch.tensor([0, 1, 0, 1, 1]))
    assert out.dtype == torch.float64 and out.shape == (5, 6)


def test_detail_weighted_tables_split_the_same_rows():
    """table_split_power: the rows per hashed level follow max_resolution ** p, the total is
    that of equal tables, and each expert still encodes as its own HashGrid of that size."""
    equal = geometric_expert_specs(4, base_resolution=4, finest_resolution=64,
                                   coarsest_fraction=0.25, hashmap_size=500)
    split = geometric_expert_specs(4, base_resolution=4, finest_resolution=64,
                                   coarsest_fraction=0.25, hashmap_size=500, table_split_power=1.0)
    sizes = [s.hashmap_size for s in split]
    assert sum(sizes) == 4 * 500 and sizes == sorted(sizes) and sizes[0] < 500 < sizes[-1]
    # proportional to the finest resolutions (16, 25, 40, 64) up to the rounding
    for size, spec in zip(sizes, split):
        assert abs(size - 2000 * spec.max_resolution / 145) < 1
    assert [s.max_resolution for s in split] == [s.max_resolution for s in equal]
    n_levels = 3
    experts = HashExperts(split, n_levels=n_levels)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        experts.params.copy_(torch.randn(experts.params.shape, generator=gen))
    x = torch.rand(400, 3, generator=gen)
    expert_id = torch.randint(0, 4, (400,), generator=gen)
    out = experts(x, expert_id)
    upstream = torch.randn(out.shape, generator=gen)
    (out * upstream).sum().backward()
    for e, spec in enumerate(split):
        grid = HashGrid(n_levels=n_levels, log2_hashmap_size=spec.log2_hashmap_size,
                        base_resolution=spec.base_resolution, hashmap_size=spec.hashmap_size,
                        per_level_scale=spec.resolve_per_level_scale(n_levels))
        _assert_grid_is_expert(grid, experts, e, x, expert_id, out, upstream)


def test_split_table_rows_is_exact_and_rejects_a_negative_power():
    rows = split_table_rows([128, 172, 232, 312, 420, 565, 761, 1024], 36669, 1.5)
    assert sum(rows) == 8 * 36669 and rows == sorted(rows)
    assert split_table_rows([10, 10, 10], 100, 3.0) == [100, 100, 100]
    assert split_table_rows([1, 10**6], 20, 2.0) == [8, 32]  # never below a valid size
    with pytest.raises(ValueError, match="table_split_power"):
        split_table_rows([1, 2], 100, -1.0)
