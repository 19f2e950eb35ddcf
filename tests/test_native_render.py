"""Native CPU ray marching and packed compositing against the torch versions."""

from __future__ import annotations

import math

import pytest
import torch

from switchnerf.render.composite import render_weights_torch as render_weights
from switchnerf.render.occupancy import OccupancyGrid
from switchnerf.render.sampler import march_rays


def fused_weights(*args):
    from switchnerf.ops.render_weights import fused_render_weights

    return fused_render_weights(*args)


def fused_march(*args, **kwargs):
    return march_rays(*args, backend="native", **kwargs)


def packed(n_rays: int, gen: torch.Generator, max_per_ray: int = 40):
    """Random packed samples: some rays empty (the last ones included), sorted by ray."""
    counts = torch.randint(0, max_per_ray, (n_rays,), generator=gen)
    counts[::5] = 0
    if n_rays:
        counts[-1] = 0
    ray_indices = torch.repeat_interleave(torch.arange(n_rays), counts)  # [M]
    m = ray_indices.shape[0]
    dt = torch.rand(m, generator=gen) * 0.05 + 1e-3
    t_starts = torch.rand(m, generator=gen) * 2
    t_ends = t_starts + dt
    sigmas = torch.rand(m, generator=gen) * 30
    sigmas[::7] = 0
    return t_starts, t_ends, sigmas, ray_indices


@pytest.mark.parametrize("n_rays", [0, 1, 7, 300, 2000])
def test_render_weights_forward_and_gradients(native, n_rays):
    gen = torch.Generator().manual_seed(n_rays)
    t_starts, t_ends, sigmas, ray_indices = packed(n_rays, gen)
    ins_ref = [t.clone().requires_grad_() for t in (t_starts, t_ends, sigmas)]
    ins_nat = [t.clone().requires_grad_() for t in (t_starts, t_ends, sigmas)]
    ref = render_weights(*ins_ref, ray_indices, n_rays)
    out = fused_weights(*ins_nat, ray_indices, n_rays)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if ray_indices.numel() == 0:
        return  # the reference's empty outputs carry no graph
    grads = [torch.randn(ray_indices.shape, generator=gen) for _ in range(3)]
    g_ref = torch.autograd.grad(ref, ins_ref, grads, allow_unused=True)
    g_nat = torch.autograd.grad(out, ins_nat, grads, allow_unused=True)
    for a, b in zip(g_nat, g_ref):
        if b is None:
            b = torch.zeros_like(a)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_render_weights_gradient_of_weights_only(native):
    gen = torch.Generator().manual_seed(1)
    t_starts, t_ends, sigmas, ray_indices = packed(100, gen)
    s_ref, s_nat = sigmas.clone().requires_grad_(), sigmas.clone().requires_grad_()
    w_ref = render_weights(t_starts, t_ends, s_ref, ray_indices, 100)[0]
    w_nat = fused_weights(t_starts, t_ends, s_nat, ray_indices, 100)[0]
    (w_ref * torch.arange(len(w_ref))).sum().backward()
    (w_nat * torch.arange(len(w_nat))).sum().backward()
    torch.testing.assert_close(s_nat.grad, s_ref.grad, rtol=1e-4, atol=1e-5)


def test_render_weights_non_contiguous(native):
    gen = torch.Generator().manual_seed(2)
    t_starts, t_ends, sigmas, ray_indices = packed(50, gen)
    wide = torch.stack([sigmas, sigmas * 2], 1)  # [M, 2]
    s = wide[:, 0]
    assert not s.is_contiguous()
    ref = render_weights(t_starts, t_ends, s, ray_indices, 50)
    out = fused_weights(t_starts, t_ends, s, ray_indices, 50)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_render_weights_refuses_unsorted_and_bad_input(native):
    t = torch.rand(4)
    with pytest.raises(RuntimeError, match="must be sorted"):
        fused_weights(t, t + 1, t, torch.tensor([0, 1, 0, 1]), 2)
    with pytest.raises(RuntimeError, match="outside"):
        fused_weights(t, t + 1, t, torch.tensor([0, 0, 1, 5]), 2)
    with pytest.raises(ValueError, match="float32"):
        fused_weights(t.double(), t + 1, t, torch.tensor([0, 0, 1, 1]), 2)
    with pytest.raises(RuntimeError, match="'t_ends' has shape"):
        fused_weights(t, torch.rand(3), t, torch.tensor([0, 0, 1, 1]), 2)


def city_grid(res, gen: torch.Generator) -> OccupancyGrid:
    grid = OccupancyGrid(res)
    grid.binary.copy_(torch.rand(grid.res, generator=gen) < 0.25)
    return grid


