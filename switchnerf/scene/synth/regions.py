"""Per-pixel region labels of synthetic views, for evaluation by region.

A label image is uint8 [H, W], ``DOWNTOWN`` (255) where the pixel sees downtown, else 0.
Downtown is the footprint of the city's core blocks (``block_kind == CORE``: the ground,
roads and buildings whose (x, y) lies in a core block, from the road centre lines in); a
ray that misses (sky) is elsewhere. A pixel is downtown when at least half of its
``ss x ss`` sub-pixel rays first hit downtown. The labels are rendered by
``CityRenderer.render`` itself, with a ``shade`` that returns the label instead of a
colour, so they use the very rays of the image and line up with it pixel for pixel.

Presets with ``region_labels`` get ``val/regions/<stem>.png`` next to ``val/rgbs``;
:func:`region_label_path` and :func:`load_region_mask` find and read them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from switchnerf.scene.synth.city import CORE, City, block_kind
from switchnerf.scene.synth.render import CityRenderer

DOWNTOWN = 255
REGIONS_DIR = "regions"


def in_downtown(city: City, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """bool [N]: points x, y [N] (metres) lie in a core block of ``city``."""
    b = city.preset.block
    return block_kind(city.preset, np.floor(x / b), np.floor(y / b)) == CORE


class RegionRenderer(CityRenderer):
    """``render`` gives 255 x (fraction of sub-pixel rays hitting downtown) in every
    channel; ``label`` thresholds it at one half."""

    def shade(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """1 where the ray [N] first hits downtown, else 0; float32 [N, 3]."""
        t = self._cast(origins, dirs)["t_hit"]
        ok = np.isfinite(t)
        pts = origins[ok] + t[ok, None] * dirs[ok]
        down = np.zeros(len(t), np.float32)
        down[ok] = in_downtown(self.city, pts[:, 0], pts[:, 1])
        return np.repeat(down[:, None], 3, axis=1)

    def label(
        self,
        c2w: np.ndarray,
        fx: float,
        fy: float,
        cx: float,
        cy: float,
        width: int,
        height: int,
        ss: int = 2,
    ) -> np.ndarray:
        """Region label uint8 [height, width] of the view (same arguments as ``render``)."""
        frac = self.render(c2w, fx, fy, cx, cy, width, height, ss=ss)[..., 0]
        return np.where(frac >= 128, DOWNTOWN, 0).astype(np.uint8)


def region_label_path(image_path: str | Path) -> Path:
    """``<split>/regions/<stem>.png`` for the image ``<split>/rgbs/<stem>.<ext>``."""
    image_path = Path(image_path)
    return image_path.parent.parent / REGIONS_DIR / f"{image_path.stem}.png"


def load_region_mask(image_path: str | Path) -> np.ndarray | None:
    """bool [H, W], True on downtown pixels, of the image's label; None if it has none."""
    path = region_label_path(image_path)
    if not path.is_file():
        return None
    from PIL import Image

    from switchnerf.errors import input_error

    with Image.open(path) as im:
        if im.mode != "L":
            raise input_error(path, None, f"region label must be 8-bit grey, got mode {im.mode}")
        return np.asarray(im) == DOWNTOWN
