"""The content fingerprint of a scene: what a ray store was built from, wherever the
dataset folder lies (``scene_fingerprint``), and the older rule that hashed locations
(``fingerprint_rule_1``, kept to adopt stores built under it)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from switchnerf.errors import input_error
from switchnerf.scene.types import SPLITS, Scene

__all__ = ["FINGERPRINT_RULE", "SAMPLE_BYTES", "fingerprint_rule_1", "scene_fingerprint"]

FINGERPRINT_RULE = 2
"""The rule ``scene_fingerprint`` follows, recorded in every manifest (rule 1, before the
key existed, hashed absolute paths and mtimes)."""
SAMPLE_BYTES = 1 << 16
"""Bytes hashed at each end of an image file (``scene_fingerprint``)."""


def scene_fingerprint(scene: Scene) -> str:
    """SHA-256 of a scene's content, wherever its dataset folder lies.

    It hashes the scene format and, per image (train, then val): split and index, the
    file's path relative to the dataset folder (``scene.root``, or its parent when the root
    is a file; the bare file name when no relative path exists), the file's size in bytes,
    the SHA-256 of its first and last ``SAMPLE_BYTES`` bytes (the whole file when it is at
    most twice that), the size in pixels, pose, intrinsics, ray bounds and undistortion.
    For an undistorted image the distorted source file is the one read. No absolute path
    and no mtime: moving, copying or touching the dataset keeps the fingerprint; another
    image, or the same image edited, changes its size or its first or last bytes and so the
    fingerprint. Only an edit that keeps the file size and lies wholly in the middle of a
    file over twice ``SAMPLE_BYTES`` goes unnoticed (rebuild with ``scene prepare
    --force``). Cost: one open and at most two ``SAMPLE_BYTES`` reads per image, never a
    whole large file. Raises ``SwitchNerfError`` for a missing image."""
    base = Path(scene.root)
    base = base.parent if base.is_file() else base
    items: list = [scene.format]
    for split in SPLITS:
        for r in scene.frames.get(split, []):
            und = getattr(r, "undistort", None)  # pixels made from a distorted source
            path = Path(und.source_path if und is not None else r.image_path)
            size, sample = _file_sample_digest(path)
            und_items = None if und is None else [und.width, und.height, und.fx, und.fy,
                                                  und.cx, und.cy, und.k1, und.k2, und.k3,
                                                  und.p1, und.p2]
            items.append([split, r.index, _relative_name(path, base), size, sample, r.width,
                          r.height, np.asarray(r.c2w, dtype=np.float64).reshape(-1).tolist(),
                          r.fx, r.fy, r.cx, r.cy, r.near, r.far, und_items])
    blob = json.dumps(items, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def _relative_name(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` (POSIX form, ``..`` where it lies outside), or its name
    when there is no relative path (another drive)."""
    try:
        return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(base))).as_posix()
    except ValueError:
        return path.name


def _file_sample_digest(path: Path) -> tuple[int, str]:
    """(size in bytes, SHA-256 of the first and last ``SAMPLE_BYTES`` bytes) of a file."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            digest = hashlib.sha256(f.read(SAMPLE_BYTES))
            if size > SAMPLE_BYTES:
                f.seek(max(SAMPLE_BYTES, size - SAMPLE_BYTES))
                digest.update(f.read(SAMPLE_BYTES))
    except FileNotFoundError:
        raise input_error(path, None, "image file not found") from None
    return size, digest.hexdigest()


def fingerprint_rule_1(scene: Scene) -> str:
    """The fingerprint of stores built before ``FINGERPRINT_RULE`` 2: absolute paths, sizes,
    mtimes and the cameras. Only used to keep such a store while its dataset has not moved."""
    items: list = [scene.format]
    for split in SPLITS:
        for r in scene.frames.get(split, []):
            und = getattr(r, "undistort", None)
            path = Path(und.source_path if und is not None else r.image_path)
            try:
                st = path.stat()
            except OSError:
                raise input_error(path, None, "image file not found") from None
            items.append([split, r.index, str(path), st.st_size, st.st_mtime_ns, r.width,
                          r.height, np.asarray(r.c2w, dtype=np.float64).reshape(-1).tolist(),
                          r.fx, r.fy, r.cx, r.cy, r.near, r.far, repr(und)])
    blob = json.dumps(items, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()
