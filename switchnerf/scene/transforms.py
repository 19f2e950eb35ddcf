"""Reader for nerfstudio / instant-ngp ``transforms.json`` (REFERENCE.md §6).

Intrinsics ``fl_x, fl_y, cx, cy, w, h`` may be global or per frame (a frame's own keys
win); without ``fl_x`` the focal comes from ``camera_angle_x`` (and ``camera_angle_y``,
else fy = fx); cx, cy default to the image centre; w, h default to the image file's size.
``transform_matrix`` is c2w with OpenGL axes already. Radial-tangential distortion
(``k1, k2, k3, p1, p2``) is undistorted like COLMAP's, into ``<json stem>_undistorted/`` (one flat
file per image, ``images.undistorted_cache_path``).
Splits: nerfstudio's ``train_filenames`` / ``val_filenames`` (or ``test_filenames``) when
present, else Blender-style ``transforms_train.json`` + ``transforms_val.json`` (or
``_test``), else every 8th frame by file name is val. Sparse points: ``ply_file_path``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from switchnerf.errors import input_error
from switchnerf.scene.assemble import Camera, assemble_scene
from switchnerf.scene.distortion import pinhole_for
from switchnerf.scene.images import image_size, undistorted_cache_path
from switchnerf.scene.poses import check_matrix, check_rotation
from switchnerf.scene.types import ImageRecord, Scene, Undistortion

_DIST_KEYS = ("k1", "k2", "k3", "p1", "p2")


def find_transforms(path: Path) -> list[tuple[Path, str | None]]:
    """The json file(s) for ``path`` with their split (None: from the file or held out)."""
    if path.is_file():
        return [(path, None)]
    if (path / "transforms.json").is_file():
        return [(path / "transforms.json", None)]
    if (path / "transforms_train.json").is_file():
        out = [(path / "transforms_train.json", "train")]
        for split_file in ("transforms_val.json", "transforms_test.json"):
            if (path / split_file).is_file():
                out.append((path / split_file, "val"))
                break
        return out
    return []


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise input_error(path, None, "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise input_error(path, None, f"is not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        raise input_error(path, "frames", "missing or not a list")
    return data


def _number(path, field, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise input_error(path, field, f"{value!r} is not a finite number")
    return float(value)


def _frame_file(base: Path, raw, path: Path, k: int) -> Path:
    if not isinstance(raw, str) or not raw:
        raise input_error(path, f"frames[{k}].file_path", f"{raw!r} is not a path")
    p = base / raw
    if not p.suffix and not p.is_file() and p.with_suffix(".png").is_file():
        p = p.with_suffix(".png")  # Blender-style paths omit the extension
    if not p.is_file():
        raise input_error(path, f"frames[{k}].file_path", f"{raw!r}: image not found")
    return p


def _camera(path: Path, data: dict, frame: dict, k: int, image: Path):
    def get(key):
        v = frame.get(key, data.get(key))
        return (
            None if v is None else _number(path, f"frames[{k}].{key}" if key in frame else key, v)
        )

    w, h = get("w"), get("h")
    if w is None or h is None:
        w, h = image_size(image)
    w, h = int(w), int(h)
    fx, fy = get("fl_x"), get("fl_y")
    if fx is None:
        angle_x = get("camera_angle_x")
        if angle_x is None:
            raise input_error(path, "fl_x", "missing (and no camera_angle_x)")
        fx = 0.5 * w / math.tan(0.5 * angle_x)
    if fy is None:
        angle_y = get("camera_angle_y")
        fy = fx if angle_y is None else 0.5 * h / math.tan(0.5 * angle_y)
    cx, cy = get("cx"), get("cy")
    cx, cy = (0.5 * w if cx is None else cx), (0.5 * h if cy is None else cy)
    if fx <= 0 or fy <= 0:
        raise input_error(path, "fl_x", f"focal lengths must be positive, got {fx}, {fy}")
    if get("k4"):
        raise input_error(path, "k4", "fisheye distortion (k4) is not supported")
    dist = {key: get(key) or 0.0 for key in _DIST_KEYS}
    return w, h, fx, fy, cx, cy, dist


def read_transforms(
    path: str | Path, *, altitude_range_m=None, bbox=None, name: str | None = None
) -> Scene:
    """Read transforms.json (or a folder with it / Blender-style split files) into a Scene."""
    path = Path(path)
    files = find_transforms(path)
    if not files:
        raise input_error(path, "format", "no transforms.json or transforms_train.json")
    cameras: list[tuple[str, Camera]] = []
    points = None
    for json_path, file_split in files:
        data = _load_json(json_path)
        model = data.get("camera_model", "OPENCV")
        if model not in ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE"):
            raise input_error(json_path, "camera_model", f"{model!r} is not supported")
        base = json_path.parent
        named = {}
        for key, split in (
            ("train_filenames", "train"),
            ("val_filenames", "val"),
            ("test_filenames", "val"),
        ):
            for f in data.get(key) or []:
                named[str(Path(f))] = split
        cache = base / f"{json_path.stem}_undistorted"
        if not data["frames"]:
            raise input_error(json_path, "frames", "empty split: no frames")
        for k, frame in enumerate(data["frames"]):
            if not isinstance(frame, dict):
                raise input_error(json_path, f"frames[{k}]", "is not an object")
            image = _frame_file(base, frame.get("file_path"), json_path, k)
            if "transform_matrix" not in frame:
                raise input_error(json_path, f"frames[{k}].transform_matrix", "missing")
            c2w = check_matrix(
                json_path, f"frames[{k}].transform_matrix", frame["transform_matrix"], (4, 4)
            )
            check_rotation(json_path, f"frames[{k}].transform_matrix", c2w[:3, :3])
            w, h, fx, fy, cx, cy, dist = _camera(json_path, data, frame, k, image)
            und, image_path = None, image
            if any(dist.values()):
                und = Undistortion(image, w, h, fx, fy, cx, cy, **dist)
                fx, fy, cx, cy = pinhole_for(und)
                image_path = undistorted_cache_path(cache, frame["file_path"])
            split = file_split or named.get(str(Path(frame["file_path"])))
            rec = ImageRecord(
                index=0,
                split=split or "train",
                c2w=c2w,
                fx=fx,
                fy=fy,
                cx=cx,
                cy=cy,
                width=w,
                height=h,
                image_path=image_path,
                undistort=und,
            )
            cameras.append((str(image), Camera(rec, split)))
        ply = data.get("ply_file_path")
        if ply and points is None and (base / ply).is_file():
            import open3d as o3d

            points = np.asarray(o3d.io.read_point_cloud(str(base / ply)).points, dtype=np.float64)
    cameras.sort(key=lambda nc: nc[0])
    if any(c.split for _, c in cameras) and not any(c.split == "train" for _, c in cameras):
        raise input_error(files[0][0], "train_filenames", "empty split: no training frames")
    return assemble_scene(
        [c for _, c in cameras],
        name=name or (path if path.is_dir() else path.parent).name,
        root=path,
        fmt="transforms",
        points=points,
        altitude_range_m=altitude_range_m,
        bbox=bbox,
    )
