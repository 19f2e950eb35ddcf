"""The three readers agree: one camera set as Mega-NeRF, COLMAP (txt, bin), transforms.json."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _scene_data import (
    CX,
    CY,
    FX,
    FY,
    H,
    W,
    content_points,
    source_frame,
    to_source,
    world_cameras,
    write_colmap,
    write_meganerf,
    write_transforms,
)

from switchnerf.scene import load_scene, pixel_rays
from switchnerf.scene.colmap_model import ColmapCamera, read_model
from switchnerf.scene.distortion import distort, undistort_points
from switchnerf.scene.types import Undistortion

N = 10


def _expected_rays(c2ws, split_idx):
    return [pixel_rays(c2ws[k], FX, FY, CX, CY, W, H) for k in split_idx]


def _rays_in_w(scene, to_w):
    """Rays of every image per split, mapped to frame W by the scene's declared transforms."""
    back = np.linalg.inv(scene.source_to_world)
    out = {}
    for split in ("train", "val"):
        out[split] = []
        for i in range(len(scene.images(split))):
            o, d = scene.rays_for_image(split, i)
            o = o.double().numpy() @ back[:3, :3].T + back[:3, 3]
            d = d.double().numpy() @ back[:3, :3].T
            out[split].append(to_w(o, d))
    return out


def _check(scene, to_w, c2ws):
    got = _rays_in_w(scene, to_w)
    val_idx = list(range(0, N, 8))
    train_idx = [k for k in range(N) if k not in val_idx]
    for split, idx in (("train", train_idx), ("val", val_idx)):
        assert len(got[split]) == len(idx)
        for (o, d), (eo, ed) in zip(got[split], _expected_rays(c2ws, idx)):
            np.testing.assert_allclose(o, eo.numpy(), atol=1e-5 * 50)  # float32 origins ~50 m
            np.testing.assert_allclose(d, ed.numpy(), atol=1e-5)


def test_three_readers_same_rays(tmp_path):
    c2ws = world_cameras(N)
    origin, scale = np.array([-45.0, 1.0, 2.0]), 60.0

    (tmp_path / "mega").mkdir()
    mega = load_scene(write_meganerf(tmp_path / "mega", c2ws, origin, scale, val=(0, 8)))
    assert mega.format == "mega-nerf" and mega.metres_per_unit == scale
    from switchnerf.scene.poses import DRB_TO_WORLD

    shift = DRB_TO_WORLD @ origin  # world_metres = scale * drb_normalised-in-world + R origin

    def mega_to_w(o, d):  # back to normalised DRB, then to metres in W
        drb_o, drb_d = o, d
        return (drb_o @ DRB_TO_WORLD.T) * scale + shift, drb_d @ DRB_TO_WORLD.T

    _check(mega, mega_to_w, c2ws)

    q, b = source_frame()
    src = to_source(c2ws, q, b)
    pts = content_points() @ q.T + b

    def src_to_w(o, d):
        return (o - b) @ q, d @ q

    for binary in (False, True):
        root = tmp_path / f"colmap_{binary}"
        scene = load_scene(write_colmap(root, src, pts, binary=binary))
        assert scene.format == "colmap" and scene.estimated["up"] and scene.estimated["val_split"]
        _check(scene, src_to_w, c2ws)
        up = np.stack([r.c2w for r in scene.images("train")])[:, :3, 0]
        assert np.abs(up[:, 2]).max() < 1e-6  # camera x axes are horizontal after leveling
        assert abs(np.linalg.det(scene.source_to_world[:3, :3]) - 1) < 1e-9

    for per_frame in (False, True):
        root = tmp_path / f"tf_{per_frame}"
        root.mkdir()
        scene = load_scene(write_transforms(root, src, per_frame=per_frame))
        assert scene.format == "transforms"
        _check(scene, src_to_w, c2ws)
    img = scene.load_image("train", 0)
    assert img.shape == (H, W, 3) and img.dtype == np.uint8


