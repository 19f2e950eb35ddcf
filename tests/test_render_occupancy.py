"""Occupancy grid: update rule (nerfacc OccGridEstimator._update), lookup, state."""

from __future__ import annotations

import pytest
import torch

from switchnerf.render import OccupancyGrid

RES = (6, 4, 5)
BOX = ((1, 4), (0, 2), (2, 5))  # cells [1,4) x [0,2) x [2,5) hold density


def _box_mask() -> torch.Tensor:
    m = torch.zeros(RES, dtype=torch.bool)
    m[BOX[0][0]:BOX[0][1], BOX[1][0]:BOX[1][1], BOX[2][0]:BOX[2][1]] = True
    return m


def _box_density(value: float):
    def fn(p: torch.Tensor) -> torch.Tensor:  # p: [M, 3] unit frame
        ijk = torch.floor(p * torch.tensor(RES, dtype=p.dtype)).long()
        inside = torch.ones(p.shape[0], dtype=torch.bool)
        for a, (lo, hi) in enumerate(BOX):
            inside &= (ijk[:, a] >= lo) & (ijk[:, a] < hi)
        return torch.where(inside, value, 0.0)
    return fn


def test_update_marks_exactly_the_dense_cells_and_ema_decays():
    grid = OccupancyGrid(RES)
    g = torch.Generator().manual_seed(0)
    grid.update(_box_density(10.0), step=0, step_size=0.01, generator=g,
                n_samples_per_cell=2)
    assert torch.equal(grid.binary, _box_mask())
    dens = grid.density.view(RES)
    assert bool((dens[_box_mask()] == 10.0).all()) and bool((dens[~_box_mask()] == 0).all())

    grid.update(_box_density(0.0), step=1, step_size=0.01, decay=0.9, generator=g)
    torch.testing.assert_close(dens[_box_mask()], torch.full((18,), 9.0))
    assert torch.equal(grid.binary, _box_mask())  # 9 * 0.01 > min(0.01, mean)
    grid.update(_box_density(0.0), step=2, step_size=0.01, decay=0.9, generator=g)
    torch.testing.assert_close(dens[_box_mask()], torch.full((18,), 8.1))
    grid.update(_box_density(20.0), step=3, step_size=0.01, decay=0.9, generator=g)
    torch.testing.assert_close(dens[_box_mask()], torch.full((18,), 20.0))


def test_threshold_is_min_of_threshold_and_mean_opacity():
    grid = OccupancyGrid(4)
    # uniform opacity 1e-3 < threshold: the threshold drops to the mean and nothing passes
    grid.update(lambda p: torch.full((p.shape[0],), 1e-3), step=0, step_size=1.0)
    assert not bool(grid.binary.any())
    # uniform opacity above threshold: everything passes
    grid.update(lambda p: torch.full((p.shape[0],), 0.5), step=1, step_size=0.1)
    assert bool(grid.binary.all())
    # one cell much denser than the rest: only it passes the mean
    grid = OccupancyGrid(4)
    grid.update(lambda p: torch.where((p < 0.25).all(-1), 1.0, 1e-4), step=0, step_size=1e-2)
    assert grid.binary.sum().item() == 1 and bool(grid.binary[0, 0, 0])


def test_after_warmup_only_sampled_cells_change():
    grid = OccupancyGrid(8)
    grid.update(lambda p: torch.where(p[:, 0] < 0.5, 5.0, 0.0), step=0, step_size=0.01)
    before = grid.density.clone()
    grid.update(lambda p: torch.zeros(p.shape[0]), step=300, step_size=0.01, decay=0.5,
                warmup_steps=256, generator=torch.Generator().manual_seed(1))
    changed = grid.density != before
    torch.testing.assert_close(grid.density[changed], before[changed] * 0.5)
    n_cells = 8 ** 3
    assert 0 < int(changed.sum()) <= n_cells // 4 + n_cells // 4
    assert int(changed.sum()) < int((before > 0).sum())  # not every dense cell was sampled


def test_update_every_n_steps_and_chunked_density_fn():
    grid = OccupancyGrid(4)
    calls = []

    def fn(p):
        calls.append(p.shape[0])
        return torch.ones(p.shape[0])

    assert not grid.update_every_n_steps(3, fn, n=4, step_size=0.1)
    assert calls == []
    assert grid.update_every_n_steps(8, fn, n=4, step_size=0.1, chunk=20)
    assert sum(calls) == 64 and max(calls) == 20
    assert bool(grid.binary.all())


def test_occupied_lookup_and_outside_points():
    grid = OccupancyGrid((2, 2, 4))
    grid.binary[1, 0, 3] = True
    pts = torch.tensor([[0.75, 0.25, 0.9], [0.75, 0.25, 1.0], [0.75, 0.25, 1.01],
                        [0.25, 0.25, 0.9], [0.75, -0.01, 0.9], [0.5, 0.0, 0.75]])
    assert grid.occupied(pts).tolist() == [True, True, False, False, False, True]


def test_state_dict_round_trip_and_to():
    grid = OccupancyGrid(RES)
    grid.update(_box_density(3.0), step=0, step_size=0.1)
    state = grid.state_dict()
    assert set(state) == {"density", "binary", "resolution"}
    other = OccupancyGrid(RES)
    other.load_state_dict(state)
    assert torch.equal(other.density, grid.density) and torch.equal(other.binary, grid.binary)
    moved = other.to("cpu")
    assert moved.binary.dtype == torch.bool and moved.density.dtype == torch.float32
    with pytest.raises(RuntimeError):
        OccupancyGrid(4).load_state_dict(state)


def test_bad_resolution():
    with pytest.raises(ValueError):
        OccupancyGrid((4, 4))
    with pytest.raises(ValueError):
        OccupancyGrid(0)
