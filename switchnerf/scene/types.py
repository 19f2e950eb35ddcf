"""The one internal scene representation every reader produces.

Conventions (ARCHITECTURE.md, Scene):
- world frame: right-handed, z up, in the scene's *world units*; ``metres_per_unit``
  converts to metres;
- cameras: ``c2w`` 4x4 with OpenGL camera axes (x right, y up, looking down -z);
- intrinsics fx, fy, cx, cy in pixels; pixel (i, j) (column i, row j) has its centre at
  (i + 0.5, j + 0.5);
- ``source_to_world`` is the 4x4 similarity that maps the source format's frame into the
  world frame (recorded so exports can go back).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

SPLITS = ("train", "val")


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


@dataclass
class RayBatch:
    """A batch of rays in the world frame. All tensors share the leading dimension N.

    origins, directions: float32 [N, 3] (directions unit length); rgb: float32 [N, 3] in
    [0, 1] (may be None when rendering); image_index: int64 [N] into the scene's camera
    table (train images first, then val); near, far: float32 [N] in world units.
    """

    origins: torch.Tensor
    directions: torch.Tensor
    near: torch.Tensor
    far: torch.Tensor
    rgb: torch.Tensor | None = None
    image_index: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.origins.shape[0]

    def to(self, device) -> RayBatch:
        def mv(t):
            return None if t is None else t.to(device, non_blocking=True)

        return RayBatch(mv(self.origins), mv(self.directions), mv(self.near), mv(self.far),
                        mv(self.rgb), mv(self.image_index))

    def __getitem__(self, sl) -> RayBatch:
        def cut(t):
            return None if t is None else t[sl]

        return RayBatch(cut(self.origins), cut(self.directions), cut(self.near), cut(self.far),
                        cut(self.rgb), cut(self.image_index))


def pixel_rays(c2w: np.ndarray, fx: float, fy: float, cx: float, cy: float,
               width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through every pixel centre, row-major (row j, then column i).

    Returns origins, directions: float32 [H*W, 3] in the world frame, directions unit.
    Camera-frame direction of pixel (i, j): ((i + 0.5 - cx) / fx, -(j + 0.5 - cy) / fy, -1).
    """
    j, i = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64),
                       indexing="ij")
    cam = np.stack([(i + 0.5 - cx) / fx, -(j + 0.5 - cy) / fy, -np.ones_like(i)], -1).reshape(-1, 3)
    dirs = cam @ np.asarray(c2w, dtype=np.float64)[:3, :3].T
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    origins = np.broadcast_to(np.asarray(c2w, dtype=np.float64)[:3, 3], dirs.shape)
    return (torch.from_numpy(np.ascontiguousarray(origins, dtype=np.float32)),
            torch.from_numpy(dirs.astype(np.float32)))


@dataclass
class Scene:
    """A posed image collection in the internal frame, plus its bounds.

    bbox: float64 [2, 3] foreground box (min, max corners) in world units.
    altitude_range: (ground_z, top_z) in world units: the slab where content lives.
    """

    name: str
    root: Path
    format: str  # "mega-nerf" | "colmap" | "transforms"
    frames: dict[str, list[ImageRecord]]
    bbox: np.ndarray
    altitude_range: tuple[float, float]
    metres_per_unit: float = 1.0
    source_to_world: np.ndarray = field(default_factory=lambda: np.eye(4))
    estimated: dict[str, bool] = field(default_factory=dict)  # e.g. {"bbox": True}
    descriptor: Path | None = None  # the scenes/*.yaml it came from, if any
    partition_grid: tuple[int, int] = (2, 2)
    extra: dict = field(default_factory=dict)

    def images(self, split: str) -> list[ImageRecord]:
        if split not in self.frames:
            raise KeyError(f"scene {self.name!r} has no split {split!r}")
        return self.frames[split]

    def load_image(self, split: str, i: int) -> np.ndarray:
        """The pixels of image ``i`` of ``split``: uint8 [H, W, 3] RGB, row-major.

        Read from disk on every call (never cached here). Raises ``SwitchNerfError`` naming
        the file when it is missing, unreadable, truncated, or not ``height`` x ``width`` as
        its record says. A distorted source (``record.undistort``) is undistorted on first
        use into a cache folder beside the model.
        """
        from switchnerf.scene.images import read_record_image

        return read_record_image(self.images(split)[i])

    def rays_for_image(self, split: str, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Origins and unit directions, float32 [H*W, 3], row-major pixel order."""
        r = self.images(split)[i]
        return pixel_rays(r.c2w, r.fx, r.fy, r.cx, r.cy, r.width, r.height)

    # world <-> unit cube of the encodings -------------------------------------------------
    def to_unit_cube(self, points: torch.Tensor) -> torch.Tensor:
        """Map world points [..., 3] to the box's unit cube [0, 1]^3 (outside: beyond)."""
        lo = torch.as_tensor(self.bbox[0], dtype=points.dtype, device=points.device)
        hi = torch.as_tensor(self.bbox[1], dtype=points.dtype, device=points.device)
        return (points - lo) / (hi - lo)
