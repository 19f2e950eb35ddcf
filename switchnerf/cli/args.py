"""Argument types: command-line values checked while parsing, before anything is loaded.

Each function is an argparse ``type=``: it returns the parsed value or raises
``argparse.ArgumentTypeError`` with a short reason, which the parser prints as one line
naming the option (``switchnerf: error: --seconds: must be a finite number > 0, got 'inf'``)
and exit code 2. NaN and infinities are refused everywhere: argparse's own ``float``
accepts them.
"""

from __future__ import annotations

import argparse
import math
import re

MAX_RESOLUTION_SIDE = 8192
"""Largest width or height a command renders, in pixels (``video.camera_path.MAX_SIDE``)."""

MAX_PIXELS = 64 * 2**20
"""Most pixels of one rendered frame, all panels together."""

_LISTED = re.compile(r"^argument ([^:]+): ")


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def finite_float(text: str) -> float:
    """Any finite number.

    >>> finite_float("-2.5")
    -2.5
    """
    return _float(text)


def positive_float(text: str) -> float:
    """A finite number > 0.

    >>> positive_float("0.5")
    0.5
    """
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def int_in(lo: int, hi: int):
    """An integer type accepting lo <= value <= hi."""

    def parse(text: str) -> int:
        value = _int(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must lie in [{lo}, {hi}], got {text!r}")
        return value

    parse.__name__ = f"int_in_{lo}_{hi}"
    return parse


def resolution(text: str) -> tuple[int, int]:
    """``"WxH"`` -> (W, H): each side 1 to MAX_RESOLUTION_SIDE pixels.

    >>> resolution("320x240")
    (320, 240)
    """
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"width and height must be > 0, got {text!r}")
    if w > MAX_RESOLUTION_SIDE or h > MAX_RESOLUTION_SIDE:
        raise argparse.ArgumentTypeError(
            f"width and height must be at most {MAX_RESOLUTION_SIDE}, got {text!r}")
    return w, h


def near_far(text: str) -> tuple[float, float]:
    """``"NEAR,FAR"`` -> (near, far), finite, near < far."""
    try:
        near, far = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NEAR,FAR, got {text!r}") from None
    if not (math.isfinite(near) and math.isfinite(far)):
        raise argparse.ArgumentTypeError(f"NEAR and FAR must be finite, got {text!r}")
    if not near < far:
        raise argparse.ArgumentTypeError(f"near must be below far, got {text!r}")
    return near, far


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``switchnerf: error: --flag: reason``
    (see ``--help`` for usage), with exit code 2."""

    def error(self, message: str):
        message = _LISTED.sub(lambda m: f"{m.group(1).split('/')[-1]}: ", message)
        self.exit(2, f"switchnerf: error: {message} (see {self.prog} --help)\n")
