"""The synthetic city: minicity written as Mega-NeRF and read back by the real reader."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from switchnerf.errors import SwitchNerfError
from switchnerf.scene import load_scene
from switchnerf.scene.synth import PRESETS, synthesize


@pytest.fixture(scope="module")
def minicity(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "minicity"
    t = time.perf_counter()
    synthesize("minicity", out, seed=0, progress=False)
    print(f"synthesize('minicity') took {time.perf_counter() - t:.1f} s")
    return out


def test_counts_sizes_and_reader(minicity):
    info = json.loads((minicity / "synth_info.json").read_text())
    assert info["train"] >= 40 and 6 <= info["val"] <= 10
    scene = load_scene(minicity)
    assert scene.name == "minicity" and scene.format == "mega-nerf"
    assert len(scene.images("train")) == info["train"] and len(scene.images("val")) == info["val"]
    assert scene.estimated == {"bbox": False, "altitude_range": False}
    assert scene.partition_grid == (2, 2)
    size_m = (scene.bbox[1] - scene.bbox[0]) * scene.metres_per_unit
    assert 200 <= size_m[0] <= 300 and 200 <= size_m[1] <= 300
    ground, top = scene.altitude_range
    cams = np.stack([r.c2w[:3, 3] for r in scene.images("train")])
    assert np.all(cams[:, 2] > top)  # drones fly above the altitude slab
    # the city's ground (z = 0 m, i.e. DRB x = 0) lies inside the slab, 1 m above its floor
    ground_world = scene.extra["origin_drb"][0] / scene.metres_per_unit
    assert np.isclose((ground_world - ground) * scene.metres_per_unit, 1.0, atol=1e-6)
    img = scene.load_image("val", 0)
    assert img.shape == (150, 200, 3)


def test_images_have_detail(minicity):
    scene = load_scene(minicity)
    for split, i in (("train", 0), ("train", 20), ("val", 3)):
        img = scene.load_image(split, i).astype(np.float32)
        assert img.std() > 20  # not blank
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 200  # many surfaces and shades
        grad = np.abs(np.diff(img, axis=1)).mean(-1)
        assert 0.01 < (grad > 30).mean() < 0.5  # edges (plain land beyond the box), not noise


def test_deterministic_from_seed(minicity):
    from PIL import Image

    from switchnerf.scene.synth.city import build_city
    from switchnerf.scene.synth.drone import drone_cameras, intrinsics
    from switchnerf.scene.synth.render import CityRenderer

    p = PRESETS["minicity"]
    renderer = CityRenderer(build_city(p, 0))
    cams, (fx, fy, cx, cy) = drone_cameras(p, 0), intrinsics(p)
    for k, split in ((1, "train"), (p.val_every // 2, "val")):
        again = renderer.render(cams[k], fx, fy, cx, cy, *p.image_size, ss=p.supersample)
        written = np.asarray(Image.open(minicity / split / "rgbs" / f"{k:06d}.png"))
        assert np.array_equal(again, written)
    other = build_city(p, 1)
    assert other.vertices.shape != renderer.city.vertices.shape or not np.allclose(
        other.vertices, renderer.city.vertices
    )


def test_refuses_non_empty_out(minicity):
    with pytest.raises(SwitchNerfError, match="not empty"):
        synthesize("minicity", minicity, progress=False)
    with pytest.raises(SwitchNerfError, match="preset"):
        synthesize("nocity", minicity.parent / "x", progress=False)


def test_bigcity_preset_scale():
    p = PRESETS["bigcity"]
    train = p.num_views - len(range(p.val_every // 2, p.num_views, p.val_every))
    assert (2 * p.half_extent) ** 2 >= 1e6 and train >= 1500
    assert p.image_size[0] >= 400 and p.image_size[1] >= 300


def test_close_orbits_circle_their_place_and_look_at_it():
    """A close orbit's views sit on its circle at its altitude and look at its target (the
    OpenGL camera looks along -z of c2w); they come after the other views and count in
    num_views."""
    from dataclasses import replace

    from switchnerf.scene.synth.drone import drone_cameras

    base = PRESETS["tinycity"]
    p = replace(base, close_orbits=((10.0, -5.0, 12.0, 30.0, 40.0, 6),))
    cams = drone_cameras(p, 0)
    assert p.num_views == base.num_views + 6 and len(cams) == p.num_views
    assert np.array_equal(cams[: base.num_views], drone_cameras(base, 0))
    close = cams[base.num_views:]
    pos = close[:, :3, 3]
    assert np.allclose(np.hypot(pos[:, 0] - 10.0, pos[:, 1] + 5.0), 30.0)
    assert np.allclose(pos[:, 2], 40.0)
    to_target = np.array([10.0, -5.0, 12.0]) - pos
    to_target /= np.linalg.norm(to_target, axis=1, keepdims=True)
    assert np.allclose(-close[:, :3, 2], to_target, atol=1e-9)
    angles = np.sort(np.arctan2(pos[:, 1] + 5.0, pos[:, 0] - 10.0))
    assert np.allclose(np.diff(angles), 2 * np.pi / 6)  # evenly spread round the place
