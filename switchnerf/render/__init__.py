"""The volume-rendering core: occupancy grid, ray marching, packed compositing, the
:class:`Renderer` and its typed outputs, and the colouring of those outputs.

Everything below the Renderer works in the field's unit-cube frame with t in world units
(see ``sampler.py``); semantics follow nerfacc 0.5. The kernels are those of
:mod:`switchnerf.ops` (native CPU ops where built, nerfacc on CUDA, else their torch twins).
Nothing here knows of training, the viewer, video, export or the CLI.
"""

from .box import BoxFrame
from .colorize import OUTPUTS, colorize, to_uint8
from .composite import (
    composite,
    exclusive_sum_per_ray,
    packed_info,
    render_packed,
    render_weights,
)
from .front_to_back import RenderCancelled
from .occupancy import OccupancyGrid
from .outputs import RenderOutput, SampleOutput, weighted_mean
from .palette import EXPERT_PALETTE, colorize_depth, colorize_experts, turbo, viridis
from .renderer import RENDER_CHUNK, Camera, Renderer, camera_rays
from .sampler import PackedSamples, march_rays, ray_box_intersect

__all__ = [
    "EXPERT_PALETTE",
    "OUTPUTS",
    "RENDER_CHUNK",
    "BoxFrame",
    "Camera",
    "OccupancyGrid",
    "PackedSamples",
    "RenderCancelled",
    "RenderOutput",
    "Renderer",
    "SampleOutput",
    "camera_rays",
    "colorize",
    "colorize_depth",
    "colorize_experts",
    "composite",
    "exclusive_sum_per_ray",
    "march_rays",
    "packed_info",
    "ray_box_intersect",
    "render_packed",
    "render_weights",
    "to_uint8",
    "turbo",
    "viridis",
    "weighted_mean",
]
