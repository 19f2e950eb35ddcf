"""Spatial partitions in the internal z-up frame: the one definition of a ground cell.

:class:`GridPartition` is the cell of a point: ``rows x cols`` equal rectangles tiling an
xy rectangle, index ``j = row * cols + col`` with rows along y and columns along x; z is
ignored, and points outside the rectangle take the nearest border cell. The fixed-grid
router uses it on the unit square of the model's box (``GridPartition.unit_square``), the
scene partition on the camera extent (``Partition.cells``), and the viewer draws its borders.

:class:`Partition` is Mega-NeRF's partition of rays: a grid of ``rows x cols`` centroids at
the centres of the cells of the xy extent of the camera centres, at a ground altitude z. A
ray belongs to cell j when, over S samples between its near and far bounds,
``min_s dist(p_s, c_j) / min_k dist(p_s, c_k) <= margin`` (REFERENCE.md §3,
``create_cluster_masks``, default margin 1.15 and S = 1000). Cells overlap near their
borders; with margin 1 a point's cell is its nearest centroid, which is its grid cell.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from switchnerf.errors import input_error
from switchnerf.io_utils import write_json_atomic
from switchnerf.scene.types import SPLITS, Scene

DEFAULT_MARGIN = 1.15
DEFAULT_SAMPLES = 1000


@dataclass(frozen=True)
class GridPartition:
    """``rows x cols`` equal cells tiling the xy rectangle ``[lo, hi]`` (module docstring).

    grid: (rows, cols); lo, hi: (x, y) corners, in the frame of the points given to
    :meth:`cell_of` (world units, or the unit square of the encodings); z: the altitude
    where :meth:`borders` draws the cells (it plays no part in :meth:`cell_of`).
    """

    grid: tuple[int, int]
    lo: tuple[float, float]
    hi: tuple[float, float]
    z: float = 0.0

    def __post_init__(self) -> None:
        grid = (int(self.grid[0]), int(self.grid[1]))
        if grid[0] < 1 or grid[1] < 1:
            raise ValueError(f"grid {grid} must be at least 1x1")
        lo = (float(self.lo[0]), float(self.lo[1]))
        hi = (float(self.hi[0]), float(self.hi[1]))
        if not (hi[0] >= lo[0] and hi[1] >= lo[1]):
            raise ValueError(f"cell rectangle lo {lo} must not exceed hi {hi}")
        object.__setattr__(self, "grid", grid)
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)
        object.__setattr__(self, "z", float(self.z))

    @classmethod
    def unit_square(cls, grid: tuple[int, int]) -> GridPartition:
        """Cells tiling the unit square [0, 1]^2 (the fixed-grid router's cells)."""
        return cls(grid, (0.0, 0.0), (1.0, 1.0))

    @property
    def n_cells(self) -> int:
        return self.grid[0] * self.grid[1]

    def in_box(self, lo, hi, z: float = 0.0) -> GridPartition:
        """These cells, given in the unit square of a box, in the box's own frame.

        lo, hi: the box's (x, y, ...) corners; a unit-square point u is the box point
        ``lo + u (hi - lo)`` (so ``u = (p - lo) / (hi - lo)``, the encodings' map).
        """
        def to_box(u: tuple[float, float]) -> tuple[float, float]:  # exact at u = 0 and 1
            return tuple(float(lo[a]) * (1.0 - u[a]) + float(hi[a]) * u[a] for a in range(2))

        return GridPartition(self.grid, to_box(self.lo), to_box(self.hi), z)

    def _index(self, x: torch.Tensor, axis: int, n: int) -> torch.Tensor:
        """floor(n (x - lo) / (hi - lo)) clamped to [0, n - 1] (0 for an empty extent)."""
        lo, extent = self.lo[axis], self.hi[axis] - self.lo[axis]
        if not extent > 0:
            return torch.zeros(x.shape, dtype=torch.int64, device=x.device)
        u = x if lo == 0.0 else x - lo
        u = u if extent == 1.0 else u / extent
        return (u * n).floor().clamp(0, n - 1).long()

    def cell_of(self, points):
        """Cell index int64 [...] of points [..., >= 2] (x, y; further coordinates ignored).

        ``row * cols + col`` with ``col = clamp(floor(cols (x - lo_x) / (hi_x - lo_x)), 0,
        cols - 1)`` and ``row`` the same along y. A torch tensor gives a tensor (same
        device), a numpy array an array.

        >>> GridPartition((2, 3), (0.0, 0.0), (3.0, 2.0)).cell_of(np.array([[2.5, 0.5], [0.5, 1.5]]))
        array([2, 3])
        """
        if not isinstance(points, torch.Tensor):
            return self.cell_of(torch.from_numpy(np.asarray(points))).numpy()
        rows, cols = self.grid
        col = self._index(points[..., 0], 0, cols)
        row = self._index(points[..., 1], 1, rows)
        return row * cols + col

    def centres(self) -> np.ndarray:
        """Cell centres, float64 [C, 2] (x, y), in cell-index order."""
        rows, cols = self.grid
        lo, hi = np.asarray(self.lo, dtype=np.float64), np.asarray(self.hi, dtype=np.float64)
        step = (hi - lo) / np.array([cols, rows])
        r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        x = lo[0] + (c.reshape(-1) + 0.5) * step[0]
        y = lo[1] + (r.reshape(-1) + 0.5) * step[1]
        return np.stack([x, y], -1)

    def borders(self) -> np.ndarray:
        """Cell borders at altitude ``z``: float32 [cols + rows + 2, 2, 3] line segments, the
        cols + 1 lines of constant x, then the rows + 1 lines of constant y."""
        rows, cols = self.grid
        (x0, y0), (x1, y1), z = self.lo, self.hi, self.z
        xs = np.linspace(x0, x1, cols + 1)
        ys = np.linspace(y0, y1, rows + 1)
        segs = [[[x, y0, z], [x, y1, z]] for x in xs] + [[[x0, y, z], [x1, y, z]] for y in ys]
        return np.asarray(segs, dtype=np.float32)


@dataclass
class Partition:
    """Cell centroids and the rule that assigns rays to cells.

    centroids: float64 [C, 3] world frame, C = rows * cols, index ``row * cols + col``, at
    the centres of :attr:`cells` (as :func:`make_partition` places them); grid: (rows,
    cols); margin: distance-ratio threshold (>= 1); bbox: float64 [2, 3], the (min, max)
    corners of the region the grid covers (camera xy extent, z = ground).
    """

    centroids: np.ndarray
    grid: tuple[int, int]
    margin: float
    bbox: np.ndarray

    def __post_init__(self) -> None:
        self.centroids = np.asarray(self.centroids, dtype=np.float64).reshape(-1, 3)
        self.bbox = np.asarray(self.bbox, dtype=np.float64).reshape(2, 3)
        self.grid = (int(self.grid[0]), int(self.grid[1]))
        if self.grid[0] < 1 or self.grid[1] < 1:
            raise ValueError(f"grid {self.grid} must be at least 1x1")
        if self.centroids.shape[0] != self.grid[0] * self.grid[1]:
            raise ValueError(f"{self.centroids.shape[0]} centroids for a {self.grid} grid")
        if not self.margin >= 1.0:
            raise ValueError(f"margin {self.margin} must be >= 1")

    @property
    def n_cells(self) -> int:
        return self.centroids.shape[0]

    @property
    def cells(self) -> GridPartition:
        """The grid cells over ``bbox``'s xy rectangle, at its ground altitude."""
        return GridPartition(self.grid, self.bbox[0, :2], self.bbox[1, :2], self.bbox[0, 2])

    def cell_of(self, points):
        """Cell index int64 [...] of world points [..., 3]: ``cells.cell_of(points)``."""
        return self.cells.cell_of(points)

    def to_dict(self) -> dict:
        return {"grid": list(self.grid), "margin": float(self.margin),
                "centroids": self.centroids.tolist(), "bbox": self.bbox.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Partition:
        return cls(centroids=np.asarray(d["centroids"]), grid=tuple(d["grid"]),
                   margin=float(d["margin"]), bbox=np.asarray(d["bbox"]))

    def save(self, path) -> None:
        """Write as JSON, atomically."""
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path) -> Partition:
        try:
            d = json.loads(Path(path).read_text())
            return cls.from_dict(d)
        except FileNotFoundError:
            raise input_error(path, None, "partition file not found") from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise input_error(path, None, f"not a valid partition ({e})") from None


def camera_centres(scene: Scene) -> np.ndarray:
    """Camera centres of all images (train, then val): float64 [K, 3] world frame."""
    recs = [r for s in SPLITS if s in scene.frames for r in scene.images(s)]
    return np.array([np.asarray(r.c2w, dtype=np.float64)[:3, 3] for r in recs]).reshape(-1, 3)


def make_partition(scene: Scene, grid: tuple[int, int] | None = None, *,
                   margin: float = DEFAULT_MARGIN, ground_z: float | None = None) -> Partition:
    """Centroids at the centres of the ``grid`` cells (:class:`GridPartition`) of the camera
    xy extent.

    grid: (rows, cols), default ``scene.partition_grid``; ground_z: altitude of the
    centroids in world units, default the scene's ground (``altitude_range[0]``).
    """
    rows, cols = grid if grid is not None else scene.partition_grid
    z = float(scene.altitude_range[0]) if ground_z is None else float(ground_z)
    centres = camera_centres(scene)
    if centres.shape[0] == 0:
        raise ValueError(f"scene {scene.name!r} has no cameras to partition")
    lo, hi = centres[:, :2].min(0), centres[:, :2].max(0)
    xy = GridPartition((rows, cols), lo, hi, z).centres()  # [C, 2]
    centroids = np.concatenate([xy, np.full((xy.shape[0], 1), z)], -1)  # [C, 3]
    bbox = np.array([[lo[0], lo[1], z], [hi[0], hi[1], z]])
    return Partition(centroids, (rows, cols), margin, bbox)


def clip_to_box(origins: torch.Tensor, dirs: torch.Tensor,
                bbox) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances of rays through an axis-aligned box (slab test).

    origins, dirs: float [N, 3]; bbox: [2, 3] (min, max). Returns near, far: float [N] with
    near >= 0; rays that miss the box get near = far = 0.
    """
    box = torch.as_tensor(np.asarray(bbox, dtype=np.float64), dtype=origins.dtype,
                          device=origins.device)
    safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0 = (box[0] - origins) / safe  # [N, 3]
    t1 = (box[1] - origins) / safe
    near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(-1)
    miss = far < near
    return near.masked_fill(miss, 0.0), far.masked_fill(miss, 0.0)


def cell_membership(origins: torch.Tensor, dirs: torch.Tensor, near: torch.Tensor,
                    far: torch.Tensor, partition: Partition, n_samples: int = DEFAULT_SAMPLES,
                    *, chunk_elements: int = 1 << 22) -> torch.Tensor:
    """Which cells each ray belongs to.

    origins, dirs: float [N, 3] world frame (dirs unit length); near, far: float [N]
    (finite). Returns bool [N, C]: ray n is in cell j when, for some of the ``n_samples``
    points ``p = o + t d`` with t = linspace(near, far, S),
    ``|p - c_j| <= margin * min_k |p - c_k|`` (Mega-NeRF's ``min_s dist_j / dist_min <= margin``,
    REFERENCE.md §3). Squared distances are evaluated as
    ``e_j + (t + b_j)^2`` with ``b_j = (o - c_j).d`` and ``e_j = |o - c_j - b_j d|^2`` (the
    squared distance of c_j to the line), in float32, in chunks of rays holding at most
    ``chunk_elements`` (N_chunk * S * C) values.
    """
    n = origins.shape[0]
    dev = origins.device
    c = torch.as_tensor(partition.centroids, dtype=torch.float64, device=dev)  # [C, 3]
    m2 = float(partition.margin) ** 2
    s = max(int(n_samples), 1)
    lin = torch.linspace(0.0, 1.0, s, dtype=torch.float64, device=dev) if s > 1 \
        else torch.zeros(1, dtype=torch.float64, device=dev)
    out = torch.zeros(n, c.shape[0], dtype=torch.bool, device=dev)
    step = max(1, chunk_elements // (s * c.shape[0]))
    for a in range(0, n, step):
        o = origins[a:a + step].to(torch.float64)
        d = dirs[a:a + step].to(torch.float64)
        oc = o[:, None, :] - c[None]  # [n, C, 3]
        b = (oc * d[:, None, :]).sum(-1)  # [n, C]
        e = (oc - b[..., None] * d[:, None, :]).square().sum(-1)  # [n, C]
        lo = near[a:a + step].to(torch.float64)
        hi = far[a:a + step].to(torch.float64)
        t = lo[:, None] + (hi - lo)[:, None] * lin[None]  # [n, S]
        # cell-major layout: the min over cells is elementwise, the any over samples contiguous
        d2 = t.to(torch.float32)[None] + b.T.to(torch.float32)[:, :, None]  # [C, n, S]
        d2.square_().add_(e.T.to(torch.float32)[:, :, None])
        bound = d2.amin(0).mul_(m2)  # [n, S]
        out[a:a + step] = (d2 <= bound).any(-1).T
    return out


def cell_counts(membership_bits: np.ndarray, n_cells: int) -> np.ndarray:
    """Per-cell number of set bits. membership_bits: uint8 [N, ceil(C/8)] packed (big bit
    order, as ``np.packbits(axis=1)``). Returns int64 [C]."""
    if membership_bits.shape[0] == 0:
        return np.zeros(n_cells, dtype=np.int64)
    return np.unpackbits(membership_bits, axis=1, count=n_cells).sum(0, dtype=np.int64)


_PALETTE = np.array([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
    [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0],
    [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128], [128, 128, 128],
], dtype=np.float64)


def render_partition_map(partition: Partition, scene: Scene, path, *, size: int = 768) -> Path:
    """Write :func:`draw_partition_map` as a PNG at ``path`` (atomically); returns the path."""
    from switchnerf.io_utils import atomic_path, readable_image

    path = Path(path)
    with atomic_path(path, verify=readable_image) as tmp:
        draw_partition_map(partition, scene, size=size).save(tmp, format="PNG")
    return path


def draw_partition_map(partition: Partition, scene: Scene, *, size: int = 768):
    """A top-down RGB ``PIL.Image`` of the cells and the cameras.

    Each pixel of the ground plane (z = the centroids' altitude) takes the colour of its
    nearest centroid; pixels inside the margin of two or more cells are hatched (the overlap).
    Centroids are drawn as labelled discs, camera centres as black dots, the partition's
    camera extent and the scene box as outlines. Image up is world +y, right is world +x.
    """
    from PIL import Image, ImageDraw

    cams = camera_centres(scene)[:, :2]
    pts = np.concatenate([cams, partition.centroids[:, :2], partition.bbox[:, :2],
                          np.asarray(scene.bbox, dtype=np.float64)[:, :2]])
    lo, hi = pts.min(0), pts.max(0)
    span = np.maximum(hi - lo, 1e-9)
    lo, hi = lo - 0.05 * span.max(), hi + 0.05 * span.max()
    span = hi - lo
    scale = (size - 1) / span.max()  # pixels per world unit
    w, h = (max(round(float(v) * scale) + 1, 2) for v in span[:2])

    def to_px(xy):
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return np.stack([(xy[:, 0] - lo[0]) * scale, (hi[1] - xy[:, 1]) * scale], -1)

    gx = lo[0] + (np.arange(w) + 0.5) / scale
    gy = hi[1] - (np.arange(h) + 0.5) / scale
    xy = np.stack(np.meshgrid(gx, gy, indexing="xy"), -1).reshape(-1, 2)  # [h*w, 2]
    nearest = np.empty(h * w, dtype=np.int64)
    inside = np.empty(h * w, dtype=np.int64)  # number of cells whose margin covers the pixel
    step = max(1, (1 << 22) // partition.n_cells)
    for a in range(0, h * w, step):
        d2 = ((xy[a:a + step, None, :] - partition.centroids[None, :, :2]) ** 2).sum(-1)
        nearest[a:a + step] = d2.argmin(1)
        inside[a:a + step] = (d2 <= partition.margin ** 2 * d2.min(1, keepdims=True)).sum(1)
    colour = _PALETTE[nearest % len(_PALETTE)] * 0.55 + 255 * 0.45
    yy, xx = np.divmod(np.arange(h * w), w)
    hatch = (inside > 1) & (((xx + yy) // 4) % 2 == 0)
    colour[hatch] *= 0.7
    img = Image.fromarray(colour.reshape(h, w, 3).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)

    def rect(box, fill):
        (x0, y1), (x1, y0) = to_px(np.asarray(box, dtype=np.float64)[:, :2])
        draw.rectangle([x0, y0, x1, y1], outline=fill, width=2)

    rect(np.asarray(scene.bbox)[:, :2], (40, 40, 40))
    rect(partition.bbox[:, :2], (90, 90, 200))
    for x, y in to_px(cams):
        draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(0, 0, 0))
    for j, (x, y) in enumerate(to_px(partition.centroids[:, :2])):
        rgb = tuple(int(v) for v in _PALETTE[j % len(_PALETTE)])
        draw.ellipse([x - 6, y - 6, x + 6, y + 6], fill=rgb, outline=(0, 0, 0), width=2)
        draw.text((x + 8, y - 6), str(j), fill=(0, 0, 0))
    return img
