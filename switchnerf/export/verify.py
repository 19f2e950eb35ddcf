"""Verify steps for written PLY files (see ``switchnerf.io_utils.atomic_path``): the file
open3d just wrote must read back with the element count that was written."""

from __future__ import annotations

from pathlib import Path

_READERS = {
    "points": ("read_point_cloud", "points"),
    "triangles": ("read_triangle_mesh", "triangles"),
    "lines": ("read_line_set", "lines"),
}


def ply_reads_back(kind: str, count: int):
    """A verify step: the PLY holds exactly ``count`` ``kind`` (points, triangles, lines).

    >>> ply_reads_back("points", 3).__name__
    'check_points'
    """
    reader, attr = _READERS[kind]

    def check(tmp: Path) -> None:
        import open3d as o3d

        got = len(getattr(getattr(o3d.io, reader)(str(tmp)), attr))
        if got != count:
            raise ValueError(f"reads back {got} {kind}, {count} were written")

    check.__name__ = f"check_{kind}"
    return check
