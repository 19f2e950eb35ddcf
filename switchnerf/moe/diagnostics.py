"""Routing diagnostics: is the gate routing coherently, and is it settling?

Everything is measured on points of the field's unit cube ([0, 1]^3 of the foreground
box, z up). A :class:`RoutingProbe` holds a fixed, seeded probe set of points in the
occupied cells of an occupancy grid (drawn on its first measurement and kept after), each
with a neighbour at ``1/128`` of the box in a random direction, and reports:

- ``gate_value``: mean top-1 gate value over the probe points;
- ``churn``: fraction of probe points whose expert changed since the previous
  measurement (None on the first), and ``churn_steps``: the training steps it spans
  (when ``measure`` is given the step);
- ``disagreement``: fraction of probe points whose neighbour has another expert;
- ``load``: fraction of probe points per expert, [E];
- ``expert_resolution``: [coarsest, finest] level resolution of each expert, [E, 2];
- ``region_resolution``: per ground region (``regions`` x ``regions`` cells of x-y,
  rows over y from low to high, columns over x), the mean finest resolution of the
  experts its probe points go to (None where a region has none): which resolution range
  each region gets;
- ``region_expert``: the majority expert of each region (-1 where none).

``topdown_expert_map`` and ``write_expert_map_png`` draw the assignment seen from above.
The functions only need ``field.route(x) -> GateOutput``, ``field.n_experts`` and
``field.experts.levels`` (a SwitchField), and the grid's ``binary`` [R0, R1, R2] (an
OccupancyGrid); nothing here changes the field, the grid or the global RNG.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["NEIGHBOUR_DISTANCE", "RoutingProbe", "churn", "neighbour_disagreement",
           "neighbour_offsets", "occupied_points", "region_summary", "topdown_expert_map",
           "write_expert_map_png"]

NEIGHBOUR_DISTANCE = 1.0 / 128
"""Distance (unit-cube units, i.e. a fraction of each box side) of a probe point's neighbour."""

RouteFn = Callable[[Tensor], Tensor]  # unit-cube points [M, 3] -> expert id int64 [M]


def churn(previous: Tensor, current: Tensor) -> float:
    """Fraction of points whose expert changed: ``mean(previous != current)``.

    previous, current: int [M] expert ids of the same points. Returns 0.0 for M = 0.

    >>> churn(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 3, 3]))
    0.25
    """
    if previous.shape != current.shape:
        raise ValueError(f"churn: shapes differ: {tuple(previous.shape)} vs {tuple(current.shape)}")
    if previous.numel() == 0:
        return 0.0
    return float((previous != current).float().mean())


def neighbour_offsets(n: int, distance: float = NEIGHBOUR_DISTANCE, *,
                      generator: torch.Generator | None = None) -> Tensor:
    """``n`` offsets [n, 3] of length ``distance`` in directions uniform on the sphere."""
    u = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (u * distance).to(torch.float32)


def neighbour_disagreement(route: RouteFn, points: Tensor, offsets: Tensor,
                           ids: Tensor | None = None) -> float:
    """Fraction of points routed to another expert than their neighbour.

    points: [M, 3] unit cube; offsets: [M, 3]; the neighbour of point m is
    ``clamp(points[m] + offsets[m], 0, 1)``. ids: the experts of ``points`` if already
    known. Equals ``mean(route(p) != route(clamp(p + o, 0, 1)))`` (0.0 for M = 0).
    """
    if points.shape[0] == 0:
        return 0.0
    ids = route(points) if ids is None else ids
    return float((route((points + offsets).clamp(0.0, 1.0)) != ids).float().mean())


def occupied_points(binary: Tensor, n: int, *, generator: torch.Generator | None = None) -> Tensor:
    """``n`` points [n, 3] uniform in the occupied cells of ``binary`` bool [R0, R1, R2].

    Each point picks an occupied cell uniformly, then a uniform position inside it (cell
    (i, j, k) covers [i/R0, (i+1)/R0) x [j/R1, (j+1)/R1) x [k/R2, (k+1)/R2)). Returns
    [0, 3] when no cell is occupied.
    """
    occ = torch.nonzero(binary.detach().cpu())  # [K, 3]
    if occ.shape[0] == 0 or n <= 0:
        return torch.zeros(0, 3)
    pick = torch.randint(occ.shape[0], (n,), generator=generator)
    jitter = torch.rand(n, 3, generator=generator, dtype=torch.float64)
    res = torch.tensor(binary.shape, dtype=torch.float64)
    return ((occ[pick].to(torch.float64) + jitter) / res).to(torch.float32)