def test_quaternion_round_trip():
    from switchnerf.scene.colmap_model import qvec_to_rotmat, rotmat_to_qvec

    q, _ = source_frame()
    np.testing.assert_allclose(qvec_to_rotmat(rotmat_to_qvec(q)), q, atol=1e-12)
    # 90 degrees about z: x -> y
    np.testing.assert_allclose(
        qvec_to_rotmat([np.sqrt(0.5), 0, 0, np.sqrt(0.5)]) @ [1, 0, 0], [0, 1, 0], atol=1e-12
    )


def test_colmap_txt_bin_roundtrip(tmp_path):
    q, b = source_frame()
    src = to_source(world_cameras(N), q, b)
    pts = content_points(50)
    write_colmap(tmp_path / "t", src, pts, binary=False)
    write_colmap(tmp_path / "b", src, pts, binary=True)
    mt, mb = read_model(tmp_path / "t/sparse/0"), read_model(tmp_path / "b/sparse/0")
    assert mt.cameras == mb.cameras and mt.images.keys() == mb.images.keys()
    for k in mt.images:
        np.testing.assert_allclose(mt.images[k].qvec, mb.images[k].qvec, atol=1e-12)
    np.testing.assert_allclose(mt.points, mb.points, atol=1e-12)


def test_undistortion_round_trip_and_image(tmp_path):
    """An OPENCV camera: the undistorted image shows what a pinhole camera would see."""
    und = Undistortion(
        tmp_path,
        W * 4,
        H * 4,
        FX * 4,
        FY * 4,
        CX * 4,
        CY * 4,
        k1=-0.08,
        k2=0.01,
        p1=0.002,
        p2=-0.001,
    )
    x, y = np.meshgrid(np.linspace(-0.5, 0.5, 7), np.linspace(-0.4, 0.4, 5))
    xd, yd = distort(x, y, und)
    xu, yu = undistort_points(xd, yd, und)
    np.testing.assert_allclose(np.stack([xu, yu]), np.stack([x, y]), atol=1e-10)

    def pattern(xn, yn):  # a smooth image of the normalised (OpenCV) direction
        return np.stack(
            [0.5 + 0.4 * np.sin(3 * xn), 0.5 + 0.4 * np.cos(4 * yn), 0.5 + 0.3 * xn * yn], -1
        )

    c2ws = world_cameras(3)
    write_colmap(
        tmp_path / "d",
        c2ws,
        content_points(30),
        binary=True,
        model="OPENCV",
        params=(und.fx, und.fy, und.cx, und.cy, und.k1, und.k2, und.p1, und.p2),
        size=(und.width, und.height),
    )
    j, i = np.meshgrid(np.arange(und.height) + 0.5, np.arange(und.width) + 0.5, indexing="ij")
    xs, ys = undistort_points((i - und.cx) / und.fx, (j - und.cy) / und.fy, und)
    from PIL import Image

    src = np.rint(pattern(xs, ys) * 255).astype(np.uint8)
    for name in sorted((tmp_path / "d/images").iterdir()):
        Image.fromarray(src).save(name)
    import switchnerf.scene.colmap_model as cm

    m = cm.read_model(tmp_path / "d/sparse/0")
    assert m.cameras[1] == ColmapCamera(1, "OPENCV", und.width, und.height, m.cameras[1].params)
    scene = load_scene(tmp_path / "d")
    r = scene.images("train")[0]
    assert r.undistort is not None and r.width == und.width
    img = scene.load_image("train", 0)
    assert r.image_path.is_file() and "0_undistorted" in str(r.image_path)
    jj, ii = np.meshgrid(np.arange(r.height) + 0.5, np.arange(r.width) + 0.5, indexing="ij")
    want = pattern((ii - r.cx) / r.fx, (jj - r.cy) / r.fy) * 255
    assert np.abs(img.astype(float) - want).max() < 6.0
    assert np.array_equal(scene.load_image("train", 0), img)  # served from the cache now


@pytest.mark.parametrize("dtype", [torch.float32])
def test_pixel_ray_convention(dtype):
    _, d = pixel_rays(np.eye(4), 10.0, 10.0, 1.0, 1.0, 2, 2)
    assert d.dtype == dtype
    np.testing.assert_allclose(
        d[0].numpy(), np.array([-0.05, 0.05, -1.0]) / np.linalg.norm([0.05, 0.05, 1]), atol=1e-6
    )
