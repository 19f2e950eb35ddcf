"""Cancellable, chunked rendering of one view and its colour-mapped outputs.

``render_view`` renders exactly what the offline renderer
(``switchnerf.video.video_job.render_camera``) renders for the same ``PathCamera`` and
chunk size: the same rays (world frame, ``pixel_rays``), the same chunks, the same
``render_rays`` call with the mean appearance embedding. Before every chunk and between
the front-to-back rounds inside one it checks whether the render went stale, so a camera
move abandons a render within one round (tens of milliseconds on CPU); it takes the
compute lock only for the duration of a chunk, and while the model is contended (other
renders waiting, or training) its chunks shrink to ``SHARED_CHUNK`` rays, so several
clients and training steps interleave.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from switchnerf.render.composite import composite
from switchnerf.render.front_to_back import RenderCancelled
from switchnerf.render.palette import colorize_depth, colorize_experts, viridis
from switchnerf.render.volume import RENDER_CHUNK, render_rays
from switchnerf.scene.types import RayBatch, pixel_rays
from switchnerf.video.paths import PathCamera

__all__ = ["DEFAULT_CHUNK", "OUTPUTS", "SHARED_CHUNK", "output_image", "render_view"]

#: Rays per chunk; equal to ``render_camera``'s default so both split rays identically.
DEFAULT_CHUNK = RENDER_CHUNK

#: Largest chunk while the model is contended: about 0.15 s of CPU time on minicity.
SHARED_CHUNK = 8192

#: Output names shown in the GUI, in menu order.
OUTPUTS = ("rgb", "depth", "opacity", "expert map", "gate confidence")

_KEYS = ("rgb", "depth", "opacity", "expert_map", "gate_confidence")


def _model_device(field: torch.nn.Module) -> torch.device:
    for p in field.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def render_view(model, cam: PathCamera, *, chunk: int = DEFAULT_CHUNK,
                stale: Callable[[], bool] | None = None,
                lock: Callable[[], AbstractContextManager] | None = None,
                contended: Callable[[], bool] | None = None) -> dict | None:
    """Render one camera of ``model`` (anything with ``field``, ``grid``, ``box``, ``cfg``:
    a ``LoadedRun`` or a ``Trainer``).

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
        dict of tensors on the CPU: rgb [H*W, 3], depth [H*W] (``sum w * t``, world units,
        as ``render_camera``), opacity [H*W], expert_map int64 [H*W] (-1: no sample),
        gate_confidence [H*W] (weight-averaged gate value of the samples, 0 where empty);
        or None when abandoned.
    """
    device = _model_device(model.field)
    origins, dirs = pixel_rays(cam.c2w, cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height)
    n = origins.shape[0]
    rays = RayBatch(origins, dirs, torch.full((n,), float(cam.near)),
                    torch.full((n,), float(min(cam.far, 1e10)))).to(device)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in _KEYS}
    start = 0
    while start < n:
        if stale is not None and stale():
            return None
        size = min(chunk, SHARED_CHUNK) if contended is not None and contended() else chunk
        with (lock() if lock is not None else nullcontext()):
            sub = rays[start:start + size]
            try:
                r = render_rays(model.field, model.grid, sub, model.box, model.cfg.sampler,
                                use_appearance_index=False, should_stop=stale)
            except RenderCancelled:
                return None
            ri = torch.repeat_interleave(torch.arange(len(sub), device=device), r["n_samples"])
            gate = composite(r["weights"], r["gate_value"].to(r["weights"].dtype), ri, len(sub))
            safe = torch.where(r["opacity"] > 0, r["opacity"], torch.ones_like(r["opacity"]))
            r["gate_confidence"] = torch.where(r["opacity"] > 0, gate / safe,
                                               torch.zeros_like(gate))
        for k in _KEYS:
            parts[k].append(r[k].detach().to("cpu"))
        start += size
    return {k: torch.cat(v) if v else torch.zeros(0) for k, v in parts.items()}


def output_image(out: dict, output: str, width: int, height: int, *, n_experts: int,
                 depth_range: tuple[float, float] | None = None) -> tuple[np.ndarray, dict]:
    """Colour one output of ``render_view`` as uint8 [H, W, 3].

    Outputs: ``rgb``; ``depth`` (expected depth ``depth / opacity`` of rays with opacity >
    0.01 through the turbo map, near in blue; other rays black; ``depth_range`` = (near,
    far) or None for the min / max of the image); ``opacity`` (grey); ``expert map`` (one
    palette colour per expert, black: no sample); ``gate confidence`` (viridis over
    [1 / n_experts, 1], black where empty).

    Returns the image and an info dict (``near``, ``far`` for depth; ``share`` [E], the
    fraction of covered pixels per expert, for the expert map).
    """
    h, w = height, width
    info: dict = {}
    if output == "rgb":
        img = out["rgb"].clamp(0, 1).view(h, w, 3)
    elif output == "depth":
        opacity = out["opacity"]
        covered = opacity > 0.01
        d = torch.where(covered, out["depth"] / torch.where(covered, opacity, 1.0),
                        torch.full_like(opacity, math.inf))
        near, far = (None, None) if depth_range is None else depth_range
        img, near, far = colorize_depth(d.view(h, w), near, far)
        info.update(near=near, far=far)
    elif output == "opacity":
        img = out["opacity"].clamp(0, 1).view(h, w, 1).expand(h, w, 3)
    elif output == "expert map":
        ids = out["expert_map"]
        img = colorize_experts(ids.view(h, w))
        valid = ids[ids >= 0]
        counts = torch.bincount(valid, minlength=n_experts)[:n_experts].double()
        info["share"] = (counts / max(int(valid.numel()), 1)).tolist()
    elif output == "gate confidence":
        lo = 1.0 / max(n_experts, 1)
        g = out["gate_confidence"]
        x = (g - lo) / max(1.0 - lo, 1e-6)
        img = torch.where((out["opacity"] > 0)[:, None], viridis(x), torch.zeros(g.shape[0], 3))
        img = img.view(h, w, 3)
    else:
        raise ValueError(f"unknown output {output!r}; expected one of {OUTPUTS}")
    arr = (np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(arr), info
