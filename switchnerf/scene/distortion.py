"""Lens distortion (OpenCV / COLMAP radial-tangential model) and image undistortion in numpy.

Normalised camera coordinates (x, y) = ((u - cx) / fx, (v - cy) / fy) for pixel coordinates
(u, v) whose pixel centres sit at +0.5 (COLMAP's convention, also the project's), with y
pointing down the image (OpenCV axes). The model, with r^2 = x^2 + y^2:

    radial = 1 + k1 r^2 + k2 r^4 + k3 r^6
    x_d = x radial + 2 p1 x y + p2 (r^2 + 2 x^2)
    y_d = y radial + p1 (r^2 + 2 y^2) + 2 p2 x y

COLMAP's SIMPLE_RADIAL (k), RADIAL (k1, k2) and OPENCV (k1, k2, p1, p2) are special cases.
"""

from __future__ import annotations

import numpy as np

from switchnerf.scene.rays import image_to_camera
from switchnerf.scene.records import Undistortion


def normalised(px, py, fx: float, fy: float, cx: float, cy: float):
    """Normalised coordinates (x, y) of image point (px, py), OpenCV axes (y down): the
    scene's camera-frame direction (``rays.image_to_camera``) with y flipped."""
    x, y = image_to_camera(px, py, fx, fy, cx, cy)
    return x, -y


def distort(x: np.ndarray, y: np.ndarray, u: Undistortion) -> tuple[np.ndarray, np.ndarray]:
    """Apply the distortion to normalised coordinates x, y (any equal shapes)."""
    r2 = x * x + y * y
    radial = 1.0 + r2 * (u.k1 + r2 * (u.k2 + r2 * u.k3))
    xd = x * radial + 2.0 * u.p1 * x * y + u.p2 * (r2 + 2.0 * x * x)
    yd = y * radial + u.p1 * (r2 + 2.0 * y * y) + 2.0 * u.p2 * x * y
    return xd, yd


def undistort_points(
    xd: np.ndarray, yd: np.ndarray, u: Undistortion, iterations: int = 100, tol: float = 1e-12
) -> tuple[np.ndarray, np.ndarray]:
    """Invert :func:`distort` by fixed-point iteration: x <- (x_d - tangential(x)) / radial(x).

    Converges for the moderate distortion of real lenses inside the image; stops after
    ``iterations`` steps or once a step moves x and y by less than ``tol``.
    """
    x, y = np.array(xd, dtype=np.float64), np.array(yd, dtype=np.float64)
    for _ in range(iterations):
        r2 = x * x + y * y
        radial = 1.0 + r2 * (u.k1 + r2 * (u.k2 + r2 * u.k3))
        dx = 2.0 * u.p1 * x * y + u.p2 * (r2 + 2.0 * x * x)
        dy = u.p1 * (r2 + 2.0 * y * y) + 2.0 * u.p2 * x * y
        nx, ny = (xd - dx) / radial, (yd - dy) / radial
        step = max(
            float(np.max(np.abs(nx - x), initial=0.0)), float(np.max(np.abs(ny - y), initial=0.0))
        )
        x, y = nx, ny
        if step < tol:
            break
    return x, y


def pinhole_for(u: Undistortion, samples: int = 64) -> tuple[float, float, float, float]:
    """Pinhole intrinsics (fx, fy, cx, cy) for an undistorted image of the source's size.

    The undistorted image shows the largest axis-aligned rectangle of normalised coordinates
    that lies inside the undistorted outline of the source image, so it has no blank border.
    """
    w, h = u.width, u.height
    t = np.linspace(0.0, 1.0, samples)
    edges = {
        "left": (np.zeros_like(t), t * h),
        "right": (np.full_like(t, w), t * h),
        "top": (t * w, np.zeros_like(t)),
        "bottom": (t * w, np.full_like(t, h)),
    }
    und = {
        k: undistort_points(*normalised(px, py, u.fx, u.fy, u.cx, u.cy), u)
        for k, (px, py) in edges.items()
    }
    x0, x1 = float(np.max(und["left"][0])), float(np.min(und["right"][0]))
    y0, y1 = float(np.max(und["top"][1])), float(np.min(und["bottom"][1]))
    fx, fy = w / (x1 - x0), h / (y1 - y0)
    return fx, fy, -x0 * fx, -y0 * fy


def undistort_image(
    src: np.ndarray,
    u: Undistortion,
    pinhole: tuple[float, float, float, float],
    width: int,
    height: int,
) -> np.ndarray:
    """Resample a distorted image [h, w, C] uint8 into a pinhole image [height, width, C].

    For every output pixel centre the normalised coordinate is distorted forward and the
    source is sampled there bilinearly (edge pixels clamped).
    """
    fx, fy, cx, cy = pinhole
    j, i = np.meshgrid(
        np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij"
    )
    xd, yd = distort(*normalised(i + 0.5, j + 0.5, fx, fy, cx, cy), u)
    return bilinear_sample(src, xd * u.fx + u.cx - 0.5, yd * u.fy + u.cy - 0.5)


def bilinear_sample(img: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Sample img [h, w, C] at continuous array indices (px column, py row); uint8 out."""
    h, w = img.shape[:2]
    px = np.clip(px, 0.0, w - 1.0)
    py = np.clip(py, 0.0, h - 1.0)
    x0 = np.minimum(np.floor(px).astype(np.int64), w - 2 if w > 1 else 0)
    y0 = np.minimum(np.floor(py).astype(np.int64), h - 2 if h > 1 else 0)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    ax, ay = (px - x0)[..., None], (py - y0)[..., None]
    f = img.astype(np.float32)
    top = f[y0, x0] * (1 - ax) + f[y0, x1] * ax
    bot = f[y1, x0] * (1 - ax) + f[y1, x1] * ax
    return np.clip(np.rint(top * (1 - ay) + bot * ay), 0, 255).astype(np.uint8)
