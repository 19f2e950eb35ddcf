"""Scene overlays drawn by the browser over the rendered background (world frame, z up).

- camera frustums of the training (dark) and validation (orange) images; clicking one
  shows its image, downscaled to ``THUMB_SIDE`` pixels on the longer side;
- the foreground box (12 edges);
- partition cells: for fixed routing the router's own cells (its unit-square grid over the
  model's box); else ``partition.json`` beside the scene's ray store or partition folder,
  else the scene's grid;
- the expert-region point cloud: centres of occupied occupancy-grid cells (the densest
  cells when none is occupied yet), coloured by the expert ``field.route`` picks there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from switchnerf.errors import SwitchNerfError
from switchnerf.render.palette import EXPERT_PALETTE
from switchnerf.render.renderer import Renderer
from switchnerf.viewer.frames import viser_from_c2w

__all__ = ["THUMB_SIDE", "box_edges", "expert_points", "find_partition", "partition_lines",
           "thumbnail"]

THUMB_SIDE = 160
MAX_FRUSTUMS = 400
MAX_POINTS = 30000


def box_edges(lo, hi) -> np.ndarray:
    """The 12 edges of an axis-aligned box: float32 [12, 2, 3] world frame."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    corners = np.array([[(hi if (k >> a) & 1 else lo)[a] for a in range(3)] for k in range(8)])
    edges = [(i, i | (1 << a)) for i in range(8) for a in range(3) if not (i >> a) & 1]
    return np.stack([corners[[i, j]] for i, j in edges]).astype(np.float32)


def find_partition(scene, routing, box=None):
    """The cells the overlay draws: a ``GridPartition`` in the world frame.

    ``routing``: the model's ``RoutingConfig``. For fixed routing, the router's cells (``GridPartition.unit_square(fixed_grid)``) over
    ``box``, the model's ``BoxFrame``, at the scene's ground altitude: the cells the model
    routes by. Otherwise the cells of the scene's saved partition, else of one made from
    the scene's grid (never saved).
    """
    from switchnerf.scene.partition import GridPartition, Partition, make_partition

    if routing.kind == "fixed":
        if box is None:
            raise ValueError("fixed routing: the router's cells need the model's box")
        lo, hi = box.lo.detach().cpu().tolist(), box.hi.detach().cpu().tolist()
        return GridPartition.unit_square(tuple(routing.fixed_grid)).in_box(
            lo, hi, z=float(scene.altitude_range[0]))
    root = Path(scene.root) / ".switchnerf"
    for path in (root / "store" / "partition.json", root / "partition" / "partition.json"):
        if path.is_file():
            return Partition.load(path).cells
    return make_partition(scene, tuple(scene.partition_grid)).cells


def partition_lines(cells) -> np.ndarray:
    """Cell borders of a ``GridPartition`` at its altitude: float32 [K, 2, 3]."""
    return cells.borders()