def region_summary(points: Tensor, ids: Tensor, finest: list[float], n_experts: int,
                   regions: int) -> tuple[list[list[float | None]], list[list[int]]]:
    """Per ground region (``regions`` x ``regions`` cells of the unit square in x-y; row r
    covers y in [r/R, (r+1)/R), column c covers x in [c/R, (c+1)/R)): the mean finest
    resolution of the experts of its points (None: no point) and its majority expert (-1:
    none; the lowest id on a tie). points [M, 3], ids int [M], finest [E]."""
    col = (points[:, 0] * regions).floor().clamp(0, regions - 1).long()
    row = (points[:, 1] * regions).floor().clamp(0, regions - 1).long()
    cell = row * regions + col  # [M]
    counts = torch.zeros(regions * regions, n_experts, dtype=torch.float64)
    counts.index_put_((cell, ids.long().cpu()), torch.ones(cell.shape[0], dtype=torch.float64),
                      accumulate=True)
    total = counts.sum(-1)  # [R*R]
    res = counts @ torch.tensor(finest, dtype=torch.float64) / total.clamp_min(1.0)
    major = torch.where(total > 0, counts.argmax(-1), torch.full_like(total, -1).long())
    mean_res = [float(r) if t > 0 else None for r, t in zip(res.tolist(), total.tolist())]
    return ([mean_res[r * regions:(r + 1) * regions] for r in range(regions)],
            major.view(regions, regions).tolist())


def _route_ids(field) -> RouteFn:
    def route(x: Tensor) -> Tensor:
        dev = _field_device(field)
        with torch.no_grad():
            return field.route(x.to(dev)).expert_id.cpu()
    return route


def _field_device(field) -> torch.device:
    p = next(iter(field.parameters()), None)
    return torch.device("cpu") if p is None else p.device


def _expert_resolutions(field) -> list[list[float]]:
    """[coarsest, finest] level resolution of each expert (of all E experts, also when this
    process holds only its share of them under expert parallelism)."""
    experts = field.experts
    levels = getattr(experts, "levels", None)
    if levels is None:  # an ExpertParallelEncoder: the geometry of every expert from its specs
        from switchnerf.ops.hash_levels import LevelTable

        local = experts.local
        levels = LevelTable.for_experts(experts.specs, n_levels=local.n_levels,
                                        n_features=local.n_features_per_level)
    res = levels.resolution.detach().cpu()  # [E, L]
    return [[float(r[0]), float(r[-1])] for r in res]


class RoutingProbe:
    """A fixed probe set of occupied points and the routing measured on it over time.

    The points are drawn (seeded; the global RNG is not touched) from the occupied cells
    of the grid at the first :meth:`measure` that finds any, and kept: churn compares the
    experts of the same points from one measurement to the next.

    Args:
        n_points: probe points.
        seed: seed of the probe points and their neighbour directions.
        neighbour_distance: distance of each point's neighbour (unit-cube units).
        regions: ground regions per side for ``region_resolution`` / ``region_expert``.
    """

    def __init__(self, n_points: int = 8192, *, seed: int = 0,
                 neighbour_distance: float = NEIGHBOUR_DISTANCE, regions: int = 4) -> None:
        if n_points < 1:
            raise ValueError(f"RoutingProbe: n_points must be >= 1, got {n_points}")
        self.n_points = n_points
        self.seed = seed
        self.neighbour_distance = neighbour_distance
        self.regions = regions
        self.points: Tensor | None = None  # [M, 3] once drawn
        self.offsets: Tensor | None = None  # [M, 3]
        self.previous: Tensor | None = None  # int64 [M] experts at the last measurement
        self.previous_step: int | None = None

    def _draw(self, binary: Tensor) -> bool:
        gen = torch.Generator().manual_seed(self.seed)
        points = occupied_points(binary, self.n_points, generator=gen)
        if points.shape[0] == 0:
            return False
        self.points = points
        self.offsets = neighbour_offsets(points.shape[0], self.neighbour_distance, generator=gen)
        return True

    def measure(self, field, grid, step: int | None = None) -> dict:
        """Routing statistics of ``field`` on the probe set (JSON-ready: floats, lists, None).

        Keys: n_points, gate_value, churn, churn_steps, disagreement, load [E],
        expert_resolution [E][2], region_resolution [R][R], region_expert [R][R] (module
        docstring). ``step``: the training step, to say how many steps ``churn`` spans.
        With no occupied cell yet, n_points is 0 and the statistics are None.
        """
        if self.points is None and not self._draw(grid.binary):
            return {"n_points": 0, "gate_value": None, "churn": None, "churn_steps": None,
                    "disagreement": None, "load": None,
                    "expert_resolution": _expert_resolutions(field),
                    "region_resolution": None, "region_expert": None}
        dev = _field_device(field)
        with torch.no_grad():
            gate = field.route(self.points.to(dev))
        ids = gate.expert_id.cpu()
        route = _route_ids(field)
        moved = None if self.previous is None else churn(self.previous, ids)
        span = (None if moved is None or step is None or self.previous_step is None
                else int(step) - self.previous_step)
        self.previous, self.previous_step = ids, None if step is None else int(step)
        n_exp = int(field.n_experts)
        resolutions = _expert_resolutions(field)
        region_res, region_exp = region_summary(self.points, ids, [r[1] for r in resolutions],
                                                n_exp, self.regions)
        load = torch.bincount(ids, minlength=n_exp).double() / ids.numel()
        return {"n_points": int(ids.numel()),
                "gate_value": float(gate.gate_value.float().mean()),
                "churn": moved,
                "churn_steps": span,
                "disagreement": neighbour_disagreement(route, self.points, self.offsets, ids),
                "load": [float(v) for v in load],
                "expert_resolution": resolutions,
                "region_resolution": region_res,
                "region_expert": region_exp}

    def write_topdown(self, path: str | Path, field, grid, palette: Tensor, *,
                      mode: str = "top", scale: int = 4) -> np.ndarray:
        """Write the top-down expert map of ``field`` over ``grid`` as a PNG (see
        :func:`topdown_expert_map` and :func:`write_expert_map_png`); returns the map."""
        expert_map = topdown_expert_map(field, grid, mode=mode)
        write_expert_map_png(path, expert_map, palette, scale=scale)
        return expert_map


