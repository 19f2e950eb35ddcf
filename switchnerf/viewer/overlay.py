"""Scene overlays drawn by the browser over the rendered background (world frame, z up).

- camera frustums of the training (dark) and validation (orange) images; clicking one
  shows its image, downscaled to ``THUMB_SIDE`` pixels on the longer side; with
  ``thumbnails=True`` every frustum shows its image (loaded in the background);
- the foreground box (12 edges): the model's box with a renderer, else the scene's;
- the altitude range: translucent planes at the ground and top altitude over the box;
- partition cells: for fixed routing the router's own cells (its unit-square grid over the
  model's box); else ``partition.json`` beside the scene's ray store or partition folder,
  else the scene's grid;
- the sparse points of the dataset when its format has them (COLMAP ``points3D``);
- with a renderer, the expert-region point cloud: centres of occupied occupancy-grid cells
  (the densest cells when none is occupied yet), coloured by the expert ``field.route``
  picks there.
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
from switchnerf.viewer.viser_cameras import viser_from_c2w

__all__ = ["OVERLAYS", "THUMB_SIDE", "SceneOverlay", "altitude_planes", "box_edges",
           "expert_points", "find_partition", "partition_lines", "thumbnail"]

THUMB_SIDE = 160
MAX_FRUSTUMS = 400
MAX_POINTS = 30000
MAX_SPARSE_POINTS = 200_000

OVERLAYS = ("cameras", "box", "altitude", "partition", "sparse", "experts")
"""What ``SceneOverlay.set_visible`` toggles."""


def box_edges(lo, hi) -> np.ndarray:
    """The 12 edges of an axis-aligned box: float32 [12, 2, 3] world frame."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    corners = np.array([[(hi if (k >> a) & 1 else lo)[a] for a in range(3)] for k in range(8)])
    edges = [(i, i | (1 << a)) for i in range(8) for a in range(3) if not (i >> a) & 1]
    return np.stack([corners[[i, j]] for i, j in edges]).astype(np.float32)