@torch.no_grad()
def expert_points(renderer: Renderer, *, max_points: int = MAX_POINTS,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points where the renderer's field is dense and the expert of each.

    Returns points float32 [P, 3] (world frame: cell centres of occupied occupancy-grid
    cells, at most ``max_points``, a seeded random subset) and expert ids int64 [P] from
    ``field.route`` at those points (unit-cube frame).
    """
    field, grid, box = renderer.field, renderer.grid, renderer.box
    occ = grid.binary.reshape(-1)
    ids = torch.nonzero(occ)[:, 0]
    if ids.numel() == 0:  # untrained grid: the densest 2% of the cells
        k = max(1, grid.n_cells // 50)
        ids = torch.topk(grid.density, k).indices
    gen = torch.Generator().manual_seed(seed)
    if ids.numel() > max_points:
        ids = ids[torch.randperm(ids.numel(), generator=gen)[:max_points].to(ids.device)]
    coords = grid.cell_coords(ids).to(torch.float32)  # [P, 3]
    unit = (coords + 0.5) / grid.resolution.to(torch.float32)  # [P, 3] unit cube
    expert = field.route(unit).expert_id  # [P]
    world = box.lo + unit * box.extent  # [P, 3]
    return world.cpu().numpy().astype(np.float32), expert.cpu().numpy().astype(np.int64)


def thumbnail(image: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """uint8 [H, W, 3] downscaled (never up) so the longer side is at most ``side``."""
    from PIL import Image

    h, w = image.shape[:2]
    s = min(1.0, side / max(h, w))
    if s >= 1.0:
        return image
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


class SceneOverlay:
    """Creates and toggles the overlay nodes on a viser server.

    Args:
        server: the ``viser.ViserServer``.
        renderer: the model shown (box, occupancy grid, gate, routing settings).
        scene: its scene (cameras, saved partition).
        on_image: called with (title, uint8 image) when a frustum is clicked.
        lock: a factory of the context held while the model is used (the compute gate).
    """

    def __init__(self, server, renderer: Renderer, scene, *,
                 on_image: Callable[[str, np.ndarray], None],
                 lock: Callable | None = None) -> None:
        self.server, self.renderer, self._on_image = server, renderer, on_image
        self._lock = lock
        lo, hi = renderer.box.lo.cpu().numpy(), renderer.box.hi.cpu().numpy()
        self.scale = 0.04 * float(np.linalg.norm(hi - lo))
        self.frustums = self._add_frustums(scene)
        self.box = server.scene.add_line_segments(
            "/overlay/box", box_edges(lo, hi), (240, 200, 40), thickness=2.0,
            thickness_units="screen")
        self.partition = None
        try:
            part = find_partition(scene, renderer.field.cfg.routing, box=renderer.box)
        except (ValueError, OSError) as exc:  # no cameras, unreadable partition
            print(f"viewer: no partition overlay ({exc})")
        else:
            self.partition = server.scene.add_line_segments(
                "/overlay/partition", partition_lines(part), (60, 200, 255), thickness=2.0,
                thickness_units="screen", visible=False)
        self.points = None
        self.refresh_points()

    def _add_frustums(self, scene) -> list:
        handles = []
        for split, color in (("train", (30, 30, 30)), ("val", (240, 120, 20))):
            recs = scene.images(split) if split in scene.frames else []
            step = max(1, math.ceil(len(recs) / MAX_FRUSTUMS))
            for i in range(0, len(recs), step):
                r = recs[i]
                wxyz, pos = viser_from_c2w(r.c2w)
                h = self.server.scene.add_camera_frustum(
                    f"/overlay/cameras/{split}_{i:05d}", fov=2 * math.atan(0.5 * r.height / r.fy),
                    aspect=r.width / r.height, scale=self.scale, thickness=1.5,
                    thickness_units="screen", color=color, wxyz=wxyz, position=pos)
                h.on_click(self._click_handler(scene, split, i, h))
                handles.append(h)
        return handles

    def _click_handler(self, scene, split: str, i: int, handle):
        def clicked(_event) -> None:
            try:
                img = thumbnail(scene.load_image(split, i))
            except (SwitchNerfError, OSError) as exc:  # a bad file must not stop the viewer
                print(f"viewer: cannot show {split} image {i}: {exc}")
                return
            handle.image = img
            self._on_image(f"{split} image {i}: {Path(scene.images(split)[i].image_path).name}",
                           img)
        return clicked

    def refresh_points(self) -> None:
        """(Re)build the expert-region point cloud from the current occupancy grid."""
        r = self.renderer
        ctx = self._lock() if self._lock is not None else None
        if ctx is not None:
            with ctx:
                pts, experts = expert_points(r)
        else:
            pts, experts = expert_points(r)
        colors = (EXPERT_PALETTE[np.clip(experts, 0, EXPERT_PALETTE.shape[0] - 1)].numpy()
                  * 255).astype(np.uint8)
        visible = False if self.points is None else self.points.visible
        size = 0.6 * float(r.box.extent.max()) / float(r.grid.res[0])
        self.points = self.server.scene.add_point_cloud(
            "/overlay/experts", pts, colors, point_size=size, visible=visible)

    def set_visible(self, what: str, visible: bool) -> None:
        """what: "cameras", "box", "partition" or "experts"."""
        if what == "cameras":
            for h in self.frustums:
                h.visible = visible
        else:
            handle = {"box": self.box, "partition": self.partition, "experts": self.points}[what]
            if handle is not None:
                handle.visible = visible
