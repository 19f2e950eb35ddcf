"""Offline rendering of the synthetic city with open3d ray casting.

Rays are the scene's own (``switchnerf.scene.rays``: OpenGL axes, pixel centres at +0.5),
not open3d's ``create_rays_pinhole`` (REFERENCE.md §8). Shading: albedo x (ambient + sun x
max(0, n.s) x lit), where ``lit`` comes from a shadow ray towards the sun; rays that miss
get a sky gradient by elevation. Each pixel averages ss x ss sub-pixel rays. With
``detail`` > 0 the albedo is modulated by world-fixed value noise (``texture``), which gives
structure from motion features to match; the presets render without it.
"""

from __future__ import annotations

import numpy as np

from switchnerf.scene.rays import pixel_rays_numpy
from switchnerf.scene.synth.city import FACADE, GROUND, City
from switchnerf.scene.synth.texture import detail_factor

AMBIENT = np.array([0.42, 0.45, 0.50], np.float32)
SUN = np.array([0.72, 0.69, 0.62], np.float32)
SKY_HORIZON = np.array([0.84, 0.88, 0.93], np.float32)
SKY_ZENITH = np.array([0.36, 0.55, 0.84], np.float32)


class CityRenderer:
    """Holds the open3d scene of a City; ``render`` makes one image. ``detail``: amplitude of
    the surface noise (0: the flat colours of the presets)."""

    def __init__(self, city: City, detail: float = 0.0):
        import open3d as o3d

        self.city = city
        self.detail = float(detail)
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(
            o3d.core.Tensor(city.vertices.astype(np.float32)),
            o3d.core.Tensor(city.triangles.astype(np.uint32)),
        )
        p = city.preset
        el, az = np.radians(p.sun_elevation_deg), np.radians(p.sun_azimuth_deg)
        self.sun = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])

    def _cast(self, origins: np.ndarray, dirs: np.ndarray) -> dict:
        import open3d as o3d

        rays = o3d.core.Tensor(np.concatenate([origins, dirs], 1).astype(np.float32))
        out = self.scene.cast_rays(rays)
        return {k: out[k].numpy() for k in ("t_hit", "primitive_ids", "primitive_normals")}

    def _occluded(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        import open3d as o3d

        rays = o3d.core.Tensor(np.concatenate([origins, dirs], 1).astype(np.float32))
        return self.scene.test_occlusions(rays).numpy().astype(bool)

    def shade(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """Colour in [0, 1], float32 [N, 3], of rays origins, dirs [N, 3] (dirs unit)."""
        c = self.city
        hit = self._cast(origins, dirs)
        t = hit["t_hit"]
        ok = np.isfinite(t)
        out = np.empty((len(t), 3), np.float32)
        elev = np.clip(dirs[~ok, 2], 0.0, 1.0)[:, None] ** 0.6
        out[~ok] = SKY_HORIZON * (1 - elev) + SKY_ZENITH * elev
        if not ok.any():
            return out
        tri = hit["primitive_ids"][ok].astype(np.int64)
        d = dirs[ok].astype(np.float32)
        pts = origins[ok].astype(np.float32) + t[ok, None] * d
        n = hit["primitive_normals"][ok]
        n *= np.where(np.einsum("nk,nk->n", n, d) > 0, -1.0, 1.0).astype(np.float32)[:, None]
        kind = c.kind[tri]
        albedo = c.albedo[tri].astype(np.float32)
        g = np.flatnonzero(kind == GROUND)
        albedo[g] = c.ground_color(pts[g, 0], pts[g, 1])
        f = np.flatnonzero(kind == FACADE)
        if len(f):
            albedo[f] = self._facade(pts[f], n[f], tri[f], albedo[f])
        if self.detail > 0:
            albedo *= detail_factor(pts, self.detail, c.seed)[:, None]
        lit = n @ self.sun.astype(np.float32)
        facing = np.flatnonzero(lit > 0)
        sun = np.zeros(len(tri), np.float32)
        if len(facing):
            occluded = self._occluded(
                pts[facing] + 0.02 * n[facing], np.broadcast_to(self.sun, (len(facing), 3))
            )
            sun[facing] = np.where(occluded, 0.0, lit[facing])
        out[ok] = albedo * (AMBIENT + SUN * sun[:, None])
        return np.clip(out, 0.0, 1.0)

    def _facade(self, pts, n, tri, albedo) -> np.ndarray:
        c = self.city
        along_y = np.abs(n[:, 0]) > np.abs(n[:, 1])  # wall facing x: along-wall coordinate is y
        u = np.where(along_y, pts[:, 1] - c.origin[tri, 1], pts[:, 0] - c.origin[tri, 0])
        bay, floor = c.bay[tri], c.floor[tri]
        fu = np.mod(u, bay) / bay
        z = pts[:, 2] - c.base[tri]
        fz = np.mod(z, floor) / floor
        window = (
            (fu > 0.25)
            & (fu < 0.75)
            & (fz > 0.30)
            & (fz < 0.75)
            & (z > floor)
            & (pts[:, 2] < c.top[tri] - 1.0)
        )
        return np.where(window[:, None], c.window[tri], albedo)

    def render(
        self,
        c2w: np.ndarray,
        fx: float,
        fy: float,
        cx: float,
        cy: float,
        width: int,
        height: int,
        ss: int = 2,
    ) -> np.ndarray:
        """One image, uint8 [height, width, 3]; c2w [4, 4] OpenGL axes in the city frame."""
        origins, dirs = pixel_rays_numpy(c2w, fx, fy, cx, cy, width, height, subsamples=ss)
        rgb = self.shade(origins, dirs).reshape(height, ss, width, ss, 3).mean(axis=(1, 3))
        return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
