"""Per-image records of a scene: the posed image and how to undistort its source.

A leaf of ``switchnerf.scene`` (it imports nothing of the package), so the readers, the
image loader and the undistortion all depend on it without depending on each other.
Conventions as in :mod:`switchnerf.scene.types`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ImageRecord", "Undistortion"]


@dataclass(frozen=True)
class Undistortion:
    """How to make an ImageRecord's pinhole image from its distorted source image.

    source_path: the original image; width, height: its size in pixels; fx, fy, cx, cy: the
    source camera's intrinsics (pixels, centres at +0.5); k1, k2, k3, p1, p2: OpenCV-style
    radial and tangential coefficients of normalised camera coordinates.
    """

    source_path: Path
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    k1: float = 0.0
    k2: float = 0.0
    k3: float = 0.0
    p1: float = 0.0
    p2: float = 0.0


@dataclass(frozen=True)
class ImageRecord:
    """One posed image. ``c2w``: float64 [4, 4], world frame, OpenGL camera axes."""

    index: int  # position in ``Scene.images(split)``
    split: str
    c2w: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    image_path: Path
    near: float = 0.0  # default ray bounds in world units (0 / inf: use the scene box)
    far: float = float("inf")
    # Set when ``image_path`` is an undistorted copy made on first use from a distorted
    # source image (COLMAP / transforms.json cameras with lens distortion).
    undistort: Undistortion | None = None
