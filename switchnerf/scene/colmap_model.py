"""COLMAP sparse models (text or binary) read and written with pycolmap, COLMAP's bindings.

What the scene needs is copied out of pycolmap's objects into small frozen records:
cameras (model, size, params), posed images (pose, camera, name) and 3D points (xyz, rgb).
COLMAP poses are world->camera with OpenCV camera axes: ``x_cam = R(q) x_world + t``,
q = (qw, qx, qy, qz) as stored in the file (pycolmap keeps it un-normalised; the reader
checks its norm). A model file holds registered (posed) images only.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from switchnerf.errors import SwitchNerfError, input_error

INSTALL_HINT = "pip install 'pycolmap>=4.2' (a dependency of switchnerf: pip install -e .)"
MODEL_FILES = ("cameras", "images", "points3D", "rigs", "frames")


def import_pycolmap():
    """The ``pycolmap`` module, or a SwitchNerfError saying how to install it."""
    try:
        import pycolmap
    except ImportError as e:
        raise SwitchNerfError(
            f"pycolmap: cannot be imported ({e}); install it with {INSTALL_HINT}"
        ) from None
    return pycolmap


@dataclass(frozen=True)
class ColmapCamera:
    id: int
    model: str
    width: int
    height: int
    params: tuple[float, ...]


@dataclass(frozen=True)
class ColmapImage:
    """qvec: (qw, qx, qy, qz) as stored, tvec: [3]; world->camera, OpenCV axes."""

    id: int
    qvec: tuple[float, float, float, float]
    tvec: tuple[float, float, float]
    camera_id: int
    name: str


@dataclass
class ColmapModel:
    """points: float64 [M, 3] (in point-id order); colors: uint8 [M, 3]."""

    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    points: np.ndarray
    colors: np.ndarray


def qvec_to_rotmat(q) -> np.ndarray:
    """Quaternion (w, x, y, z), normalised first -> rotation [3, 3] (pycolmap's Rotation3d)."""
    q = np.asarray(q, dtype=np.float64)
    w, x, y, z = q / np.linalg.norm(q)
    return np.asarray(import_pycolmap().Rotation3d(np.array([x, y, z, w])).matrix())


def rotmat_to_qvec(r: np.ndarray) -> np.ndarray:
    """Rotation [3, 3] -> unit quaternion (w, x, y, z) with w >= 0 (pycolmap's Rotation3d)."""
    x, y, z, w = import_pycolmap().Rotation3d(np.asarray(r, dtype=np.float64)).quat
    q = np.array([w, x, y, z], dtype=np.float64)
    return -q if q[0] < 0 else q


def model_ext(folder: Path) -> str | None:
    """'.bin' when ``folder`` has cameras.bin, '.txt' for cameras.txt, else None."""
    for ext in (".bin", ".txt"):
        if (folder / f"cameras{ext}").is_file():
            return ext
    return None


@contextlib.contextmanager
def _readable(folder: Path, ext: str):
    """``folder`` itself, or (points3D missing) a temporary folder of links to its files
    plus an empty points3D file: pycolmap needs one, the scene does not."""
    if (folder / f"points3D{ext}").is_file():
        yield folder
        return
    tmp = Path(tempfile.mkdtemp(prefix=".colmap-read."))
    try:
        for stem in MODEL_FILES:
            src = folder / f"{stem}{ext}"
            if src.is_file():
                os.symlink(src.resolve(), tmp / src.name)
        (tmp / f"points3D{ext}").write_bytes(b"\0" * 8 if ext == ".bin" else b"")
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _explain(folder: Path, ext: str, exc: Exception) -> SwitchNerfError:
    """A one-line error for a model pycolmap could not read; names the file and field
    when the text files show it (an unknown camera model), else pycolmap's reason."""
    pycolmap = import_pycolmap()
    cams = folder / f"cameras{ext}"
    if ext == ".txt":
        known = set(pycolmap.CameraModelId.__members__) - {"INVALID"}
        for line in cams.read_text(errors="replace").splitlines():
            el = line.split()
            if len(el) >= 2 and not line.startswith("#") and el[1] not in known:
                return input_error(
                    cams, "MODEL", f"unknown camera model {el[1]!r} (camera {el[0]})"
                )
    if not (folder / f"images{ext}").is_file():
        return input_error(folder / f"images{ext}", None, "file not found")
    reason = re.sub(r"^\[[^\]]*\]\s*", "", str(exc).strip().splitlines()[0] if str(exc) else "")
    return input_error(folder, "model", f"pycolmap cannot read it: {reason or type(exc).__name__}")


def read_model(folder: str | Path) -> ColmapModel:
    """Read cameras, images and points3D (``.bin`` preferred, else ``.txt``) from a folder.

    points3D is optional (an empty array when absent).
    """
    folder = Path(folder)
    ext = model_ext(folder)
    if ext is None:
        raise input_error(folder, "cameras", "no cameras.bin or cameras.txt")
    pycolmap = import_pycolmap()
    rec = pycolmap.Reconstruction()
    with _readable(folder, ext) as src:
        try:
            (rec.read_binary if ext == ".bin" else rec.read_text)(src)
        except (ValueError, IndexError, RuntimeError, OSError) as e:
            raise _explain(folder, ext, e) from None
    cameras = {
        int(cid): ColmapCamera(
            int(cid), c.model.name, int(c.width), int(c.height), tuple(float(v) for v in c.params)
        )
        for cid, c in sorted(rec.cameras.items())
    }
    images = {}
    for iid, im in sorted(rec.images.items()):
        pose = im.cam_from_world()
        x, y, z, w = (float(v) for v in pose.rotation.quat)
        images[int(iid)] = ColmapImage(
            int(iid), (w, x, y, z), tuple(float(v) for v in pose.translation), int(im.camera_id),
            im.name,
        )
    ids = sorted(rec.points3D.keys())
    points = np.array([rec.points3D[i].xyz for i in ids], dtype=np.float64).reshape(-1, 3)
    colors = np.array([rec.points3D[i].color for i in ids], dtype=np.uint8).reshape(-1, 3)
    return ColmapModel(cameras, images, points, colors)


def to_reconstruction(model: ColmapModel):
    """A ``pycolmap.Reconstruction`` of the model (trivial rigs and frames, empty tracks)."""
    pycolmap = import_pycolmap()
    rec = pycolmap.Reconstruction()
    for c in model.cameras.values():
        rec.add_camera_with_trivial_rig(
            pycolmap.Camera(
                camera_id=c.id, model=c.model, width=c.width, height=c.height, params=list(c.params)
            )
        )
    for im in model.images.values():
        w, x, y, z = im.qvec
        pose = pycolmap.Rigid3d(
            pycolmap.Rotation3d(np.array([x, y, z, w], dtype=np.float64)),
            np.asarray(im.tvec, dtype=np.float64),
        )
        rec.add_image_with_trivial_frame(
            pycolmap.Image(name=im.name, camera_id=im.camera_id, image_id=im.id), pose
        )
    for p, c in zip(model.points, model.colors):
        rec.add_point3D(
            np.asarray(p, dtype=np.float64), pycolmap.Track(), np.asarray(c, dtype=np.uint8)
        )
    return rec


def write_reconstruction(rec, folder: str | Path, binary: bool = True) -> None:
    """Write a ``pycolmap.Reconstruction`` into ``folder`` as COLMAP binary or text files.

    The files are written into a temporary sibling folder and renamed into ``folder``
    one by one, so no file of the model is ever half-written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        (rec.write if binary else rec.write_text)(tmp)
        for f in sorted(tmp.iterdir()):
            os.replace(f, folder / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_model(model: ColmapModel, folder: str | Path, binary: bool) -> None:
    """Write a model as COLMAP text or binary files (no 2D observations, empty tracks)."""
    write_reconstruction(to_reconstruction(model), folder, binary)
