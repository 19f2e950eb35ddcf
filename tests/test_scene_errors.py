"""Bad input raises SwitchNerfError naming the file and the field."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _scene_data import world_cameras, write_meganerf, write_transforms
from PIL import Image

from switchnerf.errors import SwitchNerfError
from switchnerf.scene import load_scene, read_descriptor


@pytest.fixture
def mega(tmp_path):
    root = tmp_path / "mega"
    root.mkdir()
    return write_meganerf(root, world_cameras(4), val=(0,))


def _raises(fn, *needles):
    with pytest.raises(SwitchNerfError) as e:
        fn()
    msg = str(e.value)
    for n in needles:
        assert str(n) in msg, (n, msg)
    return msg


def _edit_meta(path, **changes):
    data = torch.load(path, weights_only=True)
    data.update(changes)
    torch.save(data, path)


def test_missing_image(mega):
    (mega / "train/rgbs/001.png").unlink()
    _raises(lambda: load_scene(mega), "train/metadata/001.pt", "rgbs")


def test_image_deleted_after_loading(mega):
    scene = load_scene(mega)
    scene.images("train")[0].image_path.unlink()
    _raises(lambda: scene.load_image("train", 0), "001.png", "image", "not found")


def test_truncated_and_corrupt_image(mega):
    scene = load_scene(mega)
    path = mega / "train/rgbs/002.png"
    path.write_bytes(path.read_bytes()[:60])
    _raises(lambda: scene.load_image("train", 1), "002.png", "image")
    path.write_bytes(b"not an image at all")
    _raises(lambda: scene.load_image("train", 1), "002.png", "image")


def test_size_mismatch(mega):
    scene = load_scene(mega)
    Image.fromarray(np.zeros((12, 20, 3), np.uint8)).save(mega / "train/rgbs/003.png")
    _raises(lambda: scene.load_image("train", 2), "003.png", "size", "20x12", "16x12")


@pytest.mark.parametrize(
    "value, needle",
    [
        (torch.zeros(3, 3), "shape"),
        (torch.full((3, 4), float("nan")), "NaN"),
        (torch.cat([2 * torch.eye(3), torch.zeros(3, 1)], 1), "orthonormal"),
        (
            torch.cat([torch.diag(torch.tensor([1.0, 1.0, -1.0])), torch.zeros(3, 1)], 1),
            "reflection",
        ),
    ],
)
def test_bad_c2w(mega, value, needle):
    _edit_meta(mega / "train/metadata/002.pt", c2w=value)
    _raises(lambda: load_scene(mega), "train/metadata/002.pt", "c2w", needle)


def test_bad_metadata_fields(mega):
    _edit_meta(mega / "train/metadata/001.pt", intrinsics=torch.tensor([1.0, float("inf"), 2, 3]))
    _raises(lambda: load_scene(mega), "001.pt", "intrinsics")
    _edit_meta(mega / "train/metadata/001.pt", intrinsics=torch.tensor([14.0, 13, 8, 6]), H=-3)
    _raises(lambda: load_scene(mega), "001.pt", "H", "-3")
    torch.save({"origin_drb": torch.zeros(2), "pose_scale_factor": 1.0}, mega / "coordinates.pt")
    _raises(lambda: load_scene(mega), "coordinates.pt", "origin_drb", "(2,)")
    (mega / "coordinates.pt").write_bytes(b"garbage")
    _raises(lambda: load_scene(mega), "coordinates.pt", "cannot be loaded")


def test_empty_split(mega):
    for p in (mega / "val/metadata").iterdir():
        p.unlink()
    _raises(lambda: load_scene(mega), "val/metadata", "val", "empty split")


def test_unknown_format(tmp_path):
    (tmp_path / "nothing").mkdir()
    _raises(lambda: load_scene(tmp_path / "nothing"), "nothing", "format", "unknown")
    _raises(lambda: load_scene(tmp_path / "absent"), "absent", "path", "does not exist")


def test_transforms_errors(tmp_path):
    root = write_transforms(tmp_path, world_cameras(3))
    data = json.loads((root / "transforms.json").read_text())
    data["frames"][1]["transform_matrix"][0][0] = float("nan")
    (root / "transforms.json").write_text(json.dumps(data))
    _raises(lambda: load_scene(root), "transforms.json", "frames[1].transform_matrix", "NaN")
    data["frames"] = []
    (root / "transforms.json").write_text(json.dumps(data))
    _raises(lambda: load_scene(root), "transforms.json", "frames", "empty")


def test_colmap_unknown_model(tmp_path):
    model = tmp_path / "sparse/0"
    model.mkdir(parents=True)
    (model / "cameras.txt").write_text("1 WEIRD_CAM 16 12 1 2 3\n")
    (model / "images.txt").write_text("")
    _raises(lambda: load_scene(tmp_path), "cameras.txt", "MODEL", "WEIRD_CAM")


def test_descriptor_errors_and_expansion(tmp_path, mega, monkeypatch):
    y = tmp_path / "s.yaml"
    y.write_text("path: mega\nbogus_key: 1\n")
    _raises(lambda: load_scene(y), "s.yaml", "bogus_key", "unknown key")
    y.write_text("path: mega\nformat: ply\n")
    _raises(lambda: load_scene(y), "s.yaml", "format", "ply")
    y.write_text("path: mega\nsynth: {preset: minicity, sed: 1}\n")
    _raises(lambda: read_descriptor(y), "s.yaml", "synth.sed")
    y.write_text("path: ${SN_TEST_UNSET_VAR}/x\n")
    monkeypatch.delenv("SN_TEST_UNSET_VAR", raising=False)
    _raises(lambda: read_descriptor(y), "s.yaml", "path", "SN_TEST_UNSET_VAR")
    monkeypatch.setenv("SN_TEST_DATA", str(tmp_path))
    y.write_text(
        "name: m\npath: ${SN_TEST_DATA}/mega\naltitude_range_m: [-44, -40]\npartition_grid: [1, 3]\n"
    )
    scene = load_scene(y)
    assert scene.name == "m" and scene.partition_grid == (1, 3) and scene.descriptor == y.resolve()
    assert scene.estimated["altitude_range"] is False and scene.estimated["bbox"] is True
    # [-44, -40] m down, origin_drb[0] = -45, scale 60 -> ground z = -5/60, top z = -1/60
    np.testing.assert_allclose(scene.altitude_range, (-5 / 60, -1 / 60))
    y.write_text("path: mega\naltitude_range_m: [50, 8]\n")
    _raises(lambda: read_descriptor(y), "s.yaml", "altitude_range_m")


def test_repo_descriptors_parse(monkeypatch, tmp_path):
    from pathlib import Path

    monkeypatch.setenv("SWITCHNERF_DATA", str(tmp_path))
    scenes = Path(__file__).resolve().parents[1] / "scenes"
    got = {p.stem: read_descriptor(p) for p in scenes.glob("*.yaml")}
    assert {"minicity", "bigcity", "building", "rubble", "residence", "sci-art", "campus"} <= set(
        got
    )
    assert got["rubble"].altitude_range_m == (11.0, 38.0)
    assert got["campus"].path == tmp_path / "mega-nerf/campus-pixsfm"
    assert got["minicity"].synth.preset == "minicity"
