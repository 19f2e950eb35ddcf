"""Where the C++/CUDA sources of the native ops are, how they are compiled, and the hash
that names a build.

The sources are package data in ``switchnerf/csrc`` (a checkout, an editable install and a
wheel all read them there). Torch-free on purpose: ``setup.py`` loads this file by path to
compile a prebuilt extension with the same flags and stamp it with the same hash the
runtime loader computes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

SOURCE_SUFFIXES = (".h", ".cpp", ".cu")
"""Files that make up the native ops; all of them enter the hash."""

BUILD_RECIPE = "v3 -O3 -ffp-contract=off -fno-math-errno openmp march-native-unless-portable"
"""Changes to how the sources are compiled change the hash too (bump when flags change)."""

SOURCE_DIR = Path(__file__).resolve().parent.parent / "csrc"  # switchnerf/csrc


def cxx_flags(*, tune_for_host: bool, openmp: bool = True) -> list[str]:
    """Host-compiler flags of every build (the JIT loader's and ``setup.py``'s).

    ``-ffp-contract=off``: no implicit FMAs, so results equal the torch reference bit for
    bit (explicit ``fmaf`` calls stay, and with ``-march=native`` become one instruction).
    ``-fno-math-errno``: ``sqrt`` vectorises (it no longer has to set ``errno``; the values
    are IEEE's either way).
    """
    flags = ["-O3", "-ffp-contract=off", "-fno-math-errno"]
    if tune_for_host:
        flags.append("-march=native")
    if openmp:
        flags.append("-fopenmp")
    return flags


CUDA_FLAGS = ["-O3"]
"""nvcc flags of every build."""


def find_source_dir() -> Path | None:
    """``switchnerf/csrc`` when it holds ``bindings.cpp`` (it is package data), else None."""
    return SOURCE_DIR if (SOURCE_DIR / "bindings.cpp").is_file() else None


def source_files(src: Path) -> list[Path]:
    """All source files in ``src``, sorted by name."""
    return sorted(p for p in src.iterdir() if p.is_file() and p.suffix in SOURCE_SUFFIXES)


def source_hash(src: Path) -> str:
    """sha256 (first 16 hex digits) of the sources' names and contents and the recipe."""
    h = hashlib.sha256(BUILD_RECIPE.encode())
    for p in source_files(src):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]
