"""Render camera paths of a trained model to frames and a streamed video.

A video frame is the requested outputs side by side, uint8 [H, W * len(outputs), 3], each
panel coloured by ``switchnerf.render.colorize`` (``rgb``, ``depth`` with one near/far
for the whole video, ``experts``, ``opacity``, ``gate_confidence``). Frames are rendered
and handed to the video writer one at a time, so memory does not grow with the video's
length.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from switchnerf.errors import SwitchNerfError
from switchnerf.io_utils import same_file, write_json_atomic
from switchnerf.render.colorize import DEPTH_CMAP, DEPTH_MIN_OPACITY, OUTPUTS, colorize
from switchnerf.render.outputs import RenderOutput
from switchnerf.render.palette import EXPERT_PALETTE
from switchnerf.render.renderer import Renderer
from switchnerf.video.camera_path import CameraPath
from switchnerf.video.frames_dir import FramesDir
from switchnerf.video.paths import PathCamera

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv")


@dataclass(frozen=True)
class Provenance:
    """Which trained model a video shows, recorded in its sidecar and frames manifest.

    run_dir: the run folder; checkpoint: the checkpoint file the weights came from (for a
    live training, its newest one); step: the training step of the weights.
    """

    run_dir: Path
    checkpoint: Path
    step: int


def frame_panels(out: RenderOutput, outputs, depth_range, n_experts: int) -> np.ndarray:
    """Side-by-side uint8 [H, W * len(outputs), 3] of the requested outputs of one frame.

    depth_range: (near, far) world units for the depth colour map.
    """
    for name in outputs:
        if name not in OUTPUTS:
            raise SwitchNerfError(f"--outputs: unknown output {name!r} (choose from {', '.join(OUTPUTS)})")
    return np.concatenate([colorize(out, name, depth_range=depth_range, n_experts=n_experts)
                           for name in outputs], axis=1)


def estimate_depth_range(renderer: Renderer, path: CameraPath, *, samples: int = 5,
                         max_side: int = 48,
                         chunk_guard: Callable[[], AbstractContextManager] | None = None
                         ) -> tuple[float, float]:
    """A depth range for the whole video: the 2nd and 98th percentiles of the expected depth
    of rays with opacity > 0.5 over ``samples`` evenly spaced frames rendered small (longest
    side ``max_side``). Falls back to (0, 1.5 x box diagonal) when nothing is hit.
    chunk_guard: as ``Renderer.render_camera``'s."""
    n = path.n_frames
    scale = min(1.0, max_side / max(path.width, path.height))
    w, h = max(4, round(path.width * scale)), max(4, round(path.height * scale))
    depths = []
    for i in sorted({round(k * (n - 1) / max(samples - 1, 1)) for k in range(samples)}):
        cam = path.camera(i)
        s = w / path.width
        small = PathCamera(cam.c2w, cam.fx * s, cam.fy * (h / path.height), cam.cx * s,
                           cam.cy * (h / path.height), w, h, cam.near, cam.far)
        d = renderer.render_camera(small, chunk_guard=chunk_guard).expected_depth(0.5)
        depths.append(d[torch.isfinite(d)].cpu())
    vals = torch.cat(depths)
    if vals.numel() < 2:
        return 0.0, 1.5 * renderer.box.diagonal
    near, far = torch.quantile(vals.double(), torch.tensor([0.02, 0.98], dtype=torch.float64)).tolist()
    return (float(near), float(far)) if far > near else (float(near), float(near) + 1.0)


def missing_video_encoder() -> str | None:
    """Why H.264 video cannot be written here (imageio's ffmpeg plugin needs the
    imageio-ffmpeg package), or None when it can."""
    import importlib.util

    if importlib.util.find_spec("imageio_ffmpeg") is None:
        return ("writing video needs the imageio-ffmpeg package, which is not installed "
                "(pip install imageio-ffmpeg)")
    return None


def write_video(frames_iter: Iterable[np.ndarray], path: Path, fps: float) -> Path:
    """Stream uint8 frames [H, W, 3] (H, W even) to H.264 video; written under a temporary
    name and renamed only once ffmpeg reads the new file back with every frame encoded, so
    an existing ``path`` is never left half-written or replaced by a broken file (a full
    disk, an encoder that died): that is a one-line SwitchNerfError naming ``path``."""
    import imageio.v2 as imageio

    from switchnerf.io_utils import atomic_path

    path = Path(path)
    why = missing_video_encoder()
    if why is not None:
        raise SwitchNerfError(f"{path}: {why}")
    encoded = [0]
    with atomic_path(path, verify=lambda tmp: _check_video(tmp, encoded[0])) as tmp:
        writer = imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", quality=8, macro_block_size=1,
                                    pixelformat="yuv420p", ffmpeg_log_level="error")
        try:
            for frame in frames_iter:
                writer.append_data(frame)
                encoded[0] += 1
        finally:
            writer.close()
    return path


