"""Expert palette and depth colour maps."""

from __future__ import annotations

import pytest
import torch

from switchnerf.render import EXPERT_PALETTE, colorize_depth, colorize_experts, turbo, viridis


def test_palette_is_distinct_and_not_black():
    assert EXPERT_PALETTE.shape == (16, 3) and EXPERT_PALETTE.dtype == torch.float32
    assert float(EXPERT_PALETTE.min()) >= 0 and float(EXPERT_PALETTE.max()) <= 1
    dist = torch.cdist(EXPERT_PALETTE, EXPERT_PALETTE) + 10 * torch.eye(16)
    assert float(dist.min()) > 0.25
    assert float(EXPERT_PALETTE.norm(dim=-1).min()) > 0.4


def test_colorize_experts_shapes_and_no_expert_is_black():
    ids = torch.tensor([[-1, 0, 15], [3, -1, 7]])
    rgb = colorize_experts(ids)
    assert rgb.shape == (2, 3, 3)
    assert rgb[0, 0].tolist() == [0.0, 0.0, 0.0] and rgb[1, 1].tolist() == [0.0, 0.0, 0.0]
    assert torch.equal(rgb[0, 2], EXPERT_PALETTE[15]) and torch.equal(rgb[1, 0], EXPERT_PALETTE[3])
    with pytest.raises(ValueError):
        colorize_experts(torch.tensor([16]))
    with pytest.raises(ValueError):
        colorize_experts(torch.tensor([-2]))


def test_colour_maps_have_their_known_shape():
    x = torch.linspace(0, 1, 11)
    t = turbo(x)
    v = viridis(x)
    assert t.shape == v.shape == (11, 3) and float(t.min()) >= 0 and float(t.max()) <= 1
    # turbo: dark blue -> green in the middle -> dark red
    assert t[1, 2] > t[1, 0] and t[5, 1] > 0.9 and t[10, 0] > 4 * t[10, 2]
    # viridis: purple -> yellow, luminance increasing
    lum = v @ torch.tensor([0.2126, 0.7152, 0.0722])
    assert bool((lum[1:] > lum[:-1]).all())
    assert v[0, 2] > v[0, 1] and v[10, 0] > 0.9 and v[10, 2] < 0.2


def test_colorize_depth_range():
    depth = torch.tensor([[1.0, 2.0], [3.0, float("inf")]])
    rgb, near, far = colorize_depth(depth)
    assert (near, far) == (1.0, 3.0) and rgb.shape == (2, 2, 3)
    torch.testing.assert_close(rgb[0, 0], turbo(torch.tensor(0.0)))
    torch.testing.assert_close(rgb[1, 0], turbo(torch.tensor(1.0)))
    assert rgb[1, 1].tolist() == [0.0, 0.0, 0.0]
    rgb2, near2, far2 = colorize_depth(depth, near=0.0, far=4.0, cmap="viridis")
    assert (near2, far2) == (0.0, 4.0)
    torch.testing.assert_close(rgb2[0, 0], viridis(torch.tensor(0.25)))
    with pytest.raises(ValueError):
        colorize_depth(depth, cmap="jet")
