"""Fault injection, errors: bad arguments are refused while parsing (before anything is
loaded), faults of the machine (unwritable or full folders, memory, overflow) and
checkpoints that do not fit the run become ONE line naming the file or flag with exit
code 2, multi-line messages are folded into one line, and real bugs keep their traceback.

Every case checks the exit code, the one-line message, that no traceback is printed, and
that the files there before are byte-identical afterwards."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile

import numpy as np
import pytest
import torch
from _faults import one_line_error, snapshot
from _scene_data import world_cameras, write_meganerf

from switchnerf.cli import main
from switchnerf.cli import scene as scene_cli
from switchnerf.errors import SwitchNerfError

TINY = ["--seconds", "0.4", "--fps", "5", "--resolution", "32x24", "--device", "cpu"]


@pytest.fixture
def guarded(tiny_run, tmp_path, monkeypatch):
    """(run folder, output folder holding an earlier video and sidecar); loading the run is
    an error: every case here must be refused before."""
    from switchnerf.train import run as run_module

    out = tmp_path / "out"
    out.mkdir()
    (out / "v.mp4").write_bytes(b"an earlier video")
    (out / "v.json").write_text(json.dumps({"video": "v.mp4", "world_frame": "w",
                                            "frames_rendered": 1}))

    def refuse(*_a, **_k):
        raise AssertionError("the run was loaded before the arguments were checked")

    monkeypatch.setattr(run_module, "load_run", refuse)
    return tiny_run.run_dir, out


def _render(run, out, *extra):
    return main(["render", str(run), "--path", "orbit", "--output", str(out / "v.mp4"), *TINY,
                 *extra])


# ------------------------------------------------------------------ refused while parsing
@pytest.mark.parametrize("extra, needles", [
    (["--seconds", "inf"], ["--seconds: must be a finite number, got 'inf'"]),
    (["--seconds", "nan"], ["--seconds: must be a finite number"]),
    (["--fps", "nan"], ["--fps: must be a finite number"]),
    (["--fps", "-1"], ["--fps: must be > 0"]),
    (["--seconds", "1e9"], ["--seconds/--fps", "100000"]),
    (["--seconds", "1e300", "--fps", "1e300"], ["--seconds/--fps", "inf frames"]),
    (["--resolution", "100000x100000"], ["--resolution: width and height must be at most 8192"]),
    (["--resolution", "8192x8192", "--outputs", "rgb,depth"], ["--resolution", "at most 67,108,864"]),
    (["--depth-range", "nan,1"], ["--depth-range: NEAR and FAR must be finite"]),
    (["--altitude", "inf"], ["--altitude: must be a finite number"]),
    (["--keyframes", "0"], ["--keyframes: must be >= 1"]),
    (["--tilt", "nan"], ["--tilt: must be a finite number"]),
])
def test_render_arguments_refused_before_loading(guarded, capsys, extra, needles):
    run, out = guarded
    before = snapshot(out)
    one_line_error(_render(run, out, *extra), capsys, *needles)
    assert snapshot(out) == before


@pytest.mark.parametrize("argv, needle", [
    (["export", "mesh", "RUN", "--output", "OUT/m.ply", "--downscale", "nan"],
     "--downscale: must be a finite number"),
    (["export", "mesh", "RUN", "--output", "OUT/m.ply", "--voxel-size", "nan"],
     "--voxel-size: must be a finite number"),
    (["export", "mesh", "RUN", "--output", "OUT/m.ply", "--voxel-size", "-1"],
     "--voxel-size: must be > 0"),
    (["export", "mesh", "RUN", "--output", "OUT/m.ply", "--max-views", "0"], "--max-views"),
    (["export", "cameras", "RUN", "--output", "OUT/c.json", "--frustum-size", "nan"],
     "--frustum-size: must be a finite number"),
    (["export", "pointcloud", "RUN", "--output", "OUT/p.ply", "--num-points", "zero"],
     "--num-points: expected an integer, got 'zero'"),
    (["export", "pointcloud", "RUN", "--output", "OUT/p.ply", "--std-ratio", "inf"],
     "--std-ratio: must be a finite number"),
    (["view", "RUN", "--resolution", "100000"], "--resolution: must lie in [16, 8192]"),
    (["view", "RUN", "--port", "70000"], "--port: must lie in [1, 65535]"),
    (["train", "--scene", "S", "--output", "OUT/run", "--max-steps", "0"], "--max-steps"),
    (["scene", "partition", "S", "--ground-z", "nan"], "--ground-z: must be a finite number"),
    (["render", "RUN", "--output", "OUT/v.mp4"], "the following arguments are required: --path"),
])
def test_other_arguments_refused_while_parsing(guarded, capsys, argv, needle):
    run, out = guarded
    before = snapshot(out)
    argv = [a.replace("RUN", str(run)).replace("OUT", str(out)) for a in argv]
    line = one_line_error(main(argv), capsys, needle)
    assert "--help" in line
    assert snapshot(out) == before


def test_camera_path_file_too_long_or_too_large(guarded, capsys, tmp_path):
    run, out = guarded
    before = snapshot(out)
    path = {"render_height": 24, "render_width": 32, "seconds": 1e308, "fps": 1e308,
            "camera_path": [{"camera_to_world": np.eye(4).reshape(-1).tolist(), "fov": 50}] * 2}
    f = tmp_path / "long.json"
    f.write_text(json.dumps(path))
    rc = main(["render", str(run), "--path", str(f), "--output", str(out / "w.mp4")])
    one_line_error(rc, capsys, str(f), "seconds x fps", "inf frames")
    f.write_text(json.dumps({**path, "seconds": 1.0, "fps": 2, "render_width": 100000}))
    rc = main(["render", str(run), "--path", str(f), "--output", str(out / "w.mp4")])
    one_line_error(rc, capsys, str(f), "width: 100000 pixels, at most 8192")
    assert snapshot(out) == before


# ------------------------------------------------------------------ the machine's faults
def test_unusable_output_locations(guarded, capsys):
    run, out = guarded
    before = snapshot(out)
    (out / "folder.mp4").mkdir()
    rc = main(["render", str(run), "--path", "orbit", "--output", str(out / "folder.mp4"), *TINY])
    one_line_error(rc, capsys, "--output", "folder.mp4: is a folder")
    rc = _render(run, out, "--frames-dir", str(out / "v.json"))
    one_line_error(rc, capsys, "--frames-dir", "v.json: is a file")
    rc = main(["render", str(run), "--path", "orbit", "--output", str(out / "v.mp4" / "x.mp4"),
               *TINY])
    one_line_error(rc, capsys, "--output", "v.mp4 is a file, not a folder")
    (out / "folder.ply").mkdir()
    rc = main(["export", "pointcloud", str(run), "--output", str(out / "folder.ply")])
    one_line_error(rc, capsys, "--output", "folder.ply: is a folder")
    (out / "folder.mp4").rmdir()
    (out / "folder.ply").rmdir()
    assert snapshot(out) == before


def test_unwritable_folder_is_one_line(tiny_run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "cams"
    out.mkdir()
    (out / "CAMS.json").write_text("{}")

    def denied(*_a, dir=None, **_k):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), dir)

    before = snapshot(out)
    monkeypatch.setattr(tempfile, "mkstemp", denied)
    rc = main(["export", "cameras", str(tiny_run.run_dir), "--output", str(out / "CAMS.json")])
    one_line_error(rc, capsys, "CAMS.frustums.ply: cannot be written (Permission denied)")
    assert snapshot(out) == before


@pytest.mark.parametrize("exc, needle", [
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/store/shard.npy"),
     "/data/store/shard.npy: No space left on device"),
    (PermissionError(errno.EROFS, os.strerror(errno.EROFS), "/data/.switchnerf"),
     "/data/.switchnerf: Read-only file system"),
    (IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), "/a/tmp", None, "/a/out.mp4"),
     "/a/tmp -> /a/out.mp4: Is a directory"),
    (MemoryError(), "out of CPU memory"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB\nmore text"),
     "out of GPU memory"),
    (OverflowError("cannot convert float infinity to integer"), "a number is too large"),
    (SwitchNerfError("a.pt: cannot be loaded (first line\n\n  second   line)"),
     "a.pt: cannot be loaded (first line | second line)"),
])
def test_faults_map_to_one_line(monkeypatch, capsys, exc, needle):
    def fails(_args):
        raise exc

    monkeypatch.setattr(scene_cli, "cmd_info", fails)
    one_line_error(main(["scene", "info", "x"]), capsys, needle)


@pytest.mark.parametrize("exc", [RuntimeError("a bug"), ValueError("a bug"), KeyError("bug")])
def test_bugs_keep_their_traceback(monkeypatch, exc):
    def fails(_args):
        raise exc

    monkeypatch.setattr(scene_cli, "cmd_info", fails)
    with pytest.raises(type(exc)):
        main(["scene", "info", "x"])


def test_debug_shows_the_traceback_of_mapped_errors(monkeypatch, capsys):
    def fails(_args):
        raise MemoryError

    monkeypatch.setattr(scene_cli, "cmd_info", fails)
    monkeypatch.setenv("SWITCHNERF_DEBUG", "1")
    assert main(["scene", "info", "x"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("switchnerf: error: ")


# ------------------------------------------------------------------ checkpoints that do not fit
def _bad_checkpoint(kind: str, src: dict) -> dict:
    if kind == "no-weights":
        return {"step": 5}
    if kind == "no-step":
        return {k: v for k, v in src.items() if k != "step"}
    field = dict(src["field"])
    name = next(k for k, v in field.items() if v.ndim >= 1 and v.numel() > 4)
    field[name] = torch.zeros(3)  # another config: a table of another size
    field.pop(max(field))
    return {**src, "field": field}


@pytest.mark.parametrize("kind, needle", [
    ("no-weights", "field: missing (not a switchnerf checkpoint with weights)"),
    ("no-step", "step: missing or not a step number"),
    ("other-config", "field: the weights do not fit the run's config"),
])
@pytest.mark.parametrize("command", ["render", "export", "eval"])
def test_checkpoint_that_does_not_fit_is_one_line(tiny_run, tmp_path, capsys, kind, needle,
                                                  command):
    from switchnerf.train.checkpoint import latest_checkpoint

    run = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run)
    ckpt = latest_checkpoint(run)
    state = torch.load(ckpt, weights_only=True)
    torch.save(_bad_checkpoint(kind, state), ckpt)
    out = tmp_path / "out"
    out.mkdir()
    (out / "v.mp4").write_bytes(b"an earlier video")
    before = snapshot(run, out)
    argv = {"render": ["render", str(run), "--path", "orbit", "--output", str(out / "v.mp4"),
                       *TINY],
            "export": ["export", "mesh", str(run), "--output", str(out / "m.ply"),
                       "--device", "cpu"],
            "eval": ["eval", str(run), "--device", "cpu"]}[command]
    one_line_error(main(argv), capsys, str(ckpt), needle)
    assert snapshot(run, out) == before


# ------------------------------------------------------------------ multi-line messages
def test_corrupt_and_nan_metadata_are_one_line(tmp_path, capsys):
    ds = tmp_path / "mega"
    ds.mkdir()
    write_meganerf(ds, world_cameras(4), val=(0,))
    meta = ds / "train" / "metadata" / "001.pt"
    good = meta.read_bytes()
    torch.save({"H": 12, "W": 16, "c2w": np.zeros((3, 4)), "intrinsics": [1.0, 1, 1, 1]}, meta)
    before = snapshot(ds)
    rc = main(["scene", "info", str(ds)])  # an unsafe pickle (a numpy array): torch explains
    line = one_line_error(rc, capsys, str(meta), "cannot be loaded")  # at length; one line here
    assert len(line) < 500
    meta.write_bytes(good)
    data = torch.load(meta, weights_only=True)
    data["c2w"] = torch.full((3, 4), float("nan"))
    torch.save(data, meta)
    before = snapshot(ds)
    rc = main(["scene", "info", str(ds)])
    one_line_error(rc, capsys, str(meta), "c2w: contains NaN or inf (12 of 12 entries")
    assert snapshot(ds) == before


def test_cli_limits_match_the_camera_path_limits():
    from switchnerf.cli.args import MAX_RESOLUTION_SIDE
    from switchnerf.video.camera_path import MAX_SIDE

    assert MAX_RESOLUTION_SIDE == MAX_SIDE
