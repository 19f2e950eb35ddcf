"""Where the C++/CUDA sources of the native ops are, and the hash that names a build.

Torch-free on purpose: ``setup.py`` loads this file by path to stamp a prebuilt
extension with the same hash the runtime loader computes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

SOURCE_SUFFIXES = (".h", ".cpp", ".cu")
"""Files that make up the native ops; all of them enter the hash."""

BUILD_RECIPE = "v2 -O3 -ffp-contract=off openmp march-native-unless-portable"
"""Changes to how the sources are compiled change the hash too (bump when flags change)."""

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # .../switchnerf


def source_dirs() -> list[Path]:
    """Candidate source folders, first match wins: the repository's ``cuda/`` (a checkout or
    an editable install), then ``switchnerf/_native_src`` (a copy made when building a wheel)."""
    return [_PACKAGE_DIR.parent / "cuda", _PACKAGE_DIR / "_native_src"]


def find_source_dir() -> Path | None:
    """The folder holding ``bindings.cpp`` and the other sources, or None."""
    for d in source_dirs():
        if (d / "bindings.cpp").is_file():
            return d
    return None


def source_files(src: Path) -> list[Path]:
    """All source files in ``src``, sorted by name."""
    return sorted(p for p in src.iterdir() if p.is_file() and p.suffix in SOURCE_SUFFIXES)


def source_hash(src: Path) -> str:
    """sha256 (first 16 hex digits) of the sources' names and contents and the recipe."""
    h = hashlib.sha256(BUILD_RECIPE.encode())
    for p in source_files(src):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]
