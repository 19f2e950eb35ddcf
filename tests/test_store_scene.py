"""A tiny posed scene for the store, reader and partition tests; and the camera table tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from switchnerf.scene.cameras import CameraTable
from switchnerf.scene.types import ImageRecord, Scene


def look_down_c2w(x: float, y: float, z: float, yaw: float = 0.0, tilt: float = 0.0) -> np.ndarray:
    """c2w (OpenGL axes) of a camera at (x, y, z) looking down -z, yawed and tilted (rad)."""
    cy, sy, ct, st = np.cos(yaw), np.sin(yaw), np.cos(tilt), np.sin(tilt)
    yaw_m = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    tilt_m = np.array([[1, 0, 0], [0, ct, -st], [0, st, ct]])
    c2w = np.eye(4)
    c2w[:3, :3] = yaw_m @ tilt_m
    c2w[:3, 3] = (x, y, z)
    return c2w


def make_scene(root: Path, *, n_train: int = 3, n_val: int = 2, width: int = 8,
               height: int = 6, seed: int = 0) -> Scene:
    """Write random PNGs under ``root`` and return a Scene of downward-looking cameras."""
    rng = np.random.default_rng(seed)
    frames = {}
    for split, n in (("train", n_train), ("val", n_val)):
        recs = []
        for i in range(n):
            path = root / split / f"{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
            x, y = rng.uniform(-4, 4, 2)
            c2w = look_down_c2w(x, y, 10.0, yaw=rng.uniform(-3, 3), tilt=rng.uniform(-0.3, 0.3))
            recs.append(ImageRecord(index=i, split=split, c2w=c2w,
                                    fx=width * 1.1 + i, fy=width * 1.1 + 0.5 * i,
                                    cx=width / 2 + 0.3, cy=height / 2 - 0.2, width=width,
                                    height=height, image_path=path, near=0.5 + i, far=20.0))
        frames[split] = recs
    bbox = np.array([[-6.0, -6.0, 0.0], [6.0, 6.0, 3.0]])
    return Scene(name="tiny", root=root, format="transforms", frames=frames, bbox=bbox,
                 altitude_range=(0.0, 3.0), partition_grid=(1, 2))


@pytest.fixture
def scene(tmp_path) -> Scene:
    return make_scene(tmp_path / "scene")


def test_table_order_and_fields(scene):
    t = CameraTable.from_scene(scene)
    assert len(t) == 5 and t.n_train == 3
    assert t.split == ["train"] * 3 + ["val"] * 2
    assert t.local_index.tolist() == [0, 1, 2, 0, 1]
    assert t.global_index("val", 1) == 4
    assert t.c2w.dtype == torch.float32 and t.c2w.shape == (5, 4, 4)
    assert t.near.tolist() == [0.5, 1.5, 2.5, 0.5, 1.5]


def test_rays_equal_scene_rays_for_image(scene):
    t = CameraTable.from_scene(scene)
    for split in ("train", "val"):
        for i, r in enumerate(scene.images(split)):
            k = t.global_index(split, i)
            pix = torch.randperm(r.width * r.height)
            o, d = t.rays(torch.full_like(pix, k), pix)
            o_ref, d_ref = scene.rays_for_image(split, i)
            assert o.dtype == d.dtype == torch.float32 and o.shape == (pix.numel(), 3)
            torch.testing.assert_close(o, o_ref[pix], rtol=0, atol=1e-6)
            torch.testing.assert_close(d, d_ref[pix], rtol=0, atol=2e-6)


def test_rays_mixed_images_in_one_batch(scene):
    t = CameraTable.from_scene(scene)
    img = torch.tensor([4, 0, 2, 0, 3])
    pix = torch.tensor([47, 0, 13, 5, 20])
    o, d = t.rays(img, pix)
    for n in range(5):
        k = int(img[n])
        o_ref, d_ref = scene.rays_for_image(t.split[k], int(t.local_index[k]))
        torch.testing.assert_close(d[n], d_ref[pix[n]], rtol=0, atol=2e-6)
        torch.testing.assert_close(o[n], o_ref[pix[n]], rtol=0, atol=1e-6)
