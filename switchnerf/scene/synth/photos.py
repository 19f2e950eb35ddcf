"""A folder of photos of the synthetic city (images only) with their true poses kept aside:
the input of ``scene from-images`` when its result must be checked against the truth.

Views: ``"drone"``, the preset's capture (``drone.drone_cameras``), or ``"arc"``, ``n``
cameras on a circular arc around the city centre looking at the ground origin (a compact
set that structure from motion registers from few images). Photos carry surface detail
(``texture``) so that features can be matched; images are ``NNN.png`` in view order.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from switchnerf.errors import input_error
from switchnerf.scene.synth.drone import drone_cameras, intrinsics, look_c2w
from switchnerf.scene.synth.presets import get_preset

DEFAULT_DETAIL = 0.3


@dataclass(frozen=True)
class PhotoSet:
    """What was rendered: c2w float64 [V, 4, 4] (OpenGL axes, metres, z-up city frame),
    file names [V], pinhole intrinsics and the image size."""

    c2ws: np.ndarray
    names: tuple[str, ...]
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int


def arc_cameras(
    n: int, radius: float, altitude: float, arc_deg: float, seed: int = 0
) -> np.ndarray:
    """``n`` c2w [n, 4, 4] evenly spread over ``arc_deg`` degrees of a circle of ``radius`` m
    at ``altitude`` m, each looking at the ground origin (seeded jitter of 1 m in position
    and target)."""
    rng = np.random.default_rng(seed + 7)
    out = []
    for k in range(n):
        t = np.radians(arc_deg) * k / max(n - 1, 1)
        pos = np.array([radius * np.cos(t), radius * np.sin(t), altitude]) + rng.normal(0, 1, 3)
        out.append(look_c2w(pos, rng.normal(0, 1, 3) - pos))
    return np.stack(out)


def render_photos(
    preset: str,
    out_dir: str | Path,
    *,
    views: str = "drone",
    n: int = 12,
    arc_deg: float = 180.0,
    image_size: tuple[int, int] | None = None,
    detail: float = DEFAULT_DETAIL,
    supersample: int = 2,
    seed: int = 0,
    on_image=None,
) -> PhotoSet:
    """Render the photos of ``preset`` into ``out_dir`` (created; must not exist).

    ``image_size`` (width, height) overrides the preset's (the field of view is kept);
    ``on_image(k, total)`` is called after each image. The folder is built beside
    ``out_dir`` and renamed at the end.
    """
    from PIL import Image

    from switchnerf.scene.synth.city import build_city
    from switchnerf.scene.synth.render import CityRenderer

    p = get_preset(preset)
    if image_size is not None:
        p = dataclasses.replace(p, image_size=tuple(int(v) for v in image_size))
    if views == "drone":
        c2ws = drone_cameras(p, seed)
    elif views == "arc":
        c2ws = arc_cameras(n, 1.35 * p.half_extent, p.altitude, arc_deg, seed)
    else:
        raise input_error(None, "views", f"{views!r} is not 'drone' or 'arc'")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise input_error(out_dir, "out", "exists")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        renderer = CityRenderer(build_city(p, seed), detail=detail)
        fx, fy, cx, cy = intrinsics(p)
        w, h = p.image_size
        names = tuple(f"{k:03d}.png" for k in range(len(c2ws)))
        for k, (c2w, name) in enumerate(zip(c2ws, names)):
            rgb = renderer.render(c2w, fx, fy, cx, cy, w, h, ss=supersample)
            Image.fromarray(rgb).save(tmp / name, compress_level=3)
            if on_image is not None:
                on_image(k + 1, len(c2ws))
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PhotoSet(c2ws, names, fx, fy, cx, cy, w, h)
