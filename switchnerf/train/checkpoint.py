"""Atomic checkpoints: write to a temporary file, check it, fsync, rename; keep the last K
and the best.

A checkpoint is a dict of tensors and plain Python values, so it loads with
``torch.load(..., weights_only=True)`` on any device.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import torch

from switchnerf.errors import SwitchNerfError, one_line
from switchnerf.io_utils import atomic_path, is_temporary_name

_STEP_RE = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], *, keep_last: int,
                    is_best: bool = False) -> Path:
    """Write ``checkpoints/step_XXXXXXXX.pt`` atomically, prune to ``keep_last``, copy best."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:08d}.pt"
    _save(state, path)
    if is_best:
        _save(state, folder / "best.pt")
    for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        old.unlink(missing_ok=True)
    return path


def _save(state: dict[str, Any], path: Path) -> None:
    """torch.save under a temporary name, checked (a complete zip archive), then renamed;
    a failed write (a full disk) is a one-line SwitchNerfError and the old file stays."""
    with atomic_path(path, verify=_complete_archive) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as exc:  # torch's zip writer reports write failures so
            raise SwitchNerfError(f"{path}: cannot be written ({one_line(str(exc), 200)}); "
                                  "the previous checkpoints are unchanged") from exc


def _complete_archive(tmp: Path) -> None:
    """Raise unless ``tmp`` is a zip archive whose central directory reads (torch.save's
    format): a truncated file has none."""
    import zipfile

    with zipfile.ZipFile(tmp) as archive:
        if not archive.namelist():
            raise ValueError("an empty archive")


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


UNREADABLE_SUFFIX = ".unreadable"
"""Appended to a step checkpoint that resume could not read (kept, out of the way)."""


def newest_readable_checkpoint(run_dir: Path, map_location="cpu", *, on_skip=None
                               ) -> tuple[Path, dict[str, Any]] | None:
    """The newest step checkpoint that loads, and its state; None when there is none.

    A newer checkpoint that does not load (a damaged disk, a foreign file) is renamed to
    ``step_XXXXXXXX.pt.unreadable`` (kept for inspection, no longer counted among the
    run's checkpoints) and ``on_skip(path, error)`` is called; the previous one is tried.
    """
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path, map_location=map_location)
        except SwitchNerfError as exc:
            aside = path.with_name(path.name + UNREADABLE_SUFFIX)
            with contextlib.suppress(OSError):
                path.replace(aside)
            if on_skip is not None:
                on_skip(path, exc)
    return None


def sweep_temporary_files(run_dir: Path) -> list[Path]:
    """Remove the temporary files of interrupted atomic writes (``.<name>.XXXX.tmp<ext>``,
    see ``switchnerf.io_utils.atomic_path``) from a run folder and its checkpoints.
    Call it only while no other process writes the run (the trainer, at start). Returns
    what was removed."""
    removed = []
    for folder in (Path(run_dir), checkpoint_dir(run_dir)):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if is_temporary_name(p.name) and p.is_file():
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
    return removed


def load_checkpoint(path: Path, map_location="cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``); clear error if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise SwitchNerfError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file fails in many ways
        raise SwitchNerfError(f"{path}: not a readable switchnerf checkpoint ({exc.__class__.__name__})") from None


def restore_module(module: torch.nn.Module, state: Any, key: str, path: Path) -> None:
    """Load ``state[key]`` into ``module``. A checkpoint without that entry, or whose
    weights do not fit ``module`` (a checkpoint of another config), is a one-line
    SwitchNerfError naming the file and the entry."""
    if not isinstance(state, dict) or key not in state:
        raise SwitchNerfError(f"{path}: {key}: missing (not a switchnerf checkpoint with weights)")
    try:
        module.load_state_dict(state[key])
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SwitchNerfError(
            f"{path}: {key}: the weights do not fit the run's config (a checkpoint of another "
            f"run or config?): {one_line(str(exc), 240)}") from None


def checkpoint_step(state: Any, path: Path) -> int:
    """The training step a checkpoint was written at; a one-line error when it has none."""
    step = state.get("step") if isinstance(state, dict) else None
    if isinstance(step, torch.Tensor) and step.numel() == 1:
        step = step.item()
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise SwitchNerfError(f"{path}: step: missing or not a step number ({step!r})")
    return step
