"""Own parser (and writer) of COLMAP sparse models, text and binary; no pycolmap needed.

Only what the scene needs is kept: cameras (model, size, params), images (pose, camera,
name; 2D observations are skipped) and 3D points (xyz, rgb). COLMAP poses are
world->camera with OpenCV camera axes: ``x_cam = R(q) x_world + t``, q = (qw, qx, qy, qz).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from switchnerf.errors import input_error

# model name -> (COLMAP model id, number of params)
CAMERA_MODELS = {
    "SIMPLE_PINHOLE": (0, 3),
    "PINHOLE": (1, 4),
    "SIMPLE_RADIAL": (2, 4),
    "RADIAL": (3, 5),
    "OPENCV": (4, 8),
    "OPENCV_FISHEYE": (5, 8),
    "FULL_OPENCV": (6, 12),
    "FOV": (7, 5),
    "SIMPLE_RADIAL_FISHEYE": (8, 4),
    "RADIAL_FISHEYE": (9, 5),
    "THIN_PRISM_FISHEYE": (10, 12),
}
MODEL_BY_ID = {mid: (name, n) for name, (mid, n) in CAMERA_MODELS.items()}


@dataclass(frozen=True)
class ColmapCamera:
    id: int
    model: str
    width: int
    height: int
    params: tuple[float, ...]


@dataclass(frozen=True)
class ColmapImage:
    """qvec: (qw, qx, qy, qz), tvec: [3]; world->camera, OpenCV axes."""

    id: int
    qvec: tuple[float, float, float, float]
    tvec: tuple[float, float, float]
    camera_id: int
    name: str


@dataclass
class ColmapModel:
    """points: float64 [M, 3]; colors: uint8 [M, 3]."""

    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    points: np.ndarray
    colors: np.ndarray


def qvec_to_rotmat(q) -> np.ndarray:
    """Unit quaternion (w, x, y, z) -> rotation [3, 3]."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotmat_to_qvec(r: np.ndarray) -> np.ndarray:
    """Rotation [3, 3] -> unit quaternion (w, x, y, z) with w >= 0."""
    r = np.asarray(r, dtype=np.float64)
    k = (
        np.array(
            [
                [r[0, 0] - r[1, 1] - r[2, 2], 0, 0, 0],
                [r[1, 0] + r[0, 1], r[1, 1] - r[0, 0] - r[2, 2], 0, 0],
                [r[2, 0] + r[0, 2], r[2, 1] + r[1, 2], r[2, 2] - r[0, 0] - r[1, 1], 0],
                [
                    r[2, 1] - r[1, 2],
                    r[0, 2] - r[2, 0],
                    r[1, 0] - r[0, 1],
                    r[0, 0] + r[1, 1] + r[2, 2],
                ],
            ]
        )
        / 3.0
    )
    vals, vecs = np.linalg.eigh(k)
    q = vecs[[3, 0, 1, 2], np.argmax(vals)]
    return -q if q[0] < 0 else q


# ---- text -------------------------------------------------------------------------------------


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise input_error(path, None, "file not found") from None
    except UnicodeDecodeError as e:
        raise input_error(path, None, f"is not text ({e})") from None
    return [ln for ln in text.splitlines() if not ln.startswith("#")]


def _num(path, field, tok, kind=float):
    try:
        return kind(tok)
    except ValueError:
        raise input_error(path, field, f"{tok!r} is not a number") from None


def read_cameras_text(path: Path) -> dict[int, ColmapCamera]:
    cams = {}
    for ln in _lines(path):
        el = ln.split()
        if not el:
            continue
        if len(el) < 4:
            raise input_error(path, "camera", f"line {ln!r} has too few fields")
        cid = _num(path, "CAMERA_ID", el[0], int)
        model = el[1]
        if model not in CAMERA_MODELS:
            raise input_error(path, "MODEL", f"unknown camera model {model!r} (camera {cid})")
        params = tuple(_num(path, "PARAMS", t) for t in el[4:])
        if len(params) != CAMERA_MODELS[model][1]:
            raise input_error(
                path,
                "PARAMS",
                f"camera {cid} ({model}) has {len(params)} params, "
                f"expected {CAMERA_MODELS[model][1]}",
            )
        cams[cid] = ColmapCamera(
            cid, model, _num(path, "WIDTH", el[2], int), _num(path, "HEIGHT", el[3], int), params
        )
    return cams


def read_images_text(path: Path) -> dict[int, ColmapImage]:
    lines = _lines(path)
    while lines and not lines[-1].strip():
        lines.pop()
    images = {}
    for k in range(0, len(lines), 2):  # header line, then the (possibly empty) 2D points line
        el = lines[k].split()
        if len(el) < 10:
            raise input_error(path, "image", f"line {lines[k]!r} has too few fields")
        iid = _num(path, "IMAGE_ID", el[0], int)
        q = tuple(_num(path, "QVEC", t) for t in el[1:5])
        t = tuple(_num(path, "TVEC", t) for t in el[5:8])
        images[iid] = ColmapImage(iid, q, t, _num(path, "CAMERA_ID", el[8], int), " ".join(el[9:]))
    return images


def read_points_text(path: Path) -> tuple[np.ndarray, np.ndarray]:
    xyz, rgb = [], []
    for ln in _lines(path):
        el = ln.split()
        if len(el) < 8:
            continue
        xyz.append([_num(path, "XYZ", t) for t in el[1:4]])
        rgb.append([_num(path, "RGB", t, int) for t in el[4:7]])
    return (
        np.asarray(xyz, dtype=np.float64).reshape(-1, 3),
        np.asarray(rgb, dtype=np.uint8).reshape(-1, 3),
    )


