"""Rendering what exports need: training views and random training rays, in the world frame."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from switchnerf.render.renderer import Renderer
from switchnerf.scene.types import RayBatch
from switchnerf.video.paths import PathCamera, camera_from_record


@dataclass
class RenderedView:
    """One rendered training view.

    cam: the (possibly downscaled) camera; rgb float32 [H, W, 3]; depth float32 [H, W]
    (expected ray distance ``sum(w t) / opacity`` in world units, NaN where opacity <= 0.01);
    opacity float32 [H, W].
    """

    cam: PathCamera
    rgb: np.ndarray
    depth: np.ndarray
    opacity: np.ndarray


def scaled_camera(cam: PathCamera, downscale: float) -> PathCamera:
    """``cam`` with width and height divided by ``downscale`` (intrinsics scaled to match)."""
    if downscale == 1:
        return cam
    w, h = max(1, round(cam.width / downscale)), max(1, round(cam.height / downscale))
    sx, sy = w / cam.width, h / cam.height
    return PathCamera(cam.c2w, cam.fx * sx, cam.fy * sy, cam.cx * sx, cam.cy * sy, w, h,
                      cam.near, cam.far)


def view_indices(n: int, max_views: int | None) -> list[int]:
    """Up to ``max_views`` indices spread evenly over range(n) (all when None)."""
    if max_views is None or max_views >= n:
        return list(range(n))
    return sorted({round(k * (n - 1) / max(max_views - 1, 1)) for k in range(max_views)})


def training_views(renderer: Renderer, scene, *, downscale: float = 1.0,
                   max_views: int | None = None) -> Iterator[RenderedView]:
    """Render the scene's training views one at a time (mean appearance embedding)."""
    recs = scene.images("train")
    for i in view_indices(len(recs), max_views):
        cam = scaled_camera(camera_from_record(recs[i]), downscale)
        out = renderer.render_camera(cam)
        yield RenderedView(cam, out.image("rgb").clamp(0, 1).cpu().numpy(),
                           out.expected_depth().view(cam.height, cam.width).cpu().numpy(),
                           out.image("opacity").cpu().numpy())


@torch.no_grad()
def render_random_training_rays(renderer: Renderer, camera_table, n_rays: int,
                                generator: torch.Generator) -> dict:
    """Render ``n_rays`` pixels drawn uniformly from all training images of the camera
    table (mean appearance embedding).

    Returns origins, directions float32 [N, 3] (world), rgb [N, 3], depth [N] (expected ray
    distance, NaN where opacity <= 0.01), opacity [N], all on the CPU.
    """
    table = camera_table
    n_train = table.n_train
    img = torch.randint(n_train, (n_rays,), generator=generator)  # [N] global index
    sizes = (table.width[:n_train] * table.height[:n_train]).to(torch.int64)  # [T]
    pix = (torch.rand(n_rays, generator=generator, dtype=torch.float64) * sizes[img]).long()
    origins, dirs = table.rays(img, pix)
    near = table.near[img].to(torch.float32)
    far = table.far[img].to(torch.float32).clamp(max=1e10)
    rays = RayBatch(origins, dirs, near, far)
    out = renderer.render_chunked(rays.to(renderer.device), use_appearance_index=False).to("cpu")
    return {"origins": origins, "directions": dirs, "rgb": out.rgb.clamp(0, 1),
            "depth": out.expected_depth(), "opacity": out.opacity}
