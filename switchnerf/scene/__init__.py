"""Scenes: the readers (Mega-NeRF, COLMAP, transforms.json), descriptors, the synthetic city.

Importing this package is cheap: names are resolved on first use.

>>> from switchnerf.scene import load_scene
>>> scene = load_scene("scenes/minicity.yaml")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "load_scene": "switchnerf.scene.load",
    "detect_format": "switchnerf.scene.load",
    "ensure_synth_scene": "switchnerf.scene.load",
    "read_descriptor": "switchnerf.scene.descriptor",
    "SceneDescriptor": "switchnerf.scene.descriptor",
    "estimate_bounds": "switchnerf.scene.bounds",
    "Scene": "switchnerf.scene.types",
    "ImageRecord": "switchnerf.scene.types",
    "RayBatch": "switchnerf.scene.types",
    "pixel_rays": "switchnerf.scene.rays",
}

__all__ = [  # noqa: RUF022 - grouped as _EXPORTS
    "load_scene",
    "detect_format",
    "ensure_synth_scene",
    "read_descriptor",
    "SceneDescriptor",
    "estimate_bounds",
    "Scene",
    "ImageRecord",
    "RayBatch",
    "pixel_rays",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
