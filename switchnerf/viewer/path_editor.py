"""The camera-path editor tab: keyframes from the current view, spline preview, playback,
save / load as nerfstudio camera-path JSON and a "render video" button.

Keyframes are taken from (and played back to) the browser whose button was pressed;
cameras convert with ``switchnerf.viewer.viser_cameras`` (viser's OpenCV axes <-> OpenGL c2w).
Interpolation, timing and frames are ``switchnerf.video.camera_path.CameraPath``'s (the
same as ``switchnerf render``): Catmull-Rom positions and fov, squad rotations. Every value
a browser sends is clamped on the server (``switchnerf.viewer.limits``): duration, frame
rate and video size are bounded, and the drawn curve has at most ``CURVE_POINTS`` points.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from switchnerf.errors import SwitchNerfError
from switchnerf.video.camera_path import CameraPath
from switchnerf.video.paths import Keyframe
from switchnerf.viewer import limits, path_files
from switchnerf.viewer.viser_cameras import c2w_from_viser, viser_from_c2w

__all__ = ["CURVE_POINTS", "PathEditor"]

CURVE_POINTS = 1000
"""Most frames of a path whose positions draw its curve (evenly spaced)."""


class PathEditor:
    """GUI and scene nodes of the camera-path editor.

    Args:
        server: the viser server.
        run_dir: where paths are saved (``RUN/camera_paths``); None disables save / load.
        render_video: ``render_video(path, name, outputs) -> Path`` renders a CameraPath to
            a video; None hides the button.
        scale: frustum size of the keyframes in world units.
    """

    def __init__(self, server, *, run_dir: Path | None, render_video: Callable | None,
                 scale: float) -> None:
        self.server, self.run_dir, self._render_video = server, run_dir, render_video
        self.scale = scale
        self.keyframes: list[Keyframe] = []
        self._nodes: list = []
        self._play_stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._draw_lock = threading.Lock()
        gui = server.gui
        self.add = gui.add_button("Add keyframe (current view)")
        self.selected = gui.add_number("Selected keyframe", 0, min=0, step=1)
        self.move = gui.add_button("Move selected to view")
        self.remove = gui.add_button("Remove selected")
        self.clear = gui.add_button("Clear keyframes")
        self.loop = gui.add_checkbox("Loop", False)
        self.interpolation = gui.add_dropdown("Interpolation", ("catmull-rom", "linear"))
        self.seconds = gui.add_number("Duration (s)", 4.0, min=0.1, step=0.1)
        self.fps = gui.add_number("FPS", 24.0, min=1.0, max=120.0, step=1.0)
        self.width = gui.add_number("Video width", 640, min=16, max=4096, step=16)
        self.height = gui.add_number("Video height", 480, min=16, max=4096, step=16)
        self.time = gui.add_slider("Preview time", 0.0, 1.0, 0.001, 0.0)
        self.play = gui.add_button("Play preview")
        self.name = gui.add_text("File name", "camera_path")
        self.save = gui.add_button("Save camera path")
        self.load = gui.add_button("Load camera path")
        self.panels = gui.add_dropdown("Video panels", ("rgb", "rgb,depth,experts"),
                                       visible=render_video is not None)
        self.video = gui.add_button("Render video", visible=render_video is not None)
        self.progress = gui.add_progress_bar(100.0, animated=True, visible=False)
        self.status = gui.add_markdown("No keyframes.")
        self._selected = limits.guard_number(self.selected, 0, 1_000_000, integer=True)
        self._seconds = limits.guard_number(self.seconds, 0.1, limits.MAX_PATH_SECONDS)
        self._fps = limits.guard_number(self.fps, 1.0, limits.MAX_VIDEO_FPS)
        self._width = limits.guard_number(self.width, limits.MIN_SIDE, limits.MAX_VIDEO_SIDE,
                                          integer=True)
        self._height = limits.guard_number(self.height, limits.MIN_SIDE, limits.MAX_VIDEO_SIDE,
                                           integer=True)
        self._time = limits.guard_number(self.time, 0.0, 1.0)
        self._interpolation = limits.guard_choice(self.interpolation, ("catmull-rom", "linear"))
        self._panels = limits.guard_choice(self.panels, ("rgb", "rgb,depth,experts"))
        self.add.on_click(lambda e: self._edit(e.client, "add"))
        self.move.on_click(lambda e: self._edit(e.client, "move"))
        self.remove.on_click(lambda e: self._edit(e.client, "remove"))
        self.clear.on_click(lambda e: self._edit(e.client, "clear"))
        for h in (self.loop, self.interpolation, self.seconds, self.fps, self.width, self.height):
            h.on_update(lambda _: self._redraw())
        self.time.on_update(lambda e: self._show_time(e.client, self._time()))
        self.play.on_click(lambda e: self._toggle_play(e.client))
        self.save.on_click(lambda _: self._save())
        self.load.on_click(lambda _: self._load())
        self.video.on_click(lambda _: self._start_video())

    # ------------------------------------------------------------------ editing
    @staticmethod
    def keyframe_of(client) -> Keyframe:
        """The client's current view as a keyframe (OpenGL c2w, vertical fov degrees)."""
        cam = client.camera
        return Keyframe(c2w_from_viser(cam.wxyz, cam.position), math.degrees(cam.fov))

    def camera_path(self) -> CameraPath:
        """The edited path with the panel's timing and size (raises without keyframes).
        Width and height are rounded down to even numbers (H.264)."""
        w, h = (max(2, v // 2 * 2) for v in (self._width(), self._height()))
        return CameraPath(list(self.keyframes), w, h, self._seconds(), self._fps(),
                          self._interpolation(), bool(self.loop.value), "viewer camera path")

    def _edit(self, client, op: str) -> None:
        keys = self.keyframes
        i = min(self._selected(), max(len(keys) - 1, 0))
        if op == "add":
            at = min(i + 1, len(keys)) if keys else 0
            keys.insert(at, self.keyframe_of(client))
            i = at
        elif op == "move" and 0 <= i < len(keys):
            keys[i] = self.keyframe_of(client)
        elif op == "remove" and 0 <= i < len(keys):
            del keys[i]
            i = max(0, min(i, len(keys) - 1))
        elif op == "clear":
            keys.clear()
            i = 0
        self.selected.value = i
        self._redraw()

    def _set_path(self, path: CameraPath) -> None:
        self.keyframes = list(path.keyframes)
        self.loop.value, self.seconds.value, self.fps.value = path.loop, path.seconds, path.fps
        self.interpolation.value = path.interpolation
        self.width.value, self.height.value = path.width, path.height
        for handle, read in ((self.seconds, self._seconds), (self.fps, self._fps),
                             (self.width, self._width), (self.height, self._height)):
            handle.value = read()  # a loaded file is held to the panel's bounds too
        self.selected.value = 0
        self._redraw()

    def _redraw(self) -> None:
        """Keyframe frustums and the interpolated curve (the exact frames a video uses)."""
        with self._draw_lock:  # GUI callbacks run in viser's thread pool
            self._redraw_nodes()

    def _redraw_nodes(self) -> None:
        for node in self._nodes:
            node.remove()
        self._nodes = []
        if not self.keyframes:
            self.status.content = "No keyframes."
            return
        path = self.camera_path()
        for k, kf in enumerate(self.keyframes):
            wxyz, pos = viser_from_c2w(kf.c2w)
            self._nodes.append(self.server.scene.add_camera_frustum(
                f"/path/keyframe_{k:03d}", fov=math.radians(kf.fov),
                aspect=path.width / path.height, scale=self.scale, color=(220, 40, 160),
                thickness=2.0, thickness_units="screen", wxyz=wxyz, position=pos))
        if len(self.keyframes) >= 2:
            n = path.n_frames
            frames = np.unique(np.linspace(0, n - 1, min(n, CURVE_POINTS)).round().astype(int))
            pts = np.array([path.camera(int(i)).c2w[:3, 3] for i in frames])  # [N, 3] world
            if path.loop:
                pts = np.concatenate([pts, pts[:1]])
            if len(pts) >= 2:
                segs = np.stack([pts[:-1], pts[1:]], 1).astype(np.float32)  # [N-1, 2, 3]
                self._nodes.append(self.server.scene.add_line_segments(
                    "/path/curve", segs, (220, 40, 160), thickness=2.0,
                    thickness_units="screen"))
        self.status.content = (f"{len(self.keyframes)} keyframes, {path.n_frames} frames "
                               f"({path.seconds:g} s at {path.fps:g} fps, "
                               f"{path.width}x{path.height})")

    # ------------------------------------------------------------------ playback
    def _show_frame(self, client, path: CameraPath, i: int) -> None:
        cam = path.camera(i)
        wxyz, pos = viser_from_c2w(cam.c2w)
        with client.atomic():
            client.camera.wxyz = wxyz
            client.camera.position = pos
            client.camera.fov = 2.0 * math.atan(0.5 * cam.height / cam.fy)

    def _show_time(self, client, t: float) -> None:
        if not self.keyframes or client is None:
            return
        path = self.camera_path()
        self._show_frame(client, path, min(int(t * path.n_frames), path.n_frames - 1))

    def _toggle_play(self, client) -> None:
        if any(w.is_alive() and w.name == "switchnerf-path-play" for w in self._workers):
            self._play_stop.set()
            return
        if not self.keyframes:
            return
        path = self.camera_path()
        self._play_stop.clear()
        self.play.label = "Stop preview"

        def play() -> None:
            try:
                for i in range(path.n_frames):
                    if self._play_stop.wait(1.0 / path.fps):
                        break
                    self._show_frame(client, path, i)
            finally:
                self.play.label = "Play preview"

        self._spawn(play, "switchnerf-path-play")

    def _spawn(self, fn, name: str) -> None:
        self._workers = [w for w in self._workers if w.is_alive()]
        w = threading.Thread(target=fn, name=name, daemon=True)
        self._workers.append(w)
        w.start()

    # ------------------------------------------------------------------ files and video
    def _save(self) -> None:
        if self.run_dir is None or not self.keyframes:
            self.status.content = "Nothing to save." if self.run_dir else "No run folder."
            return
        try:
            out = path_files.save_path(self.run_dir, self.name.value, self.camera_path())
        except SwitchNerfError as exc:
            self.status.content = f"Not saved: {exc}"
            return
        self.name.value = out.stem
        self.status.content = f"Saved {len(self.keyframes)} keyframes to `{out.name}`."

    def _load(self) -> None:
        if self.run_dir is None:
            return
        try:
            path = path_files.load_path(self.run_dir, self.name.value)
        except SwitchNerfError as exc:
            saved = ", ".join(path_files.list_paths(self.run_dir)) or "none"
            self.status.content = f"Not loaded: {exc} (saved: {saved})"
            return
        self._set_path(path)

    def _start_video(self) -> None:
        if self._render_video is None or not self.keyframes:
            self.status.content = "Add keyframes first."
            return
        if any(w.is_alive() and w.name == "switchnerf-path-video" for w in self._workers):
            return
        path = self.camera_path()
        name, outputs = self.name.value, tuple(self._panels().split(","))
        self.progress.visible = True

        def job() -> None:
            try:
                out = self._render_video(path, name, outputs)
                self.status.content = f"Video written: `{out}`"
            except (SwitchNerfError, OSError, RuntimeError, ValueError) as exc:  # shown in the panel
                self.status.content = f"Video failed: {exc}"
            finally:
                self.progress.visible = False

        self.status.content = f"Rendering {path.n_frames} frames..."
        self._spawn(job, "switchnerf-path-video")

    def close(self, timeout: float = 5.0) -> None:
        """Stop playback and wait (bounded) for background jobs."""
        self._play_stop.set()
        for w in self._workers:
            w.join(timeout)
