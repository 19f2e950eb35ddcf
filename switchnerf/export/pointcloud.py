"""Point cloud of a trained run from rendered depth (nerfstudio's recipe, REFERENCE.md §6).

Random pixels of the training images are rendered; a ray whose accumulated opacity exceeds
0.5 gives the point ``origin + depth * direction`` (depth = expected ray distance
``sum(w t) / opacity``, world units). Outliers are removed with open3d's statistical filter
(each point's mean distance to its ``nb_neighbors`` nearest neighbours against the global
mean + ``std_ratio`` standard deviations). Colours:

- ``rgb``: the rendered colour of the ray (mean appearance embedding);
- ``expert``: ``EXPERT_PALETTE[e]`` with ``e = renderer.field.route(unit_point).expert_id``,
  the model's top-1 expert at the point itself (unit point = ``(p - lo) / (hi - lo)``
  clamped to [0, 1], as the field sees it).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from switchnerf.errors import SwitchNerfError
from switchnerf.export.verify import ply_reads_back
from switchnerf.export.views import render_random_training_rays
from switchnerf.io_utils import atomic_path
from switchnerf.render.palette import colorize_experts
from switchnerf.render.renderer import Renderer

COLORS = ("rgb", "expert")


@torch.no_grad()
def route_points(renderer: Renderer, points: np.ndarray, *, chunk: int = 1 << 16) -> np.ndarray:
    """Top-1 expert int64 [N] of world points float [N, 3] under the renderer's gate."""
    device = renderer.device
    world = torch.from_numpy(np.asarray(points, dtype=np.float64))
    unit = renderer.box.to(torch.device("cpu")).to_unit(world).clamp(0, 1).to(torch.float32)
    ids = [renderer.field.route(unit[s:s + chunk].to(device)).expert_id.cpu()
           for s in range(0, unit.shape[0], chunk)]
    return torch.cat(ids).numpy() if ids else np.zeros(0, dtype=np.int64)


def expert_colors(expert_ids: np.ndarray) -> np.ndarray:
    """Palette colours float64 [N, 3] in [0, 1] of expert ids [N]."""
    return colorize_experts(torch.from_numpy(np.asarray(expert_ids, dtype=np.int64))).double().numpy()


def sample_points(renderer: Renderer, camera_table, num_points: int, *, seed: int = 0,
                  max_rounds: int = 20, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``num_points`` surface points float64 [N, 3] and their rendered rgb [N, 3],
    from random pixels of the camera table's training images.

    Rays are drawn in rounds, sized from the hit rate so far; stops after ``max_rounds``
    (a run that sees little surface gives fewer points).
    """
    gen = torch.Generator().manual_seed(seed)
    pts, cols, have, hit_rate = [], [], 0, 0.5
    for _ in range(max_rounds):
        need = num_points - have
        if need <= 0:
            break
        n_rays = int(min(max(math.ceil(1.2 * need / max(hit_rate, 0.02)), 1024), 1 << 20))
        r = render_random_training_rays(renderer, camera_table, n_rays, gen)
        keep = (r["opacity"] > 0.5) & torch.isfinite(r["depth"])
        hit_rate = max(float(keep.float().mean()), 1e-3)
        p = (r["origins"].double() + r["depth"].double()[:, None] * r["directions"].double())[keep]
        pts.append(p.numpy())
        cols.append(r["rgb"][keep].double().numpy())
        have += int(keep.sum())
        if progress is not None:
            progress(min(have, num_points), num_points)
    if not pts or have == 0:
        return np.zeros((0, 3)), np.zeros((0, 3))
    return np.concatenate(pts)[:num_points], np.concatenate(cols)[:num_points]


def export_pointcloud(renderer: Renderer, camera_table, out_path: Path, *,
                      num_points: int = 100_000, color: str = "rgb", nb_neighbors: int = 20,
                      std_ratio: float = 2.0, seed: int = 0, progress=None) -> dict:
    """Write a coloured PLY point cloud of ``renderer``'s model, seen from the training
    cameras of ``camera_table``, to ``out_path``; returns a summary dict (points kept,
    points removed as outliers, colour mode)."""
    import open3d as o3d

    if color not in COLORS:
        raise SwitchNerfError(f"--color: expected one of {', '.join(COLORS)}, got {color!r}")
    if num_points <= 0:
        raise SwitchNerfError(f"--num-points: must be > 0, got {num_points}")
    pts, rgb = sample_points(renderer, camera_table, num_points, seed=seed, progress=progress)
    if len(pts) == 0:
        raise SwitchNerfError(f"{out_path}: no rendered ray reached opacity 0.5; nothing to export")
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    pcd.colors = o3d.utility.Vector3dVector(rgb)
    n_raw = len(pts)
    if n_raw > nb_neighbors:
        pcd, _ = pcd.remove_statistical_outlier(nb_neighbors=nb_neighbors, std_ratio=std_ratio)
    if color == "expert":
        kept = np.asarray(pcd.points)
        pcd.colors = o3d.utility.Vector3dVector(expert_colors(route_points(renderer, kept)))
    with atomic_path(out_path, verify=ply_reads_back("points", len(pcd.points))) as tmp:
        if not o3d.io.write_point_cloud(str(tmp), pcd):
            raise SwitchNerfError(f"{out_path}: open3d could not write the point cloud")
    return {"points": len(pcd.points), "outliers_removed": n_raw - len(pcd.points),
            "color": color, "output": str(out_path)}
