"""A timed camera path: keyframes, a duration, a frame rate, and smooth interpolation.

Frame i of ``n_frames = round(seconds * fps)`` sits at keyframe parameter
``u = i * (K - 1) / (n_frames - 1)`` (open path) or ``u = i * K / n_frames`` (closed loop,
which returns to the first keyframe after the last), so keyframes are spaced evenly in
time and the first (and, for an open path, the last) frame is exactly a keyframe.
Whenever ``n_frames == K`` (open) every frame is exactly its keyframe.

Interpolation (``interpolation``):
- ``catmull-rom``: positions and fov by a uniform Catmull-Rom spline through the
  keyframes (end tangents by reflection on open paths), rotations by quaternion squad;
  C1-smooth and passing through every keyframe;
- ``linear``: positions and fov linear, rotations by slerp.

Frames: everything is in the run's world frame (z up, OpenGL camera axes, world units).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from switchnerf.errors import SwitchNerfError
from switchnerf.video import quaternion as quat
from switchnerf.video.paths import Keyframe, PathCamera, intrinsics_from_fov

__all__ = ["INTERPOLATIONS", "MAX_FRAMES", "MAX_SIDE", "CameraPath", "Keyframe",
           "check_frame_count"]

INTERPOLATIONS = ("catmull-rom", "linear")

MAX_SIDE = 8192
"""Largest width or height of a path's frames, in pixels."""

MAX_FRAMES = 100_000
"""Most frames of one path (``round(seconds * fps)``): about 69 minutes at 24 fps."""


def check_frame_count(seconds: float, fps: float) -> int:
    """``round(seconds * fps)`` for positive finite ``seconds`` and ``fps``, or a
    SwitchNerfError naming both when that is not in [1, MAX_FRAMES]."""
    frames = seconds * fps
    if not (math.isfinite(frames) and 0.5 <= frames < MAX_FRAMES + 0.5):
        raise SwitchNerfError(f"seconds x fps = {seconds:g} x {fps:g} = {frames:g} frames: "
                              f"a path has 1 to {MAX_FRAMES} frames")
    return round(frames)


def _catmull_rom(p0, p1, p2, p3, t: float):
    """Uniform Catmull-Rom segment between p1 and p2 (arrays or floats) at t in [0, 1]."""
    return 0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t * t
                  + (3 * p1 - p0 - 3 * p2 + p3) * t ** 3)


def _near(ref: np.ndarray, q: np.ndarray) -> np.ndarray:
    """q or -q, whichever lies in the hemisphere of ref."""
    return q if float(np.dot(ref, q)) >= 0 else -q


