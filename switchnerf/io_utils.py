"""Atomic, verified file writes: write to a temporary name in the same folder, check what
was written, fsync, rename.

Every file the project writes goes through :func:`atomic_path` (or the two helpers built
on it), so an existing file is replaced only by a complete, verified new one: a writer
that fails, is interrupted, or silently writes nothing (a full disk, an encoder that died)
leaves the old file as it was, and the failure is one :class:`SwitchNerfError` line naming
the file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from switchnerf.errors import SwitchNerfError, one_line

Verify = Callable[[Path], object]
"""A check of a written temporary file: raises (any exception) when it is unusable."""


def _unchanged(path: Path) -> str:
    return "the existing file is unchanged" if path.exists() else "nothing was written"


def _write_error(path: Path, exc: OSError) -> SwitchNerfError:
    reason = exc.strerror or one_line(str(exc)) or type(exc).__name__
    return SwitchNerfError(f"{path}: cannot be written ({reason}); {_unchanged(path)}")


def _names(exc: OSError, tmp: Path) -> bool:
    """Whether an OSError is about the temporary file (not some other file of the writer)."""
    return any(f is not None and os.fspath(f) == os.fspath(tmp)
               for f in (exc.filename, exc.filename2))


def check_written(tmp: Path, path: Path, verify: Verify | None = None, *,
                  allow_empty: bool = False) -> None:
    """Raise a one-line SwitchNerfError naming ``path`` unless ``tmp`` is a non-empty file
    (or empty with ``allow_empty``) that ``verify`` accepts."""
    try:
        size = tmp.stat().st_size
    except FileNotFoundError:
        raise SwitchNerfError(f"{path}: the writer produced no file; {_unchanged(path)}") from None
    if size == 0 and not allow_empty:
        raise SwitchNerfError(f"{path}: the written file is empty (disk full?); {_unchanged(path)}")
    if verify is None:
        return
    try:
        verify(tmp)
    except Exception as exc:  # any reader failure means an unusable file
        why = one_line(str(exc)) or type(exc).__name__
        raise SwitchNerfError(f"{path}: the written file does not read back ({why}); "
                              f"{_unchanged(path)}") from exc


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, verify: Verify | None = None,
                allow_empty: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the body returns, check the file written
    there (:func:`check_written`: non-empty unless ``allow_empty``, then ``verify``), fsync
    it and rename it onto ``path``.

    On an exception, or when the check fails, the temporary file is removed and ``path`` is
    left as it was. OSErrors of this function and OSErrors of the body about the temporary
    file (a full disk, an unwritable folder) become one SwitchNerfError line naming
    ``path``. The temporary name keeps the suffix of ``path`` so writers that pick a format
    from the suffix (imageio, open3d) still work.
    """
    with atomic_paths([path], verify=[verify], allow_empty=allow_empty) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_paths(paths, *, verify=None, allow_empty: bool = False) -> Iterator[list[Path]]:
    """:func:`atomic_path` for files that belong together (a JSON and its PLY, a partition
    and its map): yield one temporary path per path; when the body returns, check every
    file (``verify``: one Verify or None per path), and only when all pass rename them all.
    A failed write or check replaces none of them."""
    paths = [Path(p) for p in paths]
    checks = list(verify) if verify is not None else [None] * len(paths)
    if len(checks) != len(paths):
        raise ValueError(f"{len(paths)} paths but {len(checks)} verify steps")
    tmps: list[Path] = []
    try:
        for path in paths:
            tmps.append(_temp_beside(path))
        try:
            yield list(tmps)
        except OSError as exc:
            for path, tmp in zip(paths, tmps):
                if _names(exc, tmp):
                    raise _write_error(path, exc) from exc
            raise
        for path, tmp, check in zip(paths, tmps, checks):
            check_written(tmp, path, check, allow_empty=allow_empty)
        for path, tmp in zip(paths, tmps):
            try:
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except OSError as exc:
                raise _write_error(path, exc) from exc
        for folder in {path.parent for path in paths}:
            _fsync_dir(folder)
    except BaseException:
        for tmp in tmps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise


_TEMP_NAME = re.compile(r"^\..+\.tmp[.\w]*$")


def is_temporary_name(name: str) -> bool:
    """Whether ``name`` is one :func:`_temp_beside` makes (``.<stem>.XXXX.tmp<suffix>``):
    what an interrupted atomic write leaves behind.

    >>> is_temporary_name(".step_00000006.k2j3.tmp.pt"), is_temporary_name("step_00000006.pt")
    (True, False)
    """
    return _TEMP_NAME.match(name) is not None


def _temp_beside(path: Path) -> Path:
    """An empty new file ``.<stem>.XXXX.tmp<suffix>`` in ``path``'s folder (made if needed)."""
    if path.is_dir():
        raise SwitchNerfError(f"{path}: is a folder, expected a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                                   dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    os.close(fd)
    return Path(tmp)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _nearest_existing(folder: Path) -> Path:
    folder = Path(os.path.abspath(folder))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _check_parent(path: Path, flag: str) -> None:
    parent = _nearest_existing(path.parent)
    if not parent.is_dir():
        raise SwitchNerfError(f"{flag}: {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SwitchNerfError(f"{flag}: {path}: folder {parent} is not writable")


def check_output_file(path: str | os.PathLike, flag: str) -> None:
    """Refuse, before any work, an output file that cannot be written: ``path`` is a
    folder, or the folder it goes in is a file or not writable. Errors name ``flag``."""
    path = Path(path)
    if path.is_dir():
        raise SwitchNerfError(f"{flag}: {path}: is a folder, expected a file name")
    _check_parent(path, flag)


def check_output_dir(path: str | os.PathLike, flag: str) -> None:
    """Refuse, before any work, an output folder that cannot be used: ``path`` is a file,
    or it (or the folder it would be made in) is not writable. Errors name ``flag``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SwitchNerfError(f"{flag}: {path}: is a file, expected a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise SwitchNerfError(f"{flag}: {path}: folder is not writable")
        return
    _check_parent(path, flag)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (the same inode when both exist, else the same
    absolute path after resolving links)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return a.samefile(b)
    return a.resolve() == b.resolve()


def same_bytes(data: bytes) -> Verify:
    """A verify step: the written file holds exactly ``data``."""

    def check(tmp: Path) -> None:
        if tmp.read_bytes() != data:
            raise ValueError(f"holds {tmp.stat().st_size} bytes that differ from the "
                             f"{len(data)} bytes written")

    return check


def readable_image(tmp: Path) -> None:
    """A verify step: the file decodes completely as an image (Pillow)."""
    from PIL import Image

    with Image.open(tmp) as im:
        im.load()


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None (JSON has no NaN).

    >>> json_safe({"a": float("nan"), "b": [1.0, float("inf")], "c": 2})
    {'a': None, 'b': [1.0, None], 'c': 2}
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def json_bytes(obj: Any) -> bytes:
    """The bytes :func:`write_json_atomic` writes for ``obj`` (indented JSON, newline;
    NaN and infinities as null: JSON has no such numbers)."""
    return (json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False)
            + "\n").encode()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, verified by reading it back."""
    with atomic_path(path, verify=same_bytes(data), allow_empty=not data) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically, verified by reading it back."""
    write_bytes_atomic(path, json_bytes(obj))
