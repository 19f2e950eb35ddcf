"""Camera path files: nerfstudio camera paths in, switchnerf keyframe files in and out.

World frame: both formats are read as poses in the *run's world frame* (z up, world
units, the frame ``switchnerf export cameras`` writes and the viewer shows). nerfstudio's
``camera_to_world`` already uses OpenGL camera axes, like switchnerf; no axis change is
applied.

nerfstudio (``ns-render camera-path`` input; REFERENCE.md §6)::

    {"render_height": H, "render_width": W, "camera_type": "perspective",
     "seconds": S, "fps": F,                      # fps optional: len(camera_path) / S
     "camera_path": [{"camera_to_world": [16 floats, row-major 4x4],
                      "fov": vertical degrees, "aspect": W / H}, ...]}

  Every ``camera_path`` entry becomes a keyframe; with ``round(S * F)`` entries each video
  frame is exactly one entry. focal = (H / 2) / tan(fov / 2), principal point at the centre.

switchnerf keyframes (``FORMAT``, version 1)::

    {"format": "switchnerf-camera-path", "version": 1,
     "world_frame": "run world: z up, OpenGL camera axes, world units",
     "resolution": [W, H], "seconds": S, "fps": F,
     "interpolation": "catmull-rom" | "linear", "loop": false,
     "keyframes": [{"c2w": [[4 floats] x 4] (or 16 floats row-major), "fov": degrees}, ...]}

Malformed files raise ``SwitchNerfError`` naming the file and the field.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from switchnerf.errors import SwitchNerfError, input_error
from switchnerf.io_utils import write_json_atomic
from switchnerf.video.camera_path import INTERPOLATIONS, CameraPath
from switchnerf.video.paths import Keyframe

__all__ = ["FORMAT", "camera_path_to_dict", "load_camera_path", "parse_camera_path",
           "save_camera_path"]

FORMAT = "switchnerf-camera-path"
WORLD_FRAME = "run world: z up, OpenGL camera axes, world units"


def _num(path, obj: dict, key: str, where: str, *, required: bool = True, positive: bool = True,
         integer: bool = False):
    name = f"{where}{key}"
    if key not in obj:
        if required:
            raise input_error(path, name, "missing")
        return None
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise input_error(path, name, f"expected a number, got {v!r}")
    if integer and float(v) != int(v):
        raise input_error(path, name, f"expected an integer, got {v!r}")
    if positive and v <= 0:
        raise input_error(path, name, f"must be > 0, got {v!r}")
    return int(v) if integer else float(v)


def _matrix(path, value, name: str) -> np.ndarray:
    """A 4x4 from 16 numbers (row-major) or 4 rows of 4; the last row must be 0 0 0 1."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise input_error(path, name, "expected 16 numbers (row-major 4x4)") from None
    if arr.shape == (16,):
        arr = arr.reshape(4, 4)
    if arr.shape != (4, 4):
        raise input_error(path, name, f"expected 16 numbers (row-major 4x4), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise input_error(path, name, "contains non-finite numbers")
    if not np.allclose(arr[3], [0, 0, 0, 1], atol=1e-6):
        raise input_error(path, name, f"last row must be 0 0 0 1, got {arr[3].tolist()}")
    if abs(np.linalg.det(arr[:3, :3])) < 1e-9:
        raise input_error(path, name, "rotation part is singular")
    return arr


def _fov(path, entry: dict, where: str) -> float:
    fov = _num(path, entry, "fov", where)
    if not fov < 180:
        raise input_error(path, f"{where}fov", f"must lie in (0, 180) degrees, got {fov!r}")
    return fov


def _parse_nerfstudio(path, obj: dict) -> CameraPath:
    height = _num(path, obj, "render_height", "", integer=True)
    width = _num(path, obj, "render_width", "", integer=True)
    kind = obj.get("camera_type", "perspective")
    if kind != "perspective":
        raise input_error(path, "camera_type", f"only 'perspective' is supported, got {kind!r}")
    seconds = _num(path, obj, "seconds", "")
    entries = obj["camera_path"]
    if not isinstance(entries, list) or not entries:
        raise input_error(path, "camera_path", "expected a non-empty list of cameras")
    fps = _num(path, obj, "fps", "", required=False)
    fps = len(entries) / seconds if fps is None else fps
    keyframes = []
    for k, entry in enumerate(entries):
        where = f"camera_path[{k}]."
        if not isinstance(entry, dict):
            raise input_error(path, f"camera_path[{k}]", "expected an object")
        if "camera_to_world" not in entry:
            raise input_error(path, f"{where}camera_to_world", "missing")
        c2w = _matrix(path, entry["camera_to_world"], f"{where}camera_to_world")
        fov = _fov(path, entry, where)
        _num(path, entry, "aspect", where, required=False)
        keyframes.append(Keyframe(c2w, fov))
    return _build(path, keyframes, width, height, seconds, fps, "catmull-rom", False,
                  f"nerfstudio camera path {Path(str(path)).name}")


def _parse_switchnerf(path, obj: dict) -> CameraPath:
    fmt = obj.get("format", FORMAT)
    if fmt != FORMAT:
        raise input_error(path, "format", f"expected {FORMAT!r}, got {fmt!r}")
    version = obj.get("version", 1)
    if version != 1:
        raise input_error(path, "version", f"only version 1 is supported, got {version!r}")
    res = obj.get("resolution")
    if (not isinstance(res, list) or len(res) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in res)):
        raise input_error(path, "resolution", f"expected [width, height] of positive integers, got {res!r}")
    seconds = _num(path, obj, "seconds", "")
    fps = _num(path, obj, "fps", "")
    interp = obj.get("interpolation", "catmull-rom")
    if interp not in INTERPOLATIONS:
        raise input_error(path, "interpolation", f"expected one of {', '.join(INTERPOLATIONS)}, got {interp!r}")
    loop = obj.get("loop", False)
    if not isinstance(loop, bool):
        raise input_error(path, "loop", f"expected true or false, got {loop!r}")
    entries = obj["keyframes"]
    if not isinstance(entries, list) or not entries:
        raise input_error(path, "keyframes", "expected a non-empty list")
    keyframes = []
    for k, entry in enumerate(entries):
        where = f"keyframes[{k}]."
        if not isinstance(entry, dict):
            raise input_error(path, f"keyframes[{k}]", "expected an object")
        if "c2w" not in entry:
            raise input_error(path, f"{where}c2w", "missing")
        keyframes.append(Keyframe(_matrix(path, entry["c2w"], f"{where}c2w"), _fov(path, entry, where)))
    return _build(path, keyframes, res[0], res[1], seconds, fps, interp, loop,
                  f"keyframes {Path(str(path)).name}")


