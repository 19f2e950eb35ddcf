"""Reading one image from disk with checks, and the undistortion cache.

Images are always read one at a time (a city has thousands). Every failure is a
``SwitchNerfError`` naming the file, the field and the value.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path, PurePath

import numpy as np

from switchnerf.errors import input_error
from switchnerf.scene.records import ImageRecord

IMAGE_SUFFIXES = (
    ".png",
    ".jpg",
    ".jpeg",
    ".JPG",
    ".JPEG",
    ".PNG",
    ".webp",
    ".bmp",
    ".tif",
    ".tiff",
)


def read_image(path: str | Path, width: int | None = None, height: int | None = None) -> np.ndarray:
    """Read an image file as uint8 [H, W, 3] RGB (grey is replicated, alpha dropped).

    When ``width`` and ``height`` are given the image must have exactly that size.
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise input_error(path, "image", "file not found")
    try:
        with Image.open(path) as im:
            im.load()  # decodes everything: a truncated file fails here
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as e:
        raise input_error(path, "image", f"cannot be decoded ({e})") from None
    if width is not None and height is not None and rgb.shape[:2] != (height, width):
        raise input_error(
            path,
            "size",
            f"image is {rgb.shape[1]}x{rgb.shape[0]}, its camera says {width}x{height}",
        )
    return rgb


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise input_error(path, "image", "file not found")
    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except (OSError, SyntaxError, ValueError) as e:
        raise input_error(path, "image", f"cannot be read ({e})") from None


_CACHE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*-[0-9a-f]{16}\.png$")


def undistorted_cache_path(cache_dir: Path, name: str) -> Path:
    """Where the undistorted copy of the source image ``name`` is cached in ``cache_dir``.

    ``name`` is the image's path as the dataset writes it (a transforms.json ``file_path``,
    a COLMAP image name). The copy is ``cache_dir/<stem>-<16 hex digits of sha256(name)>.png``:
    one flat file name keyed by the whole name, so no name (``..``, an absolute path,
    sub-folders) places it outside ``cache_dir`` or onto another image.

    >>> undistorted_cache_path(Path("c"), "../../x/img.jpg").name
    'img-b2a36d866f5aeb7e.png'
    """
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", PurePath(name.replace("\\", "/")).stem)
    stem = stem.lstrip(".")[:64] or "image"
    return Path(cache_dir) / f"{stem}-{hashlib.sha256(name.encode()).hexdigest()[:16]}.png"


def read_record_image(record: ImageRecord) -> np.ndarray:
    """The pixels of one record: uint8 [record.height, record.width, 3].

    For a record with ``undistort`` set, ``image_path`` is the cached undistorted copy
    (named by :func:`undistorted_cache_path`); it is made from the source on first use
    (written atomically) and read back afterwards. A cache path of any other form, or one
    that is the source itself, is refused: the cache never writes where an input points.
    """
    u = record.undistort
    if u is None:
        return read_image(record.image_path, record.width, record.height)
    cache = Path(record.image_path)
    if not _CACHE_NAME.match(cache.name) or cache.resolve() == Path(u.source_path).resolve():
        raise input_error(cache, "image", "refusing to write an undistorted copy there: not a "
                          "cache file name of switchnerf.scene.images.undistorted_cache_path")
    if cache.is_file() and cache.stat().st_mtime >= Path(u.source_path).stat().st_mtime:
        return read_image(cache, record.width, record.height)
    from switchnerf.io_utils import atomic_path, readable_image
    from switchnerf.scene.distortion import undistort_image

    src = read_image(u.source_path, u.width, u.height)
    out = undistort_image(
        src, u, (record.fx, record.fy, record.cx, record.cy), record.width, record.height
    )
    from PIL import Image

    with atomic_path(cache, verify=readable_image) as tmp:
        Image.fromarray(out).save(tmp, format="PNG", compress_level=1)
    return out


def find_by_stem(folder: Path) -> dict[str, Path]:
    """Map file stem -> path for the image files directly in ``folder``."""
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix in IMAGE_SUFFIXES}
