"""What the viewer accepts from a browser: every GUI value is clamped on the server.

viser stores whatever value a client sends for a control (a number beyond the slider's
range, NaN, a string that is not one of a dropdown's options). Each control of the viewer
is guarded: an event-loop callback puts a value outside its bounds back inside them (and
viser sends the clamped value to every client), and every read of a control's value goes
through the same clamp, so a callback that runs before the guard still sees a bounded
value. Browser cameras are checked too (finite pose, field of view and aspect bounded).
"""

from __future__ import annotations

import ipaddress
import math

import numpy as np

__all__ = ["MAX_CLIENTS", "MAX_PATH_SECONDS", "MAX_PREVIEW_SIDE", "MAX_RENDER_SIDE",
           "MAX_VIDEO_FPS", "MAX_VIDEO_SIDE", "MIN_SIDE", "clamp_choice", "clamp_number",
           "guard_choice", "guard_number", "is_loopback", "no_auth_warning", "sane_camera"]

MAX_CLIENTS = 8
"""Browsers served at once; more get a message and no render thread."""

MIN_SIDE = 16
MAX_RENDER_SIDE = 2048
"""Longest side of a still render, pixels."""
MAX_PREVIEW_SIDE = 512
"""Longest side of a render while the camera moves, pixels."""
MAX_VIDEO_SIDE = 4096
"""Width and height of a video made from the camera-path editor, pixels."""
MAX_PATH_SECONDS = 600.0
"""Duration of an edited camera path, seconds."""
MAX_VIDEO_FPS = 120.0
MAX_ASPECT = 16.0
"""Browser cameras wider (or taller) than this are rendered at this aspect ratio."""


def clamp_number(value, lo: float, hi: float, *, default: float, integer: bool = False):
    """``value`` within [lo, hi] (infinities clamped too); ``default`` when it is not a
    number (NaN, text).

    >>> clamp_number(1e9, 16, 2048, default=256, integer=True)
    2048
    >>> clamp_number(float("nan"), 0.1, 600.0, default=4.0)
    4.0
    """
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        v = math.nan
    if math.isnan(v):
        v = float(default)
    v = min(max(v, float(lo)), float(hi))
    return round(v) if integer else v


def clamp_choice(value, options, *, default):
    """``value`` when it is one of ``options``, else ``default``."""
    return value if value in tuple(options) else default


def guard_number(handle, lo: float, hi: float, *, integer: bool = False):
    """Keep ``handle.value`` in [lo, hi] (integer when ``integer``): a value a client sends
    outside them is replaced (in viser's event loop, before other callbacks run) and sent
    back to every client. Returns a reader of the clamped value."""
    default = clamp_number(handle.value, lo, hi, default=lo, integer=integer)

    def read():
        return clamp_number(handle.value, lo, hi, default=default, integer=integer)

    return _clamp_on_update(handle, read)


def guard_choice(handle, options):
    """Keep ``handle.value`` one of ``options`` (else its initial value). Returns a reader."""
    options, default = tuple(options), handle.value

    def read():
        return clamp_choice(handle.value, options, default=default)

    return _clamp_on_update(handle, read)


def sane_camera(wxyz, position, fov: float, aspect: float):
    """A browser camera made safe to render: (wxyz unit [4], position [3], fov, aspect), or
    None when it cannot be (non-finite, zero quaternion, fov outside (0, pi)). The aspect is
    clamped to [1 / MAX_ASPECT, MAX_ASPECT]."""
    q = np.asarray(wxyz, dtype=np.float64).reshape(-1)
    p = np.asarray(position, dtype=np.float64).reshape(-1)
    if q.shape != (4,) or p.shape != (3,):
        return None
    values = [*q, *p, fov, aspect]
    if not all(math.isfinite(float(v)) for v in values):
        return None
    norm = float(np.linalg.norm(q))
    if norm < 1e-6 or not 0.0 < fov < math.pi - 1e-3 or not aspect > 0:
        return None
    return q / norm, p, float(fov), min(max(float(aspect), 1.0 / MAX_ASPECT), MAX_ASPECT)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or name (only this machine can connect).

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def no_auth_warning(host: str) -> str | None:
    """The one-line warning printed when the viewer listens beyond this machine."""
    if is_loopback(host):
        return None
    return (f"viewer: warning: listening on {host} with no authentication: anyone who can "
            "reach this port can see the scene, move cameras and render videos")


def _clamp_on_update(handle, read):
    """Register a viser update callback that writes ``read()`` back into ``handle`` when a
    client sent anything else; returns ``read``."""

    async def clamp(_event) -> None:
        v = read()
        if handle.value != v:
            handle.value = v

    handle.on_update(clamp)
    return read
