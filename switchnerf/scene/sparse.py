"""The sparse 3D points of a scene whose format has them (COLMAP ``points3D``), in the world
frame: what the dataset viewer draws so a user checks poses and bounds before training.

Mega-NeRF and transforms.json datasets (the synthetic scenes too) have none.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from switchnerf.scene.types import Scene

__all__ = ["sparse_points"]


def sparse_points(scene: Scene, *, max_points: int | None = None,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """The scene's sparse points and their colours, or None when its format has none.

    Returns xyz float32 [M, 3] in the world frame (``scene.source_to_world`` applied to the
    model's points, as the reader did to the cameras) and rgb uint8 [M, 3]. ``max_points``:
    keep a seeded random subset of at most that many. Raises ``SwitchNerfError`` naming the
    model folder when the COLMAP model cannot be read.
    """
    if scene.format != "colmap" or "model_dir" not in scene.extra:
        return None
    from switchnerf.scene.colmap_model import read_model

    model = read_model(Path(scene.extra["model_dir"]))
    xyz, rgb = np.asarray(model.points, np.float64), np.asarray(model.colors, np.uint8)
    if max_points is not None and len(xyz) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(xyz), max_points, replace=False))
        xyz, rgb = xyz[keep], rgb[keep]
    m = np.asarray(scene.source_to_world, np.float64)
    world = xyz @ m[:3, :3].T + m[:3, 3]
    return world.astype(np.float32), rgb
