"""The camera table: every image of a scene in one indexable set of tensors.

Global image index: all train images first (in ``Scene.images("train")`` order), then all
val images. The same index is stored in the ray store and is the appearance-embedding
index the trainer uses.

Rays are those of :mod:`switchnerf.scene.rays` (world frame z up, OpenGL camera axes,
pixel centres at +0.5) for the pixel ``pixel_index = row * W + col``, evaluated in float32
from the per-image table of ``rays.pack_cameras``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from switchnerf.scene.rays import pack_cameras, packed_rays
from switchnerf.scene.types import SPLITS, Scene


@dataclass
class CameraTable:
    """Cameras of all images, indexed by global image index k in [0, K).

    c2w: float32 [K, 4, 4] world-from-camera, OpenGL axes; fx, fy, cx, cy: float32 [K]
    pixels; width, height: int64 [K]; near, far: float32 [K] default ray bounds in world
    units (0 / inf: unbounded); split: per image, "train" or "val"; local_index: int64 [K]
    position of the image within its split. ``n_train`` images come first.
    """

    c2w: torch.Tensor
    fx: torch.Tensor
    fy: torch.Tensor
    cx: torch.Tensor
    cy: torch.Tensor
    width: torch.Tensor
    height: torch.Tensor
    near: torch.Tensor
    far: torch.Tensor
    split: list[str]
    local_index: torch.Tensor
    n_train: int

    def __post_init__(self) -> None:
        k = self.c2w.shape[0]
        if self.c2w.shape != (k, 4, 4):
            raise ValueError(f"c2w has shape {tuple(self.c2w.shape)}, expected [K, 4, 4]")
        for name in ("fx", "fy", "cx", "cy", "width", "height", "near", "far", "local_index"):
            if getattr(self, name).shape != (k,):
                raise ValueError(f"{name} has shape {tuple(getattr(self, name).shape)}, "
                                 f"expected [{k}]")
        if len(self.split) != k:
            raise ValueError(f"split has {len(self.split)} entries, expected {k}")
        self.packed = pack_cameras(self.c2w, self.fx, self.fy, self.cx, self.cy)  # f32 [K, 16]
        self._width_i64 = self.width.to(torch.int64)

    @classmethod
    def from_scene(cls, scene: Scene) -> CameraTable:
        """Build the table from every split of ``scene`` (train first, then val)."""
        records = [r for split in SPLITS if split in scene.frames for r in scene.images(split)]
        k = len(records)

        def col(fn, dtype):
            return torch.tensor([fn(r) for r in records], dtype=dtype).reshape(k)

        c2w = np.stack([np.asarray(r.c2w, dtype=np.float64).reshape(4, 4) for r in records]) \
            if k else np.zeros((0, 4, 4))
        return cls(
            c2w=torch.from_numpy(c2w.astype(np.float32)),
            fx=col(lambda r: r.fx, torch.float32), fy=col(lambda r: r.fy, torch.float32),
            cx=col(lambda r: r.cx, torch.float32), cy=col(lambda r: r.cy, torch.float32),
            width=col(lambda r: r.width, torch.int64), height=col(lambda r: r.height, torch.int64),
            near=col(lambda r: r.near, torch.float32), far=col(lambda r: r.far, torch.float32),
            split=[r.split for r in records],
            local_index=col(lambda r: r.index, torch.int64),
            n_train=len(scene.frames.get("train", [])),
        )

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def global_index(self, split: str, i: int) -> int:
        """Global index of image ``i`` of ``split``."""
        if split == "train":
            return i
        if split == "val":
            return self.n_train + i
        raise KeyError(f"unknown split {split!r}")

    def to(self, device) -> CameraTable:
        """A copy with every tensor on ``device``."""
        def mv(t):
            return t.to(device)

        return CameraTable(mv(self.c2w), mv(self.fx), mv(self.fy), mv(self.cx), mv(self.cy),
                           mv(self.width), mv(self.height), mv(self.near), mv(self.far),
                           list(self.split), mv(self.local_index), self.n_train)

    def rays(self, image_index: torch.Tensor, pixel_index: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rays of pixels given by global image index and row-major pixel index.

        image_index, pixel_index: integer [N] (on this table's device). Returns origins and
        unit directions, float32 [N, 3], world frame. Equals
        ``scene.rays_for_image(split, i)[pixel_index]`` up to float32 rounding.
        """
        return packed_rays(self.packed, self._width_i64, image_index, pixel_index)
