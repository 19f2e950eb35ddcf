"""Occupancy grid over the field's unit cube, for empty-space skipping.

Frame: the unit cube [0, 1]^3 of the field (``p_unit = (p_world - lo) / (hi - lo)``).
Cell (i, j, k) of a resolution (R0, R1, R2) grid covers
[i/R0, (i+1)/R0) x [j/R1, (j+1)/R1) x [k/R2, (k+1)/R2); its flat index is
``i * R1 * R2 + j * R2 + k`` (nerfacc's layout, so ``binary`` can be handed to
``nerfacc.traverse_grids`` as is).

State (all buffers, so ``state_dict`` round-trips and ``.to(device)`` moves it):

- ``density`` float32 [R0*R1*R2]: per cell, an exponential moving average of the largest
  density (per world unit) sampled in the cell (>= 0);
- ``binary`` bool [R0, R1, R2]: occupied cells;
- ``resolution`` int64 [3].

Update rule (nerfacc 0.5 ``OccGridEstimator._update``), with ``step_size`` the render step
in world units: cells are ``occupied`` when their estimated opacity
``density * step_size`` exceeds ``min(threshold, mean(density * step_size))``. Unlike
nerfacc, the grid stores densities (not ``density * step_size``), the new value of a cell
sampled several times in one update is the max of its samples (nerfacc keeps an arbitrary
one), negative densities from ``density_fn`` are clamped to 0, and no cell is marked
invisible (nerfacc's -1 for cells no camera sees): every cell is sampled.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from switchnerf.ops.march import cell_ids

__all__ = ["OccupancyGrid"]

DensityFn = Callable[[Tensor], Tensor]  # points_unit float32 [M, 3] -> density [M]


def _as_resolution(resolution: int | tuple[int, int, int]) -> tuple[int, int, int]:
    res = (resolution,) * 3 if isinstance(resolution, int) else tuple(int(r) for r in resolution)
    if len(res) != 3 or min(res) < 1:
        raise ValueError(f"resolution must be a positive int or 3 positive ints, got {resolution}")
    return res  # type: ignore[return-value]


class OccupancyGrid(nn.Module):
    """A binary occupancy grid over [0, 1]^3 with an EMA density per cell.

    Args:
        resolution: R or (R0, R1, R2) cells per axis.

    >>> grid = OccupancyGrid(4)
    >>> grid.update(lambda p: (p[:, 0] < 0.5).float() * 100.0, step=0, step_size=0.01)
    >>> grid.binary[:2].all().item(), grid.binary[2:].any().item()
    (True, False)
    """

    density: Tensor
    binary: Tensor
    resolution: Tensor

    def __init__(self, resolution: int | tuple[int, int, int] = 128) -> None:
        super().__init__()
        res = _as_resolution(resolution)
        self.res = res
        self.n_cells = res[0] * res[1] * res[2]
        self.register_buffer("resolution", torch.tensor(res, dtype=torch.int64))  # [3]
        self.register_buffer("density", torch.zeros(self.n_cells))  # [C]
        self.register_buffer("binary", torch.zeros(res, dtype=torch.bool))  # [R0, R1, R2]

    # geometry -----------------------------------------------------------------------------
    def cell_coords(self, cell_ids: Tensor) -> Tensor:
        """Integer cell coordinates int64 [K, 3] of flat cell indices int64 [K]."""
        r1, r2 = self.res[1], self.res[2]
        return torch.stack([cell_ids // (r1 * r2), (cell_ids // r2) % r1, cell_ids % r2], -1)

    def cell_ids_of(self, points_unit: Tensor) -> tuple[Tensor, Tensor]:
        """Flat cell index int64 [M] of unit-frame points [M, 3] and whether each point lies
        in the closed cube [0, 1]^3 (bool [M]); indices of outside points are clamped."""
        return cell_ids(points_unit, self.res)

    def occupied(self, points_unit: Tensor) -> Tensor:
        """Whether unit-frame points [M, 3] lie in occupied cells: bool [M].

        Equals ``binary.flatten()[cell_ids_of(p)[0]] & inside`` where points outside
        [0, 1]^3 are unoccupied (a point on the face 1.0 belongs to the last cell).
        """
        ids, inside = self.cell_ids_of(points_unit)
        return self.binary.reshape(-1)[ids] & inside

    def occupied_fraction(self) -> float:
        """Share of cells currently occupied, ``binary.float().mean()``."""
        return float(self.binary.float().mean())

    # state --------------------------------------------------------------------------------
    def _cells_to_sample(self, step: int, warmup_steps: int,
                         generator: torch.Generator | None) -> Tensor:
        """Flat cell ids int64 [K] to re-estimate (may repeat)."""
        dev = self.density.device
        if step < warmup_steps:
            return torch.arange(self.n_cells, device=dev)
        n = self.n_cells // 4
        uniform = torch.randint(self.n_cells, (n,), device=dev, generator=generator)
        occ = torch.nonzero(self.binary.reshape(-1))[:, 0]
        if occ.numel() > n:
            occ = occ[torch.randint(occ.numel(), (n,), device=dev, generator=generator)]
        return torch.cat([uniform, occ])

    @torch.no_grad()
    def update(self, density_fn: DensityFn, *, step: int, step_size: float,
               decay: float = 0.95, threshold: float = 0.01, warmup_steps: int = 256,
               n_samples_per_cell: int = 1, chunk: int = 1 << 18,
               generator: torch.Generator | None = None) -> None:
        """Re-estimate cell densities and re-binarise (nerfacc ``OccGridEstimator._update``).

        Args:
            density_fn: points_unit float32 [M, 3] -> density per world unit [M] (or [M, 1]).
            step: training step. Before ``warmup_steps`` every cell is sampled; after,
                ``C // 4`` uniformly random cells plus up to ``C // 4`` random occupied ones.
            step_size: render step in world units; a cell is occupied when
                ``density * step_size > min(threshold, mean(density * step_size))``.
            decay: EMA decay: a sampled cell becomes ``max(decay * density, new)`` with
                ``new`` the max of ``density_fn`` over its jittered samples; unsampled cells
                keep their value.
            n_samples_per_cell: uniformly jittered points per sampled cell.
            chunk: points per ``density_fn`` call.
            generator: optional RNG for cell choice and jitter (on the grid's device).
        """
        dev = self.density.device
        cells = torch.unique(self._cells_to_sample(step, warmup_steps, generator))  # [K]
        if cells.numel() == 0:
            return
        pts_cells = cells.repeat_interleave(n_samples_per_cell)  # [K * S]
        coords = self.cell_coords(pts_cells).to(torch.float32)  # [K * S, 3]
        jitter = torch.rand(coords.shape, device=dev, generator=generator)
        points = (coords + jitter) / self.resolution.to(torch.float32)  # [K * S, 3]
        dens = torch.cat([density_fn(points[i:i + chunk]).reshape(-1).to(torch.float32)
                          for i in range(0, points.shape[0], chunk)]).clamp(min=0)
        new = torch.zeros(self.n_cells, device=dev).scatter_reduce(
            0, pts_cells, dens, "amax", include_self=True)[cells]  # [K]
        self.density[cells] = torch.maximum(self.density[cells] * decay, new)
        self.binarize(step_size=step_size, threshold=threshold)

    @torch.no_grad()
    def binarize(self, *, step_size: float, threshold: float = 0.01) -> None:
        """``binary = density * step_size > min(threshold, mean(density * step_size))``."""
        opacity = self.density * step_size  # [C]
        mean = opacity.mean()
        thre = torch.clamp(mean, max=threshold)
        self.binary.copy_((opacity > thre).view(self.res))

    def update_every_n_steps(self, step: int, density_fn: DensityFn, *, n: int = 16,
                             step_size: float, **kwargs) -> bool:
        """Call :meth:`update` when ``step % n == 0``; returns whether it did. Keyword
        arguments are passed on to :meth:`update`."""
        if step % n != 0:
            return False
        self.update(density_fn, step=step, step_size=step_size, **kwargs)
        return True

    def extra_repr(self) -> str:
        return f"resolution={self.res}"
