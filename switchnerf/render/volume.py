"""Render rays through a field: world rays -> unit-cube frame -> march -> field -> composite."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from switchnerf.config import SamplerConfig
from switchnerf.render.composite import render_packed
from switchnerf.render.front_to_back import evaluate_front_to_back
from switchnerf.render.occupancy import OccupancyGrid
from switchnerf.render.sampler import march_rays
from switchnerf.scene.types import RayBatch

#: Rays per ``render_rays`` call when rendering whole images without gradients. Large: the
#: front-to-back rounds cost a fixed overhead each, so a 256x192 view in one chunk renders
#: about a fifth faster on CPU than in chunks of 8192 (bit-identical pixels on the demo's
#: views; only the float64 rounding of the front-to-back running sums can differ).
RENDER_CHUNK = 1 << 16


@dataclass
class BoxFrame:
    """The foreground box: world point p maps to the unit cube as (p - lo) / (hi - lo).

    lo, hi: float32 [3] world units. Ray parameters t stay in world units under this map
    (directions are scaled, not renormalised).
    """

    lo: torch.Tensor
    hi: torch.Tensor

    @property
    def extent(self) -> torch.Tensor:
        return self.hi - self.lo

    @property
    def diagonal(self) -> float:
        return float(torch.linalg.norm(self.extent))

    def to(self, device) -> BoxFrame:
        return BoxFrame(self.lo.to(device), self.hi.to(device))

    @classmethod
    def from_bbox(cls, bbox, device="cpu") -> BoxFrame:
        b = torch.as_tensor(bbox, dtype=torch.float32, device=device)
        return cls(b[0].clone(), b[1].clone())


def step_size(box: BoxFrame, cfg: SamplerConfig) -> float:
    """March step in world units: the box diagonal over ``cfg.steps_per_diagonal``."""
    return box.diagonal / cfg.steps_per_diagonal


def render_rays(field, grid: OccupancyGrid, rays: RayBatch, box: BoxFrame, cfg: SamplerConfig,
                *, stratified: bool = False, use_appearance_index: bool = True,
                prune: bool = True, should_stop: Callable[[], bool] | None = None) -> dict:
    """Volume-render a batch of world-frame rays.

    Returns a dict: rgb [N,3], depth [N] (expected world t of the samples; 0 where empty),
    opacity [N], expert_map int64 [N] (-1: no sample), n_samples [N], and per kept sample
    ``expert_id`` [M], ``gate_value`` [M], ``kept`` [M] and, for the balance loss, ``probs``
    [M,E] (None when called without gradients with ``prune``).

    prune: drop samples that are invisible (alpha below ``cfg.alpha_thre`` or behind
    transmittance ``cfg.early_stop_eps``): with gradients, by one extra no-grad density
    pass; without, by evaluating each ray front to back until it is opaque (the same
    samples, each evaluated once).
    should_stop: without gradients, polled between front-to-back rounds; ``True`` raises
    ``switchnerf.render.front_to_back.RenderCancelled`` (the viewer abandons stale views).
    """
    ext = box.extent
    o_unit = (rays.origins - box.lo) / ext
    d_unit = rays.directions / ext
    image_index = rays.image_index if use_appearance_index else None
    if prune and not torch.is_grad_enabled():
        return _render_front_to_back(field, grid, rays, o_unit, d_unit, image_index, box, cfg,
                                     stratified=stratified, should_stop=should_stop)

    def sigma_fn(t_starts, t_ends, ray_indices):
        t_mid = 0.5 * (t_starts + t_ends)
        pts = o_unit[ray_indices] + t_mid[:, None] * d_unit[ray_indices]
        return field.density(pts)

    with torch.no_grad():
        samples = march_rays(
            o_unit, d_unit, rays.near, rays.far, grid, step_size=step_size(box, cfg),
            stratified=stratified, sigma_fn=sigma_fn if prune else None, alpha_thre=cfg.alpha_thre,
            early_stop_eps=cfg.early_stop_eps, max_samples_per_ray=cfg.max_samples_per_ray)
    ri = samples.ray_indices
    t_mid = 0.5 * (samples.t_starts + samples.t_ends)
    pts = o_unit[ri] + t_mid[:, None] * d_unit[ri]
    out = field(pts, rays.directions[ri], None if image_index is None else image_index[ri])
    background = field.background(rays.directions) if field.background is not None else None
    result = render_packed(samples.t_starts, samples.t_ends, ri, len(rays), out.rgb, out.sigma,
                           expert_ids=out.expert_id, background_rgb=background)
    result["probs"] = out.probs
    result["expert_id"] = out.expert_id
    result["kept"] = out.kept
    result["gate_value"] = out.gate_value
    return result


def _render_front_to_back(field, grid, rays: RayBatch, o_unit, d_unit, image_index, box: BoxFrame,
                          cfg: SamplerConfig, *, stratified: bool,
                          should_stop: Callable[[], bool] | None = None) -> dict:
    """``render_rays`` without gradients: the geometry of each marched sample is evaluated
    once, front to back, each ray stopping when opaque; colour only where visible. Same
    kept samples and outputs as the two-pass path (module ``front_to_back``)."""
    samples = march_rays(o_unit, d_unit, rays.near, rays.far, grid, step_size=step_size(box, cfg),
                         stratified=stratified, max_samples_per_ray=cfg.max_samples_per_ray)
    marched_rays = samples.ray_indices
    mids = 0.5 * (samples.t_starts + samples.t_ends)

    def geometry(idx):
        r = marched_rays.index_select(0, idx)
        g = field.geometry(o_unit.index_select(0, r)
                           + mids.index_select(0, idx)[:, None] * d_unit.index_select(0, r))
        return g.sigma, {"geo": g.geo, "expert_id": g.gate.expert_id,
                         "gate_value": g.gate.gate_value, "kept": g.kept}

    keep, sigma, ex = evaluate_front_to_back(
        geometry, samples.t_starts, samples.t_ends, marched_rays, len(rays),
        alpha_thre=cfg.alpha_thre, early_stop_eps=cfg.early_stop_eps, should_stop=should_stop)
    ri = marched_rays.index_select(0, keep)
    if keep.numel():
        rgb = field.rgb_of_rays(ex["geo"], rays.directions, ri, image_index)
    else:
        rgb = sigma.new_zeros(0, 3)
        ex = {"expert_id": ri.clone(), "gate_value": sigma.clone(), "kept": ri.bool()}
    background = field.background(rays.directions) if field.background is not None else None
    result = render_packed(samples.t_starts.index_select(0, keep),
                           samples.t_ends.index_select(0, keep), ri, len(rays), rgb, sigma,
                           expert_ids=ex["expert_id"], background_rgb=background)
    for name in ("expert_id", "kept", "gate_value"):
        result[name] = ex[name]
    result["probs"] = None  # the balance loss needs them, and only training does
    return result


@torch.no_grad()
def render_image_rays(field, grid: OccupancyGrid, rays: RayBatch, box: BoxFrame,
                      cfg: SamplerConfig, *, chunk: int = RENDER_CHUNK,
                      use_appearance_index: bool = True) -> dict:
    """Render many rays in chunks without gradients.

    Returns rgb [N,3], depth [N] (not normalised), opacity [N], expert_map [N] (-1: empty).
    """
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("rgb", "depth", "opacity", "expert_map")}
    for start in range(0, len(rays), chunk):
        r = render_rays(field, grid, rays[start:start + chunk], box, cfg,
                        use_appearance_index=use_appearance_index)
        for k, values in parts.items():
            values.append(r[k])
    return {k: torch.cat(v) if v else torch.zeros(0) for k, v in parts.items()}
