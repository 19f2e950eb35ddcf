"""Ray marching through an occupancy grid: empty-space skipping, bounds, order, termination."""

from __future__ import annotations

import math

import pytest
import torch

from switchnerf.render import OccupancyGrid, march_rays, ray_box_intersect, render_weights

LO = torch.tensor([-2.0, 1.0, 0.0])
HI = torch.tensor([2.0, 3.0, 8.0])  # anisotropic box: extents 4, 2, 8


def _rays(n: int, seed: int):
    """World rays aimed at random points of the box, mapped to the unit frame."""
    g = torch.Generator().manual_seed(seed)
    o_world = LO + (HI - LO) * (torch.rand(n, 3, generator=g) * 2.0 - 0.5)  # some inside
    target = LO + (HI - LO) * torch.rand(n, 3, generator=g)
    d = target - o_world
    d = d / d.norm(dim=-1, keepdim=True)
    d[:4] = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, -1.0], [0, 0, 1.0]])  # zero comps
    near = 0.5 * torch.rand(n, generator=g)
    far = near + 2.0 + 10.0 * torch.rand(n, generator=g)
    far[5] = float("inf")
    return (o_world - LO) / (HI - LO), d / (HI - LO), near, far


def _random_grid(res, p: float, seed: int) -> OccupancyGrid:
    grid = OccupancyGrid(res)
    g = torch.Generator().manual_seed(seed)
    grid.binary.copy_(torch.rand(grid.binary.shape, generator=g) < p)
    return grid


def _check_layout(s, n: int):
    m = len(s)
    assert s.ray_indices.dtype == torch.int64 and s.t_starts.dtype == torch.float32
    assert s.t_starts.shape == s.t_ends.shape == (m,)
    assert bool((s.ray_indices[1:] >= s.ray_indices[:-1]).all())
    counts = torch.bincount(s.ray_indices, minlength=n)
    assert s.chunk_counts.tolist() == counts.tolist()
    assert s.chunk_starts.tolist() == (counts.cumsum(0) - counts).tolist()
    assert int(s.chunk_counts.sum()) == m
    same = s.ray_indices[1:] == s.ray_indices[:-1]
    assert bool((s.t_starts[1:][same] > s.t_starts[:-1][same]).all())  # ordered by t


@pytest.mark.parametrize("res", [8, (5, 9, 3)])
def test_samples_only_in_occupied_cells_within_bounds(res):
    origins, dirs, near, far = _rays(300, seed=0)
    grid = _random_grid(res, 0.4, seed=1)
    step = 0.05
    s = march_rays(origins, dirs, near, far, grid, step_size=step)
    n = origins.shape[0]
    _check_layout(s, n)
    assert len(s) > 1000
    assert bool(grid.occupied(s.points(origins, dirs)).all())
    r = s.ray_indices
    t_enter, t_exit = ray_box_intersect(origins, dirs)
    mid = s.t_mids
    assert bool((s.t_starts >= near[r]).all())
    assert bool((mid < far[r]).all())
    assert bool((mid >= t_enter[r] - 1e-5).all()) and bool((mid <= t_exit[r] + 1e-5).all())
    torch.testing.assert_close(s.t_ends - s.t_starts, torch.full_like(mid, step), atol=2e-6,
                               rtol=0)
    k = (s.t_starts - near[r]) / step  # on the lattice near + k * step
    torch.testing.assert_close(k, k.round(), atol=2e-4, rtol=0)


