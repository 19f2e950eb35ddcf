"""Drone-style camera paths over the synthetic city (metres, z-up world).

Lawnmower passes at ``preset.altitude``, looking ``pitch_deg`` below the horizon along the
direction of flight (passes along y, alternating heading, then along x), placed so that
the principal rays' ground points cover the city evenly; then orbits around the centre
looking at the ground origin, then close orbits around a given place looking at a point
above it. Small seeded jitter of position and heading.
"""

from __future__ import annotations

import numpy as np

from switchnerf.scene.synth.presets import CityPreset


def look_c2w(position: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """c2w [4, 4] with OpenGL axes for a camera at ``position`` looking along ``forward``,
    without roll (camera x horizontal)."""
    f = forward / np.linalg.norm(forward)
    right = np.cross(f, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, f)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, -f, position
    return c2w


def intrinsics(p: CityPreset) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) in pixels for the preset's image size and horizontal FOV."""
    w, h = p.image_size
    f = 0.5 * w / np.tan(np.radians(0.5 * p.hfov_deg))
    return f, f, 0.5 * w, 0.5 * h


def drone_cameras(p: CityPreset, seed: int) -> np.ndarray:
    """All views, c2w float64 [p.num_views, 4, 4], in capture order."""
    rng = np.random.default_rng(seed + 1)
    pitch = np.radians(p.pitch_deg)
    back = p.altitude / np.tan(pitch)  # horizontal distance from camera to its ground point
    span = np.linspace(-0.8 * p.half_extent, 0.8 * p.half_extent, p.rows)
    along = np.linspace(-0.8 * p.half_extent, 0.8 * p.half_extent, p.per_row)
    views = []
    for axis in (1, 0):  # passes along y, then along x
        for r, offset in enumerate(span):
            sign = 1.0 if r % 2 == 0 else -1.0
            for a in along[:: int(sign)]:
                heading = np.zeros(3)
                heading[axis] = sign
                yaw = rng.normal(0.0, np.radians(3.0))
                c, s = np.cos(yaw), np.sin(yaw)
                heading = np.array(
                    [c * heading[0] - s * heading[1], s * heading[0] + c * heading[1], 0.0]
                )
                ground = np.zeros(3)
                ground[axis], ground[1 - axis] = a, offset
                pos = ground - back * heading + rng.normal(0.0, 1.5, 3)
                pos[2] = p.altitude + rng.normal(0.0, 2.0)
                views.append(
                    look_c2w(pos, np.cos(pitch) * heading + np.array([0.0, 0.0, -np.sin(pitch)]))
                )
    # orbits round the origin look at the ground origin: close orbits round (0, 0, 0)
    orbits = [(0.0, 0.0, 0.0, radius, altitude, n) for radius, altitude, n in p.orbits]
    for cx, cy, look_z, radius, altitude, n in orbits + list(p.close_orbits):
        phase = rng.uniform(0.0, 2 * np.pi)
        target = np.array([cx, cy, look_z])
        for k in range(n):
            t = phase + 2 * np.pi * k / n
            pos = np.array([cx + radius * np.cos(t), cy + radius * np.sin(t), altitude])
            views.append(look_c2w(pos, target - pos))
    return np.stack(views)


def val_mask(p: CityPreset) -> np.ndarray:
    """bool [num_views]: view k is held out for val when k % val_every == val_every // 2."""
    k = np.arange(p.num_views)
    return k % p.val_every == p.val_every // 2
