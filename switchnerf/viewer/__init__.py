"""The browser viewer (viser): renders a run or a live training at each browser's camera.

Public API (implementation modules are private to the package):

- :class:`ViewerServer`: serve a ``Renderer`` of a scene (a loaded run's, or a live
  trainer's, driven by its ``on_step`` callback);
- camera frames: :func:`path_camera_from_viser`, :func:`viser_from_path_camera`,
  :func:`c2w_from_viser`, :func:`viser_from_c2w`, :class:`ViserPose`;
- :func:`render_view`: what a client's frame is rendered by (coloured by
  ``switchnerf.render.colorize``);
- camera-path files of the editor: :func:`save_path`, :func:`load_path` (paths themselves
  are ``switchnerf.video.camera_path.CameraPath``).

The CLI lives in ``switchnerf.cli.view`` (``switchnerf view``, ``train --viewer``).
"""

from switchnerf.viewer.path_files import load_path, save_path
from switchnerf.viewer.render import render_view
from switchnerf.viewer.server import ViewerServer
from switchnerf.viewer.viser_cameras import (
    ViserPose,
    c2w_from_viser,
    path_camera_from_viser,
    viser_from_c2w,
    viser_from_path_camera,
)

__all__ = [
    "ViewerServer",
    "ViserPose",
    "c2w_from_viser",
    "load_path",
    "path_camera_from_viser",
    "render_view",
    "save_path",
    "viser_from_c2w",
    "viser_from_path_camera",
]
