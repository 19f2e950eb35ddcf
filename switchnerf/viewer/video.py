"""The viewer's "render video" job: ``switchnerf render``'s own code
(``switchnerf.video.video_job.render_video``) on the edited path.

Writes ``RUN/camera_paths/<name>.json`` (the path, nerfstudio format) and
``RUN/renders/<name>.mp4`` with its sidecar ``<name>.json``; the same video as
``switchnerf render RUN --path RUN/camera_paths/<name>.json --output RUN/renders/<name>.mp4``
when the weights do not change meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from switchnerf.render.renderer import Renderer
from switchnerf.video.camera_path import CameraPath
from switchnerf.video.video_job import Provenance, render_video
from switchnerf.viewer import path_files

__all__ = ["render_path_video"]


def render_path_video(renderer: Renderer, path: CameraPath, run_dir: Path, name: str, *,
                      provenance: Provenance, outputs=("rgb",),
                      wanting: Callable[[], AbstractContextManager] | None = None,
                      chunk_guard: Callable[[], AbstractContextManager] | None = None,
                      chunk: int | Callable[[], int] | None = None) -> Path:
    """Save the path and render its video with ``renderer``; returns the video's path.

    The model is taken in slices: ``chunk_guard`` (the viewer's compute gate) is held
    around each render call of ``chunk`` rays only, and ``wanting`` for the whole job, so
    live training takes turns with the video (by the gate's render share) and other
    clients' renders interleave. Training steps between frames change the weights: the
    video then shows the training as it goes on.

    provenance: the run, checkpoint and step of the weights when the job starts.
    """
    json_file = path_files.save_path(run_dir, name, path)
    out = Path(run_dir) / "renders" / f"{json_file.stem}.mp4"
    out.parent.mkdir(parents=True, exist_ok=True)
    with (wanting() if wanting is not None else nullcontext()):
        render_video(renderer, path, out, provenance=provenance, outputs=tuple(outputs),
                     progress=False, log=None, chunk=chunk, chunk_guard=chunk_guard)
    return out
