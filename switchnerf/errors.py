"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class SwitchNerfError(Exception):
    """An expected mistake in input (a file, a field, a value). Printed without a traceback."""

    exit_code = 2


def input_error(path, field: str | None, message: str) -> SwitchNerfError:
    """Build an error naming the file, the field and what is wrong with its value.

    >>> str(input_error("a/b.pt", "c2w", "has shape (3, 3), expected (3, 4)"))
    'a/b.pt: c2w: has shape (3, 3), expected (3, 4)'
    """
    where = str(path) if path is not None else "<input>"
    if field:
        return SwitchNerfError(f"{where}: {field}: {message}")
    return SwitchNerfError(f"{where}: {message}")
