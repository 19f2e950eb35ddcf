"""One browser client's render loop: progressive, abandoning stale renders.

Every camera move bumps the client's version counter. The client's render thread answers
the newest version with a quick preview (longest side ``settings.preview_side``) and, once
the camera has been still for ``settings.settle_s``, with a full-resolution render
(longest side ``settings.max_side``) drawn in chunks; between chunks it checks the
version, so a move abandons the full render within one chunk. When the client's last full
render took at most ``settings.direct_full_s``, a move is answered with the full render
at once instead (no preview, no settle delay): it arrives about when the preview would
have been followed by the settle delay alone. A full render abandoned for a newer camera
means the camera is being dragged: moves get previews again until a full render completes,
so a drag always shows frames. A refresh (output changed,
training progressed) bumps the version without a preview. A render that fails is logged
and its version given up (the next move renders again); the thread lives on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from switchnerf.viewer.compute import GateClosed
from switchnerf.viewer.viser_cameras import ViserPose, path_camera_from_viser, render_size

__all__ = ["ClientSession", "FrameStats", "RenderSettings"]

_log = logging.getLogger(__name__)


@dataclass
class RenderSettings:
    """Shared by all clients; changed by the GUI."""

    output: str = "rgb"
    max_side: int = 256
    preview_side: int = 64
    settle_s: float = 0.15
    direct_full_s: float = 0.3  # 0: always a preview first
    jpeg_quality: int = 85
    depth_range: tuple[float, float] | None = None  # None: per image


@dataclass
class FrameStats:
    """Counters of one client's renders (read by the stats panel and the bench)."""

    frames: int = 0
    full_frames: int = 0
    abandoned: int = 0
    failed: int = 0
    rays: int = 0
    render_s: float = 0.0
    last_info: dict = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)  # camera move -> full frame sent


class ClientSession:
    """The render thread of one client.

    Args:
        client_id: viser's id of the client (for names only).
        render: ``render(cam, stale) -> (uint8 [H, W, 3] or None, info)``; None: abandoned.
        send: ``send(image)`` puts the image behind the client's scene.
        settings: the shared render settings.
        gate_wanting: context manager factory marking a render as pending (ComputeGate).
    """

    def __init__(self, client_id: int, *, render: Callable, send: Callable[[np.ndarray], None],
                 settings: RenderSettings, gate_wanting: Callable) -> None:
        self.client_id = client_id
        self._render, self._send = render, send
        self._settings, self._wanting = settings, gate_wanting
        self._cond = threading.Condition()
        self._version = 0
        self._pose: ViserPose | None = None
        self._moved_at = 0.0
        self._preview_needed = False
        self._done_version = -1  # version whose full render was sent
        self._last_full_s = float("inf")  # seconds of the last full render sent
        self._stop = False
        self.stats = FrameStats()
        self._thread = threading.Thread(target=self._loop, name=f"switchnerf-view-{client_id}",
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ requests
    def camera_moved(self, pose: ViserPose) -> None:
        """A new browser camera: preview now, full resolution once it stays still."""
        with self._cond:
            self._pose = pose
            self._version += 1
            self._moved_at = time.perf_counter()
            self._preview_needed = True
            self._cond.notify_all()

    def refresh(self) -> None:
        """Re-render the current camera at full resolution (output or model changed)."""
        with self._cond:
            if self._pose is None:
                return
            self._version += 1
            self._cond.notify_all()

    @property
    def pose(self) -> ViserPose | None:
        return self._pose

    @property
    def idle(self) -> bool:
        """Whether the newest version has been rendered at full resolution."""
        return self._done_version == self._version

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread (a render in progress is abandoned at its next chunk) and join."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------------ the loop
    def _next_job(self):
        """Block until there is work: (version, pose, side, moved_at) or None to stop."""
        s = self._settings
        with self._cond:
            while True:
                if self._stop:
                    return None
                if self._pose is not None and self._done_version != self._version:
                    if self._preview_needed:
                        self._preview_needed = False
                        if self._last_full_s > s.direct_full_s:
                            return self._version, self._pose, s.preview_side, None
                        return self._version, self._pose, s.max_side, self._moved_at
                    wait = self._moved_at + s.settle_s - time.perf_counter()
                    if wait <= 0:
                        return self._version, self._pose, s.max_side, self._moved_at
                    self._cond.wait(wait)
                else:
                    self._cond.wait()

    def _stale(self, version: int) -> Callable[[], bool]:
        return lambda: self._stop or self._version != version

    def _loop(self) -> None:
        while True:
            job = self._next_job()
            if job is None:
                return
            version, pose, side, moved_at = job
            width, height = render_size(pose.aspect, side)
            cam = path_camera_from_viser(pose, width, height)
            t0 = time.perf_counter()
            try:
                with self._wanting():
                    image, info = self._render(cam, self._stale(version))
            except GateClosed:  # the viewer stops
                return
            except Exception as exc:  # noqa: BLE001 - one bad frame must not end the session
                if self._stop:
                    return
                self.stats.failed += 1
                _log.error("render of client %s failed: %s", self.client_id, exc,
                           exc_info=self.stats.failed == 1)
                with self._cond:
                    if self._version == version:
                        self._done_version = version  # wait for the next move or refresh
                continue
            elapsed = time.perf_counter() - t0
            if image is None:
                self.stats.abandoned += 1
                if moved_at is not None:  # the camera is moving: previews until it rests
                    self._last_full_s = float("inf")
                continue
            if self._stop:
                return
            if self._stale(version)() and moved_at is None:
                continue  # a preview overtaken by a newer camera: do not flash it
            self._send(image)
            st = self.stats
            st.frames += 1
            st.rays += width * height
            st.render_s += elapsed
            st.last_info = info
            if moved_at is not None:
                self._last_full_s = elapsed
                st.full_frames += 1
                st.latencies_s.append(time.perf_counter() - moved_at)
                del st.latencies_s[:-1000]
                with self._cond:
                    if self._version == version:
                        self._done_version = version
