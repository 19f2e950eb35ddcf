"""The ray-marching op: the kept samples of rays through a binary occupancy grid over the
unit cube, by the native CPU op or its pure-torch twin (same arguments, same samples).

Frames: ``origins`` are unit-cube points and ``dirs = d / (hi - lo)`` (not renormalised), so
the ray parameter t, ``base``/``far`` and ``step_size`` are in world units. Per ray, with
``[t0, t1) = [max(base, t_enter), min(far, t_exit))`` the part inside the unit cube::

    t_start_k = base + k * step_size,  t_end_k = t_start_k + step_size,  k = 0, 1, ...
    kept when  t0 <= (t_start_k + t_end_k) / 2 < t1  and the midpoint's cell is occupied,

then at most ``max_samples`` first samples per ray (nerfacc's ``traverse_grids``).

Cells: cell (i, j, k) of a (R0, R1, R2) grid covers ``[i/R0, (i+1)/R0) x ...``; its flat
index is ``i * R1 * R2 + j * R2 + k`` (nerfacc's layout); a point on the face 1.0 belongs
to the last cell, points outside [0, 1]^3 to none.
"""

from __future__ import annotations

import bisect
import functools

import torch
from torch import Tensor

from switchnerf.ops import load_native
from switchnerf.ops._checks import cpu_only, float32_contiguous
from switchnerf.ops.counts import select_where

__all__ = ["cell_ids", "march_native", "march_torch", "ray_box_intersect"]

Samples = tuple[Tensor, Tensor, Tensor]  # ray_indices int64 [M], t_starts, t_ends float32 [M]


@functools.lru_cache(maxsize=16)
def _grid_constants(resolution: tuple[int, int, int], dtype: torch.dtype, device: torch.device
                    ) -> tuple[Tensor, Tensor]:
    """The resolution [3] (``dtype``) and the largest cell index [3] (int64) on ``device``,
    made once (a host-to-device copy waits for the device)."""
    res = torch.tensor(resolution, dtype=dtype, device=device)
    hi = torch.tensor([r - 1 for r in resolution], device=device)
    return res, hi


