"""The viewer: a viser server rendering the field at each browser's camera, or showing a
dataset alone before any training.

The viser scene's world frame is the project's world frame (z up; ``set_up_direction``
"+z"); browser cameras convert to project cameras with ``switchnerf.viewer.viser_cameras``. Each
client gets a ``ClientSession`` (progressive, abandoning stale renders), up to
``limits.MAX_CLIENTS`` at once (more are told so and get no render thread); all renders,
videos (a chunk of rays at a time) and, while training, the trainer share the model
through one ``ComputeGate``. Without a renderer (a dataset) there is no render loop: the
scene tab shows the cameras with their images, the sparse points, the box, the altitude
range and the partition cells.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np

from switchnerf.render.colorize import colorize
from switchnerf.render.renderer import Renderer
from switchnerf.video.paths import scene_orbit
from switchnerf.viewer import limits
from switchnerf.viewer.compute import ComputeGate, release_thread_pool
from switchnerf.viewer.gui import LiveStats, ViewerGui
from switchnerf.viewer.overlay import SceneOverlay
from switchnerf.viewer.path_editor import PathEditor
from switchnerf.viewer.render import DEFAULT_CHUNK, SHARED_CHUNK, render_view
from switchnerf.viewer.session import ClientSession, RenderSettings
from switchnerf.viewer.viser_cameras import ViserPose

__all__ = ["ViewerServer"]

#: Shortest time between two reads of the training statistics (each is a host sync).
STATS_EVERY_S = 0.25

_LABELS = {"cameras": "Training cameras", "box": "Foreground box", "altitude": "Altitude range",
           "partition": "Partition cells", "sparse": "Sparse points",
           "experts": "Expert regions"}


class ViewerServer:
    """Serve a :class:`Renderer` of ``scene`` to browsers: a loaded run's, or a live
    trainer's (``training=True``; the training loop then calls :meth:`on_step`); or, with
    ``renderer=None``, the scene alone (a dataset before training: no render loop).

    Args:
        renderer: what to render, or None for the scene tab only.
        scene: its scene (cameras, box, partition overlay, initial view).
        host, port: where to listen (loopback by default; port 0: any free port).
        run_dir: the run folder (camera paths and videos go there); None: no saving.
        checkpoint: the checkpoint the renderer's weights came from (recorded with videos);
            None: the run's newest checkpoint when a video is made (live training).
        step: the training step of the weights (the trainer's ``on_step`` updates it).
        training: a training loop shares the model; call :meth:`on_step` from it.
        max_side: initial longer side of still renders in pixels (default: 256 on CPU,
            768 on CUDA).
        verbose: let viser log connections.
    """

    def __init__(self, renderer: Renderer | None, scene, *, host: str = "127.0.0.1",
                 port: int = 7007,
                 run_dir: Path | None = None, checkpoint: Path | None = None, step: int = 0,
                 training: bool = False, max_side: int | None = None,
                 verbose: bool = False) -> None:
        import viser

        if renderer is None and training:
            raise ValueError("a live training viewer needs the trainer's renderer")
        self.renderer, self.scene = renderer, scene
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.n_experts = 0 if renderer is None else renderer.n_experts
        on_cuda = renderer is not None and renderer.device.type == "cuda"
        self.settings = RenderSettings(max_side=max_side or (768 if on_cuda else 256),
                                       preview_side=128 if on_cuda else 64)
        self.gate = ComputeGate(training=training)
        self.chunk = DEFAULT_CHUNK  # rays per render step between staleness checks
        self.stats = LiveStats(step=int(step), training=training)
        self.sessions: dict[int, ClientSession] = {}
        self.refused: set[int] = set()  # clients over MAX_CLIENTS: no render thread
        self._sessions_lock = threading.Lock()
        self._stopped = threading.Event()
        self._last_step_end: float | None = None
        self._last_refresh = time.perf_counter()
        self._rate_window: list[tuple[float, int]] = []
        self._last_values = -math.inf  # when the training statistics were last read

        self.server = viser.ViserServer(host=host, port=port, verbose=verbose)
        self.server.gui.set_panel_label("switchnerf")
        self.server.scene.set_up_direction("+z")
        self.gui, self.editor, self._ticker = None, None, None
        if renderer is None:
            self._dataset_camera()
            self.tabs = self.server.gui.add_tab_group()
            with self.tabs.add_tab("Scene"):
                self.server.gui.add_markdown(dataset_summary(scene))
                self.overlay = SceneOverlay(
                    self.server, scene, on_image=self._show_image, thumbnails=True,
                    visible=("cameras", "box", "altitude", "partition", "sparse"))
                self._overlay_gui()
            return
        self._initial_camera()
        self.gui = ViewerGui(self.server, settings=self.settings, gate=self.gate,
                             n_experts=self.n_experts, training=training,
                             refresh=self.refresh_all)
        self.tabs = self.gui.tabs
        scale = 0.04 * float(renderer.box.diagonal)
        with self.gui.tabs.add_tab("Scene"):
            self.overlay = SceneOverlay(self.server, scene, renderer=renderer,
                                        on_image=self._show_image, lock=self.gate.use)
            self._overlay_gui()
        with self.gui.tabs.add_tab("Camera path"):
            self.editor = PathEditor(self.server, run_dir=self.run_dir,
                                     render_video=self._render_video if self.run_dir else None,
                                     scale=scale)
        self.server.on_client_connect(self._connect)
        self.server.on_client_disconnect(self._disconnect)
        self._ticker = threading.Thread(target=self._tick, name="switchnerf-view-stats",
                                        daemon=True)
        self._ticker.start()
        release_thread_pool()  # this thread (it loaded the model) now mostly waits

    # ------------------------------------------------------------------ setup
    @property
    def port(self) -> int:
        return self.server.get_port()

    @property
    def url(self) -> str:
        host = self.server.get_host()
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{shown}:{self.port}"

    def _initial_camera(self) -> None:
        cam = scene_orbit(self.scene, 8, width=4, height=3)[5]
        cfg = self.server.initial_camera
        cfg.position = tuple(cam.c2w[:3, 3])
        cfg.look_at = tuple(cam.c2w[:3, 3] - cam.c2w[:3, 2])
        cfg.up = (0.0, 0.0, 1.0)
        cfg.fov = math.radians(50.0)
        diag = float(self.renderer.box.diagonal)
        cfg.near, cfg.far = 1e-3 * diag, 20.0 * diag

    def _dataset_camera(self) -> None:
        """Look at the box and every camera centre from 35 degrees above the horizon."""
        pts = [np.asarray(self.scene.bbox, np.float64)]
        pts += [np.array([r.c2w[:3, 3] for r in recs]) for recs in self.scene.frames.values()
                if recs]
        pts = np.concatenate(pts)
        lo, hi = pts.min(0), pts.max(0)
        centre, radius = 0.5 * (lo + hi), max(0.5 * float(np.linalg.norm(hi - lo)), 1e-6)
        dist = 1.1 * radius / math.sin(math.radians(25.0))  # the sphere fits a 50 degree fov
        tilt = math.radians(35.0)
        eye = centre + dist * np.array([0.0, -math.cos(tilt), math.sin(tilt)])
        cfg = self.server.initial_camera
        cfg.position, cfg.look_at = tuple(eye), tuple(centre)
        cfg.up = (0.0, 0.0, 1.0)
        cfg.fov = math.radians(50.0)
        cfg.near, cfg.far = 1e-3 * radius, 20.0 * (dist + radius)

    def _overlay_gui(self) -> None:
        gui = self.server.gui
        for key in self.overlay.available():
            on = self.overlay.is_visible(key)
            box = gui.add_checkbox(_LABELS[key], on)
            box.on_update(lambda e, key=key: self.overlay.set_visible(key, bool(e.target.value)))
        if self.renderer is not None:
            refresh = gui.add_button("Refresh expert regions")
            refresh.on_click(lambda _: self.overlay.refresh_points())
        self.clicked_title = gui.add_markdown("Click a camera to see its image.")
        self.clicked_image = gui.add_image(np.zeros((2, 2, 3), np.uint8), visible=False)

    def _show_image(self, title: str, image: np.ndarray) -> None:
        self.clicked_title.content = title
        self.clicked_image.image = image
        self.clicked_image.visible = True

    # ------------------------------------------------------------------ clients
    def render_image(self, cam, stale=None):
        """The render callback of the sessions: (uint8 [H, W, 3] or None, info)."""
        out = render_view(self.renderer, cam, chunk=self.chunk, stale=stale,
                          lock=self.gate.chunk, contended=lambda: self.gate.contended)
        if out is None:
            return None, {}
        s, info = self.settings, {}
        image = colorize(out, s.output, depth_range=s.depth_range, n_experts=self.n_experts,
                         info=info)
        return image, info

    def _connect(self, client) -> None:
        def send(image: np.ndarray) -> None:
            if client.client_id not in self.sessions:  # disconnected while rendering
                return
            client.scene.set_background_image(image, format="jpeg",
                                              jpeg_quality=self.settings.jpeg_quality)

        with self._sessions_lock:
            if self._stopped.is_set():
                return
            full = len(self.sessions) >= limits.MAX_CLIENTS
            if full:
                self.refused.add(client.client_id)
            else:
                session = ClientSession(client.client_id, render=self.render_image, send=send,
                                        settings=self.settings, gate_wanting=self.gate.wanting)
                self.sessions[client.client_id] = session
        if full:
            client.add_notification(
                "Viewer full", f"{limits.MAX_CLIENTS} browsers are already connected: this "
                "one shows the scene but no renders. Close another viewer tab and reload.",
                with_close_button=True, color="red")
            return

        def moved(camera) -> None:
            if camera.image_height <= 0 or camera.image_width <= 0:
                return
            pose = limits.sane_camera(camera.wxyz, camera.position, camera.fov, camera.aspect)
            if pose is not None:
                session.camera_moved(ViserPose(*pose))

        async def moved_async(camera) -> None:  # in the event loop: camera order is kept
            moved(camera)

        client.camera.on_update(moved_async)
        # viser runs this connect callback in a worker, possibly after the first camera
        # message was dispatched: render that camera now.
        moved(client.camera)

    def _disconnect(self, client) -> None:
        with self._sessions_lock:
            session = self.sessions.pop(client.client_id, None)
            self.refused.discard(client.client_id)
        if session is not None:
            session.close()

    def refresh_all(self) -> None:
        """Re-render every client's view (settings or model changed)."""
        with self._sessions_lock:
            sessions = list(self.sessions.values())
        for s in sessions:
            s.refresh()
        self._last_refresh = time.perf_counter()

    def _render_video(self, path, name: str, outputs) -> Path:
        from switchnerf.video.video_job import Provenance
        from switchnerf.viewer.video import render_path_video

        checkpoint = self.checkpoint
        if checkpoint is None:  # live training: the weights are at least as new as this
            from switchnerf.train.checkpoint import latest_checkpoint

            checkpoint = (latest_checkpoint(self.run_dir)
                          or self.run_dir / "checkpoints" / "live")
        provenance = Provenance(self.run_dir, checkpoint, self.stats.step)
        gate = self.gate
        return render_path_video(
            self.renderer, path, self.run_dir, name, provenance=provenance, outputs=outputs,
            wanting=gate.wanting, chunk_guard=gate.chunk,
            chunk=lambda: SHARED_CHUNK if gate.contended else self.chunk)

    # ------------------------------------------------------------------ stats
    def _tick(self) -> None:
        """Refresh the stats panel twice a second."""
        while not self._stopped.wait(0.5):
            with self._sessions_lock:
                sessions = list(self.sessions.values())
            now = time.perf_counter()
            rays = sum(s.stats.rays for s in sessions)
            self._rate_window.append((now, rays))
            self._rate_window = [(t, r) for t, r in self._rate_window if now - t <= 3.0]
            (t0, r0), (t1, r1) = self._rate_window[0], self._rate_window[-1]
            if t1 > t0 and r1 >= r0:
                self.stats.render_rays_per_s = (r1 - r0) / (t1 - t0)
            info = next((s.stats.last_info for s in sessions if s.stats.last_info), {})
            if not self.stats.training and "share" in info:
                self.stats.load = info["share"]
            self.stats.paused = self.gate.paused
            try:
                self.gui.show_stats(self.stats)
                self.gui.show_info(info)
            except Exception:  # the server went away under us while stopping
                if self._stopped.is_set():
                    return
                raise

    # ------------------------------------------------------------------ training
    def begin_training(self) -> None:
        """The training thread now owns the model (call before the first step)."""
        self.gate.begin_training()
        self._last_step_end = time.perf_counter()

    def on_step(self, trainer, stats) -> None:
        """The trainer's ``on_step`` callback: record stats, lend time to renders, pause.

        Reads only the trainer's public ``step``, ``cfg`` and ``stop_requested`` (a stop
        request ends a pause) and the step's ``StepStats`` (copied to the host at most
        every ``STATS_EVERY_S`` seconds).
        """
        now = time.perf_counter()
        step_s = now - (self._last_step_end or now)
        st = self.stats
        st.step = int(trainer.step)
        if step_s > 0:
            rate = trainer.cfg.train.rays_per_step / step_s
            st.train_rays_per_s = rate if st.train_rays_per_s is None else (
                0.9 * st.train_rays_per_s + 0.1 * rate)
        if now - self._last_values >= STATS_EVERY_S:
            self._last_values = now
            values = stats.values()
            if not values.skipped:
                st.psnr = values.psnr if st.psnr is None else 0.9 * st.psnr + 0.1 * values.psnr
            if values.load:
                st.load = list(values.load)
        if now - self._last_refresh > 3.0:  # show training progress in idle views
            self.refresh_all()
        self.gate.yield_to_renders(step_s, should_stop=lambda: trainer.stop_requested)
        self._last_step_end = time.perf_counter()

    # ------------------------------------------------------------------ shutdown
    def stop(self) -> None:
        """Stop renders (abandoned at their next chunk), join every thread, stop viser."""
        with self._sessions_lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
            sessions = list(self.sessions.values())
            self.sessions.clear()
        self.gate.close()
        for s in sessions:
            s.close()
        self.overlay.close()
        if self.editor is not None:
            self.editor.close()
        if self._ticker is not None:
            self._ticker.join(5.0)
        if self.gate.training:
            self.gate.end_training()
        self.server.stop()


def dataset_summary(scene) -> str:
    """Markdown: what the dataset viewer shows (counts, bounds, which values are estimates)."""
    est = {k for k, v in scene.estimated.items() if v}

    def mark(key: str) -> str:
        return " (estimated)" if key in est else ""

    lo, hi = (np.asarray(c, np.float64) for c in np.asarray(scene.bbox))
    n = {split: len(recs) for split, recs in scene.frames.items()}
    ground, top = scene.altitude_range
    lines = [f"**{scene.name}** ({scene.format})",
             f"**images** {n.get('train', 0)} train, {n.get('val', 0)} val",
             "**box**" + mark("bbox") + " [" + ", ".join(f"{v:.3g}" for v in lo) + "] to ["
             + ", ".join(f"{v:.3g}" for v in hi) + "]",
             f"**altitude**{mark('altitude_range')} {ground:.3g} to {top:.3g} (world z)",
             f"**partition** {scene.partition_grid[0]} x {scene.partition_grid[1]} cells"]
    if scene.extra.get("num_points"):
        lines.append(f"**sparse points** {scene.extra['num_points']}")
    return "  \n".join(lines)
