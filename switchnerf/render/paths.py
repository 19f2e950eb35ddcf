"""Camera paths in the world frame (z up, OpenGL camera axes)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class PathCamera:
    """One frame's camera: c2w float64 [4, 4] (OpenGL axes) and pinhole intrinsics."""

    c2w: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """c2w [4, 4] of a camera at ``eye`` looking at ``target`` (OpenGL: looks down -z).

    >>> c = look_at((0, 0, 10), (0, 1e-9, 0))
    >>> np.allclose(c[:3, 2], [0, 0, 1], atol=1e-6)  # camera +z points back, up to the sky
    True
    """
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:  # looking straight along up: pick any right
        right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    cam_up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, cam_up, -forward, eye
    return c2w


def intrinsics_from_fov(width: int, height: int, fov_y_deg: float) -> tuple[float, float, float, float]:
    """fx, fy, cx, cy of a pinhole with vertical field of view ``fov_y_deg``."""
    f = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
    return f, f, width / 2, height / 2


def orbit_path(center, radius: float, altitude: float, n_frames: int, *, width: int, height: int,
               fov_y_deg: float = 50.0, target_height: float | None = None,
               start_angle: float = 0.0) -> list[PathCamera]:
    """A circle of ``n_frames`` cameras at ``altitude`` (world z) around ``center`` [3],
    all looking at ``center`` (raised to ``target_height`` when given)."""
    center = np.asarray(center, dtype=np.float64)
    target = center.copy()
    if target_height is not None:
        target[2] = target_height
    fx, fy, cx, cy = intrinsics_from_fov(width, height, fov_y_deg)
    cams = []
    for k in range(n_frames):
        a = start_angle + 2 * math.pi * k / max(n_frames, 1)
        eye = np.array([center[0] + radius * math.cos(a), center[1] + radius * math.sin(a), altitude])
        cams.append(PathCamera(look_at(eye, target), fx, fy, cx, cy, width, height))
    return cams


def scene_orbit(scene, n_frames: int, *, width: int, height: int, fov_y_deg: float = 50.0,
                radius_factor: float = 0.75, tilt_deg: float = 35.0) -> list[PathCamera]:
    """An orbit around the scene box centre, looking down at ``tilt_deg`` below horizontal.

    radius = radius_factor * half the box's ground diagonal; altitude chosen so the line of
    sight to the box centre at ground level has the given tilt.
    """
    lo, hi = np.asarray(scene.bbox[0], dtype=np.float64), np.asarray(scene.bbox[1], dtype=np.float64)
    center = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])
    radius = radius_factor * 0.5 * float(np.linalg.norm(hi[:2] - lo[:2]))
    altitude = lo[2] + radius * math.tan(math.radians(tilt_deg))
    return orbit_path(center, radius, altitude, n_frames, width=width, height=height,
                      fov_y_deg=fov_y_deg)
