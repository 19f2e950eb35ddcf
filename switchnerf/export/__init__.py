"""Exports of a trained run: point clouds, meshes and cameras (PLY / JSON, via open3d).

Everything is written in the run's world frame (z up, world units; multiply by the
scene's ``metres_per_unit`` for metres) and atomically (temporary name, verified by
reading it back, then rename).
"""

from switchnerf.export.cameras import export_cameras
from switchnerf.export.mesh import export_mesh
from switchnerf.export.pointcloud import export_pointcloud

__all__ = ["export_cameras", "export_mesh", "export_pointcloud"]
