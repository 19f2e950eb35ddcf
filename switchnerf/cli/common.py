"""Helpers shared by the commands: device choice, scene argument check."""

from __future__ import annotations

from pathlib import Path

import torch

from switchnerf.errors import SwitchNerfError, input_error


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is present, else ``cpu``. A name torch does not know,
    or a CUDA device this machine lacks, is a one-line error naming ``--device``."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise SwitchNerfError(f"--device: {name!r} is not a device (cpu, cuda, cuda:N or auto)"
                              ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SwitchNerfError(f"--device: {name!r} requested but no CUDA GPU is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SwitchNerfError(f"--device: {name!r} requested but this machine has "
                                  f"{torch.cuda.device_count()} CUDA GPU(s)")
    return name


def check_scene_arg(scene: str | Path) -> None:
    """Cheap check of a ``--scene`` argument before a command deletes anything: a
    descriptor (``*.yaml``) must parse and name an existing dataset path; anything else
    must exist. The scene itself is read later."""
    from switchnerf.scene.descriptor import read_descriptor

    path = Path(scene).expanduser()
    if path.suffix in (".yaml", ".yml"):
        d = read_descriptor(path)
        if not d.path.exists():
            raise input_error(d.source or path, "path", f"{d.path} does not exist")
    elif not path.exists():
        raise input_error(path, "path", "does not exist")
