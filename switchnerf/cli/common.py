"""Helpers shared by the commands: device choice."""

from __future__ import annotations

import torch

from switchnerf.errors import SwitchNerfError


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is present, else ``cpu``; a CUDA device without a GPU
    is a one-line error naming ``--device``."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SwitchNerfError(f"--device: {name!r} requested but no CUDA GPU is available")
    return name
