"""Routing diagnostics on hand cases with known churn, disagreement, load and maps."""

import json
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from switchnerf.config import load_config
from switchnerf.model import SwitchField
from switchnerf.moe.diagnostics import (
    NEIGHBOUR_DISTANCE,
    RoutingProbe,
    churn,
    neighbour_disagreement,
    neighbour_offsets,
    occupied_points,
    region_summary,
    topdown_expert_map,
    write_expert_map_png,
)
from switchnerf.moe.gate import GateOutput
from switchnerf.render.occupancy import OccupancyGrid
from switchnerf.render.palette import EXPERT_PALETTE

D = NEIGHBOUR_DISTANCE


class RuleField:
    """A field stand-in that routes by a rule on the unit-cube point: expert = rule(x)."""

    def __init__(self, rule, n_experts=2, finest=None):
        self.rule = rule
        self.n_experts = n_experts
        finest = finest or [64.0 * (e + 1) for e in range(n_experts)]
        res = torch.tensor([[16.0, f] for f in finest])
        self.experts = SimpleNamespace(levels=SimpleNamespace(resolution=res))

    def parameters(self):
        return iter(())

    def route(self, x):
        ids = self.rule(x).long()
        return GateOutput(None, ids, torch.full((x.shape[0],), 0.75), logits=torch.zeros(
            x.shape[0], self.n_experts))


def half_space(plane=0.5):
    return RuleField(lambda x: x[:, 0] >= plane)


def full_grid(res=8):
    grid = OccupancyGrid(res)
    grid.binary.fill_(True)
    return grid


def test_churn_hand_case():
    assert churn(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 3, 3])) == 0.25
    assert churn(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long)) == 0.0
    with pytest.raises(ValueError, match="shapes"):
        churn(torch.zeros(2), torch.zeros(3))


def test_disagreement_of_a_half_space_is_the_share_within_reach_of_the_plane():
    # Offsets of length D towards the plane x = 0.5: a point changes side exactly when it
    # lies within D of the plane.
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(20000, 3, generator=gen)
    towards = torch.where(x[:, 0] < 0.5, 1.0, -1.0)
    offsets = torch.zeros_like(x)
    offsets[:, 0] = towards * D
    route = half_space().rule
    expect = float(((x[:, 0] - 0.5).abs() < D).float().mean())
    got = neighbour_disagreement(lambda p: route(p).long(), x, offsets)
    assert got == pytest.approx(expect, abs=1e-12)
    assert 0.5 * 2 * D < got < 1.5 * 2 * D  # about the slab's width, 2 D
    # Offsets along the plane never cross it.
    along = torch.zeros_like(x)
    along[:, 1] = D
    assert neighbour_disagreement(lambda p: route(p).long(), x, along) == 0.0


def test_random_neighbours_cross_a_plane_with_probability_d_over_2():
    """Directions uniform on the sphere: P(cross x = 0.5) = d * E|u_x| = d / 2 for points
    uniform in the cube (closed form; a cube-uniform direction would give about 0.57 d)."""
    gen = torch.Generator().manual_seed(1)
    n = 400_000
    x = torch.rand(n, 3, generator=gen)
    offsets = neighbour_offsets(n, D, generator=gen)
    assert torch.allclose(offsets.norm(dim=-1), torch.full((n,), D), rtol=1e-5)
    got = neighbour_disagreement(lambda p: (p[:, 0] >= 0.5).long(), x, offsets)
    p = D / 2
    assert abs(got - p) < 5 * (p / n) ** 0.5


def test_occupied_points_lie_in_occupied_cells_and_are_seeded():
    grid = OccupancyGrid((4, 4, 2))
    grid.binary[1, 2, 0] = True
    grid.binary[3, 0, 1] = True
    pts = occupied_points(grid.binary, 500, generator=torch.Generator().manual_seed(3))
    assert pts.shape == (500, 3)
    assert grid.occupied(pts).all()
    cells = set(map(tuple, (pts * torch.tensor([4.0, 4.0, 2.0])).floor().long().tolist()))
    assert cells == {(1, 2, 0), (3, 0, 1)}
    again = occupied_points(grid.binary, 500, generator=torch.Generator().manual_seed(3))
    assert torch.equal(pts, again)
    assert occupied_points(OccupancyGrid(4).binary, 10).shape == (0, 3)


def test_region_summary_hand_case():
    pts = torch.tensor([[0.1, 0.1, 0.5], [0.2, 0.2, 0.5], [0.3, 0.1, 0.5], [0.9, 0.9, 0.5]])
    ids = torch.tensor([0, 1, 1, 0])
    res, major = region_summary(pts, ids, [100.0, 400.0], 2, 2)
    assert res == [[pytest.approx(300.0), None], [None, pytest.approx(100.0)]]
    assert major == [[1, -1], [-1, 0]]


