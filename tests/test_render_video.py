"""Camera paths, interpolation, video rendering, resume and bad input of ``switchnerf render``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from switchnerf.cli import main
from switchnerf.errors import SwitchNerfError
from switchnerf.video import quaternion as quat
from switchnerf.video import video_job
from switchnerf.video.camera_path import CameraPath
from switchnerf.video.camera_path_io import load_camera_path, parse_camera_path, save_camera_path
from switchnerf.video.paths import Keyframe, camera_from_record, look_at, orbit_keyframes


def _count_frames(path) -> tuple[int, tuple]:
    """Decode a video with imageio's ffmpeg reader: (frame count, shape of a frame)."""
    import imageio.v2 as imageio

    reader = imageio.get_reader(path, format="FFMPEG")
    n, shape = 0, None
    try:
        for frame in reader:
            n += 1
            shape = frame.shape
    finally:
        reader.close()
    return n, shape


def _keyframes(k=5, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for j in range(k):
        a = 2 * math.pi * j / k
        eye = (3 * math.cos(a), 3 * math.sin(a), 1.5 + 0.3 * rng.standard_normal())
        out.append(Keyframe(look_at(eye, rng.normal(0, 0.2, 3)), 40.0 + 5 * j))
    return out


# ------------------------------------------------------------------ camera path files
def test_parse_nerfstudio_camera_path(tmp_path):
    kfs = _keyframes(3)
    obj = {"render_height": 24, "render_width": 32, "camera_type": "perspective", "seconds": 1.0,
           "fps": 3, "camera_path": [{"camera_to_world": k.c2w.reshape(-1).tolist(), "fov": k.fov,
                                      "aspect": 32 / 24} for k in kfs]}
    f = tmp_path / "ns.json"
    f.write_text(json.dumps(obj))
    path = load_camera_path(f)
    assert (path.width, path.height, path.n_frames, path.fps) == (32, 24, 3, 3.0)
    for i, k in enumerate(kfs):
        cam = path.camera(i)  # each frame is exactly its camera_path entry (run world frame)
        np.testing.assert_allclose(cam.c2w, k.c2w, atol=1e-9)
        focal = 12 / math.tan(math.radians(k.fov) / 2)
        assert cam.fx == pytest.approx(focal) and cam.fy == pytest.approx(focal)
        assert (cam.cx, cam.cy) == (16.0, 12.0)
    del obj["fps"]  # fps defaults to len(camera_path) / seconds
    assert parse_camera_path(obj).n_frames == 3


@pytest.mark.parametrize("mutate, field", [
    (lambda o: o["camera_path"][1].pop("fov"), "camera_path[1].fov"),
    (lambda o: o["camera_path"][0].update(camera_to_world=[1, 2, 3]), "camera_path[0].camera_to_world"),
    (lambda o: o.pop("render_width"), "render_width"),
    (lambda o: o.update(fps=0), "fps"),
    (lambda o: o.update(seconds=-1), "seconds"),
    (lambda o: o.update(camera_type="fisheye"), "camera_type"),
    (lambda o: o.update(camera_path=[]), "camera_path"),
])
def test_malformed_nerfstudio_path_names_the_field(mutate, field):
    obj = {"render_height": 24, "render_width": 32, "seconds": 1.0,
           "camera_path": [{"camera_to_world": np.eye(4).reshape(-1).tolist(), "fov": 50}] * 2}
    obj = json.loads(json.dumps(obj))
    mutate(obj)
    with pytest.raises(SwitchNerfError, match=re_field(field)):
        parse_camera_path(obj, "p.json")


def re_field(field: str) -> str:
    import re

    return "p.json: " + re.escape(field) + ":"


def test_keyframe_json_round_trip(tmp_path):
    path = CameraPath(_keyframes(4), 32, 24, 2.0, 5.0, "linear", True, "test")
    save_camera_path(tmp_path / "k.json", path)
    back = load_camera_path(tmp_path / "k.json")
    assert (back.width, back.height, back.seconds, back.fps, back.interpolation, back.loop) == \
        (32, 24, 2.0, 5.0, "linear", True)
    for i in range(path.n_frames):
        np.testing.assert_allclose(back.camera(i).c2w, path.camera(i).c2w, atol=1e-12)


# ------------------------------------------------------------------ interpolation
@pytest.mark.parametrize("interpolation", ["catmull-rom", "linear"])
@pytest.mark.parametrize("loop", [False, True])
def test_interpolation_passes_through_keyframes(interpolation, loop):
    kfs = _keyframes(5)
    per = 6
    n = per * len(kfs) if loop else per * (len(kfs) - 1) + 1
    path = CameraPath(kfs, 32, 24, n / 10.0, 10.0, interpolation, loop)
    assert path.n_frames == n
    for j, k in enumerate(kfs):
        cam = path.camera(j * per)
        np.testing.assert_allclose(cam.c2w, k.c2w, atol=1e-9)
        assert cam.fy == pytest.approx(12 / math.tan(math.radians(k.fov) / 2))
    steps, prev = [], None
    for i in range(n):
        c = path.camera(i).c2w
        np.testing.assert_allclose(c[:3, :3] @ c[:3, :3].T, np.eye(3), atol=1e-9)  # rotations
        if prev is not None:
            steps.append(np.linalg.norm(c[:3, 3] - prev[:3, 3]))
        prev = c
    chord = min(np.linalg.norm(kfs[j + 1].c2w[:3, 3] - kfs[j].c2w[:3, 3]) for j in range(4))
    assert max(steps) < 0.5 * chord  # no jumps between neighbouring frames


def test_squad_rotation_is_smooth_across_a_keyframe():
    kfs = _keyframes(4, seed=3)
    path = CameraPath(kfs, 32, 24, 1.0, 1.0)

    def rot(u):
        return quat.from_matrix(path.pose(u)[0][:3, :3])

    h = 1e-4
    for u in (1.0, 2.0):  # angular velocity just before and after an inner keyframe
        before = quat.qlog(quat.qmul(quat.qconj(rot(u - h)), rot(u)))[1:] / h
        after = quat.qlog(quat.qmul(quat.qconj(rot(u)), rot(u + h)))[1:] / h
        np.testing.assert_allclose(before, after, atol=2e-2 * (1 + np.linalg.norm(before)))


# ------------------------------------------------------------------ correct frames
def test_frame_at_training_camera_equals_eval_render(tiny_run):
    from switchnerf.train.evaluate import eval_view
    from switchnerf.train.run import load_run

    renderer = load_run(tiny_run.run_dir).renderer
    rec = tiny_run.scene.images("val")[0]
    frame = renderer.render_camera(camera_from_record(rec))
    view = eval_view(tiny_run.scene, tiny_run.n_train, 0, right_half=False)  # as evaluate()
    ref = renderer.render_chunked(view.rays, use_appearance_index=view.appearance)
    assert frame.opacity.max() > 0.5  # the view sees the blob
    for key in ("rgb", "depth", "opacity", "expert_map", "gate_confidence"):
        assert torch.equal(getattr(frame, key), getattr(ref, key)), key


def test_interpolated_frames_at_training_cameras_match_their_renders(tiny_run):
    from switchnerf.train.run import load_run
    from switchnerf.video.paths import training_keyframes

    renderer = load_run(tiny_run.run_dir).renderer
    kfs = training_keyframes(tiny_run.scene, 3)
    path = CameraPath(kfs, 32, 24, 0.5, 10.0)  # 5 frames: keyframes at frames 0, 2, 4
    recs = {tuple(r.c2w[:3, 3]): r for r in tiny_run.scene.images("train")}
    for i in (0, 2, 4):
        cam = path.camera(i)
        rec = recs[tuple(kfs[i // 2].c2w[:3, 3])]
        got = renderer.render_camera(cam).rgb
        want = renderer.render_camera(camera_from_record(rec)).rgb
        assert torch.allclose(got, want, atol=1e-4)


def test_video_decodes_with_frame_count_and_size(tiny_run, tmp_path, capsys):
    out = tmp_path / "orbit.mp4"
    rc = main(["render", str(tiny_run.run_dir), "--path", "orbit", "--seconds", "1.5", "--fps", "4",
               "--resolution", "32x24", "--outputs", "rgb,depth,experts", "--output", str(out),
               "--device", "cpu"])
    assert rc == 0
    n, shape = _count_frames(out)
    assert n == 6 and shape == (24, 96, 3)  # 1.5 s x 4 fps, three 32x24 panels
    info = json.loads((tmp_path / "orbit.json").read_text())
    assert info["frames"] == 6 and info["outputs"] == ["rgb", "depth", "experts"]
    near, far = info["depth"]["near"], info["depth"]["far"]
    assert 0 < near < far
    assert f"near {near:.4g}, far {far:.4g}" in capsys.readouterr().out


def test_spiral_and_saved_path_render_the_same_cameras(tiny_run, tmp_path):
    saved = tmp_path / "spiral_keys.json"
    rc = main(["render", str(tiny_run.run_dir), "--path", "spiral", "--seconds", "0.5", "--fps", "4",
               "--resolution", "32x24", "--tilt", "40", "--output", str(tmp_path / "s.mp4"),
               "--save-path", str(saved), "--device", "cpu"])
    assert rc == 0 and _count_frames(tmp_path / "s.mp4")[0] == 2
    back = load_camera_path(saved)
    assert back.n_frames == 2 and len(back.keyframes) == 2
    c2w = back.camera(0).c2w
    down = -c2w[:3, 2]  # viewing direction, 40 degrees below horizontal
    assert math.degrees(math.asin(-down[2])) == pytest.approx(40.0, abs=1e-6)


# ------------------------------------------------------------------ resume
def test_interrupted_render_resumes_from_frames_dir(tiny_run, tmp_path, monkeypatch):
    from switchnerf.train.run import load_run

    run = load_run(tiny_run.run_dir)
    provenance = video_job.Provenance(run.run_dir, run.checkpoint, run.step)
    path = CameraPath(orbit_keyframes((0, 0, 0), 1.5, 1.2, 6), 32, 24, 1.0, 6.0, loop=True)
    out, frames = tmp_path / "v.mp4", tmp_path / "frames"
    out.write_bytes(b"previous video")
    calls = {"n": 0}
    real = video_job.frame_panels

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(video_job, "frame_panels", interrupting)
    with pytest.raises(KeyboardInterrupt):
        video_job.render_video(run.renderer, path, out, provenance=provenance,
                               outputs=("rgb", "depth"), frames_dir=frames, progress=False,
                               log=None)
    assert out.read_bytes() == b"previous video"  # never half-written
    assert sorted(p.name for p in frames.glob("*.png")) == ["00000.png", "00001.png", "00002.png"]
    assert not list(tmp_path.glob(".v.*"))  # no temporary video left behind
    (frames / "00001.png").write_bytes((frames / "00001.png").read_bytes()[:40])  # truncated

    calls["n"] = -100
    info = video_job.render_video(run.renderer, path, out, provenance=provenance,
                                  outputs=("rgb", "depth"), frames_dir=frames, progress=False,
                                  log=None)
    assert calls["n"] == -100 + 4  # frames 1, 3, 4, 5 rendered; 0 and 2 reused
    assert (info["frames_rendered"], info["frames_reused"]) == (4, 2)
    manifest = json.loads((frames / "render.json").read_text())
    assert info["depth"]["near"] == manifest["depth_range"][0]  # same colours as before
    n, shape = _count_frames(out)
    assert n == 6 and shape == (24, 64, 3)

    other = CameraPath(path.keyframes, 48, 24, 1.0, 6.0, loop=True)
    with pytest.raises(SwitchNerfError, match="different render"):
        video_job.render_video(run.renderer, other, out, provenance=provenance,
                               outputs=("rgb", "depth"), frames_dir=frames, progress=False,
                               log=None)


# ------------------------------------------------------------------ bad input
def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("switchnerf: error: ")
    return err[0]


@pytest.mark.parametrize("extra, needle", [
    (["--path", "zigzag"], "unknown path kind 'zigzag'"),
    (["--path", "orbit", "--fps", "0"], "--fps: must be > 0"),
    (["--path", "orbit", "--fps", "-3"], "--fps: must be > 0"),
    (["--path", "orbit", "--seconds", "0"], "--seconds: must be > 0"),
    (["--path", "orbit", "--resolution", "0x24"], "--resolution"),
    (["--path", "orbit", "--resolution=-32x24"], "--resolution"),
    (["--path", "orbit", "--resolution", "33x24"], "must be even"),
    (["--path", "orbit", "--outputs", "rgb,normals"], "unknown output 'normals'"),
    (["--path", "orbit", "--altitude", "-5"], "--altitude"),
    (["--path", "missing.json"], "camera path file not found"),
])
def test_bad_render_input_exits_2(tiny_run, tmp_path, capsys, extra, needle):
    out = tmp_path / "v.mp4"
    rc = main(["render", str(tiny_run.run_dir), "--output", str(out), "--seconds", "0.2",
               "--fps", "5", "--device", "cpu"] + extra)
    assert rc == 2
    assert needle in _one_line_error(capsys)
    assert not out.exists()


def test_malformed_camera_path_file_exits_2(tiny_run, tmp_path, capsys):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps({"render_height": 24, "render_width": 32, "seconds": 1,
                             "camera_path": [{"camera_to_world": np.eye(4).reshape(-1).tolist()}]}))
    rc = main(["render", str(tiny_run.run_dir), "--path", str(f), "--output", str(tmp_path / "v.mp4")])
    assert rc == 2
    assert "camera_path[0].fov: missing" in _one_line_error(capsys)
    f.write_text("{not json")
    assert main(["render", str(tiny_run.run_dir), "--path", str(f), "--output",
                 str(tmp_path / "v.mp4")]) == 2
    assert "not valid JSON" in _one_line_error(capsys)


def test_missing_checkpoint_exits_2(tiny_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run)
    shutil.rmtree(run / "checkpoints")
    rc = main(["render", str(run), "--path", "orbit", "--output", str(tmp_path / "v.mp4")])
    assert rc == 2
    assert "no checkpoint" in _one_line_error(capsys)


def test_demo_video_entry_point(tiny_run, tmp_path):
    from switchnerf.cli.train import demo_video

    out = demo_video(tiny_run.run_dir, tmp_path / "demo.mp4", seconds=0.5, fps=4, width=32,
                     height=24)
    assert _count_frames(out) == (2, (24, 96, 3))
