"""Ray marching through an occupancy grid (nerfacc 0.5 ``OccGridEstimator.sampling``).

Frames: rays arrive in the field's unit-cube frame, ``origins = (o - lo) / (hi - lo)`` and
``dirs = d / (hi - lo)`` (not renormalised), so the ray parameter t, ``near``/``far`` and
``step_size`` are in world units and ``origins + t * dirs`` is the unit-frame point.

Samples, per ray, with ``base = near + u * step_size`` (u ~ U[0, 1) per ray when
stratified, else 0) and ``[t0, t1) = [max(base, t_enter), min(far, t_exit))`` the part of
the ray inside the unit cube:

    t_start_k = base + k * step_size,  t_end_k = t_start_k + step_size,  k = 0, 1, ...
    kept when  t0 <= (t_start_k + t_end_k) / 2 < t1  and the midpoint's cell is occupied,

as nerfacc's ``traverse_grids`` does (so ``t_start >= near`` but the last ``t_end`` may
pass ``far`` by up to half a step). Then at most ``max_samples_per_ray`` first samples per
ray are kept, and, when ``sigma_fn`` is given, samples with transmittance
``T < early_stop_eps`` or alpha ``< alpha_thre`` are dropped. nerfacc lowers
``alpha_thre`` to the mean of its grid values; here it is used as given.

The traversal is the native op on CPU where it is built, nerfacc's ``traverse_grids`` on
CUDA tensors where its extension loads (same fields; t accumulated in float32 there, so
values can differ in the last bits), else the torch twin (:mod:`switchnerf.ops.march`).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from switchnerf.ops import native_available
from switchnerf.ops.counts import select_where
from switchnerf.ops.march import march_native, march_torch, ray_box_intersect
from switchnerf.ops.render_weights import packed_info, render_weights

from .occupancy import OccupancyGrid

__all__ = ["PackedSamples", "march_rays", "ray_box_intersect"]

SigmaFn = Callable[[Tensor, Tensor, Tensor], Tensor]  # (t_starts, t_ends, ray_indices) -> [M]


@dataclass(frozen=True)
class PackedSamples:
    """Samples of N rays packed in one flat array of M.

    ray_indices: int64 [M], sorted; a ray's samples are contiguous and ordered by t.
    t_starts, t_ends: float32 [M], ray parameter in world units.
    n_rays: N.
    chunk_starts, chunk_counts: int64 [N], where each ray's samples start and how many
    (nerfacc's ``packed_info`` columns).
    """

    ray_indices: Tensor
    t_starts: Tensor
    t_ends: Tensor
    n_rays: int
    chunk_starts: Tensor
    chunk_counts: Tensor

    def __post_init__(self) -> None:
        m = self.ray_indices.shape[0]
        if self.t_starts.shape != (m,) or self.t_ends.shape != (m,):
            raise ValueError(f"t_starts {tuple(self.t_starts.shape)} and t_ends "
                             f"{tuple(self.t_ends.shape)} must be ({m},)")
        if self.chunk_starts.shape != (self.n_rays,) or self.chunk_counts.shape != (self.n_rays,):
            raise ValueError(f"chunk_starts/chunk_counts must be ({self.n_rays},)")

    def __len__(self) -> int:
        return self.ray_indices.shape[0]

    @property
    def t_mids(self) -> Tensor:
        """Midpoints float32 [M]: ``(t_starts + t_ends) / 2``."""
        return 0.5 * (self.t_starts + self.t_ends)

    def points(self, origins: Tensor, dirs: Tensor) -> Tensor:
        """Sample midpoints [M, 3] in the frame of ``origins``/``dirs`` [N, 3]:
        ``origins[ray_indices] + t_mids[:, None] * dirs[ray_indices]``."""
        return origins[self.ray_indices] + self.t_mids[:, None] * dirs[self.ray_indices]

    @staticmethod
    def from_indices(ray_indices: Tensor, t_starts: Tensor, t_ends: Tensor,
                     n_rays: int) -> PackedSamples:
        """Build from sorted ``ray_indices`` [M], computing the chunk info."""
        starts, counts = packed_info(ray_indices, n_rays)
        return PackedSamples(ray_indices, t_starts, t_ends, n_rays, starts, counts)


@functools.lru_cache(maxsize=1)
def _nerfacc_cuda() -> bool:
    """Whether nerfacc's CUDA extension loads (it may JIT-build on first use); says once
    when it does not."""
    try:
        from nerfacc.cuda._backend import _C
    except Exception as exc:  # noqa: BLE001 - any failure to build or load means "not available"
        _C, why = None, f"{type(exc).__name__}: {exc}"
    else:
        why = "no compiled module"
    if _C is None:
        warnings.warn(f"nerfacc's CUDA extension is unavailable ({why}); march_rays uses its "
                      "torch path on CUDA tensors", RuntimeWarning, stacklevel=3)
        return False
    return True


def _traverse_nerfacc(origins: Tensor, dirs: Tensor, base: Tensor, far: Tensor,
                      grid: OccupancyGrid, step_size: float, max_samples: int | None
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """nerfacc ``traverse_grids`` over the one-level unit-cube grid."""
    from nerfacc.grid import traverse_grids

    aabbs = torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]], device=origins.device)
    intervals, samples, _ = traverse_grids(
        origins.float().contiguous(), dirs.float().contiguous(), grid.binary[None], aabbs,
        near_planes=base.float(), far_planes=far.float(), step_size=step_size,
        traverse_steps_limit=max_samples)
    t_starts = intervals.vals[intervals.is_left]
    t_ends = intervals.vals[intervals.is_right]
    return samples.ray_indices.long(), t_starts, t_ends


@torch.no_grad()
def march_rays(origins: Tensor, dirs: Tensor, near: Tensor, far: Tensor,
               grid: OccupancyGrid, *, step_size: float, stratified: bool = False,
               sigma_fn: SigmaFn | None = None, alpha_thre: float = 0.0,
               early_stop_eps: float = 1e-4, max_samples_per_ray: int | None = None,
               generator: torch.Generator | None = None, chunk_samples: int = 1 << 21,
               backend: str = "auto") -> PackedSamples:
    """March rays through the occupied cells of ``grid`` with a fixed step in t.

    Args:
        origins: float32 [N, 3], unit-cube frame. dirs: float32 [N, 3], ``d / (hi - lo)``.
        near, far: float32 [N], per-ray t bounds in world units (far may be inf).
        grid: the occupancy grid over [0, 1]^3 (same device as the rays).
        step_size: step in t, world units.
        stratified: one uniform random offset in [0, step_size) per ray.
        sigma_fn: optional ``(t_starts [M], t_ends [M], ray_indices [M]) -> sigmas [M]``,
            called once under no_grad to drop invisible samples.
        alpha_thre: with ``sigma_fn``, drop samples with ``1 - exp(-sigma dt) < alpha_thre``.
        early_stop_eps: with ``sigma_fn``, drop samples whose transmittance (before the
            sample) is ``< early_stop_eps``.
        max_samples_per_ray: keep at most this many first samples per ray (before sigma_fn).
        generator: RNG for the stratified offsets.
        chunk_samples: candidate steps per torch chunk (bounds memory, not the result).
        backend: "auto" (the native CPU op on CPU when built, nerfacc on CUDA when its
            extension loads, else torch), "native", "torch" or "nerfacc".

    Returns:
        :class:`PackedSamples`. With ``sigma_fn = None`` the kept samples equal the
        plain-torch loop, per ray, ``[(t, t + dt) for t in base + dt * arange(K)
        if t0 <= t + dt / 2 < t1 and grid.occupied(o + (t + dt / 2) * d)]`` (module
        docstring); with ``sigma_fn``, ``w, T, a = render_weights(...)`` and the mask
        ``(T >= early_stop_eps) & (a >= alpha_thre)`` is applied on top.

    >>> grid = OccupancyGrid(2)
    >>> _ = grid.binary.fill_(True)
    >>> s = march_rays(torch.tensor([[0.5, 0.5, -1.0]]), torch.tensor([[0.0, 0.0, 1.0]]),
    ...                torch.zeros(1), torch.full((1,), 10.0), grid, step_size=0.25)
    >>> s.t_starts, s.chunk_counts
    (tensor([1.0000, 1.2500, 1.5000, 1.7500]), tensor([4]))
    """
    n = origins.shape[0]
    if dirs.shape != (n, 3) or origins.shape != (n, 3):
        raise ValueError(f"origins {tuple(origins.shape)} and dirs {tuple(dirs.shape)} must "
                         f"be ({n}, 3)")
    if near.shape != (n,) or far.shape != (n,):
        raise ValueError(f"near {tuple(near.shape)} and far {tuple(far.shape)} must be ({n},)")
    if step_size <= 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    if backend not in ("auto", "native", "torch", "nerfacc"):
        raise ValueError(f"backend must be 'auto', 'native', 'torch' or 'nerfacc', got {backend!r}")
    base = near.to(torch.float32)
    if stratified:
        base = base + step_size * torch.rand(n, device=near.device, generator=generator)
    use_native = backend == "native" or (backend == "auto" and not origins.is_cuda
                                         and native_available())
    use_nerfacc = backend == "nerfacc" or (backend == "auto" and origins.is_cuda
                                           and _nerfacc_cuda())
    if use_native:
        ray_indices, t_starts, t_ends = march_native(origins, dirs, base, far, grid.binary,
                                                     step_size, max_samples_per_ray)
    elif use_nerfacc:
        ray_indices, t_starts, t_ends = _traverse_nerfacc(origins, dirs, base, far, grid,
                                                          step_size, max_samples_per_ray)
    else:
        ray_indices, t_starts, t_ends = march_torch(origins, dirs, base, far, grid.binary,
                                                    step_size, max_samples_per_ray,
                                                    chunk_samples)

    return prune_invisible(ray_indices, t_starts, t_ends, n, sigma_fn=sigma_fn,
                           alpha_thre=alpha_thre, early_stop_eps=early_stop_eps)


def prune_invisible(ray_indices: Tensor, t_starts: Tensor, t_ends: Tensor, n_rays: int, *,
                    sigma_fn: SigmaFn | None, alpha_thre: float,
                    early_stop_eps: float) -> PackedSamples:
    """Packed samples minus those ``sigma_fn`` shows invisible (shared by every backend).

    Keeps ``(T >= early_stop_eps) & (a >= alpha_thre)`` with ``w, T, a = render_weights(...)``
    of the sigmas ``sigma_fn`` returns; without ``sigma_fn`` keeps everything.
    """
    if sigma_fn is not None and (alpha_thre > 0 or early_stop_eps > 0) and len(ray_indices):
        sigmas = sigma_fn(t_starts, t_ends, ray_indices).reshape(-1).to(torch.float32)
        if sigmas.shape != t_starts.shape:
            raise ValueError(f"sigma_fn returned {tuple(sigmas.shape)}, expected "
                             f"{tuple(t_starts.shape)}")
        _, trans, alphas = render_weights(t_starts, t_ends, sigmas, ray_indices, n_rays)
        keep = trans >= early_stop_eps
        if alpha_thre > 0:
            keep &= alphas >= alpha_thre
        ray_indices, t_starts, t_ends = select_where(keep, ray_indices, t_starts, t_ends)
    return PackedSamples.from_indices(ray_indices, t_starts, t_ends, n_rays)
