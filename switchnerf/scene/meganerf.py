"""Reader for Mega-NeRF datasets (REFERENCE.md §3).

Layout::

    <root>/coordinates.pt                {'origin_drb': [3], 'pose_scale_factor': float}
    <root>/{train,val}/metadata/<stem>.pt {'H', 'W', 'c2w' [3, 4], 'intrinsics' [4], 'distortion'}
    <root>/{train,val}/rgbs/<stem>.{png,jpg,...}

An image in ``rgbs/`` without its metadata file is not used, and one warning names such
images; a metadata file without its image is an error.

Frames. The metadata c2w lives in Mega-NeRF's *normalised DRB* frame (x down, y right,
z back; translation already ``(t - origin_drb) / pose_scale_factor``) with OpenGL camera
axes. The internal world is ``world = DRB_TO_WORLD @ drb`` = (y, -z, -x): a proper rotation
(det +1), no scaling, so world units are Mega-NeRF's normalised units and
``metres_per_unit = pose_scale_factor``; ``scene.source_to_world`` holds that rotation.
The per-scene ``ray_altitude_range`` [top, ground] is in metres along DRB x (down), and
maps to world z as ``z = -(a - origin_drb[0]) / pose_scale_factor``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from switchnerf.errors import input_error
from switchnerf.scene.bounds import estimate_bounds
from switchnerf.scene.images import find_by_stem
from switchnerf.scene.poses import (
    DRB_TO_WORLD,
    check_matrix,
    check_rotation,
    holdout_split,
    homogeneous,
    rigid,
)
from switchnerf.scene.types import SPLITS, ImageRecord, Scene

__all__ = ["altitude_m_to_world", "load_pt", "read_meganerf"]


def load_pt(path: Path) -> dict:
    """torch.load a metadata dict (tensors and plain values only), errors named."""
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise input_error(path, None, "file not found") from None
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for corrupt or unsafe pickles
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
        raise input_error(path, None, f"cannot be loaded ({type(e).__name__}: {first})") from None
    if not isinstance(data, dict):
        raise input_error(path, None, f"expected a dict, got {type(data).__name__}")
    return data


def _scalar_int(path, data, key) -> int:
    if key not in data:
        raise input_error(path, key, "missing")
    v = data[key]
    v = v.item() if hasattr(v, "item") and getattr(v, "numel", lambda: 1)() == 1 else v
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise input_error(path, key, f"{v!r} is not a positive integer")
    return v


def altitude_m_to_world(
    altitude_range_m, origin_drb: np.ndarray, scale: float
) -> tuple[float, float]:
    """Mega-NeRF [top, ground] (metres, DRB x down) -> internal (ground_z, top_z)."""
    top, ground = (float(a) for a in altitude_range_m)
    return -(ground - float(origin_drb[0])) / scale, -(top - float(origin_drb[0])) / scale


def _read_coordinates(root: Path) -> tuple[np.ndarray, float]:
    path = root / "coordinates.pt"
    data = load_pt(path)
    if "origin_drb" not in data:
        raise input_error(path, "origin_drb", "missing")
    origin = check_matrix(path, "origin_drb", data["origin_drb"], (3,))
    if "pose_scale_factor" not in data:
        raise input_error(path, "pose_scale_factor", "missing")
    s = data["pose_scale_factor"]
    s = float(s.item() if hasattr(s, "item") else s)
    if not np.isfinite(s) or s <= 0:
        raise input_error(path, "pose_scale_factor", f"{s!r} is not a positive finite number")
    return origin, s


def _read_record(
    meta: Path, rgbs: dict[str, Path], split: str, index: int, near: float
) -> ImageRecord:
    data = load_pt(meta)
    h, w = _scalar_int(meta, data, "H"), _scalar_int(meta, data, "W")
    for key in ("c2w", "intrinsics"):
        if key not in data:
            raise input_error(meta, key, "missing")
    c2w_drb = check_matrix(meta, "c2w", data["c2w"], (3, 4))
    check_rotation(meta, "c2w", c2w_drb[:, :3])
    fx, fy, cx, cy = check_matrix(meta, "intrinsics", data["intrinsics"], (4,))
    if fx <= 0 or fy <= 0:
        raise input_error(
            meta, "intrinsics", f"focal lengths must be positive, got fx={fx}, fy={fy}"
        )
    if meta.stem not in rgbs:
        raise input_error(meta, "rgbs", f"no image {meta.stem}.* in {meta.parent.parent / 'rgbs'}")
    c2w = homogeneous(c2w_drb)
    c2w[:3, :3] = DRB_TO_WORLD @ c2w[:3, :3]
    c2w[:3, 3] = DRB_TO_WORLD @ c2w[:3, 3]
    return ImageRecord(
        index=index,
        split=split,
        c2w=c2w,
        fx=float(fx),
        fy=float(fy),
        cx=float(cx),
        cy=float(cy),
        width=w,
        height=h,
        image_path=rgbs[meta.stem],
        near=near,
    )


def _warn_unused_images(split_dir: Path, shown: int = 5) -> list[Path]:
    """Warn once, naming them, about images in ``split_dir/rgbs`` that have no metadata
    file in ``split_dir/metadata`` (they are not used); returns them."""
    metas = {p.stem for p in (split_dir / "metadata").glob("*.pt")}
    unused = [p for stem, p in find_by_stem(split_dir / "rgbs").items() if stem not in metas]
    if unused:
        names = ", ".join(p.name for p in unused[:shown])
        more = f" and {len(unused) - shown} more" if len(unused) > shown else ""
        warnings.warn(f"{split_dir / 'rgbs'}: {len(unused)} image(s) without a metadata file in "
                      f"{split_dir / 'metadata'} are not used: {names}{more}",
                      UserWarning, stacklevel=3)
    return unused


def read_meganerf(
    root: str | Path, *, altitude_range_m=None, bbox=None, name: str | None = None
) -> Scene:
    """Read a Mega-NeRF dataset folder into a Scene (world: rotated normalised DRB, z up).

    altitude_range_m: Mega-NeRF's [top, ground] in metres (DRB x), or None to estimate;
    bbox: [[x, y, z], [x, y, z]] in world units, or None to estimate. A missing ``val``
    folder holds out every 8th training image (name order) as val; an empty split folder
    is an error. Default near per ray is 1 metre (1 / pose_scale_factor), far is open.
    """
    root = Path(root)
    origin, scale = _read_coordinates(root)
    near = 1.0 / scale
    metas: dict[str, list[Path]] = {}
    for split in SPLITS:
        folder = root / split / "metadata"
        if not folder.is_dir():
            if split == "train":
                raise input_error(
                    folder, "train", "missing: a Mega-NeRF dataset needs train/metadata"
                )
            continue
        metas[split] = sorted(folder.glob("*.pt"))
        if not metas[split]:
            raise input_error(folder, split, "empty split: no *.pt metadata files")
    for split in metas:
        _warn_unused_images(root / split)
    estimated = {}
    if "val" not in metas:
        train_i, val_i = holdout_split(len(metas["train"]))
        all_train = metas["train"]
        metas = {"train": [all_train[i] for i in train_i], "val": [all_train[i] for i in val_i]}
        estimated["val_split"] = True
    frames: dict[str, list[ImageRecord]] = {}
    for split, files in metas.items():
        rgb_cache: dict[Path, dict[str, Path]] = {}
        frames[split] = []
        for i, meta in enumerate(files):
            rgb_dir = meta.parent.parent / "rgbs"
            if rgb_dir not in rgb_cache:
                rgb_cache[rgb_dir] = find_by_stem(rgb_dir)
            frames[split].append(_read_record(meta, rgb_cache[rgb_dir], split, i, near))
    alt = None if altitude_range_m is None else altitude_m_to_world(altitude_range_m, origin, scale)
    c2ws = np.stack([r.c2w for recs in frames.values() for r in recs])
    box, alt, est = estimate_bounds(c2ws, None, None if bbox is None else np.asarray(bbox), alt)
    estimated.update(est)
    return Scene(
        name=name or root.name,
        root=root,
        format="mega-nerf",
        frames=frames,
        bbox=box,
        altitude_range=alt,
        metres_per_unit=scale,
        source_to_world=rigid(DRB_TO_WORLD),
        estimated=estimated,
        extra={
            "origin_drb": origin.tolist(),
            "pose_scale_factor": scale,
            "ray_altitude_range_m": None
            if altitude_range_m is None
            else [float(a) for a in altitude_range_m],
        },
    )
