"""Cameras of a run as JSON, plus a PLY line set of their frusta for 3D viewers.

CAMS.json (world frame of the run: z up, world units, OpenGL camera axes)::

    {"world_frame": "...", "metres_per_unit": m, "source_to_world": [[4] x 4],
     "bbox": [[xmin, ymin, zmin], [xmax, ymax, zmax]],
     "cameras": [{"index": global index (train first, then val), "split": "train"|"val",
                  "local_index": i, "image": file name, "width": W, "height": H,
                  "fx", "fy", "cx", "cy": pixels (centres at +0.5),
                  "fov": vertical degrees, "c2w": [[4] x 4]}, ...]}

``source_to_world`` maps the dataset's own frame into this one, so a pose goes back to
the source frame as ``inv(source_to_world) @ c2w``.

CAMS.frustums.ply: per camera, lines from the centre to the four image corners at
distance ``size`` (default 3% of the box diagonal) along the view direction and the
rectangle joining them; train cameras blue, val cameras orange.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from switchnerf.errors import SwitchNerfError
from switchnerf.export.verify import ply_reads_back
from switchnerf.io_utils import atomic_paths, json_bytes, same_bytes
from switchnerf.scene.types import SPLITS

SPLIT_COLORS = {"train": (0.12, 0.47, 0.71), "val": (1.0, 0.5, 0.05)}


def frustum_lines(c2w: np.ndarray, fx: float, fy: float, cx: float, cy: float, width: int,
                  height: int, size: float) -> tuple[np.ndarray, np.ndarray]:
    """Points float64 [5, 3] (centre, then corners top-left, top-right, bottom-right,
    bottom-left) and line index pairs int [8, 2] of one camera's frustum, world frame."""
    c2w = np.asarray(c2w, dtype=np.float64)
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    cam = np.stack([(corners[:, 0] - cx) / fx, -(corners[:, 1] - cy) / fy, -np.ones(4)], -1) * size
    pts = np.concatenate([c2w[:3, 3][None], cam @ c2w[:3, :3].T + c2w[:3, 3]])
    lines = np.array([[0, 1], [0, 2], [0, 3], [0, 4], [1, 2], [2, 3], [3, 4], [4, 1]])
    return pts, lines


def cameras_dict(scene) -> dict:
    """The CAMS.json object of ``scene`` (see the module docstring)."""
    cams, k = [], 0
    for split in SPLITS:
        for rec in scene.frames.get(split, []):
            cams.append({"index": k, "split": split, "local_index": rec.index,
                         "image": Path(rec.image_path).name, "width": int(rec.width),
                         "height": int(rec.height), "fx": float(rec.fx), "fy": float(rec.fy),
                         "cx": float(rec.cx), "cy": float(rec.cy),
                         "fov": math.degrees(2 * math.atan(0.5 * rec.height / rec.fy)),
                         "c2w": np.asarray(rec.c2w, dtype=np.float64).tolist()})
            k += 1
    return {"world_frame": "run world: z up, OpenGL camera axes, world units",
            "metres_per_unit": float(scene.metres_per_unit),
            "source_to_world": np.asarray(scene.source_to_world, dtype=np.float64).tolist(),
            "bbox": np.asarray(scene.bbox, dtype=np.float64).tolist(), "cameras": cams}


def frustums_path(out_path: Path) -> Path:
    """CAMS.frustums.ply beside CAMS.json."""
    return Path(out_path).with_suffix(".frustums.ply")


def export_cameras(scene, out_path: Path, *, size: float | None = None) -> dict:
    """Write CAMS.json and CAMS.frustums.ply for ``scene`` (together, atomically); returns a
    summary dict."""
    import open3d as o3d

    if Path(out_path).suffix.lower() != ".json":
        raise SwitchNerfError(f"--output: {out_path}: expected a .json file")
    data = cameras_dict(scene)
    if not data["cameras"]:
        raise SwitchNerfError(f"scene {scene.name!r}: has no cameras to export")
    bbox = np.asarray(scene.bbox, dtype=np.float64)
    size = float(size) if size is not None else 0.03 * float(np.linalg.norm(bbox[1] - bbox[0]))
    if not 0 < size < math.inf:
        raise SwitchNerfError(f"--frustum-size: must be a finite number > 0, got {size:g}")
    points, lines, colors = [], [], []
    for j, c in enumerate(data["cameras"]):
        p, li = frustum_lines(c["c2w"], c["fx"], c["fy"], c["cx"], c["cy"], c["width"],
                              c["height"], size)
        points.append(p)
        lines.append(li + 5 * j)
        colors.append(np.tile(SPLIT_COLORS[c["split"]], (len(li), 1)))
    ls = o3d.geometry.LineSet(o3d.utility.Vector3dVector(np.concatenate(points)),
                              o3d.utility.Vector2iVector(np.concatenate(lines).astype(np.int32)))
    ls.colors = o3d.utility.Vector3dVector(np.concatenate(colors))
    ply = frustums_path(out_path)
    blob = json_bytes(data)  # both files are checked before either replaces an older one
    with atomic_paths([ply, out_path],
                      verify=[ply_reads_back("lines", len(ls.lines)), same_bytes(blob)]) as tmps:
        if not o3d.io.write_line_set(str(tmps[0]), ls):
            raise SwitchNerfError(f"{ply}: open3d could not write the frustum line set")
        tmps[1].write_bytes(blob)
    return {"cameras": len(data["cameras"]), "output": str(out_path), "frustums": str(ply)}
