"""The editor's camera-path files: nerfstudio camera-path JSON inside the run folder.

Written (what nerfstudio's viewer writes and ``ns-render camera-path`` reads;
shared/docs/REFERENCE.md §6): ``camera_type`` "perspective", ``render_width``,
``render_height``, ``seconds``, ``fps``, ``is_cycle``, ``interpolation``, ``camera_path``
(the dense path, one ``{camera_to_world: 16 floats, row-major 4x4 c2w in the run's world
frame with OpenGL camera axes, fov: vertical degrees, aspect: width / height}`` per frame,
exactly the frames ``switchnerf render RUN --path FILE`` renders) and ``keyframes`` (the
editable keyframes as nerfstudio stores them: ``{matrix: 16 floats row-major c2w, fov,
aspect}``).

Read back: the ``keyframes`` of such a file; any other file through
``switchnerf.video.camera_path_io.parse_camera_path`` (a nerfstudio path without
keyframes, whose frames become keyframes, or a switchnerf keyframe file).

Files live in ``RUN/camera_paths/``; names typed in the browser are reduced to
``[A-Za-z0-9._-]`` and can never leave that folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from switchnerf.errors import SwitchNerfError, input_error
from switchnerf.io_utils import write_json_atomic
from switchnerf.video.camera_path import CameraPath
from switchnerf.video.camera_path_io import parse_camera_path
from switchnerf.video.paths import Keyframe

__all__ = ["PATHS_DIR", "list_paths", "load_path", "path_file", "path_to_json", "save_path"]

PATHS_DIR = "camera_paths"


def path_file(run_dir: str | Path, name: str) -> Path:
    """``RUN/camera_paths/<safe name>.json`` for a user-typed name.

    >>> path_file("/r", "../../etc/passwd").as_posix()
    '/r/camera_paths/passwd.json'
    """
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(name or "")).name)
    if stem.lower().endswith(".json"):
        stem = stem[:-5]
    stem = stem.strip("._-")[:80] or "camera_path"
    folder = Path(run_dir) / PATHS_DIR
    path = folder / f"{stem}.json"
    if path.resolve().parent != folder.resolve():
        raise SwitchNerfError(f"camera path name {name!r} is not a plain file name")
    return path


def list_paths(run_dir: str | Path) -> list[str]:
    """Stems of the saved camera paths of a run, sorted."""
    folder = Path(run_dir) / PATHS_DIR
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def _flat(m: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(m, dtype=np.float64).reshape(16)]


def path_to_json(path: CameraPath) -> dict:
    """The nerfstudio camera-path dict of ``path`` (dense frames and keyframes)."""
    aspect = path.width / path.height
    frames = []
    for cam in path.cameras():
        fov = float(np.degrees(2.0 * np.arctan(0.5 * cam.height / cam.fy)))
        frames.append({"camera_to_world": _flat(cam.c2w), "fov": fov, "aspect": aspect})
    return {
        "camera_type": "perspective",
        "render_width": int(path.width),
        "render_height": int(path.height),
        "seconds": float(path.seconds),
        "fps": float(path.fps),
        "is_cycle": bool(path.loop),
        "interpolation": path.interpolation,
        "keyframes": [{"matrix": _flat(k.c2w), "fov": float(k.fov), "aspect": aspect}
                      for k in path.keyframes],
        "camera_path": frames,
    }


def path_from_json(obj, source: str | Path = "<camera path>") -> CameraPath:
    """An editable path: the ``keyframes`` of a file written here, else any camera path
    ``parse_camera_path`` reads."""
    keys = obj.get("keyframes") if isinstance(obj, dict) else None
    if not (isinstance(keys, list) and keys and isinstance(keys[0], dict) and "matrix" in keys[0]):
        return parse_camera_path(obj, source)
    keyframes = []
    for k, entry in enumerate(keys):
        try:
            m = entry["matrix"]
            if isinstance(m, str):  # some nerfstudio versions store the matrix as a string
                m = json.loads(m)
            keyframes.append(Keyframe(np.asarray(m, dtype=np.float64).reshape(4, 4),
                                      float(entry["fov"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise input_error(source, f"keyframes[{k}]", f"not a keyframe ({exc})") from None
    try:
        return CameraPath(keyframes, int(obj["render_width"]), int(obj["render_height"]),
                          float(obj["seconds"]), float(obj["fps"]),
                          obj.get("interpolation", "catmull-rom"), bool(obj.get("is_cycle")),
                          f"viewer camera path {Path(str(source)).name}")
    except (KeyError, TypeError, ValueError) as exc:
        raise input_error(source, None, f"not a camera path ({exc})") from None
    except SwitchNerfError as exc:
        raise SwitchNerfError(f"{source}: {exc}") from None


def save_path(run_dir: str | Path, name: str, path: CameraPath) -> Path:
    """Write ``path`` as ``RUN/camera_paths/<name>.json`` (atomically); returns the file."""
    out = path_file(run_dir, name)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, path_to_json(path))
    return out


def load_path(run_dir: str | Path, name: str) -> CameraPath:
    """Read ``RUN/camera_paths/<name>.json``."""
    f = path_file(run_dir, name)
    try:
        obj = json.loads(f.read_text())
    except FileNotFoundError:
        raise SwitchNerfError(f"{f}: no such camera path") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise SwitchNerfError(f"{f}: not JSON ({exc})") from None
    return path_from_json(obj, f)
