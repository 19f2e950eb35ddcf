"""Cancellable, chunked rendering of one view for the viewer.

``render_view`` is ``Renderer.render_camera`` (what ``switchnerf render`` draws for the
same ``PathCamera`` and chunk size: the same rays, the same chunks, the mean appearance
embedding) with the viewer's policies: before every chunk and between the front-to-back
rounds inside one it checks whether the render went stale, so a camera move abandons a
render within one round; it takes the compute lock only for the duration of a chunk; and
while the model is contended (other renders waiting, or training) its chunks shrink to
``SHARED_CHUNK`` rays, so several clients and training steps interleave. Frames are
coloured by ``switchnerf.render.colorize``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from switchnerf.render.front_to_back import RenderCancelled
from switchnerf.render.outputs import RenderOutput
from switchnerf.render.renderer import RENDER_CHUNK, Renderer
from switchnerf.video.paths import PathCamera

__all__ = ["DEFAULT_CHUNK", "SHARED_CHUNK", "render_view"]

#: Rays per chunk; equal to ``render_camera``'s default so both split rays identically.
DEFAULT_CHUNK = RENDER_CHUNK

#: Largest chunk while the model is contended (a fraction of a second of CPU time).
SHARED_CHUNK = 8192


def render_view(renderer: Renderer, cam: PathCamera, *, chunk: int = DEFAULT_CHUNK,
                stale: Callable[[], bool] | None = None,
                lock: Callable[[], AbstractContextManager] | None = None,
                contended: Callable[[], bool] | None = None) -> RenderOutput | None:
    """Render one camera with ``renderer`` (mean appearance embedding).

    Args:
        cam: the camera (world frame, OpenGL axes); rays span [cam.near, min(cam.far, 1e10)]
            as in ``render_camera``.
        chunk: rays per ``render_rays`` call.
        stale: polled before every chunk and every front-to-back round; when it returns
            True the render is abandoned and ``None`` returned.
        lock: a factory of the context held around each chunk (the viewer's compute gate).
        contended: polled before every chunk; when it returns True the chunk is at most
            ``SHARED_CHUNK`` rays (rays render independently; the chunking only changes
            the float64 rounding of the front-to-back running sums).

    Returns:
        The per-ray outputs on the CPU with ``image_size = (H, W)``, or None when abandoned.
    """
    def size() -> int:
        return min(chunk, SHARED_CHUNK) if contended is not None and contended() else chunk

    try:
        out = renderer.render_camera(cam, chunk=size, should_stop=stale, chunk_guard=lock)
    except RenderCancelled:
        return None
    return out.to("cpu")
