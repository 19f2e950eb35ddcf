"""The viewer server: clean start / stop, a websocket client driving a camera, progressive
renders, abandoned renders on disconnect, the training callback's time sharing."""

import ctypes
import math
import os
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _viewer_run import free_port, make_run

from switchnerf.render.colorize import colorize
from switchnerf.video.paths import PathCamera
from switchnerf.viewer import ViewerServer
from switchnerf.viewer.compute import ComputeGate, release_thread_pool
from switchnerf.viewer.probe import ProbeClient
from switchnerf.viewer.render import render_view
from switchnerf.viewer.viser_cameras import (
    ViserPose,
    path_camera_from_viser,
    render_size,
    viser_from_c2w,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        yield make_run(tmp_path_factory.mktemp("viewer_server"), mp)


def _threads_settle(before: set, timeout: float = 10.0) -> set:
    deadline = time.time() + timeout
    while time.time() < deadline:
        extra = {t for t in threading.enumerate() if t not in before and t.is_alive()}
        if not extra:
            return set()
        time.sleep(0.1)
    return {t.name for t in extra}


def test_server_starts_on_free_port_and_stops_without_leftover_threads(run):
    before = set(threading.enumerate())  # Thread objects: an ident is reused once its thread ends
    port = free_port()
    viewer = ViewerServer(run.renderer, run.scene, port=port, run_dir=run.run_dir)
    try:
        assert viewer.port == port
        assert viewer.url == f"http://127.0.0.1:{port}"
        assert viewer.server.get_host() == "127.0.0.1"
    finally:
        viewer.stop()
    assert _threads_settle(before) == set()


def _camera(run, k=2):
    rec = run.scene.images("train")[k]
    wxyz, pos = viser_from_c2w(rec.c2w)
    return wxyz, pos, 2 * math.atan(0.5 * rec.height / rec.fy)


def test_websocket_client_gets_preview_then_full_render_of_its_camera(run):
    viewer = ViewerServer(run.renderer, run.scene, port=free_port(), run_dir=run.run_dir,
                          max_side=48)
    viewer.settings.preview_side = 16
    client = ProbeClient(f"ws://127.0.0.1:{viewer.port}")
    try:
        wxyz, pos, fov = _camera(run)
        client.send_camera(wxyz, pos, fov=fov, width=640, height=480)
        preview = client.wait_background(30.0)
        assert preview is not None and preview.shape == (12, 16, 3)
        full = client.wait_background(30.0)
        assert full is not None and full.shape == (36, 48, 3)
        # The image is the field at that camera (JPEG: compare loosely).
        cam = path_camera_from_viser(ViserPose(wxyz, pos, fov, 640 / 480), 48, 36)
        expect = colorize(render_view(run.renderer, cam), "rgb")
        assert np.abs(full.astype(float) - expect.astype(float)).mean() < 8.0
        assert full.std() > 10.0
        session = next(iter(viewer.sessions.values()))
        assert session.stats.full_frames >= 1 and session.idle
        # Changing the output re-renders at full resolution without a preview.
        viewer.gui.output.value = "experts"
        deadline = time.time() + 20
        while viewer.settings.output != "experts" and time.time() < deadline:
            time.sleep(0.05)
        img = client.wait_background(30.0)
        assert img is not None and img.shape == (36, 48, 3)
    finally:
        client.close()
        viewer.stop()


def test_client_disconnect_mid_render_leaves_no_thread(run):
    before = set(threading.enumerate())  # Thread objects: an ident is reused once its thread ends
    viewer = ViewerServer(run.renderer, run.scene, port=free_port(), max_side=256)
    viewer.settings.settle_s = 0.0
    started = threading.Event()
    render = viewer.render_image

    def slow_render(cam, stale=None):  # a render that takes many chunks
        started.set()
        out = render_view(viewer.renderer, cam, chunk=64, stale=stale, lock=viewer.gate.chunk)
        return (None, {}) if out is None else (np.zeros((cam.height, cam.width, 3), np.uint8), {})

    viewer.render_image = slow_render
    try:
        client = ProbeClient(f"ws://127.0.0.1:{viewer.port}")
        wxyz, pos, fov = _camera(run)
        viewer.settings.preview_side = 256  # even the first render is long
        client.send_camera(wxyz, pos, fov=fov, width=400, height=300)
        assert started.wait(30.0)
        client.close()
        deadline = time.time() + 20
        while viewer.sessions and time.time() < deadline:
            time.sleep(0.05)
        assert not viewer.sessions
    finally:
        viewer.render_image = render
        viewer.stop()
    assert _threads_settle(before) == set()


def test_render_made_stale_by_camera_move_is_abandoned(run):
    viewer = ViewerServer(run.renderer, run.scene, port=free_port(), max_side=160)
    viewer.settings.preview_side = 160
    viewer.chunk = 512  # many staleness checks per image
    client = ProbeClient(f"ws://127.0.0.1:{viewer.port}")
    try:
        wxyz, pos, fov = _camera(run, 0)
        for k in range(6):  # a burst of camera moves
            client.send_camera(wxyz, pos + 0.01 * k, fov=fov, width=400, height=300)
            time.sleep(0.02)
        assert client.wait_background(60.0) is not None
        deadline = time.time() + 60
        session = None
        while time.time() < deadline:
            session = next(iter(viewer.sessions.values()), None)
            if session is not None and session.idle:
                break
            time.sleep(0.05)
        assert session is not None and session.idle
        assert session.stats.abandoned >= 1
        assert session.stats.frames < 6 + 1
    finally:
        client.close()
        viewer.stop()


class _FakeTrainer:
    """What the viewer may see of a trainer: its public ``step``, ``cfg`` and stop request
    (no private attributes, so reading one fails)."""

    __slots__ = ("cfg", "step", "stopped")

    def __init__(self, run):
        self.cfg, self.step, self.stopped = run.cfg, 0, False

    @property
    def stop_requested(self) -> bool:
        return self.stopped

    def request_stop(self) -> None:
        self.stopped = True


class _Stats:
    """A step's statistics as the viewer reads them (``StepStats.values()``)."""

    load = (0.25, 0.25, 0.25, 0.25)
    skipped = False

    def values(self):
        return SimpleNamespace(psnr=20.0, skipped=False, load=self.load)


def test_training_callback_lends_time_to_renders_and_pauses(run):
    trainer = _FakeTrainer(run)
    viewer = ViewerServer(run.renderer, run.scene, port=free_port(), run_dir=run.run_dir,
                          training=True)
    try:
        viewer.begin_training()
        viewer.gate.render_share = 0.5
        rendered = []

        def renderer():
            with viewer.gate.wanting(), viewer.gate.chunk():
                rendered.append(time.perf_counter())

        t = threading.Thread(target=renderer)
        t.start()
        time.sleep(0.1)
        assert not rendered  # the trainer holds the model between steps
        trainer.step = 1
        viewer.on_step(trainer, _Stats())
        t.join(5.0)
        assert rendered and viewer.stats.step == 1 and viewer.stats.load == list(_Stats.load)
        # Paused: on_step blocks (renders run) until resumed.
        viewer.gate.set_paused(True)
        done = threading.Event()
        th = threading.Thread(target=lambda: (viewer.on_step(trainer, _Stats()), done.set()))
        th.start()
        time.sleep(0.3)
        assert not done.is_set()
        with viewer.gate.chunk():  # renders get the model while paused
            pass
        viewer.gate.set_paused(False)
        assert done.wait(5.0)
        th.join()
        # Paused, then the trainer is asked to stop (Ctrl-C): on_step returns at once.
        viewer.gate.set_paused(True)
        done.clear()
        th = threading.Thread(target=lambda: (viewer.on_step(trainer, _Stats()), done.set()))
        th.start()
        time.sleep(0.3)
        assert not done.is_set()
        trainer.request_stop()
        assert done.wait(5.0)
        th.join()
    finally:
        viewer.stop()


def test_compute_gate_returns_at_once_when_no_render_waits():
    gate = ComputeGate(training=True, render_share=0.9)
    gate.begin_training()
    t0 = time.perf_counter()
    assert gate.yield_to_renders(1.0) == 0.0
    assert time.perf_counter() - t0 < 0.05
    gate.close()
    gate.end_training()


def test_path_camera_used_by_viewer_is_a_pathcamera(run):
    wxyz, pos, fov = _camera(run)
    w, h = render_size(4 / 3, 32)
    cam = path_camera_from_viser(ViserPose(wxyz, pos, fov, 4 / 3), w, h)
    assert isinstance(cam, PathCamera) and (cam.width, cam.height) == (32, 24)


def test_render_callback_returns_the_offline_renderers_image(run):
    rec = run.scene.images("val")[0]
    cam = PathCamera(rec.c2w, rec.fx, rec.fy, rec.cx, rec.cy, rec.width, rec.height)
    viewer = ViewerServer(run.renderer, run.scene, port=free_port())
    try:
        img, _ = viewer.render_image(cam)
    finally:
        viewer.stop()
    offline = run.renderer.render_camera(cam).rgb.clamp(0, 1).view(rec.height, rec.width, 3)
    assert np.array_equal(img, (offline.numpy() * 255 + 0.5).astype(np.uint8))


def test_release_thread_pool_stops_idle_openmp_workers_and_compute_goes_on():
    """The calling thread's OpenMP workers exit (torch's GNU runtime on Linux) and the next
    parallel region brings them back with the same results."""
    x = torch.arange(1 << 21, dtype=torch.float64)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # a parallel region with one worker thread
    try:
        _release_and_compute(x)
    finally:
        torch.set_num_threads(threads)


def _release_and_compute(x):
    before = float((x * 0.5).exp().log().sum())
    try:
        ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except (OSError, AttributeError):
        assert release_thread_pool() is False  # no runtime to talk to: a no-op
        return
    tasks = len(os.listdir("/proc/self/task")) if sys.platform == "linux" else None
    assert release_thread_pool() is True
    if tasks is not None:
        deadline = time.time() + 5
        while len(os.listdir("/proc/self/task")) >= tasks and time.time() < deadline:
            time.sleep(0.01)
        assert len(os.listdir("/proc/self/task")) < tasks  # the idle worker is gone
    assert float((x * 0.5).exp().log().sum()) == before


def test_gate_is_contended_by_a_second_render_or_running_training():
    gate = ComputeGate(training=True)
    assert not gate.contended
    with gate.wanting():
        assert not gate.contended  # one render alone takes whole views
        with gate.wanting():
            assert gate.contended
    gate.begin_training()
    try:
        assert gate.contended
        gate.set_paused(True)
        assert not gate.contended
        gate.set_paused(False)
    finally:
        gate.end_training()
    assert not gate.contended and not gate._lock.locked()


def test_a_failing_render_is_logged_and_the_next_move_renders(caplog):
    from contextlib import nullcontext

    from switchnerf.viewer.session import ClientSession, RenderSettings

    calls, sent = [], []

    def render(cam, stale):
        calls.append(cam.width)
        if len(calls) == 1:
            raise ValueError("a broken frame")
        return np.zeros((cam.height, cam.width, 3), np.uint8), {}

    settings = RenderSettings(max_side=32, preview_side=16, settle_s=0.0)
    session = ClientSession(7, render=render, send=sent.append, settings=settings,
                            gate_wanting=nullcontext)
    pose = ViserPose(np.array([1.0, 0, 0, 0]), np.zeros(3), 1.0, 4 / 3)
    try:
        with caplog.at_level("ERROR"):
            session.camera_moved(pose)  # the preview fails; the full render follows
            deadline = time.time() + 10
            while not session.idle and time.time() < deadline:
                time.sleep(0.01)
        assert session.stats.failed == 1 and "a broken frame" in caplog.text
        assert session.alive and sent == []  # that camera was given up, not retried
        session.camera_moved(pose)
        deadline = time.time() + 10
        while len(sent) < 2 and time.time() < deadline:
            time.sleep(0.01)
        assert [img.shape[1] for img in sent] == [16, 32]  # preview, then full
    finally:
        session.close()
    assert not session.alive


@pytest.mark.parametrize("direct_full_s,widths", [(0.0, [16, 32, 16, 32]), (10.0, [16, 32, 32])])
def test_a_move_skips_the_preview_when_the_full_render_is_cheap(direct_full_s, widths):
    from contextlib import nullcontext

    from switchnerf.viewer.session import ClientSession, RenderSettings

    sent = []

    def render(cam, stale):
        return np.zeros((cam.height, cam.width, 3), np.uint8), {}

    settings = RenderSettings(max_side=32, preview_side=16, settle_s=0.0,
                              direct_full_s=direct_full_s)
    session = ClientSession(3, render=render, send=sent.append, settings=settings,
                            gate_wanting=nullcontext)
    pose = ViserPose(np.array([1.0, 0, 0, 0]), np.zeros(3), 1.0, 4 / 3)
    try:
        for _ in range(2):  # the first move has no full render to judge by: a preview
            session.camera_moved(pose)
            deadline = time.time() + 10
            while not session.idle and time.time() < deadline:
                time.sleep(0.01)
        assert [img.shape[1] for img in sent] == widths
        assert session.stats.full_frames == 2
    finally:
        session.close()


def test_a_drag_gets_previews_again_after_a_direct_full_render_is_abandoned():
    """Direct full renders (cheap frames) must not starve a drag: once a full render is
    abandoned for a newer camera, the next move is answered with a preview."""
    import threading
    from contextlib import nullcontext

    from switchnerf.viewer.session import ClientSession, RenderSettings

    sent, started, release = [], threading.Event(), threading.Event()

    def render(cam, stale):
        if cam.width == 32 and len(sent) == 2:  # the third render: a direct full one
            started.set()
            release.wait(10)
            if stale():
                return None, {}
        return np.zeros((cam.height, cam.width, 3), np.uint8), {}

    settings = RenderSettings(max_side=32, preview_side=16, settle_s=0.0, direct_full_s=10.0)
    session = ClientSession(4, render=render, send=sent.append, settings=settings,
                            gate_wanting=nullcontext)
    pose = ViserPose(np.array([1.0, 0, 0, 0]), np.zeros(3), 1.0, 4 / 3)
    try:
        session.camera_moved(pose)  # preview, then full: the full render was cheap
        deadline = time.time() + 10
        while not session.idle and time.time() < deadline:
            time.sleep(0.01)
        session.camera_moved(pose)  # direct full render, held until the next move
        assert started.wait(10)
        session.camera_moved(pose)  # the drag goes on: the held render is abandoned
        release.set()
        deadline = time.time() + 10
        while not session.idle and time.time() < deadline:
            time.sleep(0.01)
        assert [img.shape[1] for img in sent] == [16, 32, 16, 32]
        assert session.stats.abandoned == 1
    finally:
        session.close()