def test_matches_brute_force_lattice():
    """Every lattice step whose midpoint is in the box, in [near, far) and in an occupied
    cell is returned, and nothing else (up to float ties at cell and segment boundaries)."""
    origins, dirs, near, far = _rays(60, seed=2)
    grid = _random_grid(6, 0.5, seed=3)
    step = 0.07
    s = march_rays(origins, dirs, near, far, grid, step_size=step)
    t_enter, t_exit = ray_box_intersect(origins, dirs)
    for r in range(origins.shape[0]):
        got = s.t_starts[s.ray_indices == r]
        got_k = set(((got - near[r]) / step).round().long().tolist())
        t0 = max(float(near[r]), float(t_enter[r]))
        t1 = min(float(far[r]), float(t_exit[r]))
        want_k, ambiguous = set(), set()
        if t1 > t0:
            ks = torch.arange(int(max(0, (t0 - float(near[r])) / step - 2)),
                              int((t1 - float(near[r])) / step + 2))
            mids = near[r].double() + (ks.double() + 0.5) * step
            pts = (origins[r].double() + mids[:, None] * dirs[r].double()).float()
            occ = grid.occupied(pts)
            inside = (mids >= t0) & (mids < t1)
            want_k = set(ks[occ & inside].tolist())
            cell = pts * grid.resolution.float()
            near_face = ((cell - cell.round()).abs() < 1e-4).any(-1)
            near_end = ((mids - t0).abs() < 1e-5) | ((mids - t1).abs() < 1e-5)
            ambiguous = set(ks[near_face | near_end].tolist())
        assert (got_k ^ want_k) <= ambiguous, (r, got_k ^ want_k)


def test_full_grid_count_is_segment_length_over_step():
    origins, dirs, near, far = _rays(100, seed=4)
    grid = OccupancyGrid(4)
    grid.binary.fill_(True)
    step = 0.03
    s = march_rays(origins, dirs, near, far, grid, step_size=step)
    t_enter, t_exit = ray_box_intersect(origins, dirs)
    length = (torch.minimum(far, t_exit) - torch.maximum(near, t_enter)).clamp(min=0)
    assert bool(((s.chunk_counts - length / step).abs() <= 1.0 + 1e-3).all())


def test_chunking_and_max_samples():
    origins, dirs, near, far = _rays(120, seed=5)
    grid = _random_grid(8, 0.6, seed=6)
    a = march_rays(origins, dirs, near, far, grid, step_size=0.02)
    b = march_rays(origins, dirs, near, far, grid, step_size=0.02, chunk_samples=97)
    assert torch.equal(a.ray_indices, b.ray_indices) and torch.equal(a.t_starts, b.t_starts)
    c = march_rays(origins, dirs, near, far, grid, step_size=0.02, max_samples_per_ray=5)
    _check_layout(c, 120)
    assert torch.equal(c.chunk_counts, a.chunk_counts.clamp(max=5))
    keep = torch.arange(len(a)) - a.chunk_starts[a.ray_indices] < 5
    assert torch.equal(c.t_starts, a.t_starts[keep])


def test_stratified_offsets_per_ray_and_reproducible():
    origins, dirs, near, far = _rays(50, seed=7)
    grid = OccupancyGrid(2)
    grid.binary.fill_(True)
    step = 0.1
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    s1 = march_rays(origins, dirs, near, far, grid, step_size=step, stratified=True,
                    generator=g1)
    s2 = march_rays(origins, dirs, near, far, grid, step_size=step, stratified=True,
                    generator=g2)
    assert torch.equal(s1.t_starts, s2.t_starts)
    _check_layout(s1, 50)
    frac = torch.remainder((s1.t_starts - near[s1.ray_indices]) / step, 1.0)
    first = s1.chunk_starts[s1.chunk_counts > 0]
    assert frac[first].std() > 0.1  # offsets differ between rays
    torch.testing.assert_close(frac, frac[s1.chunk_starts[s1.ray_indices]], atol=1e-3,
                               rtol=0)  # one offset per ray
    assert bool((s1.t_starts >= near[s1.ray_indices]).all())