def rays(n: int, gen: torch.Generator):
    """Rays from outside and inside the cube, axis-parallel ones among them."""
    origins = torch.rand(n, 3, generator=gen) * 3 - 1  # [N, 3]
    dirs = torch.randn(n, 3, generator=gen)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    if n >= 6:
        dirs[0] = torch.tensor([0.0, 0.0, 1.0])
        origins[0] = torch.tensor([0.3, 0.7, -0.5])
        dirs[1] = torch.tensor([0.0, -1.0, 0.0])
        origins[1] = torch.tensor([0.5, 2.0, 0.25])
        dirs[2, 0] = 0.0
        origins[3] = torch.tensor([0.5, 0.5, 0.5])  # starts inside
    near = torch.rand(n, generator=gen) * 0.2
    far = torch.full((n,), 5.0)
    if n >= 6:
        far[4] = float("inf")
        far[5] = 0.3
    return origins, dirs, near, far


def assert_same_samples(a, b):
    assert a.n_rays == b.n_rays
    assert torch.equal(a.ray_indices, b.ray_indices)
    assert torch.equal(a.t_starts, b.t_starts)
    assert torch.equal(a.t_ends, b.t_ends)
    assert torch.equal(a.chunk_starts, b.chunk_starts)
    assert torch.equal(a.chunk_counts, b.chunk_counts)


@pytest.mark.parametrize("res", [1, 16, (8, 16, 4), 64])
@pytest.mark.parametrize("n_rays", [0, 1, 333])
def test_march_rays_matches_torch(native, res, n_rays):
    gen = torch.Generator().manual_seed(n_rays)
    grid = city_grid(res, gen)
    origins, dirs, near, far = rays(n_rays, gen)
    step = math.sqrt(3) / 97
    ref = march_rays(origins, dirs, near, far, grid, step_size=step, backend="torch")
    out = fused_march(origins, dirs, near, far, grid, step_size=step)
    assert_same_samples(out, ref)
    if n_rays > 1 and res != 1:
        assert len(out) > 0


@pytest.mark.parametrize("res", [64, (30, 17, 9), 5])
def test_march_rays_skipping_empty_blocks_matches_torch(native, res):
    """Sparse occupancy (a few boxes and single cells): most 4x4x4 blocks are empty, so the
    native march skips whole blocks; its samples must still equal the torch twin's."""
    gen = torch.Generator().manual_seed(21)
    grid = OccupancyGrid(res)
    r0, r1, r2 = grid.res
    grid.binary[: max(r0 // 5, 1), r1 // 3: r1 // 2 + 1, : max(r2 // 4, 1)] = True  # a box
    cells = torch.rand(grid.res, generator=gen) < 0.004  # scattered single cells
    grid.binary |= cells
    grid.binary[-1, -1, -1] = True  # a corner cell of a partial block
    origins, dirs, near, far = rays(600, gen)
    step = math.sqrt(3) / 301
    ref = march_rays(origins, dirs, near, far, grid, step_size=step, backend="torch")
    out = fused_march(origins, dirs, near, far, grid, step_size=step)
    assert_same_samples(out, ref)
    assert len(out) > 0


def test_march_rays_stratified_limited_and_filtered(native):
    gen = torch.Generator().manual_seed(4)
    grid = city_grid(32, gen)
    origins, dirs, near, far = rays(500, gen)

    def sigma_fn(t_starts, t_ends, ray_indices):
        p = origins[ray_indices] + 0.5 * (t_starts + t_ends)[:, None] * dirs[ray_indices]
        return (p * 7).sin().abs().sum(-1) * 20

    kwargs = {"step_size": 0.01, "stratified": True, "sigma_fn": sigma_fn, "alpha_thre": 0.05,
                  "early_stop_eps": 1e-3, "max_samples_per_ray": 30}
    ref = march_rays(origins, dirs, near, far, grid, backend="torch",
                     generator=torch.Generator().manual_seed(9), **kwargs)
    out = fused_march(origins, dirs, near, far, grid,
                      generator=torch.Generator().manual_seed(9), **kwargs)
    assert_same_samples(out, ref)
    assert int(out.chunk_counts.max()) <= 30


def test_march_rays_non_contiguous_and_full_grid(native):
    gen = torch.Generator().manual_seed(6)
    grid = OccupancyGrid(8)
    grid.binary.fill_(True)
    o6 = torch.rand(100, 6, generator=gen)
    origins, dirs = o6[:, :3], o6[:, 3:] - 0.5
    assert not origins.is_contiguous()
    near, far = torch.zeros(100), torch.full((100,), 3.0)
    ref = march_rays(origins, dirs, near, far, grid, step_size=0.02, backend="torch")
    out = fused_march(origins, dirs, near, far, grid, step_size=0.02)
    assert_same_samples(out, ref)


def test_march_rays_refuses_bad_input(native):
    grid = OccupancyGrid(4)
    o, d = torch.rand(3, 3), torch.rand(3, 3)
    with pytest.raises(ValueError, match="step_size"):
        fused_march(o, d, torch.zeros(3), torch.ones(3), grid, step_size=0.0)
    with pytest.raises(ValueError, match="near"):
        fused_march(o, d, torch.zeros(2), torch.ones(3), grid, step_size=0.1)
    with pytest.raises(ValueError, match="float32"):
        fused_march(o.double(), d, torch.zeros(3), torch.ones(3), grid, step_size=0.1)