def test_probe_measures_a_known_routing_and_its_churn():
    grid = full_grid()
    probe = RoutingProbe(4096, seed=5)
    field = half_space(0.5)
    first = probe.measure(field, grid)
    pts, off = probe.points, probe.offsets
    assert first["n_points"] == 4096 and first["churn"] is None
    side = pts[:, 0] >= 0.5
    assert first["load"] == [pytest.approx(float((~side).float().mean())),
                             pytest.approx(float(side.float().mean()))]
    crossed = side != ((pts + off).clamp(0, 1)[:, 0] >= 0.5)
    assert first["disagreement"] == pytest.approx(float(crossed.float().mean()), abs=1e-12)
    assert first["gate_value"] == pytest.approx(0.75)
    assert first["expert_resolution"] == [[16.0, 64.0], [16.0, 128.0]]
    # 4 x 4 ground regions: columns 0-1 (x < 0.5) expert 0 (finest 64), columns 2-3 expert 1.
    assert first["region_expert"] == [[0, 0, 1, 1]] * 4
    assert first["region_resolution"][0] == [pytest.approx(64.0)] * 2 + [pytest.approx(128.0)] * 2
    json.dumps(first)

    # Same routing: no churn. Plane moved to 0.6: exactly the points in [0.5, 0.6) moved.
    assert probe.measure(field, grid, step=100)["churn"] == 0.0
    later = probe.measure(half_space(0.6), grid, step=175)
    assert later["churn_steps"] == 75
    moved = later["churn"]
    assert moved == pytest.approx(float(((pts[:, 0] >= 0.5) & (pts[:, 0] < 0.6)).float().mean()))
    assert torch.equal(probe.points, pts)  # the probe set stays fixed


def test_probe_waits_for_occupied_cells():
    probe = RoutingProbe(64)
    empty = OccupancyGrid(4)
    out = probe.measure(half_space(), empty)
    assert out["n_points"] == 0 and out["disagreement"] is None and probe.points is None
    assert probe.measure(half_space(), full_grid(4))["n_points"] == 64


def test_probe_on_a_real_field_is_json_ready():
    cfg = load_config(None, [
        "model.experts.n_experts=4", "model.experts.n_levels=4",
        "model.experts.log2_hashmap_size=10", "model.experts.finest_resolution=64",
        "model.experts.coarsest_fraction=0.5", "model.routing.gate.n_levels=2",
        "model.routing.gate.log2_hashmap_size=8", "model.routing.gate.max_resolution=16",
        "model.routing.gate_hidden=8", "model.head.hidden=16", "model.head.color_hidden=16",
        "model.head.appearance_dim=4"]).model
    torch.manual_seed(0)
    field = SwitchField(cfg, n_images=2)
    grid = full_grid(8)
    rng = torch.get_rng_state()
    out = RoutingProbe(512, seed=1).measure(field, grid)
    assert torch.equal(rng, torch.get_rng_state())  # the global RNG is left alone
    json.loads(json.dumps(out))
    assert sum(out["load"]) == pytest.approx(1.0)
    assert 0.0 <= out["disagreement"] <= 1.0 and 0.0 < out["gate_value"] <= 1.0
    assert len(out["expert_resolution"]) == 4


def test_topdown_map_top_and_majority():
    # 4 x 4 x 4 grid: column (x=i, y=j) occupied up to height i (x=0 column empty).
    grid = OccupancyGrid(4)
    for i in range(1, 4):
        grid.binary[i, :, :i] = True
    by_height = RuleField(lambda x: (x[:, 2] * 4).floor().clamp(0, 3), n_experts=4)
    top = topdown_expert_map(by_height, grid, mode="top")
    assert top.shape == (4, 4)
    assert (top[:, 0] == -1).all()  # nothing occupied in x cell 0
    assert (top[:, 1:] == np.array([0, 1, 2])).all()  # highest occupied cell k = i - 1
    major = topdown_expert_map(by_height, grid, mode="majority")
    assert (major[:, 1:] == 0).all()  # one cell per height: the lowest id wins the tie
    # North up: row 0 is the largest y.
    by_y = RuleField(lambda x: x[:, 1] >= 0.5)
    ymap = topdown_expert_map(by_y, grid)
    assert (ymap[:2, 1:] == 1).all() and (ymap[2:, 1:] == 0).all()
    with pytest.raises(ValueError, match="mode"):
        topdown_expert_map(by_y, grid, mode="mean")


def test_write_expert_map_png(tmp_path):
    ids = np.array([[0, 1], [-1, 2]])
    path = tmp_path / "eval" / "experts_topdown.png"
    write_expert_map_png(path, ids, EXPERT_PALETTE, scale=3)
    img = iio.imread(path)
    assert img.shape == (6, 6, 3) and img.dtype == np.uint8
    want = (EXPERT_PALETTE.numpy() * 255 + 0.5).astype(np.uint8)
    assert (img[0, 0] == want[0]).all() and (img[0, 5] == want[1]).all()
    assert (img[5, 0] == 0).all() and (img[5, 5] == want[2]).all()
    assert sorted(p.name for p in path.parent.iterdir()) == ["experts_topdown.png"]
    with pytest.raises(ValueError, match="expert ids"):
        write_expert_map_png(path, np.array([[16]]), EXPERT_PALETTE)


def test_probe_writes_the_topdown_map(tmp_path):
    grid = full_grid(4)
    probe = RoutingProbe(16)
    m = probe.write_topdown(tmp_path / "m.png", half_space(), grid, EXPERT_PALETTE, scale=1)
    assert (m[:, :2] == 0).all() and (m[:, 2:] == 1).all()
    assert iio.imread(tmp_path / "m.png").shape == (4, 4, 3)
