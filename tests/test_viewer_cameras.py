"""Viewer camera frames: viser (OpenCV axes, wxyz, vertical fov) <-> project (OpenGL c2w),
and the viewer's render of a training camera equals the offline renderer's."""

import math

import numpy as np
import pytest
import torch
from _viewer_run import make_run
from viser import transforms as vtf

from switchnerf.render.colorize import OUTPUTS, colorize
from switchnerf.scene.types import pixel_rays
from switchnerf.video.paths import PathCamera, look_at
from switchnerf.viewer.render import render_view
from switchnerf.viewer.viser_cameras import (
    ViserPose,
    c2w_from_viser,
    path_camera_from_viser,
    render_size,
    viser_from_c2w,
    viser_from_path_camera,
)


def test_opencv_axes_map_to_opengl_axes():
    c2w = look_at((1.0, -2.0, 3.0), (0.3, 0.2, 0.0))
    wxyz, pos = viser_from_c2w(c2w)
    R_world_camera_cv = vtf.SO3(wxyz).as_matrix()
    # OpenCV x right = OpenGL x; OpenCV y down = -OpenGL y; OpenCV z forward = -OpenGL z.
    assert np.allclose(R_world_camera_cv[:, 0], c2w[:3, 0], atol=1e-12)
    assert np.allclose(R_world_camera_cv[:, 1], -c2w[:3, 1], atol=1e-12)
    assert np.allclose(R_world_camera_cv[:, 2], -c2w[:3, 2], atol=1e-12)
    assert np.allclose(pos, c2w[:3, 3])
    assert np.allclose(c2w_from_viser(wxyz, pos), c2w, atol=1e-12)


def test_points_seen_by_viser_camera_land_on_the_right_pixels():
    """A world point at OpenCV camera coordinates (x, y, z) projects to pixel
    (cx + fx x / z, cy + fy y / z); the project's ray through that pixel hits it."""
    rng = np.random.default_rng(3)
    wxyz = vtf.SO3.sample_uniform(rng).wxyz
    position = rng.normal(size=3)
    pose = ViserPose(wxyz, position, fov=math.radians(60.0), aspect=4 / 3)
    cam = path_camera_from_viser(pose, 40, 30)
    assert cam.fx == cam.fy and math.isclose(cam.fy, 15 / math.tan(math.radians(30)))
    R = vtf.SO3(wxyz).as_matrix()
    for p_cv in ([0.0, 0.0, 2.0], [0.5, -0.3, 1.7], [-0.2, 0.4, 3.0]):
        u = cam.cx + cam.fx * p_cv[0] / p_cv[2]
        v = cam.cy + cam.fy * p_cv[1] / p_cv[2]
        p_world = R @ np.array(p_cv) + position
        # ray of a 1x1 camera whose single pixel centre sits at (u, v)
        o, d = pixel_rays(cam.c2w, cam.fx, cam.fy, cam.cx - u + 0.5, cam.cy - v + 0.5, 1, 1)
        to_p = (p_world - o[0].double().numpy())
        assert np.allclose(to_p / np.linalg.norm(to_p), d[0].double().numpy(), atol=1e-6)