def _build(path, keyframes, width, height, seconds, fps, interp, loop, source) -> CameraPath:
    try:
        return CameraPath(keyframes, width, height, seconds, fps, interp, loop, source)
    except SwitchNerfError as exc:
        raise SwitchNerfError(f"{path}: {exc}") from None


def parse_camera_path(obj, path="<camera path>") -> CameraPath:
    """A ``CameraPath`` from a decoded JSON object of either format (see the module doc)."""
    if not isinstance(obj, dict):
        raise input_error(path, None, "expected a JSON object at the top level")
    if "camera_path" in obj:
        return _parse_nerfstudio(path, obj)
    if "keyframes" in obj:
        return _parse_switchnerf(path, obj)
    raise input_error(path, "camera_path", "missing (neither a nerfstudio camera path with "
                      "'camera_path' nor a switchnerf keyframe file with 'keyframes')")


def load_camera_path(path: str | Path) -> CameraPath:
    """Read a camera path JSON file of either format."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, None, "camera path file not found")
    try:
        obj = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise input_error(path, None, f"not valid JSON ({exc})") from None
    return parse_camera_path(obj, path)


def camera_path_to_dict(cp: CameraPath) -> dict:
    """The switchnerf keyframe JSON object of ``cp`` (format version 1)."""
    return {"format": FORMAT, "version": 1, "world_frame": WORLD_FRAME,
            "resolution": [int(cp.width), int(cp.height)], "seconds": float(cp.seconds),
            "fps": float(cp.fps), "interpolation": cp.interpolation, "loop": bool(cp.loop),
            "keyframes": [{"c2w": np.asarray(k.c2w, dtype=np.float64).tolist(),
                           "fov": float(k.fov)} for k in cp.keyframes]}


def save_camera_path(path: str | Path, cp: CameraPath) -> Path:
    """Write ``cp`` as a switchnerf keyframe file (atomically)."""
    write_json_atomic(path, camera_path_to_dict(cp))
    return Path(path)
