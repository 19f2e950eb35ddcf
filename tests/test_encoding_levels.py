"""Level geometry against numbers worked out by hand from tcnn's formulas."""

import dataclasses

import pytest
import torch

from switchnerf.encoding import GridSpec, HashExperts, HashGrid, LevelTable
from switchnerf.encoding.experts import geometric_expert_specs
from switchnerf.ops.hash_levels import experts_rows, grid_level_specs, solve_hashmap_size


def test_small_grid_by_hand():
    # base 4, pls 2: scale = 4 * 2**l - 1 = 3, 7, 15, 31; res = scale + 1 (integral scales).
    # res**3 = 64, 512, 4096, 32768 against T = 256: level 0 dense (64 rows), the rest hashed.
    lv = LevelTable.for_grid(
        n_levels=4, n_features=2, log2_hashmap_size=8, base_resolution=4, per_level_scale=2.0
    )
    assert lv.scale.tolist() == [[3.0, 7.0, 15.0, 31.0]]
    assert lv.resolution.tolist() == [[4, 8, 16, 32]]
    assert lv.size.tolist() == [[64, 256, 256, 256]]
    assert lv.offset.tolist() == [[0, 64, 320, 576]]
    assert lv.hashed.tolist() == [[False, True, True, True]]
    assert lv.level_kinds == ("dense", "hashed", "hashed", "hashed")
    assert (lv.n_rows, lv.n_levels, lv.n_features, lv.n_experts) == (832, 4, 2, 1)
    assert lv.scale.dtype == torch.float32 and lv.resolution.dtype == torch.int32
    assert lv.size.dtype == torch.int32 and lv.offset.dtype == torch.int64
    assert HashGrid(n_levels=4, log2_hashmap_size=8, base_resolution=4).params.numel() == 1664


def test_sixteen_levels_by_hand():
    # base 16, pls 1.45, T = 2**14: scale_l = 16 * 1.45**l - 1 =
    # 15, 22.2, 32.64, 47.78, 69.73, 101.56, 147.71, 214.62, 311.65, 452.35, 656.36, 952.16,
    # 1381.09, 2003.03, 2904.84, 4212.47 (no fraction closer than 0.029 to an integer).
    res = [16, 24, 34, 49, 71, 103, 149, 216, 313, 454, 658, 954, 1383, 2005, 2906, 4214]
    # 16**3 = 4096 and 24**3 = 13824 fit in 16384: dense; 34**3 = 39304 does not.
    size = [4096, 13824] + [16384] * 14
    offset = [
        0,
        4096,
        17920,
        34304,
        50688,
        67072,
        83456,
        99840,
        116224,
        132608,
        148992,
        165376,
        181760,
        198144,
        214528,
        230912,
    ]
    specs = grid_level_specs(16, 14, 16, 1.45)
    assert [s.resolution for s in specs] == res
    assert [s.size for s in specs] == size
    assert [s.hashed for s in specs] == [False, False] + [True] * 14
    assert specs[1].scale == pytest.approx(22.2, abs=1e-4)
    # float32 pls (1.45000005) and log2f rounding, amplified 15x: off by ~2.5e-3 from real math.
    assert specs[15].scale == pytest.approx(4212.4711, abs=5e-3)
    lv = LevelTable.for_grid(
        n_levels=16, n_features=4, log2_hashmap_size=14, base_resolution=16, per_level_scale=1.45
    )
    assert lv.offset.tolist() == [offset]
    assert lv.n_rows == 247296


def test_unit_base_and_padding_to_eight():
    # base 1, pls 2: scale = 2**l - 1 = 0, 1, 3 -> res 1, 2, 4; 1 and 8 rows pad to 8, 64 stays.
    lv = LevelTable.for_grid(
        n_levels=3, n_features=1, log2_hashmap_size=10, base_resolution=1, per_level_scale=2.0
    )
    assert lv.resolution.tolist() == [[1, 2, 4]]
    assert lv.size.tolist() == [[8, 8, 64]]
    assert lv.offset.tolist() == [[0, 8, 16]]


def test_two_experts_one_table():
    # expert 0: base 3, pls 1.5, T 2**10: scale 2, 3.5 -> res 3, 5; 27 -> 32 and 125 -> 128 rows.
    # expert 1: base 4, pls 2, T 2**8: res 4 (64, dense), 8 (512 > 256, hashed).
    lv = LevelTable.for_experts(
        [GridSpec(3, 10, per_level_scale=1.5), GridSpec(4, 8, per_level_scale=2.0)],
        n_levels=2,
        n_features=2,
    )
    assert lv.resolution.tolist() == [[3, 5], [4, 8]]
    assert lv.size.tolist() == [[32, 128], [64, 256]]
    assert lv.offset.tolist() == [[0, 32], [160, 224]]
    assert lv.hashed.tolist() == [[False, False], [False, True]]
    assert lv.level_kinds == ("dense", "mixed")
    assert lv.n_rows == 480
    assert lv.expert_rows(1) == (160, 480)


