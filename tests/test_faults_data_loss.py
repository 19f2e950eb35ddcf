"""Fault injection, data loss: no command overwrites one of its inputs, a failing or silently
short write (a full disk, an encoder that died) never replaces an existing output, caches
never write outside their folder, and no input file is dropped without a word.

Every case checks the exit code, the one-line message naming the file or flag, that no
traceback is printed, and that the files there before are byte-identical afterwards (and
no temporary file is left)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from _faults import one_line_error, snapshot
from _scene_data import world_cameras, write_colmap, write_meganerf, write_transforms
from PIL import Image

from switchnerf.cli import main
from switchnerf.errors import SwitchNerfError
from switchnerf.io_utils import atomic_path, atomic_paths, same_bytes, write_json_atomic

TINY_RENDER = ["--seconds", "0.4", "--fps", "5", "--resolution", "32x24", "--device", "cpu"]


def _camera_path_file(path: Path) -> Path:
    from switchnerf.video.camera_path import CameraPath
    from switchnerf.video.camera_path_io import save_camera_path
    from switchnerf.video.paths import orbit_keyframes

    save_camera_path(path, CameraPath(orbit_keyframes((0, 0, 0.4), 2.0, 1.2, 4), 32, 24, 0.4,
                                      5.0, loop=True, source="test"))
    return path


def _forbid_loading(monkeypatch):
    """Refusals must come before the run is loaded."""
    from switchnerf.train import run as run_module

    def refuse(*_a, **_k):
        raise AssertionError("the run was loaded before the request was checked")

    monkeypatch.setattr(run_module, "load_run", refuse)


# ------------------------------------------------------------------ never overwrite an input
@pytest.mark.parametrize("case", ["sidecar-is-path", "save-path-is-sidecar", "save-path-is-path",
                                  "foreign-sidecar"])
def test_render_never_overwrites_an_input(tiny_run, tmp_path, capsys, monkeypatch, case):
    folder = tmp_path / "work"
    folder.mkdir()
    orbit = _camera_path_file(folder / "orbit.json")
    (folder / "orbit.mp4").write_bytes(b"an earlier video")
    (folder / "notes.json").write_text('{"mine": true}\n')
    before = snapshot(folder)
    _forbid_loading(monkeypatch)
    argv = {
        "sidecar-is-path": ["--path", str(orbit), "--output", str(folder / "orbit.mp4")],
        "save-path-is-sidecar": ["--path", "orbit", "--save-path", str(orbit),
                                 "--output", str(folder / "orbit.mp4")],
        "save-path-is-path": ["--path", str(orbit), "--save-path", str(orbit),
                              "--output", str(folder / "v.mp4")],
        "foreign-sidecar": ["--path", "orbit", "--output", str(folder / "notes.mp4")],
    }[case]
    rc = main(["render", str(tiny_run.run_dir), *argv, *TINY_RENDER])
    needles = {"sidecar-is-path": ("--output", "orbit.json", "--path file"),
               "save-path-is-sidecar": ("--output", "orbit.json", "--save-path file"),
               "save-path-is-path": ("--save-path", "orbit.json", "--path file"),
               "foreign-sidecar": ("--output", "notes.json", "not a render info file")}[case]
    one_line_error(rc, capsys, *needles)
    assert snapshot(folder) == before


def test_an_earlier_sidecar_is_replaced(tiny_run, tmp_path, capsys):
    out = tmp_path / "orbit.mp4"
    for _ in range(2):  # the second render replaces the first one's video and sidecar
        assert main(["render", str(tiny_run.run_dir), "--path", "orbit", "--output", str(out),
                     *TINY_RENDER]) == 0
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["video"] == "orbit.mp4" and info["frames"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orbit.json", "orbit.mp4"]


# ------------------------------------------------------------------ full disk: video
class _BrokenWriter:
    """Stands in for imageio's ffmpeg writer: fails the way a full disk makes ffmpeg fail."""

    def __init__(self, path, mode):
        self.path, self.mode = Path(path), mode

    def append_data(self, frame):
        if self.mode == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))

    def close(self):
        if self.mode == "garbage":  # ffmpeg died mid-file: a header and nothing readable
            self.path.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(200))


def _short_writer(real_get_writer):
    """A real encoder that loses the last frame (ffmpeg killed before its final flush)."""

    def get_writer(path, **kwargs):
        real = real_get_writer(path, **kwargs)

        class Short:
            pending = None

            def append_data(self, frame):
                if self.pending is not None:
                    real.append_data(self.pending)
                self.pending = frame

            def close(self):
                real.close()

        return Short()

    return get_writer


