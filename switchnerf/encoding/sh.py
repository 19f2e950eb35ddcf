"""Real spherical-harmonics encoding of view directions, tiny-cuda-nn's constants and order."""

from __future__ import annotations

import torch
from torch import nn


def spherical_harmonics(directions: torch.Tensor, degree: int) -> torch.Tensor:
    """Real SH basis of unit directions, as tcnn's ``SphericalHarmonics`` encoding.

    directions: [N, 3] unit vectors (x, y, z) in any frame. tcnn maps its input
    from [0, 1] to [-1, 1] first (``2 * d - 1``); this function takes the unit
    vectors directly, so pass ``d`` where tcnn would be given ``(d + 1) / 2``.
    degree: number of bands, 1..4. Returns [N, degree ** 2] in the input dtype,
    band by band (1, then -y, z, -x scaled, ...), Condon-Shortley phase.
    """
    if not 1 <= degree <= 4:
        raise ValueError(f"SH degree must be in 1..4, got {degree}")
    if directions.dim() != 2 or directions.shape[1] != 3:
        raise ValueError(f"directions have shape {tuple(directions.shape)}, expected [N, 3]")
    x, y, z = directions.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree > 2:
        xy, yz, xz, x2, y2, z2 = x * y, y * z, x * z, x * x, y * y, z * z
        out += [
            1.0925484305920792 * xy,
            -1.0925484305920792 * yz,
            0.94617469575755997 * z2 - 0.31539156525251999,
            -1.0925484305920792 * xz,
            0.54627421529603959 * x2 - 0.54627421529603959 * y2,
        ]
    if degree > 3:
        out += [
            0.59004358992664352 * y * (-3.0 * x2 + y2),
            2.8906114426405538 * xy * z,
            0.45704579946446572 * y * (1.0 - 5.0 * z2),
            0.3731763325901154 * z * (5.0 * z2 - 3.0),
            0.45704579946446572 * x * (1.0 - 5.0 * z2),
            1.4453057213202769 * z * (x2 - y2),
            0.59004358992664352 * x * (-x2 + 3.0 * y2),
        ]
    return torch.stack(out, dim=-1)


class SHEncoding(nn.Module):
    """Module form of :func:`spherical_harmonics`: [N, 3] unit directions -> [N, degree ** 2]."""

    def __init__(self, degree: int = 4):
        super().__init__()
        if not 1 <= degree <= 4:
            raise ValueError(f"SH degree must be in 1..4, got {degree}")
        self.degree = degree

    @property
    def output_dim(self) -> int:
        return self.degree**2

    def forward(self, directions: torch.Tensor) -> torch.Tensor:
        return spherical_harmonics(directions, self.degree)

    def extra_repr(self) -> str:
        return f"degree={self.degree}"
