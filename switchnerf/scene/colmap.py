"""Reader for COLMAP sparse models (text or binary; read by pycolmap in ``colmap_model``).

Accepted paths: a dataset folder with ``sparse/0/`` or ``sparse/``, or a model folder with
``cameras.{bin,txt}``. Images are looked up in ``images/`` beside ``sparse/`` (or beside
the model folder). Camera models: SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV.
Distorted cameras get pinhole intrinsics (``distortion.pinhole_for``: no blank border) and
their images are undistorted on first use into ``<model>_undistorted/`` beside the model
(one flat file per image, ``images.undistorted_cache_path``).

Frames: COLMAP world->camera (OpenCV axes) becomes c2w with OpenGL axes,
``c2w[:3, :3] = R^T diag(1, -1, -1)``, ``c2w[:3, 3] = -R^T t``; then the world is leveled
(``assemble.assemble_scene``) by the up direction the dataset's ``sfm.json`` states
(written by ``scene from-images``, whose models are stored leveled), else by the cameras'.
COLMAP has no splits: every 8th image by name is val.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from switchnerf.errors import input_error
from switchnerf.scene.assemble import Camera, assemble_scene
from switchnerf.scene.colmap_model import ColmapCamera, model_ext, qvec_to_rotmat, read_model
from switchnerf.scene.distortion import pinhole_for
from switchnerf.scene.images import undistorted_cache_path
from switchnerf.scene.poses import CV_TO_GL, check_matrix
from switchnerf.scene.types import ImageRecord, Scene, Undistortion

SUPPORTED = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")


def find_model_dir(path: Path) -> Path | None:
    """The folder holding cameras.{bin,txt} for ``path``, or None."""
    for cand in (path, path / "sparse" / "0", path / "sparse"):
        if (cand / "cameras.bin").is_file() or (cand / "cameras.txt").is_file():
            return cand
    return None


def _image_dir(model_dir: Path) -> Path | None:
    for base in (model_dir.parent, model_dir.parent.parent, model_dir):
        if base.name != "sparse" and (base / "images").is_dir():
            return base / "images"
    return None


def stated_up(dataset_dir: Path) -> np.ndarray | None:
    """The up direction [3] in ``<dataset>/sfm.json`` (key ``up``), or None without the file."""
    report = dataset_dir / "sfm.json"
    if not report.is_file():
        return None
    try:
        data = json.loads(report.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise input_error(report, None, f"is not valid JSON ({e})") from None
    if not isinstance(data, dict) or "up" not in data:
        raise input_error(report, "up", "missing")
    up = check_matrix(report, "up", data["up"], (3,))
    if not np.linalg.norm(up) > 0:
        raise input_error(report, "up", f"{up.tolist()} is not a direction")
    return up


def _camera_params(cam: ColmapCamera, path: Path):
    """(fx, fy, cx, cy, Undistortion-or-None) for a COLMAP camera."""
    if cam.model not in SUPPORTED:
        raise input_error(
            path, "model", f"camera {cam.id} uses {cam.model}; supported: {', '.join(SUPPORTED)}"
        )
    p = check_matrix(path, f"camera {cam.id} params", cam.params, (len(cam.params),))
    if cam.width <= 0 or cam.height <= 0:
        raise input_error(
            path, f"camera {cam.id} size", f"{cam.width}x{cam.height} is not positive"
        )
    if cam.model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
        fx = fy = p[0]
        cx, cy = p[1], p[2]
    else:
        fx, fy, cx, cy = p[:4]
    if fx <= 0 or fy <= 0:
        raise input_error(
            path, f"camera {cam.id} params", f"focal length must be positive, got {p.tolist()}"
        )
    names = {"SIMPLE_RADIAL": ("k1",), "RADIAL": ("k1", "k2"), "OPENCV": ("k1", "k2", "p1", "p2")}
    coeffs = names.get(cam.model, ())
    k = dict(zip(coeffs, (float(v) for v in p[len(p) - len(coeffs):])))
    if not any(v != 0 for v in k.values()):
        return float(fx), float(fy), float(cx), float(cy), None
    return float(fx), float(fy), float(cx), float(cy), k


def read_colmap(
    path: str | Path, *, altitude_range_m=None, bbox=None, name: str | None = None
) -> Scene:
    """Read a COLMAP model and its images into a Scene (see module doc for frames)."""
    path = Path(path)
    model_dir = find_model_dir(path)
    if model_dir is None:
        raise input_error(
            path, "format", "no COLMAP model (cameras.bin/.txt in ., sparse/0 or sparse)"
        )
    model = read_model(model_dir)
    images_file = model_dir / f"images{model_ext(model_dir)}"
    cams_file = images_file.with_name("cameras" + images_file.suffix)
    if not model.images:
        raise input_error(images_file, "images", "empty: the model has no registered images")
    image_dir = _image_dir(model_dir)
    if image_dir is None:
        raise input_error(model_dir, "images", "no images/ folder beside the model")
    up = stated_up(image_dir.parent)
    cache_dir = model_dir.with_name(model_dir.name + "_undistorted")
    intr = {}
    cameras = []
    for im in sorted(model.images.values(), key=lambda m: m.name):
        if im.camera_id not in model.cameras:
            raise input_error(
                images_file, "CAMERA_ID", f"image {im.name!r} uses unknown camera {im.camera_id}"
            )
        cam = model.cameras[im.camera_id]
        if cam.id not in intr:
            fx, fy, cx, cy, k = _camera_params(cam, cams_file)
            und = None
            if k is not None:
                und = Undistortion(Path(), cam.width, cam.height, fx, fy, cx, cy, **k)
                fx, fy, cx, cy = pinhole_for(und)
            intr[cam.id] = (fx, fy, cx, cy, und)
        fx, fy, cx, cy, und = intr[cam.id]
        q = check_matrix(images_file, f"image {im.name!r} QVEC", im.qvec, (4,))
        t = check_matrix(images_file, f"image {im.name!r} TVEC", im.tvec, (3,))
        if abs(np.linalg.norm(q) - 1.0) > 1e-3:
            raise input_error(
                images_file,
                f"image {im.name!r} QVEC",
                f"{q.tolist()} is not a unit quaternion (norm {np.linalg.norm(q):.4g})",
            )
        rot = qvec_to_rotmat(q)
        c2w = np.eye(4)
        c2w[:3, :3] = rot.T @ CV_TO_GL
        c2w[:3, 3] = -rot.T @ t
        src = image_dir / im.name
        if not src.is_file():
            raise input_error(images_file, "NAME", f"image {im.name!r} not found in {image_dir}")
        if und is not None:
            und = Undistortion(
                src,
                *(
                    getattr(und, f)
                    for f in (
                        "width",
                        "height",
                        "fx",
                        "fy",
                        "cx",
                        "cy",
                        "k1",
                        "k2",
                        "k3",
                        "p1",
                        "p2",
                    )
                ),
            )
            image_path = undistorted_cache_path(cache_dir, im.name)
        else:
            image_path = src
        rec = ImageRecord(
            index=0,
            split="train",
            c2w=c2w,
            fx=fx,
            fy=fy,
            cx=cx,
            cy=cy,
            width=cam.width,
            height=cam.height,
            image_path=image_path,
            undistort=und,
        )
        cameras.append(Camera(rec))
    return assemble_scene(
        cameras,
        name=name or image_dir.parent.name,
        root=path,
        fmt="colmap",
        points=model.points,
        altitude_range_m=altitude_range_m,
        bbox=bbox,
        extra={
            "model_dir": str(model_dir),
            "up_from": "sfm.json" if up is not None else "cameras",
        },
        up=up,
    )