def test_round_trip_of_a_centred_camera_and_render_size():
    c2w = look_at((0.0, -4.0, 2.0), (0.0, 0.0, 0.0))
    cam = PathCamera(c2w, 20.0, 20.0, 16.0, 12.0, 32, 24)
    back = path_camera_from_viser(viser_from_path_camera(cam), 32, 24)
    assert np.allclose(back.c2w, cam.c2w, atol=1e-12)
    assert math.isclose(back.fx, 20.0) and (back.cx, back.cy) == (16.0, 12.0)
    assert render_size(16 / 9, 256) == (256, 144)
    assert render_size(0.5, 100) == (50, 100)
    with pytest.raises(ValueError):
        ViserPose((1, 0, 0, 0), (0, 0, 0), fov=4.0, aspect=1.0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        yield make_run(tmp_path_factory.mktemp("viewer_frames"), mp)


def test_viewer_render_of_a_training_camera_equals_offline_render(run):
    rec = run.scene.images("train")[1]
    offline = run.renderer.render_camera(PathCamera(rec.c2w, rec.fx, rec.fy, rec.cx, rec.cy,
                                                    rec.width, rec.height))
    # The camera as the browser holds it: viser's wxyz / position / vertical fov / aspect.
    wxyz, position = viser_from_c2w(rec.c2w)
    pose = ViserPose(wxyz, position, fov=2 * math.atan(0.5 * rec.height / rec.fy),
                     aspect=rec.width / rec.height)
    cam = path_camera_from_viser(pose, rec.width, rec.height)
    o1, d1 = pixel_rays(cam.c2w, cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height)
    o0, d0 = pixel_rays(rec.c2w, rec.fx, rec.fy, rec.cx, rec.cy, rec.width, rec.height)
    assert torch.equal(o1, o0) and torch.allclose(d1, d0, atol=1e-7)
    viewer = render_view(run.renderer, cam)
    assert viewer is not None
    assert offline.opacity.mean() > 0.5  # the camera sees the field, not just sky
    for key in ("rgb", "depth", "opacity"):
        assert torch.allclose(getattr(viewer, key), getattr(offline, key), atol=1e-5,
                              rtol=1e-5), key
    assert (viewer.expert_map == offline.expert_map).float().mean() > 0.99
    # Same PathCamera: bit-identical (same rays, same chunks, same calls).
    direct = render_view(run.renderer, PathCamera(rec.c2w, rec.fx, rec.fy, rec.cx, rec.cy,
                                                  rec.width, rec.height))
    for key in ("rgb", "depth", "opacity", "expert_map", "gate_confidence"):
        assert torch.equal(getattr(direct, key), getattr(offline, key)), key
    assert direct.image_size == (rec.height, rec.width)
    img = colorize(direct, "rgb")
    expect = (offline.rgb.clamp(0, 1).view(rec.height, rec.width, 3).numpy() * 255 + 0.5)
    assert np.array_equal(img, expect.astype(np.uint8))


def test_render_view_abandons_when_stale_and_chunks_agree(run):
    rec = run.scene.images("train")[0]
    cam = PathCamera(rec.c2w, rec.fx, rec.fy, rec.cx, rec.cy, rec.width, rec.height)
    calls = []

    def stale():
        calls.append(1)
        return len(calls) > 2

    assert render_view(run.renderer, cam, chunk=64, stale=stale) is None
    assert len(calls) == 3  # checked before chunks and rounds, gave up at the third check
    calls.clear()  # one chunk: only the check before its first front-to-back round can abandon
    calls.append(1)
    assert render_view(run.renderer, cam, chunk=rec.width * rec.height, stale=stale) is None
    assert len(calls) == 3
    out = render_view(run.renderer, cam)
    for name in OUTPUTS:
        img = colorize(out, name, n_experts=4)
        assert img.shape == (rec.height, rec.width, 3) and img.dtype == np.uint8
        assert img.std() > 0, name
    info = {}
    colorize(out, "depth", info=info)
    assert 0 < info["near"] < info["far"]
    info = {}
    colorize(out, "experts", n_experts=4, info=info)
    assert math.isclose(sum(info["share"]), 1.0)
    g, hit = out.gate_confidence, out.opacity > 0
    assert ((g[hit] >= 0.25 - 1e-6) & (g[hit] <= 1 + 1e-6)).all() and (g[~hit] == 0).all()


def test_render_view_takes_small_chunks_while_contended_with_the_same_pixels(run, monkeypatch):
    import contextlib

    import switchnerf.viewer.render as view_render

    rec = run.scene.images("train")[0]
    cam = PathCamera(rec.c2w, rec.fx, rec.fy, rec.cx, rec.cy, rec.width, rec.height)
    locks = []

    def lock():
        locks.append(1)
        return contextlib.nullcontext()

    alone = render_view(run.renderer, cam, lock=lock)
    assert len(locks) == 1  # the whole view in one chunk
    monkeypatch.setattr(view_render, "SHARED_CHUNK", 1000)
    locks.clear()
    shared = render_view(run.renderer, cam, lock=lock, contended=lambda: True)
    assert len(locks) == -(-rec.width * rec.height // 1000)
    for k in ("rgb", "depth", "opacity", "expert_map", "n_samples", "gate_confidence"):
        assert torch.equal(getattr(alone, k), getattr(shared, k)), k
