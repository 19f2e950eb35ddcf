"""The viewer on a dataset alone, before any training: what a websocket client receives
(frustums with their images, sparse points, box, altitude planes, partition cells), no render
loop, the scene's sparse points in the world frame, and ``switchnerf view DATASET``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _scene_data import (
    content_points,
    source_frame,
    to_source,
    world_cameras,
    write_colmap,
    write_meganerf,
)
from _viewer_run import free_port

from switchnerf.scene import load_scene
from switchnerf.scene.sparse import sparse_points
from switchnerf.viewer import ViewerServer
from switchnerf.viewer.overlay import altitude_planes, box_edges, find_partition
from switchnerf.viewer.probe import ProbeClient

ROOT = Path(__file__).resolve().parents[1]
N_CAMERAS = 10


@pytest.fixture(scope="module")
def colmap_dataset(tmp_path_factory) -> Path:
    """A COLMAP dataset whose source frame is tilted and shifted (the reader levels it)."""
    root = tmp_path_factory.mktemp("dataset_view") / "colmap"
    q, b = source_frame()
    write_colmap(root, to_source(world_cameras(N_CAMERAS), q, b), content_points() @ q.T + b,
                 binary=True)
    return root


def test_sparse_points_are_in_the_world_frame_of_the_cameras(colmap_dataset):
    scene = load_scene(colmap_dataset)
    xyz, rgb = sparse_points(scene)
    pts = content_points()
    assert xyz.shape == pts.shape and xyz.dtype == np.float32 and rgb.shape == pts.shape
    # Each point seen from each camera is where it was before the source frame and the
    # reader's levelling: camera-frame coordinates are invariant.
    truth = world_cameras(N_CAMERAS)
    recs = sorted(scene.images("train") + scene.images("val"), key=lambda r: r.image_path.name)
    for rec, c2w in zip(recs, truth):
        mine = (np.linalg.inv(rec.c2w) @ np.c_[xyz, np.ones(len(xyz))].T)[:3].T
        true = (np.linalg.inv(c2w) @ np.c_[pts, np.ones(len(pts))].T)[:3].T
        assert np.abs(mine - true).max() < 1e-3
    sub, _ = sparse_points(scene, max_points=50)
    assert len(sub) == 50 and {tuple(p) for p in sub} <= {tuple(p) for p in xyz}


def test_formats_without_sparse_points_have_none(tmp_path):
    scene = load_scene(write_meganerf(tmp_path, world_cameras(N_CAMERAS)))
    assert sparse_points(scene) is None


def _scene_state(client: ProbeClient, until, timeout: float) -> tuple[dict, list[dict]]:
    """Scene nodes by name ({"type", "props", "visible"}) as the client has them once
    ``until(nodes)`` holds (or at the timeout), and every message received."""
    nodes: dict[str, dict] = {}
    seen: list[dict] = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        for m in client.messages(0.3):
            seen.append(m)
            kind, name = m.get("type"), m.get("name")
            if "props" in m and name is not None:
                nodes[name] = {"type": kind, "props": dict(m["props"]), "visible": True}
            elif kind == "SceneNodeUpdateMessage" and name in nodes:
                nodes[name]["props"].update(m["updates"])
            elif kind == "SetSceneNodeVisibilityMessage" and name in nodes:
                nodes[name]["visible"] = m["visible"]
        if until(nodes):
            break
    return nodes, seen


def _array(buf, dtype, shape):
    return np.frombuffer(bytes(buf), dtype=dtype).reshape(shape)


def test_websocket_client_receives_the_dataset_overlays_and_no_render(colmap_dataset):
    scene = load_scene(colmap_dataset)
    before = set(threading.enumerate())  # Thread objects: an ident is reused once its thread ends
    viewer = ViewerServer(None, scene, port=free_port())
    try:
        assert viewer.overlay.thumbnails.wait(30.0) and viewer.overlay.thumbnails.loaded == 10
        client = ProbeClient(f"ws://127.0.0.1:{viewer.port}")
        try:
            client.send_camera([1.0, 0, 0, 0], [0.0, 0.0, 100.0], fov=1.0, width=640,
                               height=480)

            def complete(nodes):
                frusta = [n for k, n in nodes.items() if k.startswith("/overlay/cameras/")]
                return (len(frusta) == N_CAMERAS
                        and all(n["props"].get("_image_data") for n in frusta)
                        and "/overlay/sparse" in nodes)

            nodes, seen = _scene_state(client, complete, 30.0)
            time.sleep(1.0)  # long enough for a render loop, were there one, to answer
            seen += client.messages(0.5)
        finally:
            client.close()
        assert complete(nodes)
        # Frustums: one per image with its thumbnail (an image file's bytes).
        frusta = {k: n for k, n in nodes.items() if k.startswith("/overlay/cameras/")}
        names = {f"/overlay/cameras/{s}_{i:05d}" for s in ("train", "val")
                 for i in range(len(scene.images(s)))}
        assert set(frusta) == names
        for n in frusta.values():
            assert n["type"] == "CameraFrustumMessage"
            assert bytes(n["props"]["_image_data"])[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0",
                                                             b"\xff\xd8\xff\xdb")
        # Sparse points in the world frame, with their colours.
        pts = _array(nodes["/overlay/sparse"]["props"]["points"], np.float32, (-1, 3))
        assert np.allclose(pts, sparse_points(scene)[0], atol=1e-4)
        # The foreground box, the altitude planes and the partition cells.
        box = _array(nodes["/overlay/box"]["props"]["points"], np.float32, (-1, 2, 3))
        assert np.allclose(box, box_edges(*scene.bbox), atol=1e-4)
        verts = _array(nodes["/overlay/altitude"]["props"]["vertices"], np.float32, (-1, 3))
        assert np.allclose(verts, altitude_planes(*scene.bbox, scene.altitude_range)[0],
                           atol=1e-4)
        assert sorted(set(np.round(verts[:, 2], 4))) == pytest.approx(sorted(
            scene.altitude_range), abs=1e-4)
        assert nodes["/overlay/altitude"]["props"]["opacity"] < 1.0
        cells = _array(nodes["/overlay/partition"]["props"]["points"], np.float32, (-1, 2, 3))
        assert np.allclose(cells, find_partition(scene).borders(), atol=1e-4)
        # No model: no render loop, no background image, no session.
        assert not [m for m in seen if m.get("type") == "BackgroundImageMessage"
                    and m.get("rgb_data")]
        assert not viewer.sessions and viewer.gui is None and viewer.editor is None
        assert not [t for t in threading.enumerate()
                    if t.name.startswith("switchnerf-view-") and t not in before]
    finally:
        viewer.stop()


def test_switchnerf_view_of_a_dataset_serves_it_and_warns_when_exposed(colmap_dataset):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # a suite run as a background job ignores SIGINT, and so would this child: it takes
    # Ctrl-C as from a terminal (Python's KeyboardInterrupt handler, set explicitly)
    launch = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler);"
              " sys.argv = ['switchnerf'] + sys.argv[1:]; runpy.run_module('switchnerf',"
              " run_name='__main__', alter_sys=True)")
    proc = subprocess.Popen([sys.executable, "-c", launch, "view", str(colmap_dataset),
                             "--host", "0.0.0.0", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if line.startswith("viewer: http"):
                break
        client = ProbeClient(f"ws://127.0.0.1:{port}")
        nodes, _ = _scene_state(client, lambda n: "/overlay/box" in n, 30.0)
        client.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            pytest.fail("switchnerf view did not stop within 120 s of Ctrl-C:\n" + out)
    lines += out.splitlines()
    assert proc.returncode == 0, "\n".join(lines)
    warnings = [x for x in lines if "no authentication" in x]
    assert len(warnings) == 1 and "0.0.0.0" in warnings[0]
    assert any(x.startswith(f"viewer: http://127.0.0.1:{port}") and "no model" in x
               for x in lines)
    assert "/overlay/box" in nodes
    assert not [x for x in lines if "Traceback" in x]
