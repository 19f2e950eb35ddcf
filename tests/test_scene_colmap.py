"""COLMAP models through pycolmap: poses, optional points, errors, missing pycolmap."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from _scene_data import content_points, source_frame, to_source, world_cameras, write_colmap

from switchnerf.errors import SwitchNerfError
from switchnerf.scene import load_scene
from switchnerf.scene.colmap_model import (
    qvec_to_rotmat,
    read_model,
)
from switchnerf.scene.poses import CV_TO_GL


def _raises(fn, *needles):
    with pytest.raises(SwitchNerfError) as e:
        fn()
    msg = str(e.value)
    for n in needles:
        assert str(n) in msg, (n, msg)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("binary", [False, True])
def test_read_model_matches_written_poses(tmp_path, binary):
    """Poses read back equal the cameras written (closed form: R = (c2w R_gl->cv)^T)."""
    q, b = source_frame()
    src = to_source(world_cameras(6), q, b)
    pts = content_points(40)
    write_colmap(tmp_path, src, pts, binary=binary)
    m = read_model(tmp_path / "sparse/0")
    assert sorted(m.images) == list(range(1, 7))
    for k, im in m.images.items():
        rot = (src[k - 1][:3, :3] @ CV_TO_GL).T
        np.testing.assert_allclose(qvec_to_rotmat(im.qvec), rot, atol=1e-12)
        np.testing.assert_allclose(im.tvec, -rot @ src[k - 1][:3, 3], atol=1e-9)
    np.testing.assert_allclose(m.points, pts, atol=1e-12)  # in point-id order
    assert m.colors.dtype == np.uint8 and m.colors.shape == (40, 3)


def test_points_file_is_optional(tmp_path):
    write_colmap(tmp_path, world_cameras(4), content_points(10), binary=True)
    (tmp_path / "sparse/0/points3D.bin").unlink()
    m = read_model(tmp_path / "sparse/0")
    assert len(m.images) == 4 and m.points.shape == (0, 3)
    scene = load_scene(tmp_path)
    assert scene.extra["num_points"] == 0 and len(scene.images("train")) == 3


def test_non_unit_quaternion_is_an_error(tmp_path):
    """A COLMAP 3 text model (no rigs/frames files: images.txt holds the poses)."""
    write_colmap(tmp_path, world_cameras(3), content_points(10), binary=False)
    for name in ("rigs.txt", "frames.txt"):
        (tmp_path / "sparse/0" / name).unlink()
    assert len(load_scene(tmp_path).images("train")) == 2
    f = tmp_path / "sparse/0/images.txt"
    lines = f.read_text().splitlines()
    k = next(i for i, ln in enumerate(lines) if ln.startswith("2 "))
    el = lines[k].split()
    el[1:5] = [repr(2 * float(v)) for v in el[1:5]]
    lines[k] = " ".join(el)
    f.write_text("\n".join(lines) + "\n")
    _raises(lambda: load_scene(tmp_path), "images.txt", "QVEC", "not a unit quaternion")


def test_unreadable_models_name_the_folder(tmp_path):
    write_colmap(tmp_path / "b", world_cameras(3), content_points(10), binary=True)
    f = tmp_path / "b/sparse/0/images.bin"
    f.write_bytes(f.read_bytes()[:50])
    _raises(lambda: load_scene(tmp_path / "b"), "sparse/0", "model", "pycolmap cannot read it")
    write_colmap(tmp_path / "t", world_cameras(3), content_points(10), binary=False)
    (tmp_path / "t/sparse/0/images.txt").unlink()
    _raises(lambda: load_scene(tmp_path / "t"), "images.txt", "file not found")


def test_missing_pycolmap_says_how_to_install(tmp_path, monkeypatch):
    write_colmap(tmp_path, world_cameras(3), content_points(10), binary=True)
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # import pycolmap -> ImportError
    _raises(lambda: load_scene(tmp_path), "pycolmap", "pip install")


def test_the_up_that_sfm_json_states_is_kept(tmp_path):
    """A dataset that states its up (scene from-images writes sfm.json) is leveled by it,
    not by the cameras; a malformed statement is an error naming the file."""
    c2ws = world_cameras(6)
    write_colmap(tmp_path, c2ws, content_points(30), binary=True)
    assert load_scene(tmp_path).extra["up_from"] == "cameras"
    (tmp_path / "sfm.json").write_text('{"up": [0.0, 0.0, 1.0]}')
    scene = load_scene(tmp_path)
    assert scene.extra["up_from"] == "sfm.json" and not scene.estimated["up"]
    np.testing.assert_allclose(scene.source_to_world, np.eye(4))
    (tmp_path / "sfm.json").write_text('{"up": [0.0, 1.0, 0.0]}')  # y up: rotated to z
    scene = load_scene(tmp_path)
    assert scene.estimated["up"]
    np.testing.assert_allclose(scene.source_to_world[:3, :3] @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    (tmp_path / "sfm.json").write_text('{"up": [0, 0]}')
    _raises(lambda: load_scene(tmp_path), "sfm.json", "up", "shape")
    (tmp_path / "sfm.json").write_text("{not json")
    _raises(lambda: load_scene(tmp_path), "sfm.json", "not valid JSON")