def altitude_planes(lo, hi, altitude_range) -> tuple[np.ndarray, np.ndarray]:
    """Two horizontal rectangles over the box's footprint at the ground and top altitude.

    lo, hi: the box corners [3] (world frame); altitude_range: (ground_z, top_z). Returns
    vertices float32 [8, 3] (ground rectangle, then top) and faces int32 [4, 3].
    """
    (x0, y0), (x1, y1) = np.asarray(lo, np.float64)[:2], np.asarray(hi, np.float64)[:2]
    verts = [(x, y, float(z)) for z in altitude_range
             for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
    faces = [(b, b + 1, b + 2) for b in (0, 4)] + [(b, b + 2, b + 3) for b in (0, 4)]
    return np.array(verts, np.float32), np.array(faces, np.int32)


def find_partition(scene, routing=None, box=None):
    """The cells the overlay draws: a ``GridPartition`` in the world frame.

    ``routing``: the model's ``RoutingConfig``, or None without a model. For fixed routing, the router's cells (``GridPartition.unit_square(fixed_grid)``) over
    ``box``, the model's ``BoxFrame``, at the scene's ground altitude: the cells the model
    routes by. Otherwise the cells of the scene's saved partition, else of one made from
    the scene's grid (never saved).
    """
    from switchnerf.scene.partition import GridPartition, Partition, make_partition

    if routing is not None and routing.kind == "fixed":
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
        scene: the scene (cameras, box, altitude range, saved partition, sparse points).
        renderer: the model shown (box, occupancy grid, gate, routing settings), or None
            for a dataset alone (no expert regions).
        on_image: called with (title, uint8 image) when a frustum is clicked.
        lock: a factory of the context held while the model is used (the compute gate).
        thumbnails: show every camera's image on its frustum (loaded in the background).
        visible: overlay names (``OVERLAYS``) shown at first.
    """

    def __init__(self, server, scene, *, renderer: Renderer | None = None,
                 on_image: Callable[[str, np.ndarray], None],
                 lock: Callable | None = None, thumbnails: bool = False,
                 visible=("cameras", "box")) -> None:
        from switchnerf.viewer.thumbnails import ThumbnailLoader

        self.server, self.scene, self.renderer, self._on_image = server, scene, renderer, on_image
        self._lock = lock
        shown = set(visible)
        if renderer is not None:
            lo, hi = renderer.box.lo.cpu().numpy(), renderer.box.hi.cpu().numpy()
        else:
            lo, hi = (np.asarray(c, np.float64) for c in np.asarray(scene.bbox))
        self.lo, self.hi = lo, hi
        self.scale = 0.04 * float(np.linalg.norm(hi - lo))
        self._thumbs: dict[tuple[str, int], np.ndarray] = {}
        self.frustums, jobs = self._add_frustums(scene, visible="cameras" in shown)
        self.box = server.scene.add_line_segments(
            "/overlay/box", box_edges(lo, hi), (240, 200, 40), thickness=2.0,
            thickness_units="screen", visible="box" in shown)
        verts, faces = altitude_planes(lo, hi, scene.altitude_range)
        self.altitude = server.scene.add_mesh_simple(
            "/overlay/altitude", verts, faces, color=(80, 220, 120), opacity=0.18,
            side="double", cast_shadow=False, receive_shadow=False,
            visible="altitude" in shown)
        self.partition = None
        try:
            routing = renderer.field.cfg.routing if renderer is not None else None
            part = find_partition(scene, routing, box=None if renderer is None else renderer.box)
        except (ValueError, OSError, SwitchNerfError) as exc:  # no cameras, bad partition
            print(f"viewer: no partition overlay ({exc})")
        else:
            self.partition = server.scene.add_line_segments(
                "/overlay/partition", partition_lines(part), (60, 200, 255), thickness=2.0,
                thickness_units="screen", visible="partition" in shown)
        self.sparse = self._add_sparse(scene, visible="sparse" in shown)
        self.points = None
        if renderer is not None:
            self.refresh_points(visible="experts" in shown)
        self.thumbnails = None
        if thumbnails and jobs:
            self.thumbnails = ThumbnailLoader(jobs, self._set_thumbnail, side=THUMB_SIDE)

    def _add_frustums(self, scene, *, visible: bool) -> tuple[list, list]:
        """The frustum handles and the (key, record) thumbnail jobs of the drawn ones."""
        handles, jobs = [], []
        for split, color in (("train", (30, 30, 30)), ("val", (240, 120, 20))):
            recs = scene.images(split) if split in scene.frames else []
            step = max(1, math.ceil(len(recs) / MAX_FRUSTUMS))
            for i in range(0, len(recs), step):
                r = recs[i]
                wxyz, pos = viser_from_c2w(r.c2w)
                h = self.server.scene.add_camera_frustum(
                    f"/overlay/cameras/{split}_{i:05d}", fov=2 * math.atan(0.5 * r.height / r.fy),
                    aspect=r.width / r.height, scale=self.scale, thickness=1.5,
                    thickness_units="screen", color=color, wxyz=wxyz, position=pos,
                    visible=visible)
                h.on_click(self._click_handler(scene, split, i, h))
                handles.append(h)
                jobs.append(((split, i, h), r))
        return handles, jobs

    def _set_thumbnail(self, key, image: np.ndarray) -> None:
        split, i, handle = key
        self._thumbs[(split, i)] = image
        handle.image = image

    def _add_sparse(self, scene, *, visible: bool):
        from switchnerf.scene.sparse import sparse_points

        try:
            found = sparse_points(scene, max_points=MAX_SPARSE_POINTS)
        except (SwitchNerfError, OSError) as exc:  # an unreadable model: the rest still shows
            print(f"viewer: no sparse points ({exc})")
            return None
        if found is None or len(found[0]) == 0:
            return None
        xyz, rgb = found
        size = 0.004 * float(np.linalg.norm(self.hi - self.lo))
        return self.server.scene.add_point_cloud(
            "/overlay/sparse", xyz, rgb, point_size=size, precision="float32",
            visible=visible)

    def _click_handler(self, scene, split: str, i: int, handle):
        def clicked(_event) -> None:
            img = self._thumbs.get((split, i))
            if img is None:
                try:
                    img = thumbnail(scene.load_image(split, i))
                except (SwitchNerfError, OSError) as exc:  # a bad file must not stop the viewer
                    print(f"viewer: cannot show {split} image {i}: {exc}")
                    return
                handle.image = img
            self._on_image(f"{split} image {i}: {Path(scene.images(split)[i].image_path).name}",
                           img)
        return clicked

    def refresh_points(self, *, visible: bool | None = None) -> None:
        """(Re)build the expert-region point cloud from the current occupancy grid (a no-op
        without a renderer)."""
        r = self.renderer
        if r is None:
            return
        ctx = self._lock() if self._lock is not None else None
        if ctx is not None:
            with ctx:
                pts, experts = expert_points(r)
        else:
            pts, experts = expert_points(r)
        colors = (EXPERT_PALETTE[np.clip(experts, 0, EXPERT_PALETTE.shape[0] - 1)].numpy()
                  * 255).astype(np.uint8)
        if visible is None:
            visible = False if self.points is None else self.points.visible
        size = 0.6 * float(r.box.extent.max()) / float(r.grid.res[0])
        self.points = self.server.scene.add_point_cloud(
            "/overlay/experts", pts, colors, point_size=size, visible=visible)

    def set_visible(self, what: str, visible: bool) -> None:
        """what: one of ``OVERLAYS``; an overlay this scene does not have is ignored."""
        if what == "cameras":
            for h in self.frustums:
                h.visible = visible
            return
        handle = {"box": self.box, "altitude": self.altitude, "partition": self.partition,
                  "sparse": self.sparse, "experts": self.points}[what]
        if handle is not None:
            handle.visible = visible

    def is_visible(self, what: str) -> bool:
        """Whether the overlay ``what`` (one of ``OVERLAYS``) is shown."""
        if what == "cameras":
            return any(h.visible for h in self.frustums)
        handle = {"box": self.box, "altitude": self.altitude, "partition": self.partition,
                  "sparse": self.sparse, "experts": self.points}[what]
        return handle is not None and bool(handle.visible)

    def available(self) -> tuple[str, ...]:
        """The overlay names this scene has."""
        have = {"cameras": bool(self.frustums), "box": True, "altitude": True,
                "partition": self.partition is not None, "sparse": self.sparse is not None,
                "experts": self.renderer is not None}
        return tuple(k for k in OVERLAYS if have[k])

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thumbnail loader."""
        if self.thumbnails is not None:
            self.thumbnails.close(timeout)
