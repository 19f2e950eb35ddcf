"""Atomic checkpoints: write to a temporary file, fsync, rename; keep the last K and the best.

A checkpoint is a dict of tensors and plain Python values, so it loads with
``torch.load(..., weights_only=True)`` on any device.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from switchnerf.errors import SwitchNerfError
from switchnerf.io_utils import atomic_path

_STEP_RE = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], *, keep_last: int,
                    is_best: bool = False) -> Path:
    """Write ``checkpoints/step_XXXXXXXX.pt`` atomically, prune to ``keep_last``, copy best."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:08d}.pt"
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    if is_best:
        with atomic_path(folder / "best.pt") as tmp:
            torch.save(state, tmp)
    for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Step checkpoints of a run, oldest first (temporary files are ignored)."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _STEP_RE.match(p.name)]
    return sorted(found, key=lambda p: int(_STEP_RE.match(p.name).group(1)))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(path: Path, map_location="cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``); clear error if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise SwitchNerfError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file fails in many ways
        raise SwitchNerfError(f"{path}: not a readable switchnerf checkpoint ({exc.__class__.__name__})") from None
