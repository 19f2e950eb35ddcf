"""Geometry and materials of the synthetic city (metres, z-up world, ground at z = 0).

One triangle mesh holds everything; per-triangle arrays say how to colour a hit:

- ``kind``: GROUND (colour from :meth:`City.ground_color` at the hit's x, y), WALL, ROOF,
  FOLIAGE, TRUNK (colour = ``albedo``), FACADE (``albedo`` with a window grid in
  ``window`` colour: ``bay`` m wide bays, ``floor`` m floors, windows about
  1-1.5 m, from ``base`` + one floor up to ``top`` - 1 m; along-wall coordinate measured
  from the building's min corner ``origin``).

All colours are flat per surface, so images are piecewise smooth (learnable), and the
layout is a pure function of (preset, seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from switchnerf.scene.synth.mesh import FACADE, FOLIAGE, GROUND, ROOF, TRUNK, WALL, MeshBuilder
from switchnerf.scene.synth.presets import CityPreset

__all__ = [
    "CORE",
    "FACADE",
    "FOLIAGE",
    "GROUND",
    "ROOF",
    "TRUNK",
    "WALL",
    "City",
    "block_kind",
    "build_city",
]
CORE, SUBURB, FIELD, PARK, PLAZA, RIVERSIDE = range(6)

ROAD = np.array([0.33, 0.33, 0.35])
PAVEMENT = np.array([0.62, 0.61, 0.58])
GRASS = np.array([0.36, 0.55, 0.27])
MEADOW = np.array([0.45, 0.55, 0.33])  # the plain land beyond the city box
WATER = np.array([0.20, 0.34, 0.42])
PATH = np.array([0.74, 0.69, 0.58])  # gravel paths of parks
PLAZA_STONES = np.array([[0.76, 0.73, 0.67], [0.60, 0.57, 0.53]])  # 5 m checker
PLAZA_TILE = 5.0  # m
PATH_HALF_WIDTH = 1.5  # m; a park's paths cross at its block centre
FIELD_COLOURS = np.array(
    [
        [0.80, 0.71, 0.38],
        [0.45, 0.62, 0.24],
        [0.55, 0.42, 0.28],
        [0.62, 0.74, 0.36],
        [0.70, 0.60, 0.30],
        [0.33, 0.48, 0.22],
    ]
)
TOWER_WALLS = np.array(
    [
        [0.78, 0.74, 0.66],
        [0.66, 0.68, 0.70],
        [0.72, 0.56, 0.46],
        [0.85, 0.84, 0.80],
        [0.58, 0.62, 0.68],
        [0.64, 0.48, 0.40],
    ]
)
HOUSE_WALLS = np.array(
    [
        [0.92, 0.90, 0.84],
        [0.88, 0.80, 0.66],
        [0.80, 0.84, 0.88],
        [0.90, 0.78, 0.74],
        [0.86, 0.86, 0.78],
    ]
)
ROOF_COLOURS = np.array(
    [[0.62, 0.26, 0.20], [0.45, 0.30, 0.24], [0.40, 0.40, 0.42], [0.70, 0.40, 0.28]]
)


def _hash2(i: np.ndarray, j: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """Deterministic integer hash of block indices (any shape), uint64."""
    h = (
        (i.astype(np.int64) * 73856093)
        ^ (j.astype(np.int64) * 19349663)
        ^ (seed * 83492791 + salt * 2654435761)
    )
    h = h.astype(np.uint64)
    h ^= h >> np.uint64(13)
    h *= np.uint64(0x5BD1E995)
    h ^= h >> np.uint64(15)
    return h


@dataclass
class City:
    """The generated city. vertices: float64 [V, 3]; triangles: int64 [T, 3]; per-triangle
    kind: int [T]; albedo, window: float [T, 3]; bay, floor, base, top: float [T];
    origin: float [T, 2]. max_height: tallest structure, m."""

    preset: CityPreset
    seed: int
    vertices: np.ndarray
    triangles: np.ndarray
    kind: np.ndarray
    albedo: np.ndarray
    window: np.ndarray
    bay: np.ndarray
    floor: np.ndarray
    origin: np.ndarray
    base: np.ndarray
    top: np.ndarray
    max_height: float

    def block_kind(self, bi: np.ndarray, bj: np.ndarray) -> np.ndarray:
        """CORE / SUBURB / FIELD for block indices (block (bi, bj) spans [bi, bi+1) * block)."""
        return block_kind(self.preset, bi, bj)

    def ground_color(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Albedo [N, 3] of the ground at points x, y [N]: roads, pavement, grass, fields.

        Field blocks are split in two halves (across x or y) of hashed field colours. Parks
        and riverside blocks are lawn (parks with a cross of gravel paths), plazas a stone
        checker; the river's water covers everything but the roads (bridges).
        """
        p = self.preset
        gx, gy = x / p.block, y / p.block
        bi, bj = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
        kind = self.block_kind(bi, bj)
        h = _hash2(bi, bj, self.seed, 1)
        nf = np.uint64(len(FIELD_COLOURS))
        split = np.where((h >> np.uint64(16)) & np.uint64(1) == 0, gx - bi, gy - bj) < 0.5
        idx = np.where(split, h % nf, (h >> np.uint64(8)) % nf).astype(np.int64)
        idx[kind == SUBURB] = len(FIELD_COLOURS)
        idx[kind == CORE] = len(FIELD_COLOURS) + 1
        if p.parks or p.plazas or p.river is not None:
            idx = self._feature_ground(idx, kind, gx - bi, gy - bj, x, y)
        half = 0.5 * p.road_width
        dx = np.abs(gx - np.round(gx)) * p.block
        dy = np.abs(gy - np.round(gy)) * p.block
        lim = p.half_extent + half
        road = (np.abs(x) <= lim) & (np.abs(y) <= lim) & ((dx < half) | (dy < half))
        idx[road] = len(FIELD_COLOURS) + 2
        # Beyond the city box the land is one plain meadow: distant, featureless ground
        # that a direction-only far field can represent (the box holds all detail).
        outside = (np.abs(x) > p.half_extent) | (np.abs(y) > p.half_extent)
        idx[outside] = len(FIELD_COLOURS) + 3
        return _GROUND_TABLE[idx]

    def _feature_ground(self, idx, kind, fx, fy, x, y) -> np.ndarray:
        """Ground table indices of parks, plazas and water; fx, fy in [0, 1) within the block."""
        p = self.preset
        n = len(FIELD_COLOURS)
        idx[(kind == PARK) | (kind == RIVERSIDE)] = n  # lawn
        path = (np.abs(fx - 0.5) * p.block < PATH_HALF_WIDTH) | (
            np.abs(fy - 0.5) * p.block < PATH_HALF_WIDTH
        )
        idx[(kind == PARK) & path] = n + 5
        tile = (np.floor(x / PLAZA_TILE) + np.floor(y / PLAZA_TILE)).astype(np.int64) % 2
        plaza = kind == PLAZA
        idx[plaza] = n + 6 + tile[plaza]
        if p.river is not None:
            inside = (np.abs(x) <= p.half_extent) & (np.abs(y) <= p.half_extent)
            idx[inside & (np.abs(river_offset(p, x, y)) < 0.5 * p.river[1])] = n + 4
        return idx


