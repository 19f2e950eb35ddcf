"""Scene bounds: the foreground box and the altitude slab, given or estimated.

All in the internal world frame (z up) and world units.
"""

from __future__ import annotations

import numpy as np

MAX_PAIR_CAMERAS = 256  # cameras used for the pairwise look-at estimate (strided subset)


def look_at_points(c2ws: np.ndarray, min_angle_deg: float = 10.0) -> np.ndarray:
    """Points where cameras look: closest approaches of pairs of principal rays.

    c2ws: [N, 4, 4] OpenGL. Pairs whose rays differ by less than ``min_angle_deg`` or meet
    behind a camera are skipped. Returns [M, 3] midpoints (M may be 0).
    """
    step = max(1, len(c2ws) // MAX_PAIR_CAMERAS)
    c = c2ws[::step]
    o, d = c[:, :3, 3], -c[:, :3, 2]
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    i, j = np.triu_indices(len(c), k=1)
    d1, d2, w = d[i], d[j], o[i] - o[j]
    b = np.einsum("nk,nk->n", d1, d2)
    denom = 1.0 - b * b
    ok = denom > np.sin(np.radians(min_angle_deg)) ** 2
    dw1, dw2 = np.einsum("nk,nk->n", d1, w), np.einsum("nk,nk->n", d2, w)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (b * dw2 - dw1) / denom
        t2 = (dw2 - b * dw1) / denom
    ok &= (t1 > 0) & (t2 > 0)
    p1 = o[i][ok] + t1[ok, None] * d1[ok]
    p2 = o[j][ok] + t2[ok, None] * d2[ok]
    return 0.5 * (p1 + p2)


def estimate_bounds(
    c2ws: np.ndarray,
    points: np.ndarray | None = None,
    bbox: np.ndarray | None = None,
    altitude_range: tuple[float, float] | None = None,
) -> tuple[np.ndarray, tuple[float, float], dict[str, bool]]:
    """Fill in whichever of the box [2, 3] and altitude (ground_z, top_z) is not given.

    c2ws: [N, 4, 4] cameras; points: [M, 3] sparse points (SfM) or None. Content points are
    the sparse points when there are >= 20, else the look-at points of the cameras. Points
    further than a quarter of the 1st..99th percentile span beyond it (per axis) are outliers;
    the box spans the rest, padded by 5% of its size per side.
    For aerial captures (most cameras above the content, looking down) without sparse
    points the top is raised to 80% of the way from the ground to the median camera,
    since look-at points lie on the ground and say nothing about building heights. With
    no usable content points at all, the ground is put half the cameras' horizontal spread
    below the lowest camera. The given altitude range, if any, sets the box's z extent.
    Returns (bbox, altitude_range, estimated) with estimated = {"bbox": .., "altitude_range": ..}.
    """
    estimated = {"bbox": bbox is None, "altitude_range": altitude_range is None}
    if bbox is not None:
        bbox = np.asarray(bbox, dtype=np.float64)
        if altitude_range is None:
            altitude_range = (float(bbox[0, 2]), float(bbox[1, 2]))
        return bbox, (float(altitude_range[0]), float(altitude_range[1])), estimated

    cams = c2ws[:, :3, 3]
    have_points = points is not None and len(points) >= 20
    content = np.asarray(points, dtype=np.float64) if have_points else look_at_points(c2ws)
    if len(content) >= 8:
        # outlier fence: a quarter of the 1st..99th percentile span beyond either end
        p_lo, p_hi = np.percentile(content, [1.0, 99.0], axis=0)
        fence = 0.25 * (p_hi - p_lo)
        keep = np.all((content >= p_lo - fence) & (content <= p_hi + fence), axis=1)
        lo, hi = content[keep].min(0), content[keep].max(0)
        looks_down = np.mean(-c2ws[:, 2, 2] < -0.2) > 0.5
        aerial = looks_down and np.median(cams[:, 2]) > hi[2]
        if aerial and not have_points:
            hi[2] = max(hi[2], lo[2] + 0.8 * (np.median(cams[:, 2]) - lo[2]))
    else:
        spread = float(np.ptp(cams[:, :2], axis=0).max()) if len(cams) > 1 else 1.0
        spread = max(spread, 1e-3)
        lo = np.array([*cams[:, :2].min(0), cams[:, 2].min() - 0.5 * spread])
        hi = np.array([*cams[:, :2].max(0), cams[:, 2].min()])
    size = np.maximum(hi - lo, 1e-3 * max(float(np.max(hi - lo)), 1e-3))
    lo, hi = lo - 0.05 * size, hi + 0.05 * size
    if altitude_range is not None:
        lo[2], hi[2] = float(altitude_range[0]), float(altitude_range[1])
    else:
        altitude_range = (float(lo[2]), float(hi[2]))
    return np.stack([lo, hi]), (float(altitude_range[0]), float(altitude_range[1])), estimated
