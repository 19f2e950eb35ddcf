"""Checks of a folder of photos before structure from motion: the image files directly in
it (by suffix, name order), each one decodable, all of one size.

Every failure is one ``SwitchNerfError`` naming the folder or the file.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from switchnerf.errors import input_error
from switchnerf.scene.images import IMAGE_SUFFIXES


def photo_names(folder: str | Path) -> list[str]:
    """Names of the image files directly in ``folder``, sorted; an error when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise input_error(folder, "images", "not a folder" if folder.exists() else "does not exist")
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix in IMAGE_SUFFIXES)
    if not names:
        kinds = ", ".join(sorted({s.lower() for s in IMAGE_SUFFIXES}))
        raise input_error(folder, "images", f"no image files ({kinds}) in the folder")
    return names


def decoded_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file after decoding all of it (JPEG at 1/8 scale: a
    truncated or corrupt file fails either way)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            size = (int(im.width), int(im.height))
            if im.format == "JPEG":
                im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
            im.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise input_error(path, "image", f"cannot be decoded ({e})") from None
    return size


def check_photos(folder: str | Path, names: list[str], on_image=None) -> tuple[int, int]:
    """Decode every photo; all must have one size. Returns (width, height).

    ``on_image(done, total)`` is called after each file. A photo whose size differs from
    the most common one is named in the error.
    """
    folder = Path(folder)
    sizes = {}
    for k, name in enumerate(names):
        sizes[name] = decoded_size(folder / name)
        if on_image is not None:
            on_image(k + 1, len(names))
    (common, count), *_ = Counter(sizes.values()).most_common(1)
    for name, size in sizes.items():
        if size != common:
            raise input_error(
                folder / name,
                "size",
                f"{size[0]}x{size[1]}, but {count} of the {len(names)} photos are "
                f"{common[0]}x{common[1]} (one camera size per folder)",
            )
    return common