# ---- binary -----------------------------------------------------------------------------------


class _Reader:
    def __init__(self, path: Path):
        self.path = path
        try:
            self.buf = path.read_bytes()
        except FileNotFoundError:
            raise input_error(path, None, "file not found") from None
        self.pos = 0

    def take(self, fmt: str, field: str):
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.buf):
            raise input_error(self.path, field, f"file truncated at byte {self.pos}")
        out = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return out

    def skip(self, nbytes: int, field: str) -> None:
        if self.pos + nbytes > len(self.buf):
            raise input_error(self.path, field, f"file truncated at byte {self.pos}")
        self.pos += nbytes

    def cstring(self, field: str) -> str:
        end = self.buf.find(b"\0", self.pos)
        if end < 0:
            raise input_error(self.path, field, f"unterminated string at byte {self.pos}")
        s = self.buf[self.pos : end].decode("utf-8", errors="replace")
        self.pos = end + 1
        return s


def read_cameras_binary(path: Path) -> dict[int, ColmapCamera]:
    r = _Reader(path)
    cams = {}
    for _ in range(r.take("Q", "num_cameras")[0]):
        cid, mid, w, h = r.take("iiQQ", "camera")
        if mid not in MODEL_BY_ID:
            raise input_error(path, "model_id", f"unknown camera model id {mid} (camera {cid})")
        name, n = MODEL_BY_ID[mid]
        cams[cid] = ColmapCamera(cid, name, int(w), int(h), r.take("d" * n, "params"))
    return cams


def read_images_binary(path: Path) -> dict[int, ColmapImage]:
    r = _Reader(path)
    images = {}
    for _ in range(r.take("Q", "num_images")[0]):
        iid, qw, qx, qy, qz, tx, ty, tz, cid = r.take("idddddddi", "image")
        name = r.cstring("name")
        r.skip(24 * r.take("Q", "num_points2D")[0], "points2D")
        images[iid] = ColmapImage(iid, (qw, qx, qy, qz), (tx, ty, tz), cid, name)
    return images


def read_points_binary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    r = _Reader(path)
    n = r.take("Q", "num_points")[0]
    xyz, rgb = np.zeros((n, 3)), np.zeros((n, 3), np.uint8)
    for k in range(n):
        vals = r.take("QdddBBBd", "point3D")
        xyz[k], rgb[k] = vals[1:4], vals[4:7]
        r.skip(8 * r.take("Q", "track_length")[0], "track")
    return xyz, rgb


def read_model(folder: str | Path) -> ColmapModel:
    """Read cameras, images and points3D (``.bin`` preferred, else ``.txt``) from a folder.

    points3D is optional (an empty array when absent).
    """
    folder = Path(folder)
    ext = ".bin" if (folder / "cameras.bin").is_file() else ".txt"
    if not (folder / f"cameras{ext}").is_file():
        raise input_error(folder, "cameras", "no cameras.bin or cameras.txt")
    if ext == ".bin":
        cams, imgs = (
            read_cameras_binary(folder / "cameras.bin"),
            read_images_binary(folder / "images.bin"),
        )
        pts_path = folder / "points3D.bin"
        pts = read_points_binary(pts_path) if pts_path.is_file() else None
    else:
        cams, imgs = (
            read_cameras_text(folder / "cameras.txt"),
            read_images_text(folder / "images.txt"),
        )
        pts_path = folder / "points3D.txt"
        pts = read_points_text(pts_path) if pts_path.is_file() else None
    if pts is None:
        pts = (np.zeros((0, 3)), np.zeros((0, 3), np.uint8))
    return ColmapModel(cams, imgs, pts[0], pts[1])


def write_model(model: ColmapModel, folder: str | Path, binary: bool) -> None:
    """Write a model as COLMAP text or binary files (no 2D observations, empty tracks)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if binary:
        out = bytearray(struct.pack("<Q", len(model.cameras)))
        for c in model.cameras.values():
            out += struct.pack("<iiQQ", c.id, CAMERA_MODELS[c.model][0], c.width, c.height)
            out += struct.pack("<" + "d" * len(c.params), *c.params)
        (folder / "cameras.bin").write_bytes(bytes(out))
        out = bytearray(struct.pack("<Q", len(model.images)))
        for im in model.images.values():
            out += struct.pack("<idddddddi", im.id, *im.qvec, *im.tvec, im.camera_id)
            out += im.name.encode() + b"\0" + struct.pack("<Q", 0)
        (folder / "images.bin").write_bytes(bytes(out))
        out = bytearray(struct.pack("<Q", len(model.points)))
        for k, (p, c) in enumerate(zip(model.points, model.colors)):
            out += struct.pack("<QdddBBBdQ", k + 1, *p, *(int(v) for v in c), 0.0, 0)
        (folder / "points3D.bin").write_bytes(bytes(out))
        return
    (folder / "cameras.txt").write_text(
        "# Camera list\n"
        + "".join(
            f"{c.id} {c.model} {c.width} {c.height} {' '.join(repr(float(p)) for p in c.params)}\n"
            for c in model.cameras.values()
        )
    )
    (folder / "images.txt").write_text(
        "# Image list\n"
        + "".join(
            f"{im.id} {' '.join(repr(float(v)) for v in (*im.qvec, *im.tvec))} "
            f"{im.camera_id} {im.name}\n\n"
            for im in model.images.values()
        )
    )
    (folder / "points3D.txt").write_text(
        "# 3D point list\n"
        + "".join(
            f"{k + 1} {p[0]!r} {p[1]!r} {p[2]!r} {c[0]} {c[1]} {c[2]} 0.0\n"
            for k, (p, c) in enumerate(zip(model.points.tolist(), model.colors.tolist()))
        )
    )
