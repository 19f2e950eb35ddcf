"""One ground cell: GridPartition is the cell of a point for the fixed-grid router, the scene
partition and the viewer's overlay."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _viewer_run import make_scene
from test_store_scene import make_scene as make_store_scene

from switchnerf.config import load_config
from switchnerf.moe.gate import FixedCellRouter
from switchnerf.render.box import BoxFrame
from switchnerf.scene.partition import GridPartition, make_partition
from switchnerf.viewer.overlay import find_partition, partition_lines


def test_cell_of_hand_cases():
    cells = GridPartition((2, 3), (-3.0, 10.0), (3.0, 14.0))  # cells 2 wide, 2 high
    pts = np.array([[-2.5, 10.5, 7.0],   # row 0, col 0
                    [-1.0, 10.0, 0.0],   # on the border x = -1: col 1
                    [2.9, 11.9, 0.0],    # row 0, col 2
                    [0.0, 12.0, 0.0],    # row 1, col 1
                    [-50.0, 99.0, 0.0],  # outside: nearest border cell (row 1, col 0)
                    [3.0, 14.0, 0.0]])   # the far corner belongs to the last cell
    assert cells.cell_of(pts).tolist() == [0, 1, 2, 4, 3, 5]
    t = cells.cell_of(torch.from_numpy(pts).float())
    assert t.dtype == torch.int64 and t.tolist() == [0, 1, 2, 4, 3, 5]
    assert cells.cell_of(pts.reshape(2, 3, 3)).shape == (2, 3)
    # an empty extent puts every point in the first row / column
    flat = GridPartition((2, 2), (0.0, 5.0), (4.0, 5.0))
    assert flat.cell_of(np.array([[3.0, 9.0], [1.0, -9.0]])).tolist() == [1, 0]
    with pytest.raises(ValueError, match="1x1"):
        GridPartition((0, 2), (0.0, 0.0), (1.0, 1.0))


def test_centres_and_borders():
    cells = GridPartition((2, 3), (-3.0, 10.0), (3.0, 14.0), z=0.5)
    np.testing.assert_allclose(cells.centres(), [[-2, 11], [0, 11], [2, 11],
                                                 [-2, 13], [0, 13], [2, 13]])
    assert cells.cell_of(cells.centres()).tolist() == list(range(6))
    lines = cells.borders()
    assert lines.shape == (4 + 3, 2, 3) and lines.dtype == np.float32
    np.testing.assert_allclose(lines[:4, 0, 0], [-3, -1, 1, 3])  # lines of constant x
    np.testing.assert_allclose(lines[4:, 0, 1], [10, 12, 14])  # lines of constant y
    assert (lines[..., 2] == 0.5).all()


def test_in_box_maps_the_unit_square():
    cells = GridPartition.unit_square((2, 4)).in_box([-1.0, 2.0, 0.0], [3.0, 4.0, 9.0], z=1.0)
    assert cells.lo == (-1.0, 2.0) and cells.hi == (3.0, 4.0) and cells.z == 1.0


def test_scene_partition_cell_is_the_nearest_centroid(tmp_path):
    """Mega-NeRF's rule at margin 1 (the nearest centroid in xy) gives the grid cell."""
    part = make_partition(make_store_scene(tmp_path / "s", n_train=6), (3, 2), ground_z=0.2)
    np.testing.assert_array_equal(part.centroids[:, :2], part.cells.centres())
    rng = np.random.default_rng(0)
    lo, hi = part.bbox[0], part.bbox[1]
    pts = lo + rng.uniform(-0.2, 1.2, size=(4000, 3)) * (hi - lo + 1.0)
    d2 = ((pts[:, None, :2] - part.centroids[None, :, :2]) ** 2).sum(-1)
    second, first = np.sort(d2, axis=1)[:, 1], np.sort(d2, axis=1)[:, 0]
    clear = second - first > 1e-6  # off the cell borders
    np.testing.assert_array_equal(part.cell_of(pts)[clear], d2.argmin(1)[clear])
    assert clear.mean() > 0.99


def test_router_expert_is_the_partition_cell():
    rows, cols = 2, 4
    router = FixedCellRouter((rows, cols))
    assert router.cells == GridPartition.unit_square((rows, cols))
    box = BoxFrame.from_bbox([[-5.0, 1.0, -1.0], [7.0, 4.0, 2.0]])
    world = GridPartition.unit_square((rows, cols)).in_box(box.lo.tolist(), box.hi.tolist())
    gen = torch.Generator().manual_seed(0)
    p = box.lo + torch.rand(5000, 3, generator=gen) * 1.2 * box.extent - 0.1 * box.extent
    unit = (p - box.lo) / box.extent
    expert = router(unit).expert_id
    # independent reference: the closed form on the unit square
    col = (unit[:, 0] * cols).floor().clamp(0, cols - 1).long()
    row = (unit[:, 1] * rows).floor().clamp(0, rows - 1).long()
    assert torch.equal(expert, row * cols + col)
    frac = torch.stack([unit[:, 0] * cols, unit[:, 1] * rows], -1)
    clear = ((frac - frac.round()).abs() > 1e-4).all(-1)  # off the cell borders
    assert torch.equal(world.cell_of(p)[clear], expert[clear]) and clear.float().mean() > 0.99


def test_viewer_overlay_draws_the_router_cells(tmp_path):
    scene = make_scene(tmp_path / "scene")
    # a saved scene partition (camera extent) that a fixed-grid run must not draw
    saved = make_partition(scene, (2, 2))
    saved.save(tmp_path / "scene" / ".switchnerf" / "partition" / "partition.json")
    box = BoxFrame.from_bbox([[-1.5, -1.0, 0.0], [1.5, 1.0, 1.0]])
    cfg = load_config(None, ["model.routing.kind=fixed", "model.routing.fixed_grid=[2, 4]"])
    cells = find_partition(scene, cfg.model.routing, box=box)
    assert cells.grid == (2, 4) and cells.lo == (-1.5, -1.0) and cells.hi == (1.5, 1.0)
    lines = partition_lines(cells)
    np.testing.assert_allclose(lines[:5, 0, 0], [-1.5, -0.75, 0.0, 0.75, 1.5])
    np.testing.assert_allclose(lines[5:, 0, 1], [-1.0, 0.0, 1.0])
    assert (lines[..., 2] == scene.altitude_range[0]).all()
    # every drawn rectangle holds the points the router sends to that expert
    router = FixedCellRouter((2, 4))
    for j, (x, y) in enumerate(cells.centres()):
        unit = (torch.tensor([[x, y, 0.5]], dtype=torch.float32) - box.lo) / box.extent
        assert router(unit).expert_id.item() == j
    # a learned gate draws the saved scene partition
    gate_cfg = load_config(None, [])
    assert find_partition(scene, gate_cfg.model.routing, box=box) == saved.cells
    with pytest.raises(ValueError, match="box"):
        find_partition(scene, cfg.model.routing)
