"""Sampler and compositor: occupancy grid, ray marching, packed volume rendering, palettes.

Everything works in the field's unit-cube frame with t in world units (see
``sampler.py``); semantics follow nerfacc 0.5. The kernels are those of
:mod:`switchnerf.ops` (native CPU ops where built, nerfacc on CUDA, else their torch twins).
"""

from .composite import (
    composite,
    exclusive_sum_per_ray,
    packed_info,
    render_packed,
    render_weights,
)
from .occupancy import OccupancyGrid
from .palette import EXPERT_PALETTE, colorize_depth, colorize_experts, turbo, viridis
from .sampler import PackedSamples, march_rays, ray_box_intersect

__all__ = [
    "EXPERT_PALETTE",
    "OccupancyGrid",
    "PackedSamples",
    "colorize_depth",
    "colorize_experts",
    "composite",
    "exclusive_sum_per_ray",
    "march_rays",
    "packed_info",
    "ray_box_intersect",
    "render_packed",
    "render_weights",
    "turbo",
    "viridis",
]
