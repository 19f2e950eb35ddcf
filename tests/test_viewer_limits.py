"""Viewer limits against hostile clients: every GUI value clamped on the server (sent as raw
websocket messages, as a modified page would), browser cameras checked, a cap on clients,
videos rendered in slices of the compute gate, the no-authentication warning."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from _viewer_run import free_port, make_run

from switchnerf.video.paths import Keyframe, look_at
from switchnerf.viewer import ViewerServer, limits
from switchnerf.viewer.path_editor import CURVE_POINTS
from switchnerf.viewer.probe import ProbeClient


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        yield make_run(tmp_path_factory.mktemp("viewer_limits"), mp)


def _send_gui(client: ProbeClient, handle, value) -> None:
    import msgpack

    client.ws.send(msgpack.packb({"type": "GuiUpdateMessage", "uuid": handle._impl.uuid,
                                  "updates": {"value": value}}))


def _wait(cond, timeout: float = 10.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_clamp_helpers():
    assert limits.clamp_number(5000, 16, 2048, default=256, integer=True) == 2048
    assert limits.clamp_number(-3, 16, 2048, default=256, integer=True) == 16
    assert limits.clamp_number(float("inf"), 0.1, 600.0, default=4.0) == 600.0
    assert limits.clamp_number(float("nan"), 0.1, 600.0, default=4.0) == 4.0
    assert limits.clamp_number("x", 0.1, 600.0, default=4.0) == 4.0
    assert limits.clamp_choice("../../etc", ("rgb", "depth"), default="rgb") == "rgb"
    assert limits.sane_camera([1, 0, 0, 0], [0, 0, math.nan], 1.0, 1.0) is None
    assert limits.sane_camera([0, 0, 0, 0], [0, 0, 0], 1.0, 1.0) is None
    assert limits.sane_camera([1, 0, 0, 0], [0, 0, 0], 4.0, 1.0) is None
    q, _, _, aspect = limits.sane_camera([2, 0, 0, 0], [0, 0, 0], 1.0, 1e6)
    assert np.allclose(q, [1, 0, 0, 0]) and aspect == limits.MAX_ASPECT
    assert [limits.is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0",
                                            "192.168.1.5")] == [True, True, True, False, False]
    assert limits.no_auth_warning("127.0.0.1") is None
    warning = limits.no_auth_warning("0.0.0.0")
    assert "0.0.0.0" in warning and "no authentication" in warning and "\n" not in warning


def test_gui_values_sent_by_a_client_are_clamped_on_the_server(run):
    viewer = ViewerServer(run.renderer, run.scene, port=free_port(), run_dir=run.run_dir,
                          training=True, max_side=32)
    client = ProbeClient(f"ws://127.0.0.1:{viewer.port}")
    try:
        gui, editor = viewer.gui, viewer.editor
        # before its first camera viser does not run callbacks for a client: the values
        # it sets are still read clamped
        _send_gui(client, gui.max_side, 100000)
        assert _wait(lambda: gui.max_side.value == 100000)
        assert editor._width() <= limits.MAX_VIDEO_SIDE
        _send_gui(client, editor.width, 10**7)
        assert _wait(lambda: editor.width.value == 10**7)
        editor.keyframes = [Keyframe(look_at((3, 0, 2), (0, 0, 0)), 50.0)]
        assert editor.camera_path().width == limits.MAX_VIDEO_SIDE
        editor.keyframes = []
        client.send_camera([1.0, 0, 0, 0], [0.0, -3.0, 1.0], fov=1.0, width=64, height=48)
        assert _wait(lambda: viewer.sessions)
        cases = [  # (handle, hostile value, value the server keeps)
            (gui.max_side, 100001, limits.MAX_RENDER_SIDE),
            (gui.preview_side, -5, limits.MIN_SIDE),
            (gui.output, "../../secret", "rgb"),
            (gui.share, 7.0, 0.95),
            (editor.seconds, 1e12, limits.MAX_PATH_SECONDS),
            (editor.fps, 1e6, limits.MAX_VIDEO_FPS),
            (editor.width, 10**7 + 2, limits.MAX_VIDEO_SIDE),
            (editor.height, 0, limits.MIN_SIDE),
            (editor.time, -4.0, 0.0),
            (editor.selected, -7, 0),
            (editor.interpolation, "cubic-from-space", "catmull-rom"),
            (editor.panels, "rgb,rgb,rgb,rgb", "rgb"),
        ]
        for handle, bad, _ in cases:
            _send_gui(client, handle, bad)
        for handle, bad, good in cases:
            assert _wait(lambda h=handle, g=good: h.value == g), (h_label(handle), handle.value)
        assert _wait(lambda: viewer.settings.max_side == limits.MAX_RENDER_SIDE)
        assert viewer.settings.preview_side == limits.MIN_SIDE
        assert viewer.settings.output == "rgb" and viewer.gate.render_share == 0.95
        # NaN (msgpack carries it) is replaced too
        _send_gui(client, editor.seconds, float("nan"))
        assert _wait(lambda: math.isfinite(editor.seconds.value))
        assert 0.1 <= editor.seconds.value <= limits.MAX_PATH_SECONDS
        # A path of the longest duration: bounded frames, a bounded curve.
        _send_gui(client, editor.seconds, 1e12)
        assert _wait(lambda: editor.seconds.value == limits.MAX_PATH_SECONDS)
        editor.keyframes = [Keyframe(look_at((3, 0, 2), (0, 0, 0)), 50.0),
                            Keyframe(look_at((0, 3, 2), (0, 0, 0)), 50.0)]
        path = editor.camera_path()
        assert path.n_frames == round(limits.MAX_PATH_SECONDS * limits.MAX_VIDEO_FPS)
        assert path.width <= limits.MAX_VIDEO_SIDE and path.height >= limits.MIN_SIDE
        t0 = time.perf_counter()
        editor._redraw()
        assert time.perf_counter() - t0 < 10.0
        # a GUI callback's redraw may be rebuilding the nodes right now: wait for the curve
        def curve_node():
            with editor._draw_lock:
                return next((n for n in editor._nodes if n.name == "/path/curve"), None)

        assert _wait(lambda: curve_node() is not None)
        assert len(curve_node().points) <= CURVE_POINTS
    finally:
        client.close()
        viewer.stop()


def h_label(handle) -> str:
    return getattr(handle, "label", "?")


def test_clients_beyond_the_cap_get_a_message_and_no_render_thread(run, monkeypatch):
    monkeypatch.setattr(limits, "MAX_CLIENTS", 2)
    before = set(threading.enumerate())  # Thread objects: an ident is reused once its thread ends
    viewer = ViewerServer(run.renderer, run.scene, port=free_port(), max_side=24)
    viewer.settings.preview_side = 16
    clients = []
    try:
        for k in range(3):
            c = ProbeClient(f"ws://127.0.0.1:{viewer.port}")
            c.send_camera([1.0, 0, 0, 0], [0.0, -3.0, 1.0], fov=1.0, width=64, height=48)
            clients.append(c)
            assert _wait(lambda n=k + 1: len(viewer.sessions) + len(viewer.refused) == n)
        assert len(viewer.sessions) == 2 and len(viewer.refused) == 1
        notes = []
        deadline = time.time() + 10
        while time.time() < deadline and not notes:
            notes = [m for m in clients[2].messages(0.5) if m.get("type") == "NotificationShowMessage"]
        assert notes and "Viewer full" in notes[0]["props"]["title"]
        threads = [t for t in threading.enumerate() if t.name.startswith("switchnerf-view-")
                   and t.name != "switchnerf-view-stats" and t not in before]
        assert len(threads) == 2  # one render thread per served client only (of this viewer)
        assert clients[0].wait_background(30.0) is not None
        for c in clients:
            c.close()
        assert _wait(lambda: not viewer.sessions and not viewer.refused, 20.0)
    finally:
        viewer.stop()
    deadline = time.time() + 10
    while time.time() < deadline and [t for t in threading.enumerate()
                                      if t not in before]:
        time.sleep(0.1)
    assert not [t.name for t in threading.enumerate() if t not in before]


def test_a_hostile_camera_renders_nothing_and_the_session_lives_on(run):
    viewer = ViewerServer(run.renderer, run.scene, port=free_port(), max_side=24)
    viewer.settings.preview_side = 16
    client = ProbeClient(f"ws://127.0.0.1:{viewer.port}")
    try:
        client.send_camera([1.0, 0, 0, 0], [math.nan, 0.0, 1.0], fov=1.0, width=64, height=48,
                           look_at=[0.0, 0.0, 0.0])
        client.send_camera([1.0, 0, 0, 0], [0.0, -3.0, 1.0], fov=3.5, width=64, height=48)
        assert client.wait_background(2.0) is None
        session = next(iter(viewer.sessions.values()))
        assert session.alive and session.stats.frames == 0 and session.stats.failed == 0
        client.send_camera([1.0, 0, 0, 0], [0.0, -3.0, 1.0], fov=1.0, width=64, height=48)
        assert client.wait_background(30.0) is not None
    finally:
        client.close()
        viewer.stop()


class _Trainer:
    __slots__ = ("cfg", "step")

    def __init__(self, cfg):
        self.cfg, self.step = cfg, 0

    @property
    def stop_requested(self) -> bool:
        return False


class _Stats:
    def values(self):
        from types import SimpleNamespace

        return SimpleNamespace(psnr=20.0, skipped=False, load=None)


def test_a_video_takes_the_model_in_slices_while_training_goes_on(run):
    """The live viewer's "Render video": training keeps stepping during the video (it
    would wait for the whole video if the job held the gate), and the video is whole."""
    viewer = ViewerServer(run.renderer, run.scene, port=free_port(), run_dir=run.run_dir,
                          training=True)
    trainer = _Trainer(run.cfg)
    try:
        viewer.begin_training()
        viewer.gate.render_share = 0.5
        editor = viewer.editor
        editor.keyframes = [Keyframe(look_at((3, 0, 2), (0, 0, 0.3)), 50.0),
                            Keyframe(look_at((0, 3, 2), (0, 0, 0.3)), 50.0)]
        editor.width.value, editor.height.value = 48, 32
        editor.seconds.value, editor.fps.value = 2.0, 12.0  # 24 frames
        result = {}

        def job():
            result["out"] = viewer._render_video(editor.camera_path(), "sliced", ("rgb",))

        th = threading.Thread(target=job)
        th.start()
        steps = 0
        deadline = time.time() + 120
        while th.is_alive() and time.time() < deadline:  # the training loop
            time.sleep(0.005)  # a step, holding the model
            trainer.step += 1
            viewer.on_step(trainer, _Stats())
            steps += 1
        th.join(5.0)
        assert not th.is_alive() and result["out"].is_file()
        # a job that held the model for the whole video would block the loop's first
        # on_step until the end: one or two steps. Interleaved, it makes about one step per
        # two frames here (a count, not a speed: faster renders must not fail this)
        assert steps >= 4, f"training made {steps} steps during a 24-frame video"
        import imageio_ffmpeg

        frames, _ = imageio_ffmpeg.count_frames_and_secs(str(result["out"]))
        assert frames == 24
    finally:
        viewer.stop()
