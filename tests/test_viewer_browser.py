"""A real browser loads the viewer page and shows the rendered field behind the scene.

Headless Chromium (the system package; ``scripts/setup.sh`` installs it when
``SWITCHNERF_BROWSER=1``, as ``make test`` does) is driven by Python playwright and
waited on in real time (no virtual time: the page must connect, send its camera, and
receive the server's render).
"""

import io
import shutil
import time

import numpy as np
import pytest
from _viewer_run import free_port, make_run
from PIL import Image

from switchnerf.viewer import ViewerServer

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  # WebGL through the software rasteriser (no GPU in CI)
                  "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium not found on PATH; `SWITCHNERF_BROWSER=1 scripts/setup.sh` "
                    "(run by `make test`) installs the Debian package")
    return exe


def test_browser_shows_rendered_background(tmp_path):
    exe = _chromium()
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as mp:
        run = make_run(tmp_path, mp)
    viewer = ViewerServer(run.renderer, run.scene, port=free_port(), max_side=96)
    viewer.settings.output = "experts"  # strong colours: unmistakably not blank
    for what in ("cameras", "box"):
        viewer.overlay.set_visible(what, False)
    try:
        with sync_playwright() as p:
            # playwright adds --headless and a fresh temporary --user-data-dir itself.
            browser = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page(viewport={"width": 800, "height": 600})
                page.goto(viewer.url)
                deadline = time.time() + 90
                while time.time() < deadline:  # real time: the page connects and asks
                    if any(s.stats.full_frames for s in list(viewer.sessions.values())):
                        break
                    page.wait_for_timeout(200)
                assert any(s.stats.full_frames for s in list(viewer.sessions.values())), \
                    "the browser never received a full-resolution render"
                page.wait_for_timeout(1500)  # decode and draw the last image
                shot = _shot(page)
            finally:
                browser.close()
    finally:
        viewer.stop()
    # The canvas away from the control panel (right) and notifications (top left).
    region = shot[200:560, 80:420].astype(np.float64)
    assert region.std() > 20.0, f"background looks blank (std {region.std():.1f})"
    assert region.mean() < 235.0, "background is white: no render drawn"


def _shot(page) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"))


def test_browser_shows_the_camera_frustums_of_a_dataset(tmp_path):
    """``switchnerf view DATASET``'s server (no model): the page draws the frustums with
    their images; hiding them changes the picture where they were."""
    exe = _chromium()
    from _scene_data import content_points, world_cameras, write_colmap
    from playwright.sync_api import sync_playwright

    from switchnerf.scene import load_scene

    scene = load_scene(write_colmap(tmp_path / "colmap", world_cameras(10), content_points(),
                                    binary=True))
    viewer = ViewerServer(None, scene, port=free_port())
    for what in ("box", "altitude", "partition", "sparse"):
        viewer.overlay.set_visible(what, False)
    assert viewer.overlay.thumbnails.wait(30.0)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page(viewport={"width": 800, "height": 600})
                page.goto(viewer.url)
                deadline = time.time() + 90
                while time.time() < deadline and not viewer.server.get_clients():
                    page.wait_for_timeout(200)
                assert viewer.server.get_clients(), "the page never connected"
                page.wait_for_timeout(3000)  # scene replayed, thumbnails decoded, drawn
                with_frusta = _shot(page)
                viewer.overlay.set_visible("cameras", False)
                page.wait_for_timeout(1500)
                without = _shot(page)
            finally:
                browser.close()
    finally:
        viewer.stop()
    region = (slice(60, 560), slice(0, 480))  # the canvas left of the control panel
    diff = np.abs(with_frusta[region].astype(int) - without[region].astype(int)).max(-1)
    changed = diff > 40
    assert changed.sum() > 300, f"frustums not visible ({changed.sum()} pixels differ)"
    # the frustums sit at several places (ten cameras on a ring), not one blob
    rows, cols = np.nonzero(changed)
    assert np.ptp(cols) > 100 and np.ptp(rows) > 40
    assert not viewer.sessions
