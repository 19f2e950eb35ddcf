"""Partition: grid layout, membership on hand cases, save/load, the map PNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_store_scene import make_scene

from switchnerf.errors import SwitchNerfError
from switchnerf.scene.partition import (
    Partition,
    cell_membership,
    clip_to_box,
    make_partition,
    render_partition_map,
)


def two_cells(margin=1.15) -> Partition:
    c = np.array([[-5.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
    return Partition(c, (1, 2), margin, np.array([[-10.0, -1, 0], [10.0, 1, 0]]))


def down(x, y, z=10.0):
    return torch.tensor([[x, y, z]]), torch.tensor([[0.0, 0.0, -1.0]])


@pytest.mark.parametrize("n_samples", [1000, 16])
def test_hand_cases(n_samples):
    p = two_cells()
    near, far = torch.tensor([0.0]), torch.tensor([10.0])
    for x, want in ((-5.0, [True, False]), (5.0, [False, True]), (0.0, [True, True]),
                    (-1.0, [True, True]), (-3.0, [True, False])):
        o, d = down(x, 0.0)
        got = cell_membership(o, d, near, far, p, n_samples)
        assert got.tolist() == [want], (x, got)


def test_margin_widens_overlap():
    o, d = down(-1.5, 0.0, 0.0)  # on the ground: distances 3.5 and 6.5, ratio 1.86
    near = far = torch.tensor([0.0])
    assert cell_membership(o, d, near, far, two_cells(1.15), 1).tolist() == [[True, False]]
    assert cell_membership(o, d, near, far, two_cells(2.0), 1).tolist() == [[True, True]]


def test_slanted_ray_crosses_into_the_other_cell():
    o = torch.tensor([[-5.0, 0.0, 10.0]])
    d = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, -1.0]]), dim=-1)
    p = two_cells()
    short = cell_membership(o, d, torch.tensor([0.0]), torch.tensor([1.0]), p)
    long = cell_membership(o, d, torch.tensor([0.0]), torch.tensor([14.2]), p)
    assert short.tolist() == [[True, False]] and long.tolist() == [[True, True]]


def test_chunking_does_not_change_result():
    g = torch.Generator().manual_seed(0)
    o = torch.rand(300, 3, generator=g) * 20 - 10
    d = torch.nn.functional.normalize(torch.randn(300, 3, generator=g), dim=-1)
    near, far = torch.zeros(300), torch.rand(300, generator=g) * 10
    p = Partition(np.random.default_rng(0).uniform(-8, 8, (6, 3)), (2, 3), 1.15,
                  np.zeros((2, 3)))
    a = cell_membership(o, d, near, far, p, 100)
    b = cell_membership(o, d, near, far, p, 100, chunk_elements=1000)
    assert torch.equal(a, b) and a.any(1).all()


def membership_reference(o, d, near, far, p: Partition, n_samples: int) -> torch.Tensor:
    """Mega-NeRF's expression: explicit points, distances, min over samples of the ratio."""
    t = near[:, None] + (far - near)[:, None] * torch.linspace(0, 1, n_samples,
                                                                dtype=torch.float64)[None]
    pts = o.double()[:, None] + t[..., None] * d.double()[:, None]  # [N, S, 3]
    dist = (pts[:, :, None] - torch.from_numpy(p.centroids)[None, None]).norm(dim=-1)  # [N, S, C]
    ratio = dist / dist.amin(-1, keepdim=True)
    return ratio.amin(1) <= p.margin


def test_matches_the_point_based_expression():
    g = torch.Generator().manual_seed(1)
    o = torch.rand(500, 3, generator=g) * 20 - 10
    d = torch.nn.functional.normalize(torch.randn(500, 3, generator=g), dim=-1)
    near = torch.rand(500, generator=g)
    far = near + torch.rand(500, generator=g) * 15
    p = Partition(np.random.default_rng(1).uniform(-8, 8, (6, 3)), (2, 3), 1.15, np.zeros((2, 3)))
    got = cell_membership(o, d, near, far, p, 200)
    want = membership_reference(o, d, near.double(), far.double(), p, 200)
    assert torch.equal(got, want) and (got.sum(1) > 1).any()


def test_clip_to_box():
    o = torch.tensor([[0.0, 0.0, 10.0], [0.0, 0.0, 1.0], [20.0, 0.0, 10.0]])
    d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    near, far = clip_to_box(o, d, np.array([[-1, -1, 0], [1, 1, 2]]))
    torch.testing.assert_close(near, torch.tensor([8.0, 0.0, 0.0]))
    torch.testing.assert_close(far, torch.tensor([10.0, 1.0, 0.0]))


def test_make_partition_grid(tmp_path):
    scene = make_scene(tmp_path / "s", n_train=6)
    p = make_partition(scene, (2, 3), ground_z=0.5)
    assert p.n_cells == 6 and p.grid == (2, 3)
    xs = np.array([r.c2w[0, 3] for s in ("train", "val") for r in scene.images(s)])
    ys = np.array([r.c2w[1, 3] for s in ("train", "val") for r in scene.images(s)])
    step_x, step_y = (xs.max() - xs.min()) / 3, (ys.max() - ys.min()) / 2
    np.testing.assert_allclose(p.centroids[4], [xs.min() + 1.5 * step_x,
                                                ys.min() + 1.5 * step_y, 0.5])
    assert (p.centroids[:, 2] == 0.5).all()
    assert make_partition(scene).grid == scene.partition_grid


def test_save_load(tmp_path):
    p = two_cells()
    p.save(tmp_path / "p.json")
    q = Partition.load(tmp_path / "p.json")
    assert q.grid == p.grid and q.margin == p.margin
    np.testing.assert_array_equal(q.centroids, p.centroids)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SwitchNerfError, match="bad.json"):
        Partition.load(tmp_path / "bad.json")


def test_map_png(tmp_path):
    scene = make_scene(tmp_path / "s", n_train=6)
    path = render_partition_map(make_partition(scene, (2, 2)), scene, tmp_path / "m" / "map.png",
                                size=200)
    im = np.asarray(Image.open(path).convert("RGB"))
    assert max(im.shape[:2]) == 200 and len(np.unique(im.reshape(-1, 3), axis=0)) > 8