@torch.no_grad()
def topdown_expert_map(field, grid, *, mode: str = "top", chunk: int = 1 << 16) -> np.ndarray:
    """Expert of each ground column of the occupancy grid, seen from above.

    mode ``top``: the expert at the centre of the highest occupied cell of the column;
    ``majority``: the most frequent expert over the centres of the column's occupied cells
    (the lowest id on a tie). Columns without an occupied cell are -1.

    Returns int64 [R1, R0] as an image: row 0 is the largest y (north up), column i is
    x cell i (east right).
    """
    if mode not in ("top", "majority"):
        raise ValueError(f"topdown_expert_map: mode must be 'top' or 'majority', got {mode!r}")
    binary = grid.binary.detach().cpu()  # [R0, R1, R2]
    r0, r1, r2 = binary.shape
    res = torch.tensor([r0, r1, r2], dtype=torch.float32)
    out = torch.full((r0, r1), -1, dtype=torch.long)  # [x, y]
    occ = torch.nonzero(binary)  # [K, 3]
    if occ.shape[0]:
        route = _route_ids(field)
        if mode == "top":
            top = torch.full((r0 * r1,), -1, dtype=torch.long)
            col = occ[:, 0] * r1 + occ[:, 1]
            top.scatter_reduce_(0, col, occ[:, 2], "amax", include_self=True)
            cols = torch.nonzero(top >= 0)[:, 0]
            cells = torch.stack([cols // r1, cols % r1, top[cols]], -1)  # [C, 3]
            ids = torch.cat([route((cells[i:i + chunk].float() + 0.5) / res)
                             for i in range(0, cells.shape[0], chunk)])
            out.view(-1)[cols] = ids
        else:
            ids = torch.cat([route((occ[i:i + chunk].float() + 0.5) / res)
                             for i in range(0, occ.shape[0], chunk)])
            n_exp = int(field.n_experts)
            counts = torch.zeros(r0 * r1, n_exp, dtype=torch.long)
            counts.index_put_((occ[:, 0] * r1 + occ[:, 1], ids), torch.ones_like(ids),
                              accumulate=True)
            has = counts.sum(-1) > 0
            out.view(-1)[has] = counts[has].argmax(-1)
    return out.T.flip(0).numpy()  # [y, x], north up


def write_expert_map_png(path: str | Path, expert_map: np.ndarray, palette: Tensor, *,
                         scale: int = 4) -> None:
    """Write an expert-id image int [H, W] (-1: none, black) as an RGB PNG, each id coloured
    by row ``id`` of ``palette`` float [K, 3] in [0, 1] (the project's expert palette is
    ``switchnerf.render.palette.EXPERT_PALETTE``), each pixel repeated ``scale`` times per
    axis. Written atomically (temporary file, then rename)."""
    import imageio.v3 as iio

    from switchnerf.io_utils import atomic_path

    ids = np.asarray(expert_map, dtype=np.int64)
    pal = np.asarray(palette.detach().cpu(), dtype=np.float64)
    if ids.size and (ids.min() < -1 or ids.max() >= pal.shape[0]):
        raise ValueError(f"write_expert_map_png: expert ids must lie in [-1, {pal.shape[0] - 1}],"
                         f" got [{ids.min()}, {ids.max()}]")
    table = np.concatenate([pal, np.zeros((1, 3))])  # row K: black for -1
    rgb = (table[np.where(ids < 0, pal.shape[0], ids)] * 255.0 + 0.5).astype(np.uint8)
    scale = max(int(scale), 1)
    rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, rgb)
