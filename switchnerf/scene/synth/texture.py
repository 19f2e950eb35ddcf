"""Surface detail for the synthetic city: smooth 3D value noise fixed to the world.

The city's surfaces are flat colours, which is easy to learn but gives feature matchers
(structure from motion) almost nothing to hold on to. ``detail_factor`` is a brightness
factor attached to world positions (the same in every view), two octaves of trilinear value
noise with cells of ``DETAIL_CELLS_M`` metres.
"""

from __future__ import annotations

import numpy as np

DETAIL_CELLS_M = (2.0, 0.7)  # cell sizes of the two octaves, metres
DETAIL_WEIGHTS = (0.6, 0.4)


def _lattice(i: np.ndarray, j: np.ndarray, k: np.ndarray, seed: int) -> np.ndarray:
    """Hashed values in [0, 1] at integer lattice points (int64 arrays of one shape)."""
    h = (
        (i.astype(np.uint64) * np.uint64(73856093))
        ^ (j.astype(np.uint64) * np.uint64(19349663))
        ^ (k.astype(np.uint64) * np.uint64(83492791))
        ^ np.uint64((seed * 2654435761) % 2**32)
    )
    h ^= h >> np.uint64(13)
    h *= np.uint64(0x5BD1E995)
    h ^= h >> np.uint64(15)
    return (h & np.uint64(0xFFFF)).astype(np.float32) / np.float32(0xFFFF)


def value_noise(points: np.ndarray, cell: float, seed: int) -> np.ndarray:
    """Trilinear value noise in [0, 1] at ``points`` [N, 3] (metres), lattice step ``cell``,
    smoothstep-weighted so it is C1 across cells. Returns float32 [N]."""
    q = np.asarray(points, dtype=np.float64) / cell
    base = np.floor(q)
    t = (q - base).astype(np.float32)
    t = t * t * (3.0 - 2.0 * t)
    base = base.astype(np.int64) + (1 << 20)  # non-negative lattice indices near the city
    out = np.zeros(len(q), np.float32)
    for dx in (0, 1):
        wx = t[:, 0] if dx else 1.0 - t[:, 0]
        for dy in (0, 1):
            wy = t[:, 1] if dy else 1.0 - t[:, 1]
            for dz in (0, 1):
                wz = t[:, 2] if dz else 1.0 - t[:, 2]
                corner = _lattice(base[:, 0] + dx, base[:, 1] + dy, base[:, 2] + dz, seed)
                out += wx * wy * wz * corner
    return out


def detail_factor(points: np.ndarray, amplitude: float, seed: int) -> np.ndarray:
    """Brightness factor float32 [N] in [1 - amplitude, 1 + amplitude] at ``points`` [N, 3]."""
    n = np.zeros(len(points), np.float32)
    for k, (cell, weight) in enumerate(zip(DETAIL_CELLS_M, DETAIL_WEIGHTS)):
        n += weight * value_noise(points, cell, seed * 7 + k)
    return (1.0 - amplitude) + 2.0 * amplitude * n
