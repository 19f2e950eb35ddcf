"""Up direction and ground plane of a reconstruction without GPS: the leveling transform
``scene from-images`` applies before it writes the model.

Cues: the cameras' right axes (drone gimbals and people rarely roll, ``frames.estimate_up``)
and the ground, the largest near-horizontal plane of the sparse points (RANSAC). For an
aerial capture (most cameras look down and are above the ground plane) the ground plane's
normal, oriented towards the cameras, is up; otherwise the cameras' estimate is. The ground
then lies at z = 0 and the cameras' mean x, y at the origin. All in the model's own units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from switchnerf.scene.poses import estimate_up, rotation_between

MAX_PLANE_TILT_DEG = 25.0  # a ground plane candidate is at most this far from the camera up
MIN_GROUND_FRACTION = 0.1  # of the sparse points, on the plane
RANSAC_TRIALS = 300
RANSAC_POINTS = 20000  # points used by RANSAC (strided subset)


@dataclass(frozen=True)
class Gravity:
    """transform: [4, 4] rigid map of the model's world to the leveled one (z up, ground at
    0); up: unit [3] in the model's frame; source: "ground plane" or "cameras"; tilt_deg:
    angle between the ground normal and the cameras' up (None without a plane); aerial:
    whether the capture looks down on the ground from above; cameras_above: fraction of
    cameras above the ground plane (None without a plane)."""

    transform: np.ndarray
    up: np.ndarray
    source: str
    tilt_deg: float | None
    aerial: bool
    cameras_above: float | None
    ground_points: int


def fit_ground_plane(
    points: np.ndarray, up: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, float, np.ndarray] | None:
    """The plane ``n . x = d`` holding most points [M, 3] among those whose normal is within
    ``MAX_PLANE_TILT_DEG`` of ``up``; refined by least squares on its inliers.

    The inlier distance is 1% of the points' horizontal spread (5th..95th percentile).
    Returns (n unit [3] with n . up > 0, d, inlier mask [M]) or None when no such plane
    holds ``MIN_GROUND_FRACTION`` of the points (or there are fewer than 10 points).
    """
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) < 10:
        return None
    up = up / np.linalg.norm(up)
    sub = pts[:: max(1, len(pts) // RANSAC_POINTS)]
    horiz = sub - np.outer(sub @ up, up)
    lo, hi = np.percentile(horiz, [5.0, 95.0], axis=0)
    tol = 0.01 * max(float(np.linalg.norm(hi - lo)), 1e-9)
    cos_max = np.cos(np.radians(MAX_PLANE_TILT_DEG))
    rng = np.random.default_rng(seed)
    best, best_count = None, 0
    for _ in range(RANSAC_TRIALS):
        a, b, c = sub[rng.choice(len(sub), 3, replace=False)]
        n = np.cross(b - a, c - a)
        norm = np.linalg.norm(n)
        if norm < 1e-12:
            continue
        n = n / norm
        if abs(n @ up) < cos_max:
            continue
        count = int(np.count_nonzero(np.abs(sub @ n - n @ a) < tol))
        if count > best_count:
            best, best_count = (n, float(n @ a)), count
    if best is None or best_count < MIN_GROUND_FRACTION * len(sub):
        return None
    n, d = best
    for _ in range(2):  # least-squares refinement on the inliers of the current plane
        inl = np.abs(pts @ n - d) < tol
        centre = pts[inl].mean(0)
        n = np.linalg.svd(pts[inl] - centre, full_matrices=False)[2][2]
        d = float(n @ centre)
    if n @ up < 0:
        n, d = -n, -d
    return n, d, np.abs(pts @ n - d) < tol


def level(c2ws: np.ndarray, points: np.ndarray | None, seed: int = 0) -> Gravity:
    """The leveling of a reconstruction: cameras c2w [N, 4, 4] (OpenGL axes), sparse points
    [M, 3] (or None), both in the model's frame. See the module docstring for the rule."""
    cam_up = estimate_up(c2ws)
    centres = c2ws[:, :3, 3]
    plane = None if points is None else fit_ground_plane(points, cam_up, seed)
    tilt = above = None
    aerial = False
    up, source, ground_points = cam_up, "cameras", 0
    if plane is not None:
        n, d, inl = plane
        side = centres @ n - d
        if np.median(side) < 0:  # the cameras are on the other side: flip the plane
            n, d, side = -n, -d, -side
        above = float(np.mean(side > 0))
        tilt = float(np.degrees(np.arccos(np.clip(abs(n @ cam_up), -1.0, 1.0))))
        looks_down = float(np.mean(-c2ws[:, :3, 2] @ n < -0.2))
        aerial = above > 0.5 and looks_down > 0.5
        if aerial:
            up, source, ground_points = n, "ground plane", int(np.count_nonzero(inl))
    rot = rotation_between(up, np.array([0.0, 0.0, 1.0]))
    moved = centres @ rot.T
    if source == "ground plane":
        ground_z = d
    elif points is not None and len(points):
        ground_z = float(np.percentile(np.asarray(points) @ up, 5.0))
    else:
        ground_z = float(moved[:, 2].min())
    transform = np.eye(4)
    transform[:3, :3] = rot
    transform[:3, 3] = [-moved[:, 0].mean(), -moved[:, 1].mean(), -ground_z]
    return Gravity(transform, up, source, tilt, aerial, above, ground_points)