@pytest.mark.parametrize("mode, needle", [
    ("empty", "the written file is empty"),
    ("garbage", "ffmpeg cannot read it as a video"),
    ("short", "ffmpeg reads 1 frames, 2 were encoded"),
    ("enospc", "No space left on device"),
])
def test_a_failed_video_write_keeps_the_earlier_video(tiny_run, tmp_path, capsys, monkeypatch,
                                                      mode, needle):
    import imageio.v2 as imageio

    out = tmp_path / "out" / "orbit.mp4"
    argv = ["render", str(tiny_run.run_dir), "--path", "orbit", "--output", str(out), *TINY_RENDER]
    assert main(argv) == 0
    capsys.readouterr()
    before = snapshot(out.parent)
    if mode == "short":
        monkeypatch.setattr(imageio, "get_writer", _short_writer(imageio.get_writer))
    else:
        monkeypatch.setattr(imageio, "get_writer", lambda path, **_: _BrokenWriter(path, mode))
    rc = main(argv + ["--tilt", "40"])  # a different video, same files
    one_line_error(rc, capsys, str(out), needle)
    assert snapshot(out.parent) == before  # video and sidecar unchanged, no temporary file


def test_no_video_encoder_is_one_line_before_any_frame(tiny_run, tmp_path, capsys, monkeypatch):
    """Without imageio-ffmpeg, imageio would pick another plugin and fail mid-video."""
    import importlib.util

    out = tmp_path / "out" / "orbit.mp4"
    argv = ["render", str(tiny_run.run_dir), "--path", "orbit", "--output", str(out), *TINY_RENDER]
    assert main(argv) == 0
    capsys.readouterr()
    before = snapshot(out.parent)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "imageio_ffmpeg" else real(name, *a))
    rc = main(argv + ["--tilt", "40"])
    one_line_error(rc, capsys, str(out), "needs the imageio-ffmpeg package")
    assert snapshot(out.parent) == before


