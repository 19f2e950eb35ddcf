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


def one_line(text: str, limit: int = 400) -> str:
    """``text`` as one line: lines joined with " | ", runs of spaces collapsed, cut to
    ``limit`` characters with an ellipsis.

    >>> one_line("cannot load\\n\\n  weights_only   failed\\n")
    'cannot load | weights_only failed'
    """
    lines = [" ".join(line.split()) for line in str(text).splitlines()]
    flat = " | ".join(line for line in lines if line)
    return flat if len(flat) <= limit else flat[: limit - 3].rstrip() + "..."
