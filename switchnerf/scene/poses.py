"""Frame conversions and pose checks shared by the scene readers.

Internal world frame: right-handed, z up. Cameras: c2w 4x4, OpenGL axes (x right, y up,
looking down -z). All matrices here are float64.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from switchnerf.errors import input_error

# Mega-NeRF's DRB frame (x down, y right, z back) -> internal (x right, y front, z up):
# world = (y_drb, -z_drb, -x_drb). Rows are the world axes written in DRB; det = +1.
DRB_TO_WORLD = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])

# OpenCV camera axes (x right, y down, z forward) <-> OpenGL (x right, y up, z back).
CV_TO_GL = np.diag([1.0, -1.0, -1.0])

HOLDOUT_EVERY = 8


def check_matrix(path: Path | str, field: str, value, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` as float64 of exactly ``shape`` with finite entries, else SwitchNerfError."""
    try:
        arr = np.asarray(value.numpy() if hasattr(value, "numpy") else value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise input_error(path, field, f"is not numeric ({e})") from None
    if arr.shape != shape:
        raise input_error(path, field, f"has shape {tuple(arr.shape)}, expected {shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        first = np.argwhere(bad)[0].tolist()
        raise input_error(path, field, f"contains NaN or inf ({int(bad.sum())} of {arr.size} "
                          f"entries; first {arr[tuple(first)]} at {first})")
    return arr


def check_rotation(path: Path | str, field: str, rot: np.ndarray, tol: float = 1e-3) -> None:
    """Raise unless ``rot`` [3, 3] is orthonormal with determinant +1 (within ``tol``)."""
    err = float(np.abs(rot.T @ rot - np.eye(3)).max())
    if err > tol:
        raise input_error(path, field, f"rotation is not orthonormal (|R^T R - I| = {err:.3g})")
    det = float(np.linalg.det(rot))
    if det < 0:
        raise input_error(path, field, f"rotation is a reflection (det = {det:.3g})")


def homogeneous(c2w34: np.ndarray) -> np.ndarray:
    """[3, 4] or [4, 4] -> [4, 4]."""
    out = np.eye(4)
    out[:3, :] = np.asarray(c2w34, dtype=np.float64)[:3, :]
    return out


def rigid(rot: np.ndarray, scale: float = 1.0, translation=(0.0, 0.0, 0.0)) -> np.ndarray:
    """The 4x4 similarity p -> scale * rot @ p + translation."""
    out = np.eye(4)
    out[:3, :3] = scale * np.asarray(rot, dtype=np.float64)
    out[:3, 3] = translation
    return out


def transform_c2w(transform: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """Move a camera [4, 4] by a similarity [4, 4] with scale s; the result's axes stay unit."""
    out = transform @ c2w
    s = np.cbrt(np.linalg.det(transform[:3, :3]))
    out[:3, :3] /= s
    return out


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation [3, 3] taking unit vector ``a`` to unit vector ``b``."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    v = np.cross(a, b)
    c = float(a @ b)
    if c < -1.0 + 1e-12:  # opposite: half turn about any axis orthogonal to a
        axis = np.cross(a, [1.0, 0.0, 0.0])
        if np.linalg.norm(axis) < 1e-6:
            axis = np.cross(a, [0.0, 1.0, 0.0])
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    k = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + k + k @ k / (1.0 + c)


def estimate_up(c2ws: np.ndarray) -> np.ndarray:
    """The world's up direction (unit [3]) estimated from cameras c2w [N, 4, 4] (OpenGL).

    Cameras rarely roll, so their right axes are horizontal: up is the direction most
    orthogonal to all of them (smallest singular vector), when they span a plane. With
    too little yaw variety, the mean camera-up vector made orthogonal to the common right
    axis is used. The sign follows mean(camera up - viewing direction), which points up for
    level, oblique and nadir (drone) cameras alike.
    """
    right, cam_up, view = c2ws[:, :3, 0], c2ws[:, :3, 1], -c2ws[:, :3, 2]
    ref = (cam_up - view).mean(0)
    _, s, vt = np.linalg.svd(right, full_matrices=False)
    if len(c2ws) >= 2 and s[1] > 0.17 * np.sqrt(len(c2ws)):
        up = vt[2]
    else:
        up = cam_up.mean(0)
        up = up - vt[0] * float(up @ vt[0])
        if np.linalg.norm(up) < 1e-9:
            up = ref
    up = up / np.linalg.norm(up)
    return up if float(up @ ref) >= 0 else -up


def holdout_split(n: int, every: int = HOLDOUT_EVERY) -> tuple[list[int], list[int]]:
    """Train and val indices when a dataset has no val split: every ``every``-th image
    (indices 0, every, 2 every, ... of the name-sorted list) is held out for val."""
    if n < 2:
        return list(range(n)), []
    val = list(range(0, n, every))
    held = set(val)
    return [i for i in range(n) if i not in held], val
