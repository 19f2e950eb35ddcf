"""Frames and bounds: the DRB conversion, estimated boxes, descriptors."""

from __future__ import annotations

import numpy as np
from _scene_data import content_points, source_frame, to_source, world_cameras, write_colmap

from switchnerf.scene import estimate_bounds, load_scene
from switchnerf.scene.meganerf import altitude_m_to_world
from switchnerf.scene.poses import DRB_TO_WORLD, estimate_up


def test_drb_to_world_hand_case():
    assert np.isclose(np.linalg.det(DRB_TO_WORLD), 1.0)
    # DRB point: 1 down, 2 right, 3 back -> world x = right, y = front = -back, z = up = -down
    np.testing.assert_allclose(DRB_TO_WORLD @ [1.0, 2.0, 3.0], [2.0, -3.0, -1.0])
    # a nadir camera in DRB: right = +y, up = -z (front), back = -x (up): looks down
    c2w_drb = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    np.testing.assert_allclose(DRB_TO_WORLD @ c2w_drb, np.eye(3), atol=1e-12)
    # Building: [8, 50] m with origin_drb[0] = -30, scale 100 -> ground z -0.8, top z -0.38
    np.testing.assert_allclose(
        altitude_m_to_world([8.0, 50.0], np.array([-30.0, 0, 0]), 100.0), (-0.8, -0.38)
    )


def test_estimated_box_contains_content(tmp_path):
    c2ws = world_cameras(12)
    pts = content_points(300)
    box, alt, est = estimate_bounds(c2ws, pts)
    assert est == {"bbox": True, "altitude_range": True}
    assert np.all(pts >= box[0]) and np.all(pts <= box[1])
    assert alt[0] <= pts[:, 2].min() and alt[1] >= pts[:, 2].max()
    assert np.all(c2ws[:, 2, 3] > alt[1])  # drone cameras stay above the slab
    # without sparse points: from where the cameras look (targets within 5 m of the origin)
    box, alt, est = estimate_bounds(c2ws, None)
    assert np.all(box[0][:2] <= -5) and np.all(box[1][:2] >= 5)
    assert alt[0] <= 0.5 and alt[1] > 10.0
    # given values win
    box2, alt2, est2 = estimate_bounds(c2ws, pts, altitude_range=(-1.0, 20.0))
    assert alt2 == (-1.0, 20.0) and box2[0, 2] == -1.0 and est2["altitude_range"] is False
    # through a reader: a tilted COLMAP world is leveled, the box is in the leveled frame
    q, b = source_frame()
    scene = load_scene(
        write_colmap(tmp_path / "c", to_source(c2ws, q, b), pts @ q.T + b, binary=True)
    )
    moved = (pts @ q.T + b) @ scene.source_to_world[:3, :3].T + scene.source_to_world[:3, 3]
    assert np.all(moved >= scene.bbox[0]) and np.all(moved <= scene.bbox[1])
    assert np.ptp(moved[:, 2]) < 10.5  # leveled: the 10 m tall content is vertical again


def test_estimate_up_nadir_and_oblique():
    c2ws = world_cameras(8)
    np.testing.assert_allclose(estimate_up(c2ws), [0, 0, 1], atol=1e-9)
    q, _ = source_frame()
    np.testing.assert_allclose(
        estimate_up(to_source(c2ws, q, np.zeros(3))), q @ [0, 0, 1], atol=1e-9
    )
