"""``switchnerf export pointcloud|mesh|cameras`` on the tiny blob run (tests/conftest.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import BLOB_CENTER, BLOB_RADIUS, BOX

from switchnerf.cli import main


def _read_points(path):
    import open3d as o3d

    pcd = o3d.io.read_point_cloud(str(path))
    return np.asarray(pcd.points), np.asarray(pcd.colors)


def test_pointcloud_expert_colours_match_routing(tiny_run, tmp_path):
    from switchnerf.render.palette import EXPERT_PALETTE
    from switchnerf.train.run import load_run

    out = tmp_path / "pc.ply"
    rc = main(["export", "pointcloud", str(tiny_run.run_dir), "--color", "expert",
               "--num-points", "2000", "--output", str(out), "--device", "cpu"])
    assert rc == 0
    pts, cols = _read_points(out)
    assert 500 < len(pts) <= 2000
    r = np.linalg.norm(pts - np.array(BLOB_CENTER), axis=1)
    assert np.median(np.abs(r - BLOB_RADIUS)) < 0.05  # points on the blob's surface

    run = load_run(tiny_run.run_dir)
    lo, ext = run.renderer.box.lo.double(), run.renderer.box.extent.double()
    unit = ((torch.from_numpy(pts) - lo) / ext).clamp(0, 1).float()
    with torch.no_grad():
        ids = run.renderer.field.route(unit).expert_id
    want = EXPERT_PALETTE[ids].double().numpy()
    assert np.abs(cols - want).max() <= 0.5 / 255 + 1e-6  # PLY stores colours as uint8
    assert len(np.unique(ids.numpy())) >= 2  # the gate splits the blob between experts


def test_pointcloud_rgb_colours(tiny_run, tmp_path):
    out = tmp_path / "pc_rgb.ply"
    assert main(["export", "pointcloud", str(tiny_run.run_dir), "--num-points", "500",
                 "--output", str(out), "--device", "cpu"]) == 0
    pts, cols = _read_points(out)
    assert len(pts) > 100 and cols.shape == pts.shape
    assert (cols >= 0).all() and (cols <= 1).all()


def test_mesh_is_non_empty_inside_the_box_and_on_the_blob(tiny_run, tmp_path):
    import open3d as o3d

    out = tmp_path / "mesh.ply"
    assert main(["export", "mesh", str(tiny_run.run_dir), "--voxel-size", "0.03",
                 "--output", str(out), "--device", "cpu"]) == 0
    mesh = o3d.io.read_triangle_mesh(str(out))
    v = np.asarray(mesh.vertices)
    assert len(mesh.triangles) > 100
    assert (v >= BOX[0] - 1e-6).all() and (v <= BOX[1] + 1e-6).all()
    r = np.linalg.norm(v - np.array(BLOB_CENTER), axis=1)
    assert np.median(np.abs(r - BLOB_RADIUS)) < 0.05
    assert mesh.has_vertex_colors()


def test_cameras_json_and_frustums(tiny_run, tmp_path):
    import open3d as o3d

    out = tmp_path / "cams.json"
    assert main(["export", "cameras", str(tiny_run.run_dir), "--output", str(out)]) == 0
    data = json.loads(out.read_text())
    recs = tiny_run.scene.images("train") + tiny_run.scene.images("val")
    assert len(data["cameras"]) == len(recs)
    for cam, rec in zip(data["cameras"], recs):
        np.testing.assert_allclose(cam["c2w"], rec.c2w)
        assert (cam["split"], cam["width"], cam["fx"]) == (rec.split, rec.width, rec.fx)
    ls = o3d.io.read_line_set(str(tmp_path / "cams.frustums.ply"))
    pts = np.asarray(ls.points)
    assert len(ls.lines) == 8 * len(recs)
    np.testing.assert_allclose(pts[::5], [r.c2w[:3, 3] for r in recs], atol=1e-6)  # apexes


@pytest.mark.parametrize("argv, needle", [
    (["pointcloud", "--num-points", "0", "--output", "pc.ply"], "--num-points"),
    (["pointcloud", "--output", "pc.xyz"], "expected a .ply"),
    (["mesh", "--voxel-size", "-1", "--output", "m.ply"], "--voxel-size"),
    (["cameras", "--output", "cams.ply"], "expected a .json"),
])
def test_bad_export_input_exits_2(tiny_run, tmp_path, capsys, argv, needle):
    argv = [a if not a.endswith((".ply", ".xyz", ".json")) else str(tmp_path / a) for a in argv]
    rc = main(["export", argv[0], str(tiny_run.run_dir)] + argv[1:])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_missing_checkpoint_exits_2(tiny_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run)
    shutil.rmtree(run / "checkpoints")
    assert main(["export", "mesh", str(run), "--output", str(tmp_path / "m.ply")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_failed_write_leaves_existing_output(tiny_run, tmp_path, monkeypatch):
    import open3d as o3d

    out = tmp_path / "pc.ply"
    out.write_bytes(b"old cloud")

    def broken(path, *_args, **_kwargs):
        with open(path, "wb") as f:
            f.write(b"ply\nformat binary")  # a partial file, then a crash
        raise RuntimeError("disk full")

    monkeypatch.setattr(o3d.io, "write_point_cloud", broken)
    with pytest.raises(RuntimeError):
        main(["export", "pointcloud", str(tiny_run.run_dir), "--num-points", "200",
              "--output", str(out), "--device", "cpu"])
    assert out.read_bytes() == b"old cloud"
    assert [p.name for p in tmp_path.iterdir()] == ["pc.ply"]