def _check_video(tmp: Path, frames: int) -> None:
    """Raise unless ffmpeg reads ``tmp`` as a video of exactly ``frames`` frames."""
    import imageio_ffmpeg

    try:
        n, _ = imageio_ffmpeg.count_frames_and_secs(str(tmp))
    except Exception:  # noqa: BLE001 - ffmpeg's exit status and log: the file is unreadable
        raise ValueError("ffmpeg cannot read it as a video") from None
    if n != frames:
        raise ValueError(f"ffmpeg reads {n} frames, {frames} were encoded")


def sidecar_path(out_path: Path) -> Path:
    """OUT.json beside OUT.mp4: frames, timing, path, depth near/far, expert palette."""
    return Path(out_path).with_suffix(".json")


SIDECAR_KEYS = ("video", "world_frame", "frames_rendered")
"""Keys every render info file (the sidecar) has: how an earlier one is recognised."""


def check_sidecar_target(out_path: Path, inputs: Iterable[tuple[str, Path | None]] = ()) -> None:
    """Refuse an ``--output`` whose sidecar OUT.json would overwrite a file that is not an
    earlier render info file: one of ``inputs`` ((flag, path) pairs, e.g. the camera path
    given to ``--path``) or any other existing file."""
    side = sidecar_path(out_path)
    for flag, given in inputs:
        if given is not None and same_file(side, given):
            raise SwitchNerfError(f"--output: {out_path}: its info file {side} is the {flag} "
                                  "file, which would be overwritten; choose another --output name")
    if side.is_dir() or (side.exists() and not _is_sidecar(side)):
        raise SwitchNerfError(f"--output: {out_path}: {side} exists and is not a render info "
                              "file of switchnerf render; move it or choose another --output name")


def _is_sidecar(path: Path) -> bool:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(obj, dict) and all(k in obj for k in SIDECAR_KEYS)


def check_outputs_and_file(outputs, out_path: Path) -> None:
    """The panel names (one at least, each in ``OUTPUTS``) and the video file's suffix."""
    if not outputs:
        raise SwitchNerfError("--outputs: give at least one of " + ", ".join(OUTPUTS))
    for name in outputs:
        if name not in OUTPUTS:
            raise SwitchNerfError(f"--outputs: unknown output {name!r} (choose from {', '.join(OUTPUTS)})")
    if Path(out_path).suffix.lower() not in VIDEO_SUFFIXES:
        raise SwitchNerfError(f"--output: {out_path}: expected a video file ({', '.join(VIDEO_SUFFIXES)})")


def check_video_request(path: CameraPath, outputs, out_path: Path) -> None:
    """Refuse what the encoder cannot do before any rendering starts."""
    check_outputs_and_file(outputs, out_path)
    if path.width % 2 or path.height % 2:
        raise SwitchNerfError(f"--resolution: {path.width}x{path.height}: width and height must "
                              "be even for H.264 video (yuv420p)")


def _progress(enabled: bool, total: int):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("render"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), disable=not enabled, transient=False)


