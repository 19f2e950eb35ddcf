"""Rays from a camera: the torch definition, its numpy twin, the packed affine form, and
closed-form cases worked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from switchnerf.scene.rays import (
    image_to_camera,
    pack_cameras,
    packed_rays,
    pixel_affine,
    pixel_rays,
    pixel_rays_numpy,
    subpixel_offsets,
)


def random_camera(rng: np.random.Generator) -> tuple[np.ndarray, float, float, float, float]:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q[:, 0] *= np.sign(np.linalg.det(q))  # a proper rotation
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = q, rng.normal(size=3) * 10.0
    fx, fy = rng.uniform(5.0, 40.0, size=2)
    cx, cy = rng.uniform(2.0, 10.0, size=2)
    return c2w, float(fx), float(fy), float(cx), float(cy)


def test_hand_case_rotated_camera():
    # camera turned 90 degrees about world z: camera (x, y, z) -> world (-y, x, z)
    c2w = np.eye(4)
    c2w[:3, :3] = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    c2w[:3, 3] = [3.0, -2.0, 7.0]
    o, d = pixel_rays(c2w, 2.0, 4.0, 1.0, 1.0, 2, 2)
    # pixel (i, j) -> camera ((i + 0.5 - 1) / 2, -(j + 0.5 - 1) / 4, -1), row-major
    cam = [(-0.25, 0.125), (0.25, 0.125), (-0.25, -0.125), (0.25, -0.125)]
    expect = np.array([[-y, x, -1.0] for x, y in cam]) / np.sqrt(0.25 ** 2 + 0.125 ** 2 + 1.0)
    np.testing.assert_allclose(d.numpy(), expect, rtol=0, atol=1e-7)
    assert torch.equal(o, torch.tensor([[3.0, -2.0, 7.0]] * 4))
    assert o.dtype == d.dtype == torch.float32 and o.is_contiguous()


def test_hand_case_subsamples():
    # one pixel, centre of projection at its centre: sub-pixel points at 0.25 and 0.75
    o, d = pixel_rays(np.eye(4), 1.0, 1.0, 0.5, 0.5, 1, 1, subsamples=2)
    assert o.shape == (4, 3) and not o.any()
    expect = np.array([[-0.25, 0.25, -1.0], [0.25, 0.25, -1.0], [-0.25, -0.25, -1.0],
                       [0.25, -0.25, -1.0]]) / np.sqrt(1.125)
    np.testing.assert_allclose(d.numpy(), expect, rtol=0, atol=1e-7)
    assert subpixel_offsets(1) == [0.5] and subpixel_offsets(4) == [0.125, 0.375, 0.625, 0.875]
    with pytest.raises(ValueError, match="subsamples"):
        subpixel_offsets(0)


@pytest.mark.parametrize("subsamples", [1, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numpy_twin_equals_torch(seed, subsamples):
    c2w, fx, fy, cx, cy = random_camera(np.random.default_rng(seed))
    o_t, d_t = pixel_rays(c2w, fx, fy, cx, cy, 13, 7, subsamples=subsamples)
    o_n, d_n = pixel_rays_numpy(c2w, fx, fy, cx, cy, 13, 7, subsamples=subsamples)
    assert d_n.shape == (13 * 7 * subsamples ** 2, 3) and d_n.dtype == np.float32
    np.testing.assert_array_equal(d_n, d_t.numpy())
    np.testing.assert_array_equal(o_n, o_t.numpy())
    # a tensor camera gives the same rays as an array
    o2, d2 = pixel_rays(torch.from_numpy(c2w), fx, fy, cx, cy, 13, 7, subsamples=subsamples)
    assert torch.equal(o2, o_t) and torch.equal(d2, d_t)


def test_against_matrix_expression():
    """The plain expression normalise(R @ ((u - cx) / fx, -(v - cy) / fy, -1)) in float64."""
    c2w, fx, fy, cx, cy = random_camera(np.random.default_rng(5))
    w, h, s = 6, 5, 2
    _, d = pixel_rays(c2w, fx, fy, cx, cy, w, h, subsamples=s)
    v, u = np.meshgrid((np.arange(h * s) + 0.5) / s, (np.arange(w * s) + 0.5) / s, indexing="ij")
    cam = np.stack([(u - cx) / fx, -(v - cy) / fy, -np.ones_like(u)], -1).reshape(-1, 3)
    ref = cam @ c2w[:3, :3].T
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(d.numpy(), ref, rtol=0, atol=1e-7)


def test_pixel_affine_is_image_to_camera_at_centres():
    fx, fy, cx, cy = 17.0, 23.0, 6.3, 4.1
    ax, bx, ay, by = pixel_affine(fx, fy, cx, cy)
    col, row = np.arange(9.0), np.arange(9.0)
    x, y = image_to_camera(col + 0.5, row + 0.5, fx, fy, cx, cy)
    np.testing.assert_allclose(col * ax + bx, x, rtol=0, atol=1e-15)
    np.testing.assert_allclose(row * ay + by, y, rtol=0, atol=1e-15)
    # the same expressions on tensors
    t = pixel_affine(*(torch.tensor([v], dtype=torch.float64) for v in (fx, fy, cx, cy)))
    assert [float(v) for v in t] == [ax, bx, ay, by]


def test_packed_rays_equal_pixel_rays():
    rng = np.random.default_rng(3)
    cams = [random_camera(rng) for _ in range(4)]
    widths, heights = [5, 8, 3, 6], [4, 2, 7, 5]
    packed = pack_cameras(
        torch.tensor(np.stack([c[0] for c in cams]), dtype=torch.float32),
        *(torch.tensor([c[k] for c in cams], dtype=torch.float32) for k in range(1, 5)))
    width = torch.tensor(widths)
    for k, (c2w, fx, fy, cx, cy) in enumerate(cams):
        n = widths[k] * heights[k]
        o, d = packed_rays(packed, width, torch.full((n,), k), torch.arange(n))
        # the reference from the float32 camera the table holds
        ref_o, ref_d = pixel_rays(c2w.astype(np.float32), np.float32(fx), np.float32(fy),
                                  np.float32(cx), np.float32(cy), widths[k], heights[k])
        assert torch.equal(o, ref_o)
        torch.testing.assert_close(d, ref_d, rtol=0, atol=2e-6)
