"""Camera-path editor files: safe names, nerfstudio JSON round trip, the same frames as
``switchnerf render`` reads, the "render video" job, and the overlay geometry."""

import json
import math

import numpy as np
import pytest
import torch
from _viewer_run import free_port, make_run

from switchnerf.errors import SwitchNerfError
from switchnerf.video.camera_path import CameraPath
from switchnerf.video.camera_path_io import load_camera_path
from switchnerf.video.paths import Keyframe, look_at
from switchnerf.viewer import ViewerServer
from switchnerf.viewer.overlay import box_edges, expert_points, find_partition, partition_lines
from switchnerf.viewer.path_files import list_paths, load_path, path_file, save_path
from switchnerf.viewer.viser_cameras import viser_from_c2w


def _path(n_key=3, loop=False) -> CameraPath:
    keys = [Keyframe(look_at((3 * math.cos(a), 3 * math.sin(a), 2.0), (0, 0, 0.3)), 40.0 + 5 * k)
            for k, a in enumerate(np.linspace(0, 2, n_key))]
    return CameraPath(keys, 32, 24, 1.0, 6.0, "catmull-rom", loop, "test")


@pytest.mark.parametrize("name, stem", [
    ("../../etc/passwd", "passwd"), ("my path.json", "my_path"), ("", "camera_path"),
    ("..", "camera_path"), ("/abs/x", "x"), ("a\\b", "a_b"), (".hidden", "hidden"),
])
def test_path_names_stay_in_the_run_folder(tmp_path, name, stem):
    f = path_file(tmp_path, name)
    assert f == tmp_path / "camera_paths" / f"{stem}.json"
    assert f.resolve().parent == (tmp_path / "camera_paths").resolve()


def test_saved_path_is_nerfstudio_json_that_render_reads_frame_for_frame(tmp_path):
    path = _path(loop=True)
    out = save_path(tmp_path, "orbit", path)
    d = json.loads(out.read_text())
    assert d["camera_type"] == "perspective"
    assert (d["render_width"], d["render_height"], d["seconds"], d["fps"]) == (32, 24, 1.0, 6.0)
    assert len(d["camera_path"]) == path.n_frames == 6
    assert len(d["camera_path"][0]["camera_to_world"]) == 16 and d["keyframes"][0]["fov"] == 40.0
    # What `switchnerf render RUN --path FILE` renders: the same cameras.
    rendered = load_camera_path(out)
    assert rendered.n_frames == path.n_frames
    for i in range(path.n_frames):
        a, b = path.camera(i), rendered.camera(i)
        assert np.allclose(a.c2w, b.c2w, atol=1e-9) and math.isclose(a.fy, b.fy, rel_tol=1e-9)
    # The editor gets its keyframes back.
    back = load_path(tmp_path, "orbit")
    assert len(back.keyframes) == 3 and back.loop and back.interpolation == "catmull-rom"
    for k0, k1 in zip(path.keyframes, back.keyframes):
        assert np.allclose(k0.c2w, k1.c2w) and k0.fov == k1.fov
    assert list_paths(tmp_path) == ["orbit"]
    with pytest.raises(SwitchNerfError):
        load_path(tmp_path, "missing")


def test_overlay_geometry(tmp_path):
    e = box_edges([0, 0, 0], [1, 2, 3])
    assert e.shape == (12, 2, 3)
    lengths = sorted(np.linalg.norm(e[:, 1] - e[:, 0], axis=1).round(6).tolist())
    assert lengths == [1.0] * 4 + [2.0] * 4 + [3.0] * 4


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        yield make_run(tmp_path_factory.mktemp("viewer_paths"), mp)


def test_partition_and_expert_points(run):
    part = find_partition(run.scene, run.cfg.model.routing)  # no partition.json: the scene's 2x2 grid
    assert part.grid == (2, 2)
    lines = partition_lines(part)
    assert lines.shape == (6, 2, 3)
    pts, experts = expert_points(run.renderer, max_points=500)
    assert pts.shape == (500, 3) and experts.shape == (500,)
    lo, hi = run.renderer.box.lo.numpy(), run.renderer.box.hi.numpy()
    assert (pts >= lo).all() and (pts <= hi).all()
    unit = torch.from_numpy((pts - lo) / (hi - lo))
    assert np.array_equal(run.renderer.field.route(unit).expert_id.numpy(), experts)


class _Camera:
    def __init__(self, c2w, fov_deg):
        self.wxyz, self.position = viser_from_c2w(c2w)
        self.fov, self.aspect = math.radians(fov_deg), 4 / 3


class _Client:
    def __init__(self, c2w, fov_deg):
        self.camera = _Camera(c2w, fov_deg)


def test_editor_keyframes_and_render_video_button(run):
    viewer = ViewerServer(run.renderer, run.scene, port=free_port(), run_dir=run.run_dir,
                          checkpoint=run.checkpoint, step=run.step)
    try:
        ed = viewer.editor
        for k0 in _path().keyframes:
            ed._edit(_Client(k0.c2w, k0.fov), "add")
        assert len(ed.keyframes) == 3 and int(ed.selected.value) == 2
        for a, b in zip(_path().keyframes, ed.keyframes):
            assert np.allclose(a.c2w, b.c2w, atol=1e-9) and math.isclose(a.fov, b.fov)
        ed._edit(None, "remove")
        assert len(ed.keyframes) == 2
        ed.width.value, ed.height.value, ed.seconds.value, ed.fps.value = 33, 24, 0.5, 4.0
        ed.name.value = "../escape"
        ed._save()
        assert (run.run_dir / "camera_paths" / "escape.json").is_file()
        out = viewer._render_video(ed.camera_path(), ed.name.value, ("rgb",))
        assert out == run.run_dir / "renders" / "escape.mp4" and out.stat().st_size > 0
        side = json.loads(out.with_suffix(".json").read_text())
        assert side["frames"] == 2 and side["resolution"] == [32, 24]
        assert side["step"] == run.step and side["checkpoint"] == run.checkpoint.name
        ed._edit(None, "clear")
        ed._load()
        assert len(ed.keyframes) == 2
    finally:
        viewer.stop()
