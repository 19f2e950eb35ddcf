"""The one internal scene representation every reader produces.

Conventions (ARCHITECTURE.md, Scene):
- world frame: right-handed, z up, in the scene's *world units*; ``metres_per_unit``
  converts to metres;
- cameras: ``c2w`` 4x4 with OpenGL camera axes (x right, y up, looking down -z);
- intrinsics fx, fy, cx, cy in pixels; pixel (i, j) (column i, row j) has its centre at
  (i + 0.5, j + 0.5);
- ``source_to_world`` is the 4x4 similarity that maps the source format's frame into the
  world frame (recorded so exports can go back).

The per-image records live in :mod:`switchnerf.scene.records`, rays through pixels in
:mod:`switchnerf.scene.rays` (both re-exported here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from switchnerf.scene.images import read_record_image
from switchnerf.scene.rays import pixel_rays
from switchnerf.scene.records import ImageRecord, Undistortion

__all__ = ["SPLITS", "ImageRecord", "RayBatch", "Scene", "Undistortion", "pixel_rays"]

SPLITS = ("train", "val")


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
        return read_record_image(self.images(split)[i])

    def rays_for_image(self, split: str, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Origins and unit directions, float32 [H*W, 3], row-major pixel order."""
        r = self.images(split)[i]
        return pixel_rays(r.c2w, r.fx, r.fy, r.cx, r.cy, r.width, r.height)
