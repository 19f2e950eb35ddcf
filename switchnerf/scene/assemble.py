"""Turn a list of posed cameras from a general-purpose format (COLMAP, transforms.json) into
a Scene: level the world so up is +z, split train/val, and fill in the bounds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from switchnerf.scene.bounds import estimate_bounds
from switchnerf.scene.poses import (
    estimate_up,
    holdout_split,
    rigid,
    rotation_between,
    transform_c2w,
)
from switchnerf.scene.types import ImageRecord, Scene

UP_TOLERANCE_DEG = 0.5  # a world whose estimated up is this close to +z is left as it is


@dataclass(frozen=True)
class Camera:
    """A posed camera of the source frame: ``record`` (index and split placeholders) and
    ``split``: "train", "val", or None when the source has no split."""

    record: ImageRecord
    split: str | None = None


def altitude_down_to_world(altitude_range_m) -> tuple[float, float] | None:
    """[top, ground] along a down axis (the descriptor's convention) -> (ground_z, top_z)."""
    if altitude_range_m is None:
        return None
    top, ground = (float(a) for a in altitude_range_m)
    return -ground, -top


def assemble_scene(
    cameras: list[Camera],
    *,
    name: str,
    root: Path,
    fmt: str,
    points: np.ndarray | None = None,
    altitude_range_m=None,
    bbox=None,
    extra: dict | None = None,
    up: np.ndarray | None = None,
) -> Scene:
    """Build the Scene from cameras in the source frame (c2w OpenGL) and optional sparse
    points [M, 3] in the same frame.

    If the source's up direction (``up`` when the dataset states it, else estimated from
    the cameras by ``frames.estimate_up``) is more than 0.5 degrees from +z, the world is
    rotated (about the origin, smallest rotation) so that it is +z; the rotation is
    ``scene.source_to_world`` and ``scene.estimated["up"]`` is True. When no
    camera has a split, every 8th camera (name order) is held out as val
    (``estimated["val_split"]``). ``altitude_range_m`` ([top, ground], down axis) and
    ``bbox`` are in the leveled world's units; missing ones are estimated.
    """
    c2ws = np.stack([c.record.c2w for c in cameras])
    up = estimate_up(c2ws) if up is None else np.asarray(up, dtype=np.float64)
    up = up / np.linalg.norm(up)
    level = np.eye(4)
    # metric scale is unknown in these formats: 1 unit is assumed to be 1 metre
    estimated: dict[str, bool] = {"up": False, "metres_per_unit": True}
    if np.degrees(np.arccos(np.clip(up[2], -1.0, 1.0))) > UP_TOLERANCE_DEG:
        level = rigid(rotation_between(up, np.array([0.0, 0.0, 1.0])))
        estimated["up"] = True
    if points is not None and len(points):
        points = points @ level[:3, :3].T
    splits = [c.split for c in cameras]
    if all(s is None for s in splits):
        _, val_i = holdout_split(len(cameras))
        splits = ["train"] * len(cameras)
        for i in val_i:
            splits[i] = "val"
        estimated["val_split"] = True
    frames: dict[str, list[ImageRecord]] = {"train": [], "val": []}
    for cam, split in zip(cameras, splits):
        split = split or "train"
        frames[split].append(
            replace(
                cam.record,
                index=len(frames[split]),
                split=split,
                c2w=transform_c2w(level, cam.record.c2w),
            )
        )
    moved = np.stack([r.c2w for recs in frames.values() for r in recs])
    box, alt, est = estimate_bounds(
        moved,
        points,
        None if bbox is None else np.asarray(bbox),
        altitude_down_to_world(altitude_range_m),
    )
    estimated.update(est)
    extra = dict(extra or {})
    extra["num_points"] = 0 if points is None else len(points)
    return Scene(
        name=name,
        root=root,
        format=fmt,
        frames=frames,
        bbox=box,
        altitude_range=alt,
        metres_per_unit=1.0,
        source_to_world=level,
        estimated=estimated,
        extra=extra,
    )
