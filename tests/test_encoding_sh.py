"""Spherical harmonics against the closed-form real SH (Condon-Shortley phase), tcnn's order."""

import math

import pytest
import torch

from switchnerf.encoding import SHEncoding


def _closed_form(x, y, z):
    pi = math.pi
    c0 = 1 / (2 * math.sqrt(pi))
    c1 = math.sqrt(3 / (4 * pi))
    c2a, c2b, c2c = 0.5 * math.sqrt(15 / pi), 0.25 * math.sqrt(5 / pi), 0.25 * math.sqrt(15 / pi)
    c3a, c3b = 0.25 * math.sqrt(35 / (2 * pi)), 0.5 * math.sqrt(105 / pi)
    c3c, c3d = 0.25 * math.sqrt(21 / (2 * pi)), 0.25 * math.sqrt(7 / pi)
    c3e = 0.25 * math.sqrt(105 / pi)
    return [
        c0,
        -c1 * y,
        c1 * z,
        -c1 * x,
        c2a * x * y,
        -c2a * y * z,
        c2b * (3 * z * z - 1),
        -c2a * x * z,
        c2c * (x * x - y * y),
        c3a * y * (y * y - 3 * x * x),
        c3b * x * y * z,
        c3c * y * (1 - 5 * z * z),
        c3d * z * (5 * z * z - 3),
        c3c * x * (1 - 5 * z * z),
        c3e * z * (x * x - y * y),
        c3a * x * (3 * y * y - x * x),
    ]


@pytest.mark.parametrize("degree", [1, 2, 3, 4])
def test_sh_matches_closed_form(degree):
    dirs = torch.tensor(
        [
            [0.0, 0.0, 1.0],
            [1.0, 0.0, 0.0],
            [0.0, -1.0, 0.0],
            [0.48, -0.6, 0.64],
            [-0.36, 0.48, -0.8],
        ],
        dtype=torch.float64,
    )
    enc = SHEncoding(degree)
    assert enc.output_dim == degree**2
    out = enc(dirs)
    expected = torch.tensor(
        [_closed_form(*d)[: degree**2] for d in dirs.tolist()], dtype=torch.float64
    )
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_sh_is_orthonormal_on_the_sphere():
    # Monte Carlo over uniform directions: E[Y_i Y_j] * 4 pi = delta_ij.
    gen = torch.Generator().manual_seed(0)
    d = torch.nn.functional.normalize(
        torch.randn(200_000, 3, generator=gen, dtype=torch.float64), dim=-1
    )
    y = SHEncoding(4)(d)
    gram = (y.T @ y) * (4 * math.pi / d.shape[0])
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), rtol=0, atol=0.03)


def test_sh_rejects_bad_degree():
    with pytest.raises(ValueError):
        SHEncoding(5)
