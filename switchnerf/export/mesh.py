"""Mesh of a trained run by TSDF fusion of rendered depth and colour (open3d).

Every training view (optionally downscaled, optionally a subset) is rendered; pixels with
opacity > 0.5 contribute their expected depth, converted from distance along the ray to
z-depth along the camera's optical axis (what open3d's RGBD integration expects). Poses
go from OpenGL axes (x right, y up, looking down -z) to open3d's OpenCV axes (x right,
y down, looking down +z) by flipping the camera y and z axes; pixel centres at +0.5 become
open3d's integer pixel centres by shifting the principal point by -0.5. The fused TSDF
(open3d's tensor ``VoxelBlockGrid``; the legacy ``ScalableTSDFVolume`` of open3d-cpu 0.20
extracts nothing here) gives a triangle mesh with vertex colours, cropped to the scene box.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from switchnerf.errors import SwitchNerfError
from switchnerf.export.verify import ply_reads_back
from switchnerf.export.views import training_views
from switchnerf.io_utils import atomic_path
from switchnerf.render.renderer import Renderer

_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def open3d_pose(c2w: np.ndarray) -> np.ndarray:
    """World-to-camera extrinsic [4, 4] in OpenCV axes from an OpenGL c2w [4, 4]."""
    return np.linalg.inv(np.asarray(c2w, dtype=np.float64) @ _GL_TO_CV)


def z_depth(cam, ray_depth: np.ndarray) -> np.ndarray:
    """Distance along unit pixel rays [H, W] -> z-depth along the optical axis [H, W].

    The unit ray of pixel (i, j) has camera-frame z component ``1 / |d|`` with
    ``d = ((i + 0.5 - cx) / fx, -(j + 0.5 - cy) / fy, -1)``.
    """
    j, i = np.meshgrid(np.arange(cam.height) + 0.5, np.arange(cam.width) + 0.5, indexing="ij")
    norm = np.sqrt(((i - cam.cx) / cam.fx) ** 2 + ((j - cam.cy) / cam.fy) ** 2 + 1.0)
    return ray_depth / norm


def export_mesh(renderer: Renderer, scene, out_path: Path, *, voxel_size: float | None = None,
                trunc_voxels: float = 4.0, downscale: float = 1.0, max_views: int | None = None,
                min_weight: float = 0.5, progress=None) -> dict:
    """Fuse ``renderer``'s renders of the scene's training views into a coloured triangle
    mesh PLY at ``out_path``.

    voxel_size: TSDF voxel edge in world units (default: box diagonal / 512);
    trunc_voxels: truncation distance in voxels; min_weight: marching cubes skips voxels
    observed fewer times (0.5 keeps surfaces seen by a single view). Returns a summary dict.
    """
    import open3d as o3d
    import open3d.core as o3c

    diag = renderer.box.diagonal
    voxel = float(voxel_size) if voxel_size is not None else diag / 512
    if not 0 < voxel < math.inf:
        raise SwitchNerfError(f"--voxel-size: must be a finite number > 0, got {voxel:g}")
    if not 0 < downscale < math.inf:
        raise SwitchNerfError(f"--downscale: must be a finite number > 0, got {downscale:g}")
    cpu = o3c.Device("CPU:0")
    grid = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight", "color"), attr_dtypes=(o3c.float32,) * 3,
        attr_channels=((1), (1), (3)), voxel_size=voxel, block_resolution=16,
        block_count=10_000, device=cpu)
    n_views = n_pixels = 0
    for view in training_views(renderer, scene, downscale=downscale, max_views=max_views):
        cam = view.cam
        ok = (view.opacity > 0.5) & np.isfinite(view.depth)
        n_views += 1
        if progress is not None:
            progress(n_views)
        if not ok.any():
            continue
        n_pixels += int(ok.sum())
        depth = np.where(ok, z_depth(cam, np.nan_to_num(view.depth)), 0.0).astype(np.float32)
        depth_max = float(depth.max()) * 1.01 + voxel
        depth_img = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(depth), device=cpu))
        color_img = o3d.t.geometry.Image(o3c.Tensor(
            np.ascontiguousarray(np.clip(view.rgb, 0, 1).astype(np.float32)), device=cpu))
        k = o3c.Tensor(np.array([[cam.fx, 0, cam.cx - 0.5], [0, cam.fy, cam.cy - 0.5], [0, 0, 1]]),
                       dtype=o3c.float64)
        ext = o3c.Tensor(open3d_pose(cam.c2w), dtype=o3c.float64)
        blocks = grid.compute_unique_block_coordinates(depth_img, k, ext, 1.0, depth_max,
                                                       trunc_voxels)
        grid.integrate(blocks, depth_img, color_img, k, k, ext, 1.0, depth_max, trunc_voxels)
    if n_pixels == 0:
        raise SwitchNerfError(f"{out_path}: no rendered pixel reached opacity 0.5 in "
                              f"{n_views} views; nothing to fuse")
    mesh = grid.extract_triangle_mesh(weight_threshold=min_weight).to_legacy()
    lo, hi = renderer.box.lo.cpu().double().numpy(), renderer.box.hi.cpu().double().numpy()
    mesh = mesh.crop(o3d.geometry.AxisAlignedBoundingBox(lo, hi))
    mesh.remove_unreferenced_vertices()
    if len(mesh.triangles) == 0:
        raise SwitchNerfError(f"{out_path}: TSDF fusion gave an empty mesh ({n_pixels} "
                              f"surface pixels in {n_views} views); try a larger --voxel-size")
    mesh.compute_vertex_normals()
    with atomic_path(out_path, verify=ply_reads_back("triangles", len(mesh.triangles))) as tmp:
        if not o3d.io.write_triangle_mesh(str(tmp), mesh):
            raise SwitchNerfError(f"{out_path}: open3d could not write the mesh")
    return {"vertices": len(mesh.vertices), "triangles": len(mesh.triangles), "views": n_views,
            "voxel_size": voxel, "sdf_trunc": trunc_voxels * voxel, "output": str(out_path)}
