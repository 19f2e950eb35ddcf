"""Render camera paths of a trained run to frames and a streamed video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from switchnerf.render.palette import colorize_depth, colorize_experts
from switchnerf.render.paths import PathCamera, scene_orbit
from switchnerf.render.volume import render_image_rays
from switchnerf.scene.types import RayBatch, pixel_rays

OUTPUTS = ("rgb", "depth", "experts", "opacity")


def render_camera(run, cam: PathCamera, *, device="cpu", chunk: int = 8192) -> dict:
    """Render one camera of a loaded run: rgb, depth, opacity [H*W], expert_map [H*W]."""
    origins, dirs = pixel_rays(cam.c2w, cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height)
    n = origins.shape[0]
    rays = RayBatch(origins, dirs, torch.zeros(n), torch.full((n,), 1e10))
    return render_image_rays(run.field, run.grid, rays.to(device), run.box, run.cfg.sampler,
                             chunk=chunk, use_appearance_index=False)


def frame_panels(out: dict, cam: PathCamera, outputs, depth_range) -> np.ndarray:
    """Side-by-side uint8 [H, W * len(outputs), 3] of the requested outputs."""
    h, w = cam.height, cam.width
    panels = []
    for name in outputs:
        if name == "rgb":
            img = out["rgb"].clamp(0, 1).view(h, w, 3).cpu().numpy()
        elif name == "depth":
            img, _ = colorize_depth(out["depth"].view(h, w).cpu(), *depth_range)
            img = np.asarray(img)
        elif name == "experts":
            img = np.asarray(colorize_experts(out["expert_map"].view(h, w).cpu()))
        elif name == "opacity":
            img = out["opacity"].view(h, w, 1).expand(h, w, 3).cpu().numpy()
        else:
            raise ValueError(f"unknown output {name!r}")
        panels.append(np.asarray(img, dtype=np.float32))
    return (np.clip(np.concatenate(panels, axis=1), 0, 1) * 255 + 0.5).astype(np.uint8)


def write_video(frames_iter, path: Path, fps: int) -> Path:
    """Stream uint8 frames to an mp4 (temporary name, renamed when complete)."""
    import imageio.v2 as imageio

    from switchnerf.io_utils import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        writer = imageio.get_writer(tmp, fps=fps, codec="libx264", quality=8, macro_block_size=16,
                                    ffmpeg_log_level="error")
        try:
            for frame in frames_iter:
                writer.append_data(frame)
        finally:
            writer.close()
    return path


def render_demo_video(run_dir: Path, out_path: Path, *, device="cpu", seconds: float = 4.0,
                      fps: int = 12, width: int = 160, height: int = 120) -> Path:
    """The demo's short orbit video: rgb | depth | experts side by side."""
    from rich.progress import Progress

    from switchnerf.train.run import load_run

    run = load_run(run_dir, device=device)
    cams = scene_orbit(run.scene, int(round(seconds * fps)), width=width, height=height)
    lo, hi = run.box.lo.cpu().numpy(), run.box.hi.cpu().numpy()
    depth_range = (0.0, float(np.linalg.norm(hi - lo)) * 1.5)

    def frames():
        with Progress(transient=True) as bar:
            task = bar.add_task("video", total=len(cams))
            for cam in cams:
                yield frame_panels(render_camera(run, cam, device=device), cam,
                                   ("rgb", "depth", "experts"), depth_range)
                bar.advance(task)

    return write_video(frames(), out_path, fps)
