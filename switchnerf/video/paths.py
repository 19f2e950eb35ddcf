"""Cameras and generated camera paths in the run's world frame (z up, OpenGL camera axes).

Orbits, spirals and tours through training cameras are returned as keyframes
(``switchnerf.video.camera_path.Keyframe``: c2w float64 [4, 4] and vertical fov); a
``CameraPath`` turns keyframes into per-frame ``PathCamera`` objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class PathCamera:
    """One frame's camera: c2w float64 [4, 4] (world frame, OpenGL axes), pinhole
    intrinsics in pixels (centres at +0.5), and ray bounds near/far in world units
    (far = inf: unbounded)."""

    c2w: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    near: float = 0.0
    far: float = float("inf")


@dataclass
class Keyframe:
    """A camera path keyframe: c2w float64 [4, 4] (world frame, OpenGL axes) and the
    vertical field of view ``fov`` in degrees."""

    c2w: np.ndarray
    fov: float


def camera_from_record(rec) -> PathCamera:
    """The ``PathCamera`` of a scene ``ImageRecord`` (same pose, intrinsics, size, bounds)."""
    return PathCamera(np.asarray(rec.c2w, dtype=np.float64), float(rec.fx), float(rec.fy),
                      float(rec.cx), float(rec.cy), int(rec.width), int(rec.height),
                      float(rec.near), float(rec.far))


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


def orbit_target(scene) -> np.ndarray:
    """The point orbits look at: the box centre in x, y at the scene's ground altitude
    (``altitude_range[0]``, world z), float64 [3]."""
    lo, hi = np.asarray(scene.bbox[0], dtype=np.float64), np.asarray(scene.bbox[1], dtype=np.float64)
    ground = float(scene.altitude_range[0]) if scene.altitude_range is not None else lo[2]
    return np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, ground])


def orbit_geometry(scene, *, altitude: float | None, tilt_deg: float,
                   radius_factor: float = 0.75) -> tuple[np.ndarray, float, float]:
    """Target [3], radius and altitude (world z) of an orbit looking down at ``tilt_deg``.

    Without ``altitude`` the radius is ``radius_factor`` times half the box's ground
    diagonal and the altitude follows from the tilt; with it, the radius follows:
    ``radius = (altitude - target_z) / tan(tilt)``.
    """
    if not 0.0 < tilt_deg < 90.0:
        raise ValueError(f"tilt must lie in (0, 90) degrees, got {tilt_deg}")
    target = orbit_target(scene)
    tan = math.tan(math.radians(tilt_deg))
    if altitude is None:
        lo, hi = np.asarray(scene.bbox[0], dtype=np.float64), np.asarray(scene.bbox[1], dtype=np.float64)
        radius = radius_factor * 0.5 * float(np.linalg.norm(hi[:2] - lo[:2]))
        return target, radius, float(target[2] + radius * tan)
    if altitude <= target[2]:
        raise ValueError(f"altitude {altitude} must lie above the orbit target at z={target[2]:g}")
    return target, (altitude - target[2]) / tan, float(altitude)


def orbit_keyframes(target, radius: float, altitude: float, n: int, *,
                    fov_y_deg: float = 50.0) -> list[Keyframe]:
    """``n`` keyframes evenly spaced on a circle (a closed loop: no repeated end) at world z
    ``altitude`` around ``target`` [3], each looking at ``target``."""
    target = np.asarray(target, dtype=np.float64)
    out = []
    for k in range(n):
        a = 2 * math.pi * k / n
        eye = (target[0] + radius * math.cos(a), target[1] + radius * math.sin(a), altitude)
        out.append(Keyframe(look_at(eye, target), fov_y_deg))
    return out


def spiral_keyframes(target, radius: float, altitude: float, n: int, *, turns: float = 2.0,
                     end_fraction: float = 0.5, fov_y_deg: float = 50.0) -> list[Keyframe]:
    """``n`` keyframes on a spiral at world z ``altitude``: ``turns`` turns around
    ``target`` [3] with the radius shrinking linearly from ``radius`` to
    ``end_fraction * radius``, always looking at ``target`` (so the view steepens)."""
    target = np.asarray(target, dtype=np.float64)
    out = []
    for k in range(n):
        s = k / max(n - 1, 1)
        a, r = 2 * math.pi * turns * s, radius * (1.0 - (1.0 - end_fraction) * s)
        eye = (target[0] + r * math.cos(a), target[1] + r * math.sin(a), altitude)
        out.append(Keyframe(look_at(eye, target), fov_y_deg))
    return out


def training_keyframes(scene, count: int = 8) -> list[Keyframe]:
    """Up to ``count`` training cameras as keyframes, spread over the training list and
    ordered as a nearest-neighbour tour of their positions (starting at the first chosen),
    so the path does not zig-zag. fov = the camera's vertical field of view."""
    recs = scene.images("train")
    if not recs:
        raise ValueError("the scene has no training images")
    count = max(1, min(count, len(recs)))
    picks = sorted({round(k * (len(recs) - 1) / max(count - 1, 1)) for k in range(count)})
    pos = np.stack([np.asarray(recs[i].c2w, dtype=np.float64)[:3, 3] for i in picks])  # [K, 3]
    order, left = [0], set(range(1, len(picks)))
    while left:
        last = pos[order[-1]]
        nxt = min(left, key=lambda j: float(np.linalg.norm(pos[j] - last)))
        order.append(nxt)
        left.remove(nxt)
    out = []
    for j in order:
        rec = recs[picks[j]]
        fov = math.degrees(2 * math.atan(0.5 * rec.height / rec.fy))
        out.append(Keyframe(np.asarray(rec.c2w, dtype=np.float64), fov))
    return out