def render_video(renderer: Renderer, path: CameraPath, out_path: Path, *,
                 provenance: Provenance, outputs=("rgb",), frames_dir: Path | None = None,
                 depth_range: tuple[float, float] | None = None, progress: bool = True,
                 log: Callable[[str], None] | None = print,
                 chunk: int | Callable[[], int] | None = None,
                 chunk_guard: Callable[[], AbstractContextManager] | None = None) -> dict:
    """Render ``path`` with ``renderer`` to ``out_path`` (OUT.mp4) and a sidecar OUT.json.

    provenance: the run, checkpoint and step the weights come from (sidecar; a frames
    folder is reused only for the same ones). frames_dir: keep every frame as a PNG there;
    frames already there (from an interrupted render with the same settings) are reused
    instead of rendered. depth_range: (near, far) of the depth colour map, or None to
    estimate it (``estimate_depth_range``). chunk, chunk_guard: as
    ``Renderer.render_camera``'s (rays per render call; a context held around each call:
    the viewer lends the model between calls, so a video never holds it for long). Returns
    the sidecar dict.
    """
    outputs = tuple(outputs)
    out_path = Path(out_path)
    check_video_request(path, outputs, out_path)
    check_sidecar_target(out_path)
    n = path.n_frames
    n_experts = renderer.n_experts
    shape = (path.height, path.width * len(outputs), 3)
    settings = {"keyframes": [np.asarray(k.c2w).tolist() + [k.fov] for k in path.keyframes],
                "size": [path.width, path.height], "frames": n, "loop": path.loop,
                "interpolation": path.interpolation, "outputs": list(outputs),
                "checkpoint": str(Path(provenance.checkpoint).resolve()),
                "step": provenance.step,
                "depth_range": None if depth_range is None else list(depth_range)}
    store = FramesDir(frames_dir, settings, shape) if frames_dir is not None else None
    resolved = None
    if "depth" in outputs:
        resolved = depth_range
        if resolved is None and store is not None:
            resolved = store.manifest.get("depth_range")
        if resolved is None:
            resolved = estimate_depth_range(renderer, path, chunk_guard=chunk_guard)
        resolved = (float(resolved[0]), float(resolved[1]))
        if log is not None:
            log(f"depth colour map ({DEPTH_CMAP}): near {resolved[0]:.4g}, far {resolved[1]:.4g} "
                "world units")
    if store is not None:
        store.open({"depth_range": None if resolved is None else list(resolved)})
    stats = {"rendered": 0, "reused": 0}
    start = time.perf_counter()

    def frames():
        with _progress(progress, n) as bar:
            task = bar.add_task("render", total=n)
            for i in range(n):
                frame = store.read(i) if store is not None else None
                if frame is None:
                    out = renderer.render_camera(path.camera(i), chunk_guard=chunk_guard,
                                                 **({} if chunk is None else {"chunk": chunk}))
                    frame = frame_panels(out, outputs, resolved, n_experts)
                    if store is not None:
                        store.write(i, frame)
                    stats["rendered"] += 1
                else:
                    stats["reused"] += 1
                yield frame
                bar.advance(task)

    write_video(frames(), out_path, path.fps)
    elapsed = time.perf_counter() - start
    sidecar = {
        "video": out_path.name, "frames": n, "fps": path.fps, "seconds": path.seconds,
        "resolution": [path.width, path.height], "frame_size": [shape[1], shape[0]],
        "outputs": list(outputs), "panels_left_to_right": list(outputs),
        "world_frame": "run world: z up, OpenGL camera axes, world units",
        "path": {"source": path.source, "interpolation": path.interpolation, "loop": path.loop,
                 "keyframes": len(path.keyframes)},
        "run": str(Path(provenance.run_dir).resolve()),
        "checkpoint": Path(provenance.checkpoint).name,
        "step": provenance.step, "frames_rendered": stats["rendered"],
        "frames_reused": stats["reused"], "elapsed_s": round(elapsed, 3),
    }
    if resolved is not None:
        sidecar["depth"] = {"colormap": DEPTH_CMAP, "near": resolved[0], "far": resolved[1],
                            "units": "world", "value": "expected depth sum(w t) / opacity",
                            "empty": f"black (opacity <= {DEPTH_MIN_OPACITY:g})"}
    if "experts" in outputs:
        sidecar["expert_palette"] = [
            "#" + "".join(f"{round(c * 255):02x}" for c in row)
            for row in EXPERT_PALETTE[:n_experts].tolist()]
    if "gate_confidence" in outputs:
        sidecar["gate_confidence"] = {"colormap": "viridis", "low": 1.0 / max(n_experts, 1),
                                      "high": 1.0, "empty": "black (opacity 0)"}
    write_json_atomic(sidecar_path(out_path), sidecar)
    return sidecar


def render_orbit_video(renderer: Renderer, scene, out_path: Path, *, provenance: Provenance,
                       seconds: float = 4.0, fps: int = 12, width: int = 160,
                       height: int = 120) -> dict:
    """A short looping orbit of ``scene`` (35 degrees down, at the default altitude):
    rgb | depth | experts side by side. Returns the sidecar dict."""
    from switchnerf.video.paths import orbit_geometry, orbit_keyframes

    n = round(seconds * fps)
    target, radius, altitude = orbit_geometry(scene, altitude=None, tilt_deg=35.0)
    path = CameraPath(orbit_keyframes(target, radius, altitude, n), width, height, seconds, fps,
                      loop=True, source="orbit")
    return render_video(renderer, path, out_path, provenance=provenance,
                        outputs=("rgb", "depth", "experts"), log=None)
