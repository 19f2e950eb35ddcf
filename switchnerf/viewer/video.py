"""The viewer's "render video" job: ``switchnerf render``'s own code
(``switchnerf.video.video_job.render_video``) on the edited path.

Writes ``RUN/camera_paths/<name>.json`` (the path, nerfstudio format) and
``RUN/renders/<name>.mp4`` with its sidecar ``<name>.json``; the same video as
``switchnerf render RUN --path RUN/camera_paths/<name>.json --output RUN/renders/<name>.mp4``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from switchnerf.train.run import LoadedRun
from switchnerf.video.camera_path import CameraPath
from switchnerf.viewer import path_files

__all__ = ["as_loaded_run", "render_path_video"]


def as_loaded_run(model) -> LoadedRun:
    """``model`` itself when it is a ``LoadedRun``; for a live ``Trainer``, a
    ``LoadedRun`` sharing its field, grid and box (checkpoint: the newest saved one)."""
    if isinstance(model, LoadedRun):
        return model
    from switchnerf.train.checkpoint import latest_checkpoint

    run_dir = Path(model.run_dir)
    ckpt = latest_checkpoint(run_dir) or run_dir / "checkpoints" / "live"
    return LoadedRun(run_dir, model.cfg, model.scene, model.field, model.grid, model.box,
                     getattr(model, "cams", None), int(model.step), ckpt)


def render_path_video(model, path: CameraPath, run_dir: Path, name: str, *,
                      outputs=("rgb",),
                      lock: Callable[[], AbstractContextManager] | None = None) -> Path:
    """Save the path and render its video (``lock`` held for the whole render, so live
    training and the viewer's own renders wait); returns the video's path."""
    json_file = path_files.save_path(run_dir, name, path)
    out = Path(run_dir) / "renders" / f"{json_file.stem}.mp4"
    out.parent.mkdir(parents=True, exist_ok=True)
    from switchnerf.video.video_job import render_video

    run = as_loaded_run(model)
    device = next(run.field.parameters()).device
    with (lock() if lock is not None else nullcontext()):
        render_video(run, path, out, outputs=tuple(outputs), device=device, progress=False,
                     log=None)
    return out