@dataclass
class CameraPath:
    """Keyframes plus timing and output size.

    keyframes: at least one ``Keyframe`` (c2w float64 [4, 4], vertical fov in degrees);
    width, height: output pixels; seconds, fps: duration and frame rate (> 0);
    loop: a closed path (the last keyframe leads back to the first);
    source: a short description of where the path came from (for the sidecar JSON).

    Invalid values raise ``SwitchNerfError`` naming the field.
    """

    keyframes: list[Keyframe]
    width: int
    height: int
    seconds: float
    fps: float
    interpolation: str = "catmull-rom"
    loop: bool = False
    source: str = ""
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.keyframes:
            raise SwitchNerfError("keyframes: the camera path has no keyframes")
        for name in ("width", "height"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise SwitchNerfError(f"{name}: must be a positive integer, got {v!r}")
            if v > MAX_SIDE:
                raise SwitchNerfError(f"{name}: {v} pixels, at most {MAX_SIDE}")
        for name in ("seconds", "fps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise SwitchNerfError(f"{name}: must be a positive number, got {v!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise SwitchNerfError(f"interpolation: must be one of {', '.join(INTERPOLATIONS)}, "
                                  f"got {self.interpolation!r}")
        for k, kf in enumerate(self.keyframes):
            c2w = np.asarray(kf.c2w, dtype=np.float64)
            if c2w.shape != (4, 4) or not np.isfinite(c2w).all():
                raise SwitchNerfError(f"keyframes[{k}].c2w: expected a finite 4x4 matrix")
            if abs(np.linalg.det(c2w[:3, :3])) < 1e-9:
                raise SwitchNerfError(f"keyframes[{k}].c2w: rotation part is singular")
            if not (isinstance(kf.fov, (int, float)) and 0 < kf.fov < 180):
                raise SwitchNerfError(f"keyframes[{k}].fov: must lie in (0, 180) degrees, "
                                      f"got {kf.fov!r}")
        check_frame_count(self.seconds, self.fps)

    @property
    def n_frames(self) -> int:
        """Frames in the video: ``round(seconds * fps)``."""
        return round(self.seconds * self.fps)

    # --------------------------------------------------------------- interpolation
    def _arrays(self) -> dict:
        """Keyframe positions [K, 3], quaternions [K, 4] (hemisphere-aligned), squad
        controls [K, 4], fovs [K] (computed once)."""
        if not self._cache:
            pos = np.stack([np.asarray(k.c2w, dtype=np.float64)[:3, 3] for k in self.keyframes])
            qs = quat.align_signs(quat.from_matrix(
                np.stack([np.asarray(k.c2w, dtype=np.float64)[:3, :3] for k in self.keyframes])))
            kk = len(qs)
            ctrl = qs.copy()
            for j in range(kk):
                if not self.loop and j in (0, kk - 1):
                    continue
                prev, nxt = qs[(j - 1) % kk], qs[(j + 1) % kk]
                ctrl[j] = quat.squad_controls(_near(qs[j], prev), qs[j], _near(qs[j], nxt))
            fov = np.array([float(k.fov) for k in self.keyframes])
            self._cache.update(pos=pos, q=qs, ctrl=ctrl, fov=fov)
        return self._cache

    def parameter(self, i: int) -> float:
        """Keyframe parameter u of frame i (see the module docstring)."""
        n, kk = self.n_frames, len(self.keyframes)
        if not 0 <= i < n:
            raise IndexError(f"frame {i} out of range [0, {n})")
        if kk == 1:
            return 0.0
        if self.loop:
            return i * kk / n
        return i * (kk - 1) / (n - 1) if n > 1 else 0.0

    def pose(self, u: float) -> tuple[np.ndarray, float]:
        """c2w float64 [4, 4] and fov (degrees) at keyframe parameter u."""
        a = self._arrays()
        kk = len(self.keyframes)
        if kk == 1:
            return np.asarray(self.keyframes[0].c2w, dtype=np.float64).copy(), float(a["fov"][0])
        j = math.floor(u)
        j = j % kk if self.loop else min(max(j, 0), kk - 2)
        t = u - math.floor(u) if self.loop else u - j
        j1 = (j + 1) % kk

        def idx(m):  # neighbours: wrap on loops, reflect beyond the ends of open paths
            return m % kk if self.loop else m

        def ext(arr, m):
            if self.loop or 0 <= m < kk:
                return arr[idx(m)]
            return 2 * arr[0] - arr[1] if m < 0 else 2 * arr[kk - 1] - arr[kk - 2]

        q0, q1 = a["q"][j], a["q"][j1]
        sign = 1.0 if float(np.dot(q0, q1)) >= 0 else -1.0
        q1 = sign * q1
        if self.interpolation == "linear":
            pos = (1 - t) * a["pos"][j] + t * a["pos"][j1]
            fov = (1 - t) * a["fov"][j] + t * a["fov"][j1]
            q = quat.slerp(q0, q1, t)
        else:
            pos = _catmull_rom(ext(a["pos"], j - 1), a["pos"][j], a["pos"][j1], ext(a["pos"], j + 2), t)
            fov = _catmull_rom(ext(a["fov"], j - 1), a["fov"][j], a["fov"][j1], ext(a["fov"], j + 2), t)
            s0 = a["ctrl"][j]
            s1 = sign * a["ctrl"][j1]
            q = quat.squad(q0, q1, _near(q0, s0), _near(q1, s1), t)
        c2w = np.eye(4)
        c2w[:3, :3] = quat.to_matrix(q)
        c2w[:3, 3] = pos
        return c2w, float(min(max(fov, 1e-3), 179.0))

    def camera(self, i: int) -> PathCamera:
        """The ``PathCamera`` of frame i: interpolated pose, fx = fy from the fov and the
        output height, principal point at the image centre, unbounded near/far."""
        c2w, fov = self.pose(self.parameter(i))
        fx, fy, cx, cy = intrinsics_from_fov(self.width, self.height, fov)
        return PathCamera(c2w, fx, fy, cx, cy, self.width, self.height)

    def cameras(self) -> Iterator[PathCamera]:
        """All frames' cameras, generated one at a time."""
        for i in range(self.n_frames):
            yield self.camera(i)