def test_empty_grid_and_missing_rays_return_nothing():
    origins, dirs, near, far = _rays(40, seed=8)
    calls = []

    def sigma_fn(ts, te, ri):
        calls.append(len(ts))
        return torch.ones_like(ts)

    s = march_rays(origins, dirs, near, far, OccupancyGrid(8), step_size=0.01,
                   sigma_fn=sigma_fn, stratified=True)
    assert len(s) == 0 and s.chunk_counts.tolist() == [0] * 40 and calls == []
    full = OccupancyGrid(2)
    full.binary.fill_(True)
    away = march_rays(torch.tensor([[2.0, 2.0, 2.0]]), torch.tensor([[1.0, 0.0, 0.0]]),
                      torch.zeros(1), torch.full((1,), 1e3), full, step_size=0.01)
    assert len(away) == 0 and away.chunk_counts.tolist() == [0]


def test_early_termination_at_a_solid_wall():
    """Rays along +z (world) through a full grid; a wall of density 1e3 for z_unit > 0.5:
    no returned sample lies past the point where transmittance drops below eps, and the
    returned samples are exactly the visible prefix of the unfiltered march."""
    n = 16
    g = torch.Generator().manual_seed(10)
    o_world = torch.cat([LO[:2] + (HI - LO)[:2] * torch.rand(n, 2, generator=g),
                         torch.full((n, 1), -1.0)], 1)
    d = torch.tensor([0.0, 0.0, 1.0]).expand(n, 3)
    origins, dirs = (o_world - LO) / (HI - LO), d / (HI - LO)
    near, far = torch.zeros(n), torch.full((n,), 100.0)
    grid = OccupancyGrid(4)
    grid.binary.fill_(True)
    step, eps = 0.05, 1e-4

    def sigma_fn(ts, te, ri):
        z = origins[ri, 2] + 0.5 * (ts + te) * dirs[ri, 2]
        return torch.where(z > 0.5, 1e3, 0.0)

    full = march_rays(origins, dirs, near, far, grid, step_size=step)
    s = march_rays(origins, dirs, near, far, grid, step_size=step, sigma_fn=sigma_fn,
                   early_stop_eps=eps)
    _check_layout(s, n)
    _, trans, _ = render_weights(full.t_starts, full.t_ends,
                                 sigma_fn(full.t_starts, full.t_ends, full.ray_indices),
                                 full.ray_indices, n)
    visible = trans >= eps
    assert torch.equal(s.t_starts, full.t_starts[visible])
    # the wall is at world z = 0.5 * 8 = 4, t = 5; one step of density 1e3 is opaque
    assert float(s.t_mids.max()) < 5.0 + 2 * step
    assert int(s.chunk_counts.min()) > 0
    assert bool((s.chunk_counts < full.chunk_counts).all())


def test_alpha_threshold_drops_transparent_samples():
    origins = torch.tensor([[0.5, 0.5, -0.5]])
    dirs = torch.tensor([[0.0, 0.0, 1.0]])
    grid = OccupancyGrid(2)
    grid.binary.fill_(True)

    def sigma_fn(ts, te, ri):
        z = origins[ri, 2] + 0.5 * (ts + te) * dirs[ri, 2]
        return torch.where(z < 0.5, 1e-3, 1.0)

    s = march_rays(origins, dirs, torch.zeros(1), torch.full((1,), 10.0), grid,
                   step_size=0.1, sigma_fn=sigma_fn, alpha_thre=0.05, early_stop_eps=0.0)
    alpha = 1.0 - math.exp(-0.1)
    assert len(s) == 5 and alpha > 0.05
    z = origins[0, 2] + s.t_mids * dirs[0, 2]
    assert bool((z > 0.5).all())


def test_ray_box_intersect_handles_axis_parallel_rays():
    o = torch.tensor([[0.5, 0.5, -1.0], [0.0, 0.5, 0.5], [1.5, 0.5, 0.5], [0.2, 0.3, 0.4]])
    d = torch.tensor([[0.0, 0.0, 2.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    t0, t1 = ray_box_intersect(o, d)
    assert (t0[0].item(), t1[0].item()) == (0.5, 1.0)
    assert (t0[1].item(), t1[1].item()) == (-0.5, 0.5)
    assert t0[2] > t1[2]
    assert t0[3].item() == pytest.approx(-0.8) and t1[3].item() == pytest.approx(0.2)
