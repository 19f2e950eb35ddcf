"""Colours for expert maps and depth images (no plotting library needed).

Outputs are float32 RGB in [0, 1] on the input's device, with a trailing axis of 3.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["EXPERT_PALETTE", "colorize_depth", "colorize_experts", "turbo", "viridis"]

_HEX = ("1f77b4", "ff7f0e", "2ca02c", "d62728", "9467bd", "8c564b", "e377c2", "7f7f7f",
        "bcbd22", "17becf", "ffe119", "f032e6", "800000", "aaffc3", "000075", "fabed4")

#: float32 [16, 3] in [0, 1]: colour of expert e is row e. Pairwise RGB distance >= 0.26,
#: distance to black >= 0.45 (black means "no expert").
EXPERT_PALETTE = torch.tensor([[int(h[i:i + 2], 16) / 255.0 for i in (0, 2, 4)] for h in _HEX],
                              dtype=torch.float32)


def colorize_experts(expert_map: Tensor) -> Tensor:
    """Colour an expert-id map.

    Args:
        expert_map: int [...] (e.g. [N] or [H, W]) of ids in [-1, 15]; -1 = no expert.

    Returns:
        float32 [..., 3]: ``EXPERT_PALETTE[expert_map]``, black where the id is -1.

    >>> colorize_experts(torch.tensor([-1, 0]))
    tensor([[0.0000, 0.0000, 0.0000],
            [0.1216, 0.4667, 0.7059]])
    """
    ids = expert_map.long()
    if ids.numel() and (int(ids.min()) < -1 or int(ids.max()) >= EXPERT_PALETTE.shape[0]):
        raise ValueError(f"expert ids must lie in [-1, {EXPERT_PALETTE.shape[0] - 1}], got "
                         f"[{int(ids.min())}, {int(ids.max())}]")
    table = torch.cat([EXPERT_PALETTE, EXPERT_PALETTE.new_zeros(1, 3)]).to(ids.device)  # [17, 3]
    return table[torch.where(ids < 0, torch.full_like(ids, EXPERT_PALETTE.shape[0]), ids)]


_TURBO_4 = torch.tensor([[0.13572138, 4.61539260, -42.66032258, 132.13108234],
                         [0.09140261, 2.19418839, 4.84296658, -14.18503333],
                         [0.10667330, 12.64194608, -60.58204836, 110.36276771]],
                        dtype=torch.float64)  # [3, 4] coefficients of 1, x, x^2, x^3
_TURBO_2 = torch.tensor([[-152.94239396, 59.28637943], [4.27729857, 2.82956604],
                         [-89.90310912, 27.34824973]], dtype=torch.float64)  # x^4, x^5

_VIRIDIS = torch.tensor([
    [0.2777273272234177, 0.005407344544966578, 0.3340998053353061],
    [0.1050930431085774, 1.404613529898575, 1.384590162594685],
    [-0.3308618287255563, 0.214847559468213, 0.09509516302823659],
    [-4.634230498983486, -5.799100973351585, -19.33244095627987],
    [6.228269936347081, 14.17993336680509, 56.69055260068105],
    [4.776384997670288, -13.74514537774601, -65.35303263337234],
    [-5.435455855934631, 4.645852612178535, 26.3124352495832]], dtype=torch.float64)  # [7, 3]


def turbo(x: Tensor) -> Tensor:
    """Turbo colour map (polynomial fit of Google's Turbo): float [...] -> float32 [..., 3].

    Equals ``clamp(sum_k c[:, k] * clamp(x, 0, 1) ** k, 0, 1)`` with the degree-5
    coefficients ``c`` of the published GLSL approximation.

    >>> turbo(torch.tensor([0.0, 1.0]))
    tensor([[0.1357, 0.0914, 0.1067],
            [0.5659, 0.0504, 0.0000]])
    """
    t = x.detach().to(torch.float64).clamp(0, 1)[..., None]
    powers = torch.cat([t ** k for k in range(6)], -1)  # [..., 6]
    coeff = torch.cat([_TURBO_4, _TURBO_2], 1).to(t.device)  # [3, 6]
    return (powers @ coeff.T).clamp(0, 1).to(torch.float32)


def viridis(x: Tensor) -> Tensor:
    """Viridis colour map (degree-6 polynomial fit): float [...] -> float32 [..., 3].

    Equals ``clamp(sum_k c[k] * clamp(x, 0, 1) ** k, 0, 1)``.

    >>> viridis(torch.tensor([0.0, 1.0]))
    tensor([[0.2777, 0.0054, 0.3341],
            [0.9869, 0.9064, 0.1313]])
    """
    t = x.detach().to(torch.float64).clamp(0, 1)[..., None]
    powers = torch.cat([t ** k for k in range(7)], -1)  # [..., 7]
    return (powers @ _VIRIDIS.to(t.device)).clamp(0, 1).to(torch.float32)


_CMAPS = {"turbo": turbo, "viridis": viridis}


def colorize_depth(depth: Tensor, near: float | None = None, far: float | None = None,
                   cmap: str = "turbo") -> tuple[Tensor, float, float]:
    """Colour a depth map, near in the colour map's low end.

    Args:
        depth: float [...] (e.g. [N] or [H, W]), world units.
        near, far: the depth range mapped to [0, 1]; None: the min / max of the finite
            values of ``depth`` (0 and 1 when there are none).
        cmap: "turbo" or "viridis".

    Returns:
        rgb float32 [..., 3] = ``cmap((depth - near) / (far - near))`` (clamped to the
        range; non-finite depths are black), and the near and far used.

    >>> rgb, lo, hi = colorize_depth(torch.tensor([2.0, 4.0]))
    >>> (lo, hi), rgb.shape
    ((2.0, 4.0), torch.Size([2, 3]))
    """
    if cmap not in _CMAPS:
        raise ValueError(f"cmap must be one of {sorted(_CMAPS)}, got {cmap!r}")
    d = depth.detach().to(torch.float64)
    finite = torch.isfinite(d)
    if near is None or far is None:
        vals = d[finite]
        lo_auto = float(vals.min()) if vals.numel() else 0.0
        hi_auto = float(vals.max()) if vals.numel() else 1.0
        near = lo_auto if near is None else float(near)
        far = hi_auto if far is None else float(far)
    span = far - near if far > near else 1.0
    rgb = _CMAPS[cmap](torch.where(finite, (d - near) / span, torch.zeros_like(d)))
    rgb = torch.where(finite[..., None], rgb, torch.zeros_like(rgb))
    return rgb, float(near), float(far)