def cell_ids(points_unit: Tensor, resolution: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
    """Flat cell index int64 [M] of unit-frame points [M, 3] in a grid of ``resolution``
    cells per axis, and whether each point lies in the closed cube [0, 1]^3 (bool [M]);
    indices of outside points are clamped into the grid.

    >>> cell_ids(torch.tensor([[0.0, 0.0, 0.9], [1.0, 1.0, 1.0]]), (2, 2, 2))
    (tensor([1, 7]), tensor([True, True]))
    """
    _, r1, r2 = resolution
    inside = ((points_unit >= 0) & (points_unit <= 1)).all(-1)  # [M]
    res, hi = _grid_constants(tuple(resolution), points_unit.dtype, points_unit.device)
    ijk = torch.floor(points_unit * res).long()  # [M, 3]
    ijk = torch.minimum(ijk.clamp(min=0), hi)
    return (ijk[:, 0] * r1 + ijk[:, 1]) * r2 + ijk[:, 2], inside


def ray_box_intersect(origins: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
    """Entry and exit parameters of rays with the closed unit cube [0, 1]^3 (slab method).

    Args:
        origins, dirs: float [N, 3] (dirs need not be unit length; zero components allowed).

    Returns:
        t_enter, t_exit: float [N]; the ray is inside for t in [t_enter, t_exit], missing the
        cube when ``t_enter > t_exit``. Equals ``max_a(min(ta, tb))``, ``min_a(max(ta, tb))``
        with ``ta = (0 - o_a) / d_a``, ``tb = (1 - o_a) / d_a``; an axis with d_a = 0 is
        (-inf, inf) when 0 <= o_a <= 1 and empty otherwise.
    """
    zero = dirs == 0
    safe = torch.where(zero, torch.ones_like(dirs), dirs)
    ta = (0.0 - origins) / safe
    tb = (1.0 - origins) / safe
    inside = (origins >= 0) & (origins <= 1)
    inf = torch.full_like(dirs, float("inf"))
    lo = torch.where(zero, torch.where(inside, -inf, inf), torch.minimum(ta, tb))
    hi = torch.where(zero, torch.where(inside, inf, -inf), torch.maximum(ta, tb))
    return lo.amax(-1), hi.amin(-1)


def march_torch(origins: Tensor, dirs: Tensor, base: Tensor, far: Tensor, binary: Tensor,
                step_size: float, max_samples: int | None = None,
                chunk_samples: int = 1 << 21) -> Samples:
    """The pure-torch twin of :func:`march_native` (any device).

    Args:
        origins, dirs: float32 [N, 3], unit-cube frame. base, far: float32 [N], the first
            step's start (``near`` plus any stratified offset) and the far bound (may be inf).
        binary: bool [R0, R1, R2] occupied cells.
        step_size: step in t, world units. max_samples: keep at most this many per ray.
        chunk_samples: candidate steps per chunk (bounds memory, not the result).

    Returns:
        ray_indices int64 [M] (sorted), t_starts, t_ends float32 [M] (module docstring).
    """
    n = origins.shape[0]
    dev = origins.device
    flat = binary.reshape(-1)
    t_enter, t_exit = ray_box_intersect(origins, dirs)
    t0 = torch.maximum(base, t_enter).double()  # [N]
    t1 = torch.minimum(far, t_exit).double()  # [N]
    b64 = base.double()
    hit = (t1 > t0) & torch.isfinite(t0) & torch.isfinite(t1)
    # midpoint b + (k + 1/2) dt in [t0, t1)  <=>  k_min <= k < k_end
    k_min = torch.ceil(torch.where(hit, (t0 - b64) / step_size - 0.5, 0.0)).clamp(min=0)
    k_end = torch.ceil(torch.where(hit, (t1 - b64) / step_size - 0.5, 0.0))
    counts = (k_end - k_min).clamp(min=0).long()  # [N] candidate steps per ray
    k_min = k_min.long()
    cum = counts.cumsum(0)  # [N]
    cum_host = cum.tolist()  # the chunk bounds are planned on the host: one sync

    out_r, out_s, out_e = [], [], []
    start = 0
    while start < n:
        before = cum_host[start - 1] if start > 0 else 0
        end = bisect.bisect_right(cum_host, before + chunk_samples)
        end = min(max(end, start + 1), n)
        total = cum_host[end - 1] - before
        if total > 0:
            cnt = counts[start:end]
            local = torch.repeat_interleave(torch.arange(start, end, device=dev), cnt,
                                            output_size=total)  # [S]
            first = cum[local] - counts[local] - before  # [S] the ray's first candidate
            offs = torch.arange(total, device=dev) - first
            k = (k_min[local] + offs).double()
            ts64 = b64[local] + k * step_size
            ts = ts64.float()
            te = (ts64 + step_size).float()
            mid = 0.5 * (ts + te)  # [S], as consumers compute it
            pts = origins[local] + mid[:, None] * dirs[local]  # [S, 3] unit frame
            ids, inside = cell_ids(pts, tuple(binary.shape))
            keep = flat[ids] & inside
            if max_samples is not None:  # only the first max_samples kept samples of a ray
                kept_incl = keep.long().cumsum(0)  # [S]
                kept_before_ray = torch.where(first > 0, kept_incl[(first - 1).clamp(min=0)],
                                              0)
                keep &= kept_incl - kept_before_ray <= max_samples
            r, t_s, t_e = select_where(keep, local, ts, te)  # one sync per chunk
            out_r.append(r)
            out_s.append(t_s)
            out_e.append(t_e)
        start = end
    if not out_r:
        empty = torch.zeros(0, device=dev)
        return torch.zeros(0, dtype=torch.int64, device=dev), empty, empty.clone()
    if len(out_r) == 1:
        return out_r[0], out_s[0], out_e[0]
    ray_indices, t_starts, t_ends = torch.cat(out_r), torch.cat(out_s), torch.cat(out_e)
    return ray_indices, t_starts, t_ends


@torch.no_grad()
def march_native(origins: Tensor, dirs: Tensor, base: Tensor, far: Tensor, binary: Tensor,
                 step_size: float, max_samples: int | None = None) -> Samples:
    """March rays through the occupied cells of ``binary``, native CPU op.

    Same arguments (less ``chunk_samples``: the native op needs no chunking) and the same
    samples as :func:`march_torch`.
    """
    name = "march_native"
    n = origins.shape[0]
    if dirs.shape != (n, 3) or origins.shape != (n, 3):
        raise ValueError(f"{name}: origins {tuple(origins.shape)} and dirs "
                         f"{tuple(dirs.shape)} must be ({n}, 3)")
    if base.shape != (n,) or far.shape != (n,):
        raise ValueError(f"{name}: base {tuple(base.shape)} and far {tuple(far.shape)} "
                         f"must be ({n},)")
    if step_size <= 0:
        raise ValueError(f"{name}: step_size must be > 0, got {step_size}")
    cpu_only(name, origins, dirs, base, far, binary)
    limit = -1 if max_samples is None else int(max_samples)
    return load_native().march_rays_forward(
        float32_contiguous(name, "origins", origins), float32_contiguous(name, "dirs", dirs),
        base.to(torch.float32).contiguous(), far.to(torch.float32).contiguous(),
        binary.contiguous(), float(step_size), limit)
