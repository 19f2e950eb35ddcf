"""The built-in synthetic city, rendered offline and written as a Mega-NeRF dataset.

``synthesize(preset, out_dir, seed=0, progress=True)``; presets in ``PRESETS``
(``minicity``: CPU demo; ``midcity``: 4x its ground with uneven detail and downtown
labels of its val views, see ``regions``; ``bigcity``: >= 1 km^2, >= 1500 views;
``tinycity``, ``tinymidcity``: tests). open3d is imported only when rendering.
"""

from __future__ import annotations

from switchnerf.scene.synth.presets import PRESETS, CityPreset, get_preset
from switchnerf.scene.synth.write import synthesize

__all__ = ["PRESETS", "CityPreset", "get_preset", "synthesize"]
