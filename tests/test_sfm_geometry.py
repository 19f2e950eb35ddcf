"""The geometry behind ``scene from-images``: similarity alignment, leveling by the ground
plane, and the world-fixed surface detail of the synthetic photos."""

from __future__ import annotations

import numpy as np
import pytest
from _scene_data import source_frame, world_cameras

from switchnerf.scene.align import aligned_errors, umeyama
from switchnerf.scene.gravity import fit_ground_plane, level
from switchnerf.scene.synth.texture import detail_factor, value_noise


def _random_similarity(seed):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return float(rng.uniform(0.1, 10)), q, rng.normal(0, 5, 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_umeyama_recovers_a_similarity(seed):
    s, r, t = _random_similarity(seed)
    src = np.random.default_rng(10 + seed).normal(0, 3, (20, 3))
    dst = s * src @ r.T + t
    s2, r2, t2 = umeyama(src, dst)
    assert s2 == pytest.approx(s, rel=1e-10)
    np.testing.assert_allclose(r2, r, atol=1e-10)
    np.testing.assert_allclose(t2, t, atol=1e-9)
    assert aligned_errors(src, dst).max() < 1e-9


def test_umeyama_is_least_squares_and_never_reflects():
    """Noisy points: no perturbation of the answer lowers the summed squared error; a
    mirrored target still gets a rotation (det +1)."""
    rng = np.random.default_rng(3)
    s, r, t = _random_similarity(4)
    src = rng.normal(0, 2, (30, 3))
    dst = s * src @ r.T + t + rng.normal(0, 0.05, (30, 3))
    s2, r2, t2 = umeyama(src, dst)

    def cost(s_, r_, t_):
        return float(((s_ * src @ r_.T + t_ - dst) ** 2).sum())

    best = cost(s2, r2, t2)
    for _ in range(20):
        w = rng.normal(0, 1e-3, 3)
        k = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])
        r3 = r2 @ (np.eye(3) + k + k @ k / 2)
        assert cost(s2 * (1 + rng.normal(0, 1e-3)), r3, t2 + rng.normal(0, 1e-3, 3)) > best
    mirrored = src * np.array([1.0, 1.0, -1.0])
    assert np.linalg.det(umeyama(src, mirrored)[1]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        umeyama(src[:2], dst[:2])


def _city_points(seed=0, n_ground=600, n_roofs=300):
    """Ground z = 0 over 80 m, plus roofs 5-20 m up and wall points (metres, z up)."""
    rng = np.random.default_rng(seed)
    ground = np.c_[rng.uniform(-40, 40, (n_ground, 2)), rng.normal(0, 0.05, n_ground)]
    roofs = np.c_[rng.uniform(-20, 20, (n_roofs, 2)), rng.choice([5.0, 12.0, 20.0], n_roofs)]
    walls = np.c_[rng.uniform(-20, 20, (100, 2)), rng.uniform(0, 20, 100)]
    return np.vstack([ground, roofs, walls])


def test_level_puts_the_ground_at_zero_and_up_at_z():
    """A tilted, shifted, scaled copy of a city: leveling undoes the tilt and the height."""
    c2ws, pts = world_cameras(12), _city_points()
    q, b = source_frame()
    scale = 0.07
    src_c2ws = c2ws.copy()
    src_c2ws[:, :3, :3] = q @ c2ws[:, :3, :3]
    src_c2ws[:, :3, 3] = scale * c2ws[:, :3, 3] @ q.T + b
    g = level(src_c2ws, scale * pts @ q.T + b)
    assert g.source == "ground plane" and g.aerial and g.cameras_above == 1.0
    assert g.ground_points >= 550 and g.tilt_deg < 1.0
    np.testing.assert_allclose(g.up, q[:, 2], atol=2e-3)  # world z in the source frame
    moved = (scale * pts @ q.T + b) @ g.transform[:3, :3].T + g.transform[:3, 3]
    assert abs(np.median(moved[:600, 2])) < 0.01 * scale  # the ground at z = 0
    np.testing.assert_allclose(moved[600:900, 2] / scale, pts[600:900, 2], atol=0.05)
    cams = src_c2ws[:, :3, 3] @ g.transform[:3, :3].T + g.transform[:3, 3]
    np.testing.assert_allclose(cams[:, :2].mean(0), 0.0, atol=1e-9)


def test_level_without_a_ground_plane_uses_the_cameras():
    c2ws = world_cameras(12)
    blob = np.random.default_rng(0).normal(0, 10, (300, 3))  # no plane in it
    assert fit_ground_plane(blob, np.array([0.0, 0.0, 1.0])) is None
    g = level(c2ws, blob)
    assert g.source == "cameras" and g.tilt_deg is None
    np.testing.assert_allclose(g.up, [0, 0, 1], atol=1e-6)
    g = level(c2ws, None)
    assert g.source == "cameras" and g.transform[2, 3] == pytest.approx(-c2ws[:, 2, 3].min())


def test_surface_detail_is_fixed_to_the_world():
    rng = np.random.default_rng(0)
    p = rng.uniform(-50, 50, (2000, 3))
    f = detail_factor(p, 0.3, seed=1)
    assert f.dtype == np.float32 and f.min() >= 0.7 - 1e-6 and f.max() <= 1.3 + 1e-6
    assert f.std() > 0.03  # there is texture to match
    np.testing.assert_array_equal(detail_factor(p[::-1], 0.3, seed=1), f[::-1])  # per point
    assert not np.allclose(detail_factor(p, 0.3, seed=2), f)
    # trilinear value noise equals its lattice values at lattice points and is continuous
    corners = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [2.0, 4.0, -6.0]])
    v = value_noise(corners, 2.0, 0)
    near = value_noise(corners + 1e-6, 2.0, 0)
    np.testing.assert_allclose(v, near, atol=1e-4)
    assert len(set(np.round(v, 6))) == 3