def test_max_resolution_spec_and_geometric_experts():
    # exp(log(2048 / 16) / 15) = 128 ** (1 / 15) = 1.38191...
    assert GridSpec(16, 19, max_resolution=2048).resolve_per_level_scale(16) == pytest.approx(
        1.3819128799677775
    )
    grid = HashGrid.from_max_resolution(n_levels=16, log2_hashmap_size=12, max_resolution=2048)
    assert grid.per_level_scale == pytest.approx(1.3819128799677775)
    specs = geometric_expert_specs(4, base_resolution=16, finest_resolution=4096)
    assert [s.max_resolution for s in specs] == [512, 1024, 2048, 4096]
    with pytest.raises(ValueError):
        GridSpec(16, 19)
    with pytest.raises(ValueError):
        geometric_expert_specs(2, base_resolution=16, finest_resolution=64)


def test_level_buffers_follow_the_module_and_survive_casts():
    experts = HashExperts(
        [GridSpec(4, 8, per_level_scale=1.7), GridSpec(2, 9, per_level_scale=2.3)], n_levels=3
    )
    before = experts.levels.scale.clone()
    experts.double()
    assert experts.params.dtype == torch.float64
    assert experts.levels.scale.dtype == torch.float32
    assert torch.equal(experts.levels.scale, before)
    assert experts.state_dict().keys() == {"params"}


def test_explicit_hashmap_size_caps_hashed_levels():
    # base 4, pls 2: res 4, 8, 16 (64, 512, 4096 vertices). T = 300: level 0 dense (64 rows),
    # levels 1 and 2 hashed with 300 rows each. T = 600: level 1 fits (512 rows, dense).
    specs = grid_level_specs(3, 8, 4, 2.0, hashmap_size=300)
    assert [(s.size, s.hashed) for s in specs] == [(64, False), (300, True), (300, True)]
    specs = grid_level_specs(3, 8, 4, 2.0, hashmap_size=600)
    assert [(s.size, s.hashed) for s in specs] == [(64, False), (512, False), (600, True)]
    lv = LevelTable.for_grid(n_levels=3, n_features=2, log2_hashmap_size=8, base_resolution=4,
                             per_level_scale=2.0, hashmap_size=300)
    assert lv.offset.tolist() == [[0, 64, 364]] and lv.n_rows == 664
    assert lv.pow2_sizes == (True, False, False)
    grid = HashGrid(n_levels=3, log2_hashmap_size=8, base_resolution=4, hashmap_size=300)
    assert grid.params.numel() == 664 * 2 and "hashmap_size=300" in repr(grid)
    # a power-of-two hashmap_size is the same grid as its log2
    assert LevelTable.for_grid(n_levels=3, n_features=2, log2_hashmap_size=19, base_resolution=4,
                               per_level_scale=2.0, hashmap_size=256).size.tolist() == [[64, 256, 256]]
    experts = geometric_expert_specs(2, finest_resolution=256, hashmap_size=1000)
    assert [s.table_size for s in experts] == [1000, 1000]
    assert GridSpec(4, 8, per_level_scale=2.0).table_size == 256
    for bad in (7, 2**31):
        with pytest.raises(ValueError, match="hashmap_size"):
            GridSpec(4, 8, per_level_scale=2.0, hashmap_size=bad)
    with pytest.raises(TypeError, match="hashmap_size"):
        GridSpec(4, 8, per_level_scale=2.0, hashmap_size=1.5)


def test_solve_hashmap_size_picks_the_nearest_total():
    # rows(T) = 64 + 2 T for 64 < T < 512 (the example grid above)
    spec = GridSpec(4, 8, per_level_scale=2.0)
    assert experts_rows([spec], 3) == 64 + 2 * 256
    assert solve_hashmap_size([spec], 3, 64 + 2 * 300) == 300  # exact
    assert solve_hashmap_size([spec], 3, 64 + 2 * 300 + 1) == 300  # tie: the smaller
    assert solve_hashmap_size([spec, spec], 3, 2 * (64 + 2 * 300) + 3) == 301  # 4 rows per step
    assert solve_hashmap_size([spec], 3, 0) == 8  # below everything: the smallest size
    # two experts of different shapes (as fixed-grid against switchnerf++)
    specs = geometric_expert_specs(8, finest_resolution=1024, log2_hashmap_size=15)
    target = experts_rows(specs, 16) + 12345
    size = solve_hashmap_size(specs, 16, target)
    bigger = [dataclasses.replace(s, hashmap_size=size) for s in specs]
    hashed = sum(s.hashed for b in bigger for s in grid_level_specs(
        16, 15, b.base_resolution, b.resolve_per_level_scale(16), hashmap_size=size))
    assert abs(experts_rows(bigger, 16) - target) <= hashed // 2
