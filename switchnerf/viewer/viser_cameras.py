"""Camera conversions between viser's browser camera and the project's cameras.

Frames (both share the project's world frame: right-handed, z up, world units):

- viser camera: ``wxyz`` is the quaternion of ``R_world_camera_cv`` and ``position`` is
  ``t_world_camera``, i.e. ``p_world = R_world_camera_cv @ p_camera_cv + position``, with
  OpenCV camera axes (x right, y down, z forward). ``fov`` is the *vertical* field of view
  in radians; the image is ``image_width`` x ``image_height`` pixels (``aspect = W / H``).
- project camera (``PathCamera``, ``ImageRecord``): ``c2w`` 4x4 with OpenGL camera axes
  (x right, y up, looking down -z) and pinhole intrinsics fx, fy, cx, cy in pixels, pixel
  centres at +0.5.

The two camera frames differ by a half-turn about the camera x axis:
``R_world_camera_gl = R_world_camera_cv @ diag(1, -1, -1)`` (the same matrix maps back).
A viser camera is an ideal pinhole with square pixels and a centred principal point:
``fy = (H / 2) / tan(fov / 2)``, ``fx = fy``, ``cx = W / 2``, ``cy = H / 2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from viser import transforms as vtf

from switchnerf.video.paths import PathCamera

__all__ = ["CV_FROM_GL", "ViserPose", "c2w_from_viser", "path_camera_from_viser",
           "render_size", "viser_from_c2w", "viser_from_path_camera"]

#: diag(1, -1, -1): flips camera y and z; R_world_camera_gl = R_world_camera_cv @ CV_FROM_GL.
CV_FROM_GL = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class ViserPose:
    """A camera as viser represents it: R_world_camera_cv as ``wxyz`` [4], ``position`` [3]
    (world frame), vertical ``fov`` in radians and ``aspect`` = width / height."""

    wxyz: np.ndarray
    position: np.ndarray
    fov: float
    aspect: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "wxyz", np.asarray(self.wxyz, dtype=np.float64).reshape(4))
        object.__setattr__(self, "position", np.asarray(self.position, dtype=np.float64).reshape(3))
        if not 0.0 < self.fov < math.pi:
            raise ValueError(f"fov {self.fov} must lie in (0, pi) radians")
        if not self.aspect > 0.0:
            raise ValueError(f"aspect {self.aspect} must be positive")


def c2w_from_viser(wxyz, position) -> np.ndarray:
    """OpenGL c2w float64 [4, 4] from viser's ``wxyz`` (R_world_camera_cv) and ``position``."""
    R_world_camera_cv = vtf.SO3(np.asarray(wxyz, dtype=np.float64)).as_matrix()
    c2w = np.eye(4)
    c2w[:3, :3] = R_world_camera_cv @ CV_FROM_GL
    c2w[:3, 3] = np.asarray(position, dtype=np.float64)
    return c2w


def viser_from_c2w(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """viser's ``wxyz`` [4] and ``position`` [3] of an OpenGL c2w [4, 4] (or [3, 4])."""
    c2w = np.asarray(c2w, dtype=np.float64)
    R_world_camera_cv = c2w[:3, :3] @ CV_FROM_GL
    return vtf.SO3.from_matrix(R_world_camera_cv).wxyz, c2w[:3, 3].copy()


def render_size(aspect: float, max_side: int) -> tuple[int, int]:
    """(width, height) in pixels with ``width / height ~= aspect`` and the longer side
    ``max_side``; both at least 1."""
    if aspect >= 1.0:
        return int(max_side), max(1, round(max_side / aspect))
    return max(1, round(max_side * aspect)), int(max_side)


def path_camera_from_viser(pose: ViserPose, width: int, height: int) -> PathCamera:
    """The project camera that sees what the browser shows, at ``width`` x ``height``.

    The vertical field of view is kept; fx = fy (square pixels) and the principal point is
    the image centre.
    """
    fy = 0.5 * height / math.tan(0.5 * pose.fov)
    return PathCamera(c2w_from_viser(pose.wxyz, pose.position), fy, fy, width / 2.0,
                      height / 2.0, int(width), int(height))


def viser_from_path_camera(cam: PathCamera) -> ViserPose:
    """viser's representation of a project camera: vertical fov from fy and the height.

    Exact (``path_camera_from_viser`` gives the camera back) for cameras with fx = fy and a
    centred principal point; other intrinsics keep only the vertical field of view.
    """
    wxyz, position = viser_from_c2w(cam.c2w)
    fov = 2.0 * math.atan(0.5 * cam.height / cam.fy)
    return ViserPose(wxyz, position, fov, cam.width / cam.height)
