"""Tiny datasets for the scene tests: one camera set written as Mega-NeRF, COLMAP and
transforms.json. Cameras are made in a z-up metric world W."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from switchnerf.scene.colmap_model import (
    ColmapCamera,
    ColmapImage,
    ColmapModel,
    rotmat_to_qvec,
    write_model,
)
from switchnerf.scene.poses import CV_TO_GL, DRB_TO_WORLD
from switchnerf.scene.synth.drone import look_c2w

W, H = 16, 12
FX, FY, CX, CY = 14.0, 13.0, 8.3, 5.9


def world_cameras(n: int = 10, seed: int = 0) -> np.ndarray:
    """c2w [n, 4, 4] (OpenGL) of drone-like cameras 40-50 m above content near the origin."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        yaw = 2 * np.pi * k / n + rng.uniform(-0.2, 0.2)
        pos = np.array([30 * np.cos(yaw), 30 * np.sin(yaw), rng.uniform(40, 50)])
        target = np.array([rng.uniform(-5, 5), rng.uniform(-5, 5), 0.0])
        out.append(look_c2w(pos, target - pos))
    return np.stack(out)


def content_points(n: int = 200, seed: int = 1) -> np.ndarray:
    """Sparse 'SfM' points [n, 3] on and above the ground near the origin (metres)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(-20, 20, n), rng.uniform(-20, 20, n), rng.uniform(0, 10, n)], 1)


def _image(k: int) -> np.ndarray:
    rng = np.random.default_rng(100 + k)
    return rng.integers(0, 255, (H, W, 3), dtype=np.uint8)


def write_meganerf(
    root: Path, c2ws: np.ndarray, origin=(-45.0, 1.0, 2.0), scale=60.0, val=(0, 8)
) -> Path:
    """Mega-NeRF dataset of the cameras; world W metres -> DRB metres -> normalised."""
    origin = np.asarray(origin, dtype=np.float64)
    torch.save(
        {"origin_drb": torch.tensor(origin), "pose_scale_factor": scale}, root / "coordinates.pt"
    )
    for k, c2w in enumerate(c2ws):
        split = "val" if k in val else "train"
        for sub in ("metadata", "rgbs"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        m = np.zeros((3, 4))
        m[:, :3] = DRB_TO_WORLD.T @ c2w[:3, :3]
        m[:, 3] = (DRB_TO_WORLD.T @ c2w[:3, 3] - origin) / scale
        torch.save(
            {
                "H": H,
                "W": W,
                "c2w": torch.tensor(m),
                "intrinsics": torch.tensor([FX, FY, CX, CY]),
                "distortion": torch.zeros(4),
            },
            root / split / "metadata" / f"{k:03d}.pt",
        )
        Image.fromarray(_image(k)).save(root / split / "rgbs" / f"{k:03d}.png")
    return root


def source_frame(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A tilted source frame: p_source = Q @ p_world + b."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q, np.array([3.0, -2.0, 5.0])


def to_source(c2ws: np.ndarray, q: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = c2ws.copy()
    out[:, :3, :3] = q @ c2ws[:, :3, :3]
    out[:, :3, 3] = c2ws[:, :3, 3] @ q.T + b
    return out


def write_images(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{k:03d}.png" for k in range(n)]
    for k, name in enumerate(names):
        Image.fromarray(_image(k)).save(folder / name)
    return names


def write_colmap(
    root: Path,
    c2ws_src: np.ndarray,
    points_src: np.ndarray,
    binary: bool,
    model: str = "PINHOLE",
    params=None,
    size=(W, H),
) -> Path:
    """COLMAP dataset <root>/images + <root>/sparse/0 of cameras given in the source frame."""
    names = write_images(root / "images", len(c2ws_src))
    cam = ColmapCamera(
        1, model, size[0], size[1], tuple(params) if params is not None else (FX, FY, CX, CY)
    )
    images = {}
    for k, (c2w, name) in enumerate(zip(c2ws_src, names)):
        r_c2w_cv = c2w[:3, :3] @ CV_TO_GL
        rot = r_c2w_cv.T
        t = -rot @ c2w[:3, 3]
        images[k + 1] = ColmapImage(k + 1, tuple(rotmat_to_qvec(rot)), tuple(t), 1, name)
    colors = np.full((len(points_src), 3), 128, np.uint8)
    write_model(ColmapModel({1: cam}, images, points_src, colors), root / "sparse" / "0", binary)
    return root


def write_transforms(root: Path, c2ws_src: np.ndarray, per_frame: bool = False) -> Path:
    names = write_images(root / "images", len(c2ws_src))
    intr = {"fl_x": FX, "fl_y": FY, "cx": CX, "cy": CY, "w": W, "h": H}
    frames = []
    for c2w, name in zip(c2ws_src, names):
        f = {"file_path": f"images/{name}", "transform_matrix": c2w.tolist()}
        if per_frame:
            f.update(intr)
        frames.append(f)
    data = {"frames": frames} if per_frame else {**intr, "frames": frames}
    (root / "transforms.json").write_text(json.dumps(data))
    return root
