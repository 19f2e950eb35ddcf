"""Colour-mapped images of a render: the one place that turns a :class:`RenderOutput` into
pictures (viewer frames, video panels, eval side-by-sides).

Outputs (``OUTPUTS``):

- ``rgb``: the colour, clamped to [0, 1];
- ``depth``: expected depth ``depth / opacity`` of rays with opacity > ``DEPTH_MIN_OPACITY``
  through the turbo map, near in blue (other rays black); ``depth_range`` = (near, far)
  in world units, or None for the min / max of the image;
- ``opacity``: grey, black 0 to white 1;
- ``experts``: the expert of each ray's highest-weight sample in ``EXPERT_PALETTE``,
  black where the ray has no sample;
- ``gate_confidence``: the weight-averaged gate value through viridis over
  [1 / n_experts, 1], black where the ray is empty.
"""

from __future__ import annotations

import numpy as np
import torch

from switchnerf.render.outputs import RenderOutput
from switchnerf.render.palette import colorize_depth, colorize_experts, viridis

__all__ = ["DEPTH_CMAP", "DEPTH_MIN_OPACITY", "OUTPUTS", "colorize", "to_uint8"]

OUTPUTS = ("rgb", "depth", "opacity", "experts", "gate_confidence")

#: Rays at or below this opacity have no depth (black in depth images).
DEPTH_MIN_OPACITY = 0.01

DEPTH_CMAP = "turbo"


def to_uint8(image) -> np.ndarray:
    """float [..., 3] in [0, 1] (tensor or array) -> uint8, ``clip(x, 0, 1) * 255 + 0.5``
    rounded down, C-contiguous."""
    arr = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5
    return np.ascontiguousarray(arr.astype(np.uint8))


def colorize(output: RenderOutput, name: str, *,
             depth_range: tuple[float, float] | None = None, n_experts: int | None = None,
             info: dict | None = None) -> np.ndarray:
    """One output of an image render as uint8 [H, W, 3] (see the module docstring).

    Args:
        output: a render with ``image_size`` (e.g. ``Renderer.render_camera``'s).
        name: one of ``OUTPUTS``.
        depth_range: (near, far) of the depth map, world units; None: the image's range.
        n_experts: the model's expert count (needed by ``gate_confidence``; with it,
            ``experts`` reports each expert's share of the covered pixels).
        info: when given, filled with what the image shows: ``near``, ``far`` (depth),
            ``share`` (experts, a list of E fractions; needs ``n_experts``).

    >>> out = RenderOutput(torch.ones(2, 3), torch.zeros(2), torch.tensor([1.0, 0.0]),
    ...                    torch.tensor([0, -1]), torch.tensor([1, 0]), torch.zeros(2),
    ...                    image_size=(1, 2))
    >>> colorize(out, "opacity")[..., 0].tolist()
    [[255, 0]]
    """
    if name not in OUTPUTS:
        raise ValueError(f"unknown output {name!r}; expected one of {', '.join(OUTPUTS)}")
    if output.image_size is None:
        raise ValueError("colorize needs an output with image_size (an image's pixels)")
    h, w = output.image_size
    if name == "rgb":
        img = output.rgb.detach().clamp(0, 1).view(h, w, 3).cpu()
    elif name == "depth":
        depth = output.expected_depth(DEPTH_MIN_OPACITY).detach().view(h, w).cpu()
        near, far = (None, None) if depth_range is None else depth_range
        img, near, far = colorize_depth(depth, near, far, cmap=DEPTH_CMAP)
        if info is not None:
            info.update(near=near, far=far)
    elif name == "opacity":
        img = output.opacity.detach().clamp(0, 1).view(h, w, 1).expand(h, w, 3).cpu()
    elif name == "experts":
        ids = output.expert_map.cpu()
        img = colorize_experts(ids.view(h, w))
        if info is not None and n_experts is not None:
            valid = ids[ids >= 0]
            counts = torch.bincount(valid, minlength=n_experts)[:n_experts].double()
            info["share"] = (counts / max(int(valid.numel()), 1)).tolist()
    else:  # gate_confidence
        if n_experts is None:
            raise ValueError("colorize: gate_confidence needs n_experts")
        lo = 1.0 / max(n_experts, 1)
        g = output.gate_confidence.detach().cpu()
        x = (g - lo) / max(1.0 - lo, 1e-6)
        hit = (output.opacity.detach().cpu() > 0)[:, None]
        img = torch.where(hit, viridis(x), torch.zeros(g.shape[0], 3)).view(h, w, 3)
    return to_uint8(img)