_GROUND_TABLE = np.vstack([FIELD_COLOURS, GRASS, PAVEMENT, ROAD, MEADOW, WATER, PATH, PLAZA_STONES])


def river_offset(p: CityPreset, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed x distance (m) of points x, y [N] from the river's centre line."""
    return x - x_of_river(p, y)


def _near_river(p: CityPreset, bi: np.ndarray, bj: np.ndarray, margin: float = 3.0) -> np.ndarray:
    """True for blocks whose square comes within ``margin`` m of the river's water."""
    t = np.linspace(0.0, 1.0, 41)
    bi, bj = np.asarray(bi)[..., None], np.asarray(bj)[..., None]
    ys = (bj + t) * p.block  # [..., 41] along the block's y extent
    centre = x_of_river(p, ys)
    gap = np.maximum(np.maximum(bi * p.block - centre, centre - (bi + 1) * p.block), 0.0)
    return gap.min(-1) < 0.5 * p.river[1] + margin


def x_of_river(p: CityPreset, y: np.ndarray) -> np.ndarray:
    """x (m) of the river's centre line at y."""
    x0, _, amplitude, wavelength = p.river
    return x0 + amplitude * np.sin(2 * np.pi * y / wavelength)


def block_kind(p: CityPreset, bi: np.ndarray, bj: np.ndarray) -> np.ndarray:
    cx, cy = (np.asarray(bi) + 0.5) * p.block, (np.asarray(bj) + 0.5) * p.block
    inside = (np.abs(cx) < p.half_extent) & (np.abs(cy) < p.half_extent)
    core = np.zeros(np.shape(cx), bool)
    for x, y, r in p.cores:
        core |= np.hypot(cx - x, cy - y) < r
    suburb = np.hypot(cx, cy) < p.suburb_radius
    kind = np.where(inside & core, CORE, np.where(inside & suburb, SUBURB, FIELD))
    if p.river is not None:
        kind = np.where(inside & _near_river(p, bi, bj), RIVERSIDE, kind)
    for x, y, r in p.parks:
        kind = np.where(inside & (np.hypot(cx - x, cy - y) < r), PARK, kind)
    for x, y, r in p.plazas:
        kind = np.where(inside & (np.hypot(cx - x, cy - y) < r), PLAZA, kind)
    return kind


def _core_block(m: MeshBuilder, rng, p: CityPreset, x0, y0, x1, y1, closeness: float) -> float:
    """Tall buildings on one core block; returns the tallest height."""
    lo_h, hi_h = p.tower_height
    lots = (
        [(x0, y0, x1, y1)]
        if rng.random() < 0.3
        else [
            (xa, ya, xb, yb)
            for xa, xb in ((x0, 0.5 * (x0 + x1)), (0.5 * (x0 + x1), x1))
            for ya, yb in ((y0, 0.5 * (y0 + y1)), (0.5 * (y0 + y1), y1))
        ]
    )
    tallest = 0.0
    for xa, ya, xb, yb in lots:
        s = rng.uniform(1.0, 2.5)
        h = lo_h + (hi_h - lo_h) * closeness**0.8 * rng.uniform(0.35, 1.0)
        floor = rng.uniform(*p.facade_floor)
        h = max(lo_h, round(h / floor) * floor)
        wall = TOWER_WALLS[rng.integers(len(TOWER_WALLS))] * rng.uniform(0.92, 1.05)
        glass = np.array([0.20, 0.26, 0.34]) * rng.uniform(0.8, 1.3) + rng.uniform(-0.03, 0.03, 3)
        roof = np.array([0.42, 0.42, 0.43]) * rng.uniform(0.85, 1.15)
        m.box(
            (xa + s, ya + s, 0.0),
            (xb - s, yb - s, h),
            FACADE,
            np.clip(wall, 0, 1),
            roof,
            window=np.clip(glass, 0, 1),
            bay=rng.uniform(*p.facade_bay),
            floor=floor,
        )
        w, d = rng.uniform(3, 6), rng.uniform(3, 6)
        if min(xb - xa - 2 * s - w, yb - ya - 2 * s - d) > 4 and rng.random() < 0.6:  # plant room
            cx, cy = (
                rng.uniform(xa + s + w / 2 + 1, xb - s - w / 2 - 1),
                rng.uniform(ya + s + d / 2 + 1, yb - s - d / 2 - 1),
            )
            m.box(
                (cx - w / 2, cy - d / 2, h),
                (cx + w / 2, cy + d / 2, h + rng.uniform(2, 3.5)),
                WALL,
                (0.70, 0.70, 0.68),
                (0.55, 0.55, 0.56),
            )
        tallest = max(tallest, h + 3.5)
    return tallest


def _suburb_block(m: MeshBuilder, rng, x0, y0, x1, y1) -> float:
    nx, ny = 2, 3 if (y1 - y0) >= (x1 - x0) else 2
    tallest = 0.0
    for i in range(nx):
        for j in range(ny):
            lx0, lx1 = x0 + (x1 - x0) * i / nx, x0 + (x1 - x0) * (i + 1) / nx
            ly0, ly1 = y0 + (y1 - y0) * j / ny, y0 + (y1 - y0) * (j + 1) / ny
            if rng.random() < 0.2:
                continue
            w, d = rng.uniform(0.5, 0.75) * (lx1 - lx0), rng.uniform(0.5, 0.75) * (ly1 - ly0)
            cx = rng.uniform(lx0 + w / 2 + 1, lx1 - w / 2 - 1)
            cy = rng.uniform(ly0 + d / 2 + 1, ly1 - d / 2 - 1)
            h = rng.uniform(3.0, 7.0)
            wall = HOUSE_WALLS[rng.integers(len(HOUSE_WALLS))]
            roof = ROOF_COLOURS[rng.integers(len(ROOF_COLOURS))]
            lo, hi = (cx - w / 2, cy - d / 2), (cx + w / 2, cy + d / 2)
            if rng.random() < 0.7:
                m.box((*lo, 0.0), (*hi, h), WALL, wall, roof)
                rise = rng.uniform(1.5, 3.0)
                m.gable_roof(lo, hi, h, rise, along_x=w >= d, wall=wall, roof=roof)
                tallest = max(tallest, h + rise)
            else:
                m.box((*lo, 0.0), (*hi, h), WALL, wall, (0.55, 0.55, 0.55))
                tallest = max(tallest, h)
            if rng.random() < 0.7:  # a tree in the yard, in a lot corner
                tx = lx0 + 2.5 if cx - w / 2 - lx0 > lx1 - cx - w / 2 else lx1 - 2.5
                ty = ly0 + 2.5 if cy - d / 2 - ly0 > ly1 - cy - d / 2 else ly1 - 2.5
                _tree(m, rng, tx, ty)
    return tallest


def _park_block(m: MeshBuilder, rng, x0, y0, x1, y1) -> float:
    """Trees scattered over a lawn, off the cross of paths; sometimes a pavilion."""
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    k = int(rng.integers(8, 17))
    xs, ys = rng.uniform(x0 + 3, x1 - 3, k), rng.uniform(y0 + 3, y1 - 3, k)
    for tx, ty in zip(xs, ys):
        if min(abs(tx - cx), abs(ty - cy)) > PATH_HALF_WIDTH + 3.0:
            _tree(m, rng, tx, ty)
    tallest = 10.0
    if rng.random() < 0.4:  # a pavilion in one quadrant
        qx = cx + rng.choice([-1.0, 1.0]) * 0.25 * (x1 - x0)
        qy = cy + rng.choice([-1.0, 1.0]) * 0.25 * (y1 - y0)
        h = rng.uniform(3.0, 4.5)
        m.box(
            (qx - 3, qy - 2, 0.0), (qx + 3, qy + 2, h), WALL, (0.82, 0.78, 0.70), (0.50, 0.32, 0.26)
        )
        tallest = max(tallest, h)
    return tallest


def _riverside_block(m: MeshBuilder, rng, p: CityPreset, x0, y0, x1, y1) -> float:
    """Lawn down to the water, with trees kept 3 m or more from it."""
    k = int(rng.integers(4, 11))
    xs, ys = rng.uniform(x0 + 3, x1 - 3, k), rng.uniform(y0 + 3, y1 - 3, k)
    keep = np.abs(river_offset(p, xs, ys)) > 0.5 * p.river[1] + 3.0 + 3.0  # canopy radius
    for tx, ty in zip(xs[keep], ys[keep]):
        _tree(m, rng, tx, ty)
    return 10.0


def _plaza_block(m: MeshBuilder, rng, x0, y0, x1, y1) -> float:
    """A stone plaza: a fountain basin with a column in the middle, trees in the corners."""
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    stone = np.array([0.80, 0.77, 0.70])
    m.box((cx - 5, cy - 5, 0.0), (cx + 5, cy + 5, 0.8), WALL, stone, WATER)
    h = rng.uniform(7.0, 11.0)
    m.box((cx - 0.8, cy - 0.8, 0.8), (cx + 0.8, cy + 0.8, h), WALL, stone, stone)
    for tx in (x0 + 3.5, x1 - 3.5):
        for ty in (y0 + 3.5, y1 - 3.5):
            _tree(m, rng, tx, ty)
    return max(h, 10.0)


def _tree(m: MeshBuilder, rng, x, y) -> None:
    leaf = np.array([0.20, 0.42, 0.18]) * rng.uniform(0.8, 1.25)
    m.tree(
        x,
        y,
        rng.uniform(5.0, 10.0),
        rng.uniform(1.6, 3.0),
        bool(rng.random() < 0.35),
        np.clip(leaf, 0, 1),
    )


def build_city(p: CityPreset, seed: int) -> City:
    """Lay out roads, blocks, buildings and trees deterministically from (preset, seed)."""
    rng = np.random.default_rng(seed)
    m = MeshBuilder()
    far = 12.0 * p.half_extent
    m.add(
        np.array([[-far, -far, 0], [far, -far, 0], [far, far, 0], [-far, far, 0]]),
        np.array([[0, 1, 2], [0, 2, 3]]),
        GROUND,
        (0, 0, 0),
    )
    n = int(np.ceil(p.half_extent / p.block))
    tallest = 0.0
    r = 0.5 * p.road_width
    for bi in range(-n, n):
        for bj in range(-n, n):
            x0, y0 = bi * p.block, bj * p.block
            x1, y1 = x0 + p.block, y0 + p.block
            if max(abs(x0), abs(x1), abs(y0), abs(y1)) > p.half_extent + 1e-6:
                continue  # nothing stands outside the city box (see ground_color)
            kind = int(block_kind(p, np.array(bi), np.array(bj)))
            if kind == CORE:
                cx, cy = x0 + p.block / 2, y0 + p.block / 2
                close = max(0.0, max(1 - np.hypot(cx - x, cy - y) / rad for x, y, rad in p.cores))
                tallest = max(
                    tallest, _core_block(m, rng, p, x0 + r, y0 + r, x1 - r, y1 - r, close)
                )
            elif kind == SUBURB:
                tallest = max(tallest, _suburb_block(m, rng, x0 + r, y0 + r, x1 - r, y1 - r))
            elif kind == PARK:
                tallest = max(tallest, _park_block(m, rng, x0 + r, y0 + r, x1 - r, y1 - r))
            elif kind == RIVERSIDE:
                tallest = max(tallest, _riverside_block(m, rng, p, x0 + r, y0 + r, x1 - r, y1 - r))
            elif kind == PLAZA:
                tallest = max(tallest, _plaza_block(m, rng, x0 + r, y0 + r, x1 - r, y1 - r))
            elif rng.random() < 0.35:  # a cluster of trees or a row along a field edge
                k = rng.integers(3, 9)
                if rng.random() < 0.5:
                    xs, ys = rng.uniform(x0 + 4, x1 - 4, k), rng.uniform(y0 + 4, y1 - 4, k)
                else:
                    xs, ys = np.linspace(x0 + 4, x1 - 4, k), np.full(k, y0 + 3.0)
                for tx, ty in zip(xs, ys):
                    _tree(m, rng, tx, ty)
    tallest = max(tallest, 10.0)
    attrs = list(zip(*m.attrs))
    return City(
        preset=p,
        seed=seed,
        vertices=np.concatenate(m.verts),
        triangles=np.concatenate(m.tris),
        kind=np.array(attrs[0], dtype=np.int64),
        albedo=np.array(attrs[1]),
        window=np.array(attrs[2]),
        bay=np.array(attrs[3]),
        floor=np.array(attrs[4]),
        origin=np.array(attrs[5]),
        base=np.array(attrs[6]),
        top=np.array(attrs[7]),
        max_height=float(tallest),
    )