# ------------------------------------------------------------------ full disk: other writers
def _half_writes(monkeypatch):
    """Path.write_bytes writes only half its data and reports success (a lying disk)."""
    real = Path.write_bytes
    monkeypatch.setattr(Path, "write_bytes", lambda self, data: real(self, data[: len(data) // 2]))


def _png_writes_nothing(monkeypatch):
    monkeypatch.setattr(Image.Image, "save", lambda self, fp, *a, **k: None)


@pytest.mark.parametrize("fault, needle", [
    (_half_writes, "partition.json: the written file does not read back"),
    (_png_writes_nothing, "partition_map.png: the written file is empty"),
])
def test_partition_outputs_survive_a_full_disk(tmp_path, capsys, monkeypatch, fault, needle):
    ds = tmp_path / "mega"
    ds.mkdir()
    write_meganerf(ds, world_cameras(4), val=(0,))
    out = tmp_path / "partition"
    argv = ["scene", "partition", str(ds), "--samples", "16", "--out", str(out)]
    assert main([*argv, "--grid", "1x2"]) == 0
    capsys.readouterr()
    before = snapshot(out)
    assert sorted(Path(p).name for p in before) == ["cell_counts.json", "partition.json",
                                                    "partition_map.png"]
    fault(monkeypatch)
    rc = main([*argv, "--grid", "2x1"])  # new content for all three files
    one_line_error(rc, capsys, needle)
    assert snapshot(out) == before  # none of the three replaced


def test_cameras_export_survives_a_failed_ply_write(tiny_run, tmp_path, capsys, monkeypatch):
    import open3d as o3d

    out = tmp_path / "cams" / "CAMS.json"
    assert main(["export", "cameras", str(tiny_run.run_dir), "--output", str(out)]) == 0
    capsys.readouterr()
    before = snapshot(out.parent)
    monkeypatch.setattr(o3d.io, "write_line_set", lambda path, ls: True)  # claims, writes nothing
    rc = main(["export", "cameras", str(tiny_run.run_dir), "--output", str(out),
               "--frustum-size", "0.5"])
    one_line_error(rc, capsys, "CAMS.frustums.ply", "empty")
    assert snapshot(out.parent) == before


def test_pointcloud_survives_a_lying_writer(tiny_run, tmp_path, capsys, monkeypatch):
    import open3d as o3d

    out = tmp_path / "pc.ply"
    out.write_bytes(b"an earlier cloud")
    real = o3d.io.write_point_cloud

    def drops_points(path, pcd, *a, **k):  # writes a valid PLY of fewer points
        return real(path, pcd.select_by_index(list(range(len(pcd.points) // 2))))

    monkeypatch.setattr(o3d.io, "write_point_cloud", drops_points)
    rc = main(["export", "pointcloud", str(tiny_run.run_dir), "--num-points", "200",
               "--output", str(out), "--device", "cpu"])
    one_line_error(rc, capsys, str(out), "points")
    assert snapshot(tmp_path) == {str(out): b"an earlier cloud"}


def test_checkpoint_write_failure_keeps_the_previous_checkpoints(tmp_path, monkeypatch):
    from switchnerf.train import checkpoint as ck

    ck.save_checkpoint(tmp_path, 1, {"step": 1, "w": torch.ones(3)}, keep_last=2)
    before = snapshot(tmp_path)
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: Path(f).write_bytes(b"PK\x03\x04"))
    with pytest.raises(SwitchNerfError, match=r"step_00000002\.pt: the written file does not "):
        ck.save_checkpoint(tmp_path, 2, {"step": 2, "w": torch.ones(3)}, keep_last=2)

    def full(obj, f, *a, **k):
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(SwitchNerfError, match=r"step_00000002\.pt: cannot be written"):
        ck.save_checkpoint(tmp_path, 2, {"step": 2, "w": torch.ones(3)}, keep_last=2)
    assert snapshot(tmp_path) == before


def test_atomic_paths_replace_all_or_none(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_json_atomic(a, {"v": 1})
    write_json_atomic(b, {"v": 1})
    before = snapshot(tmp_path)
    with (pytest.raises(SwitchNerfError, match="b.json: the written file is empty"),
          atomic_paths([a, b]) as (ta, _tb)):
        ta.write_text('{"v": 2}')  # b never written: neither is replaced
    with (pytest.raises(SwitchNerfError, match="a.json: the written file does not read back"),
          atomic_paths([a, b], verify=[same_bytes(b"x"), None]) as (ta, tb)):
        ta.write_text("y")
        tb.write_text("y")
    with pytest.raises(SwitchNerfError, match="is a folder"), atomic_path(tmp_path) as tmp:
        tmp.write_text("y")
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ undistortion cache
DISTORTED = {"camera_model": "OPENCV", "k1": -0.05, "k2": 0.01}


def test_transforms_cache_never_writes_outside_its_folder(tmp_path):
    """file_path with ``..``: the undistorted copy is a flat, hash-keyed file in the cache."""
    from switchnerf.scene.load import load_scene

    ds = tmp_path / "data" / "scene"
    write_transforms(ds, world_cameras(3))
    data = json.loads((ds / "transforms.json").read_text())
    outside = tmp_path / "data" / "shared"
    outside.mkdir()
    for frame in data["frames"]:
        name = Path(frame["file_path"]).name
        (ds / frame["file_path"]).rename(outside / name)
        frame["file_path"] = f"../shared/{name}"
    data.update(DISTORTED)
    (ds / "transforms.json").write_text(json.dumps(data))
    victim = ds / "shared"  # where a cache mirroring file_path wrote: <cache>/../shared/<name>
    before = snapshot(tmp_path)
    scene = load_scene(ds)
    cache = ds / "transforms_undistorted"
    for split in ("train", "val"):
        for i, rec in enumerate(scene.images(split)):
            scene.load_image(split, i)
            assert rec.image_path.parent == cache and ".." not in rec.image_path.name
    after = snapshot(tmp_path)
    new = sorted(set(after) - set(before))
    assert new and all(Path(p).parent == cache for p in new)
    assert {k: v for k, v in after.items() if k in before} == before
    assert not victim.exists()


def test_colmap_cache_never_writes_outside_its_folder(tmp_path):
    from dataclasses import replace

    from switchnerf.scene.colmap_model import read_model, write_model
    from switchnerf.scene.load import load_scene

    ds = tmp_path / "colmap"
    params = (14.0, 13.0, 8.3, 5.9, -0.05, 0.01, 0.0, 0.0)
    write_colmap(ds, world_cameras(3), np.zeros((4, 3)), binary=False, model="OPENCV",
                 params=params)
    model = read_model(ds / "sparse" / "0")
    (ds / "extra").mkdir()
    for im in model.images.values():
        (ds / "images" / im.name).rename(ds / "extra" / im.name)
    model.images = {k: replace(im, name=f"../extra/{im.name}") for k, im in model.images.items()}
    write_model(model, ds / "sparse" / "0", binary=False)
    before = snapshot(tmp_path)
    scene = load_scene(ds)
    for i, rec in enumerate(scene.images("train")):
        scene.load_image("train", i)
        assert rec.image_path.parent == ds / "sparse" / "0_undistorted"
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before
    assert all(Path(p).parent == ds / "sparse" / "0_undistorted" for p in set(after) - set(before))


def test_cache_refuses_a_path_that_is_not_a_cache_file(tmp_path):
    from dataclasses import replace

    from switchnerf.scene.images import read_record_image
    from switchnerf.scene.load import load_scene

    ds = tmp_path / "scene"
    write_transforms(ds, world_cameras(2))
    data = json.loads((ds / "transforms.json").read_text())
    (ds / "transforms.json").write_text(json.dumps({**data, **DISTORTED}))
    rec = load_scene(ds).images("train")[0]
    before = snapshot(ds)
    for bad in (rec.undistort.source_path, ds / "images" / ".." / "x.png"):
        with pytest.raises(SwitchNerfError, match="refusing to write an undistorted copy"):
            read_record_image(replace(rec, image_path=Path(bad)))
    assert snapshot(ds) == before


# ------------------------------------------------------------------ nothing dropped silently
def test_meganerf_images_without_metadata_are_named(tmp_path, capsys):
    ds = tmp_path / "mega"
    ds.mkdir()
    write_meganerf(ds, world_cameras(5), val=(0,))
    (ds / "train" / "metadata" / "002.pt").unlink()
    (ds / "train" / "metadata" / "004.pt").unlink()
    before = snapshot(ds)
    assert main(["scene", "info", str(ds)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert err[0].startswith("switchnerf: warning: ")
    assert all(s in err[0] for s in ("2 image(s)", "002.png", "004.png", "train/rgbs",
                                     "train/metadata"))
    assert snapshot(ds) == before
