"""The Renderer: one object for "a model you can render".

A :class:`Renderer` holds the field (``SwitchField``), its occupancy grid, the foreground
box (world -> unit cube) and the sampler settings, and renders world-frame rays:
world rays -> unit-cube frame -> march through the grid -> field -> composite. The
trainer holds one, a loaded run holds one; eval, viewer, video and export take one.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import Protocol

import numpy as np
import torch
from torch import nn

from switchnerf.config import SamplerConfig
from switchnerf.ops.front_to_back import packed_points
from switchnerf.render.box import BoxFrame
from switchnerf.render.composite import composite, composite_rays, render_packed
from switchnerf.render.front_to_back import RenderCancelled, evaluate_front_to_back
from switchnerf.render.occupancy import OccupancyGrid
from switchnerf.render.outputs import RenderOutput, SampleOutput, weighted_mean
from switchnerf.render.sampler import march_rays
from switchnerf.scene.types import RayBatch, pixel_rays

__all__ = ["RENDER_CHUNK", "Camera", "RenderCancelled", "Renderer", "camera_rays"]

#: Rays per ``render_rays`` call when rendering whole images without gradients. Large:
#: the front-to-back rounds cost a fixed overhead each, so few large chunks render faster
#: than many small ones (a 320x240 frame in one chunk renders about 4 % faster than in two
#: of 1 << 16; only the float64 rounding of the front-to-back running sums depends on the
#: chunking).
RENDER_CHUNK = 1 << 17

#: Far bound given to rays of a camera whose ``far`` is infinite (world units).
FAR_LIMIT = 1e10


def _sample_points(o_unit: torch.Tensor, d_unit: torch.Tensor, ray_indices: torch.Tensor,
                   t_starts: torch.Tensor, t_ends: torch.Tensor) -> torch.Tensor:
    """Points [M, 3] of packed samples in the unit frame: ``o[r] + 0.5 (t0 + t1) d[r]``
    (``packed_points`` of every sample: one native pass on the CPU)."""
    return packed_points(o_unit, d_unit, ray_indices, t_starts, t_ends,
                         torch.arange(len(ray_indices), device=ray_indices.device))


class Camera(Protocol):
    """A pinhole camera as the renderer reads it (``PathCamera`` and ``ImageRecord`` are).

    c2w: float [4, 4] (or [3, 4]) camera-to-world, world frame z up, OpenGL camera axes
    (x right, y up, looking down -z); fx, fy, cx, cy: pixels, pixel centres at +0.5;
    width, height: pixels; near, far: ray bounds in world units (far may be inf).
    """

    c2w: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    near: float
    far: float


def camera_rays(camera: Camera, *, image_index: int | None = None) -> RayBatch:
    """The rays of every pixel of ``camera``: a RayBatch of H*W rays, row-major pixels.

    Origins and unit directions from ``pixel_rays``; near = ``camera.near``, far =
    ``min(camera.far, 1e10)``; image_index: int64 [H*W] filled with ``image_index`` (the
    camera-table row whose appearance embedding to use), or None.
    """
    origins, dirs = pixel_rays(camera.c2w, camera.fx, camera.fy, camera.cx, camera.cy,
                               camera.width, camera.height)
    n = origins.shape[0]
    index = None if image_index is None else torch.full((n,), int(image_index),
                                                        dtype=torch.long)
    return RayBatch(origins, dirs, torch.full((n,), float(camera.near)),
                    torch.full((n,), float(min(camera.far, FAR_LIMIT))), None, index)


class Renderer:
    """A field with its occupancy grid, box and sampler settings, ready to render.

    Args:
        field: the ``SwitchField`` (unit-cube points, world directions).
        grid: its occupancy grid over the unit cube (same device as the field).
        box: the foreground box (world -> unit cube).
        sampler: march step, pruning thresholds and sample cap.
    """

    def __init__(self, field: nn.Module, grid: OccupancyGrid, box: BoxFrame,
                 sampler: SamplerConfig) -> None:
        self.field = field
        self.grid = grid
        self.sampler = sampler
        self._box = box
        self._diagonal = box.diagonal  # the box is fixed: one host read, not one per step

    def __repr__(self) -> str:
        return (f"Renderer(experts={getattr(self.field, 'n_experts', '?')}, "
                f"grid={tuple(self.grid.res)}, device={self.device})")

    # ------------------------------------------------------------------ properties
    @property
    def box(self) -> BoxFrame:
        """The foreground box (fixed for the renderer's life)."""
        return self._box

    @property
    def device(self) -> torch.device:
        """Where the field's parameters live (rays are moved there to render)."""
        for p in self.field.parameters():
            return p.device
        return self.box.lo.device

    @property
    def step_size(self) -> float:
        """March step in world units: the box diagonal over ``sampler.steps_per_diagonal``."""
        return self._diagonal / self.sampler.steps_per_diagonal

    @property
    def n_experts(self) -> int:
        return int(self.field.n_experts)

    @property
    def training(self) -> bool:
        return self.field.training

    def train(self, mode: bool = True) -> Renderer:
        """Put the field in training (or eval) mode; returns self."""
        self.field.train(mode)
        return self

    def eval(self) -> Renderer:
        return self.train(False)

    # ------------------------------------------------------------------ rendering
    def render_rays(self, rays: RayBatch, *, stratified: bool = False,
                    use_appearance_index: bool = True, prune: bool = True,
                    should_stop: Callable[[], bool] | None = None,
                    generator: torch.Generator | None = None) -> RenderOutput:
        """Volume-render a batch of world-frame rays (on the renderer's device).

        Returns a :class:`RenderOutput` with ``samples`` set (``probs`` is None when
        rendered without gradients with ``prune``).

        stratified: one random offset in [0, step) per ray (``generator`` draws it).
        use_appearance_index: use ``rays.image_index`` for the appearance embedding;
            otherwise (or when it is None) the mean embedding.
        prune: drop samples that are invisible (alpha below ``sampler.alpha_thre`` or
            behind transmittance ``sampler.early_stop_eps``): with gradients, by one extra
            no-grad density pass; without, by evaluating each ray front to back until it is
            opaque (the same samples, each evaluated once).
        should_stop: without gradients, polled between front-to-back rounds; ``True``
            raises :class:`RenderCancelled` (the viewer abandons stale views).
        """
        field, box, cfg = self.field, self.box, self.sampler
        o_unit = box.to_unit(rays.origins)
        d_unit = box.to_unit_directions(rays.directions)
        image_index = rays.image_index if use_appearance_index else None
        if prune and not torch.is_grad_enabled():
            return self._render_front_to_back(rays, o_unit, d_unit, image_index,
                                              stratified=stratified, should_stop=should_stop,
                                              generator=generator)

        density_calls = []

        def sigma_fn(t_starts, t_ends, ray_indices):
            pts = _sample_points(o_unit, d_unit, ray_indices, t_starts, t_ends)
            density_calls.append(len(pts))
            return field.density(pts)

        with torch.no_grad():
            samples = march_rays(
                o_unit, d_unit, rays.near, rays.far, self.grid, step_size=self.step_size,
                stratified=stratified, sigma_fn=sigma_fn if prune else None,
                alpha_thre=cfg.alpha_thre, early_stop_eps=cfg.early_stop_eps,
                max_samples_per_ray=cfg.max_samples_per_ray, generator=generator)
            if prune and not density_calls and getattr(field, "collective", False):
                # an expert-parallel field encodes collectively: every rank takes part in
                # the pruning pass once, also when its rays marched no sample
                field.density(o_unit.new_zeros((0, 3)))
        ri = samples.ray_indices
        pts = _sample_points(o_unit, d_unit, ri, samples.t_starts, samples.t_ends)
        out = field(pts, rays.directions[ri], None if image_index is None else image_index[ri])
        background = field.background(rays.directions) if field.background is not None else None
        result = render_packed(samples.t_starts, samples.t_ends, ri, len(rays), out.rgb,
                               out.sigma, expert_ids=out.expert_id, background_rgb=background)
        return _assemble(result, ri, len(rays), out.expert_id, out.gate_value, out.kept,
                         out.probs)

    def _render_front_to_back(self, rays: RayBatch, o_unit, d_unit, image_index, *,
                              stratified: bool, should_stop: Callable[[], bool] | None,
                              generator: torch.Generator | None) -> RenderOutput:
        """``render_rays`` without gradients: the geometry of each marched sample is
        evaluated once, front to back, each ray stopping when opaque; colour only where
        visible. Same kept samples and outputs as the two-pass path (``front_to_back``)."""
        field, cfg = self.field, self.sampler
        samples = march_rays(o_unit, d_unit, rays.near, rays.far, self.grid,
                             step_size=self.step_size, stratified=stratified,
                             max_samples_per_ray=cfg.max_samples_per_ray, generator=generator)
        marched_rays = samples.ray_indices

        def geometry(idx):
            g = field.geometry(packed_points(o_unit, d_unit, marched_rays, samples.t_starts,
                                             samples.t_ends, idx))
            return g.sigma, {"geo": g.geo, "expert_id": g.gate.expert_id,
                             "gate_value": g.gate.gate_value, "kept": g.kept}

        color = field.color_of_rays(rays.directions, image_index)

        def with_color(idx_vis, vis, ex):  # colour of the round's visible samples: keep rgb
            rgb = color(ex.pop("geo"), marched_rays.index_select(0, idx_vis), vis)
            return {"rgb": rgb, **{k: value.index_select(0, vis) for k, value in ex.items()}}

        keep, sigma, ex = evaluate_front_to_back(
            geometry, samples.t_starts, samples.t_ends, marched_rays, len(rays),
            alpha_thre=cfg.alpha_thre, early_stop_eps=cfg.early_stop_eps,
            should_stop=should_stop, finish=with_color,
            chunks=(samples.chunk_starts, samples.chunk_counts))
        ri = marched_rays.index_select(0, keep)
        if keep.numel():
            rgb = ex["rgb"]
        else:
            rgb = sigma.new_zeros(0, 3)
            ex = {"expert_id": ri.clone(), "gate_value": sigma.clone(), "kept": ri.bool()}
        background = field.background(rays.directions) if field.background is not None else None
        gate_value = ex["gate_value"]
        result = composite_rays(samples.t_starts.index_select(0, keep),
                                samples.t_ends.index_select(0, keep), ri, len(rays), rgb, sigma,
                                expert_ids=ex["expert_id"], values=gate_value.float()[:, None],
                                background_rgb=background)
        # probs: only the balance loss needs them, and only training computes it
        return _assemble(result, ri, len(rays), ex["expert_id"], gate_value, ex["kept"], None,
                         gate=result["values"][:, 0])

    @torch.no_grad()
    def render_chunked(self, rays: RayBatch, *, chunk: int | Callable[[], int] = RENDER_CHUNK,
                       use_appearance_index: bool = True,
                       should_stop: Callable[[], bool] | None = None,
                       chunk_guard: Callable[[], AbstractContextManager] | None = None,
                       image_size: tuple[int, int] | None = None) -> RenderOutput:
        """Render many rays without gradients, ``chunk`` rays per :meth:`render_rays` call.

        Args:
            rays: the rays (on the renderer's device).
            chunk: rays per call, or a function polled before every chunk that returns it
                (rays render independently: only the float64 rounding of the front-to-back
                running sums depends on the chunking).
            should_stop: polled before every chunk and every front-to-back round; ``True``
                raises :class:`RenderCancelled`.
            chunk_guard: a factory of the context held around each chunk's render (the
                viewer's compute lock).
            image_size: (H, W) recorded in the output when the rays are an image's pixels.

        Returns:
            The per-ray outputs of all rays in order (``samples`` None).
        """
        n, start = len(rays), 0
        parts: list[RenderOutput] = []
        while start < n:
            if should_stop is not None and should_stop():
                raise RenderCancelled
            size = int(chunk() if callable(chunk) else chunk)
            if size < 1:
                raise ValueError(f"chunk must be >= 1 ray, got {size}")
            with (chunk_guard() if chunk_guard is not None else nullcontext()):
                out = self.render_rays(rays[start:start + size],
                                       use_appearance_index=use_appearance_index,
                                       should_stop=should_stop)
            parts.append(replace(out, samples=None))
            start += size
        if not parts:
            return RenderOutput.empty(rays.origins.device)
        return RenderOutput.cat(parts, image_size=image_size)

    def render_camera(self, camera: Camera, *, chunk: int | Callable[[], int] = RENDER_CHUNK,
                      appearance: int | None = None,
                      should_stop: Callable[[], bool] | None = None,
                      chunk_guard: Callable[[], AbstractContextManager] | None = None
                      ) -> RenderOutput:
        """Render every pixel of ``camera`` without gradients (:func:`camera_rays`, then
        :meth:`render_chunked`); the output has ``image_size = (H, W)``.

        appearance: the camera-table row whose appearance embedding to use, or None for
        the mean embedding (novel views). Other arguments as :meth:`render_chunked`.
        """
        rays = camera_rays(camera, image_index=appearance).to(self.device)
        return self.render_chunked(rays, chunk=chunk, use_appearance_index=appearance is not None,
                                   should_stop=should_stop, chunk_guard=chunk_guard,
                                   image_size=(int(camera.height), int(camera.width)))


def _assemble(result: dict, ray_indices, n_rays: int, expert_id, gate_value, kept,
              probs, *, gate=None) -> RenderOutput:
    """The typed output of ``render_packed``'s dict and the field's per-sample values;
    gate: the composited gate value [N] when already computed."""
    weights = result["weights"]
    with torch.no_grad():
        w = weights.detach()
        if gate is None:
            gate = composite(w, gate_value.detach().to(w.dtype), ray_indices, n_rays)  # [N]
        confidence = weighted_mean(gate, result["opacity"].detach())
    samples = SampleOutput(ray_indices, expert_id, gate_value, kept, weights, probs)
    return RenderOutput(result["rgb"], result["depth"], result["opacity"], result["expert_map"],
                        result["n_samples"], confidence, samples)
