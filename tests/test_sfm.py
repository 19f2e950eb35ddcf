"""``scene from-images`` on photos the project renders: poses recovered up to a similarity,
the dataset loads and trains; bad input is one line, exit 2, nothing left behind.

The photos: 12 views of tinycity at 240x180 with surface detail, on a 165-degree arc of
radius 81 m, 60 m up, looking at the centre (true poses known), plus one photo of noise
that cannot register and must be listed. The tolerance: after the
Umeyama similarity, every recovered camera centre is within 1% of the true cameras' extent
(the diagonal of their bounding box, about 180 m here) of the true one.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from switchnerf.cli import main as cli_main
from switchnerf.scene import load_scene
from switchnerf.scene.align import umeyama
from switchnerf.scene.synth.photos import render_photos

N_PHOTOS = 12
SIZE = (240, 180)
TOLERANCE = 0.01  # of the true cameras' extent
TINY_TRAIN = [
    "model.experts.n_experts=4", "model.experts.n_levels=4",
    "model.experts.log2_hashmap_size=10", "model.experts.finest_resolution=64",
    "model.experts.coarsest_fraction=0.5", "model.experts.base_resolution=8",
    "model.experts.shared_levels=2", "model.experts.split_resolution=16",  # cpu-demo's, scaled
    "model.experts.shared_log2_hashmap_size=10",
    "model.routing.gate.n_levels=2", "model.routing.gate.log2_hashmap_size=8",
    "model.routing.gate.max_resolution=16", "model.routing.gate_hidden=8",
    "model.head.hidden=16", "model.head.color_hidden=16", "model.head.appearance_dim=4",
    "sampler.grid_resolution=16", "sampler.steps_per_diagonal=64", "sampler.warmup_steps=2",
    "sampler.update_every=2", "train.rays_per_step=128", "train.shard_rays=4096",
    "train.eval_every=0", "train.checkpoint_every=1000", "train.log_every=1",
]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("sfm")
    ps = render_photos("tinycity", root / "photos", views="arc", n=N_PHOTOS, arc_deg=165.0,
                       image_size=SIZE)
    _noise(root / "photos" / "zz_noise.png", size=SIZE, seed=99)
    return root, ps


@pytest.fixture(scope="module")
def posed(photos):
    root, ps = photos
    out = root / "data"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli_main(["scene", "from-images", str(root / "photos"), "--out", str(out),
                         "--single-camera"])
    assert code == 0
    return out, ps, printed.getvalue()


def test_recovered_poses_match_the_truth(posed, capsys):
    out, ps, printed = posed
    report = json.loads((out / "sfm.json").read_text())
    assert report["unregistered"] == ["zz_noise.png"] and report["registered"] == list(ps.names)
    assert "unregistered 1 photos (no pose; not used): zz_noise.png" in printed
    assert "posed        12 of 13 photos" in printed and "(estimated)" in printed
    assert report["gravity"]["source"] == "ground plane" and report["gravity"]["aerial"]
    scene = load_scene(out)
    assert scene.format == "colmap" and scene.extra["up_from"] == "sfm.json"
    assert scene.estimated["bbox"] and scene.estimated["altitude_range"]
    def source(r):  # the photo itself (image_path is the undistortion cache's copy)
        return Path(r.undistort.source_path if r.undistort else r.image_path)

    recs = sorted((r for s in ("train", "val") for r in scene.images(s)),
                  key=lambda r: source(r).name)
    assert [source(r).name for r in recs] == list(ps.names)
    sources = [source(r) for r in recs]
    assert all(p.parent == out / "images" for p in sources)
    est = np.stack([r.c2w[:3, 3] for r in recs])
    true = ps.c2ws[:, :3, 3]
    s, rot, t = umeyama(est, true)
    err = np.linalg.norm(s * est @ rot.T + t - true, axis=1)
    extent = float(np.linalg.norm(np.ptp(true, axis=0)))
    assert err.max() < TOLERANCE * extent, (err.max(), extent)
    # leveled: the recovered z axis is the true up, the ground (true z = 0) is at z = 0
    assert np.degrees(np.arccos(rot[2, 2])) < 1.0
    assert abs(t[2]) < TOLERANCE * extent
    # orientations agree too, once rotated by the same similarity
    for r, c2w in zip(recs, ps.c2ws):
        cos = (np.trace(c2w[:3, :3].T @ rot @ r.c2w[:3, :3]) - 1) / 2
        assert np.degrees(np.arccos(np.clip(cos, -1, 1))) < 1.0
    # the sparse points lie in the box; the box is in the altitude range
    lo, hi = scene.bbox
    assert scene.altitude_range == pytest.approx((lo[2], hi[2]))
    assert lo[2] < 0 < hi[2]  # the ground is inside the slab
    capsys.readouterr()
    assert cli_main(["scene", "info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "(colmap)" in info and "(estimated)" in info and "sfm.json" in info


def test_a_short_training_run_on_the_recovered_scene(posed, tmp_path):
    out, _, _ = posed
    sets = [a for kv in TINY_TRAIN for a in ("--set", kv)]
    code = cli_main(["train", "--scene", str(out), "--output", str(tmp_path / "run"),
                     "--max-steps", "2", "--device", "cpu", "--store", str(tmp_path / "store"),
                     *sets])
    assert code == 0
    lines = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    assert all(np.isfinite(x["loss"]) for x in lines)


# ---- bad input: one line naming the folder or file, exit 2, nothing written -------------


def _fails(capsys, images: Path, out: Path, *needles, extra=()):
    capsys.readouterr()
    code = cli_main(["scene", "from-images", str(images), "--out", str(out), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert str(n) in err, (n, err)
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")] == []
    return err


def _noise(path: Path, size=(64, 48), seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def test_empty_folder_and_folder_without_photos(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _fails(capsys, tmp_path / "empty", tmp_path / "out", "empty", "no image files")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes/readme.txt").write_text("hello")
    _fails(capsys, tmp_path / "notes", tmp_path / "out", "notes", "no image files")
    _fails(capsys, tmp_path / "absent", tmp_path / "out", "absent", "does not exist")


def test_unreadable_and_truncated_photos(tmp_path, capsys):
    d = tmp_path / "photos"
    d.mkdir()
    for k in range(3):
        _noise(d / f"{k}.png", seed=k)
    (d / "3.png").write_bytes(b"not an image at all")
    _fails(capsys, d, tmp_path / "out", "3.png", "cannot be decoded")
    data = (d / "2.png").read_bytes()
    (d / "3.png").unlink()
    (d / "2.png").write_bytes(data[: len(data) // 2])
    _fails(capsys, d, tmp_path / "out", "2.png", "cannot be decoded")


def test_mixed_sizes(tmp_path, capsys):
    d = tmp_path / "photos"
    d.mkdir()
    for k in range(3):
        _noise(d / f"{k}.png", seed=k)
    _noise(d / "odd.png", size=(48, 64))
    _fails(capsys, d, tmp_path / "out", "odd.png", "48x64", "3 of the 4 photos are 64x48")


def test_too_few_matches(tmp_path, capsys):
    """Unrelated noise photos: SIFT finds features but no pair verifies."""
    d = tmp_path / "photos"
    d.mkdir()
    for k in range(4):
        _noise(d / f"{k}.png", size=(96, 72), seed=k)
    _fails(capsys, d, tmp_path / "out", str(d), "too few matches")


def test_too_few_registered(photos, tmp_path, capsys):
    """Two overlapping photos and unrelated noise: no model of 3 photos."""
    root, ps = photos
    d = tmp_path / "photos"
    d.mkdir()
    for name in ps.names[:2]:
        (d / name).write_bytes((root / "photos" / name).read_bytes())
    _noise(d / "zz.png", size=SIZE)
    _fails(capsys, d, tmp_path / "out", str(d), "of 3 photos could be posed", "at least 3")


def test_existing_output_and_output_around_the_photos(photos, tmp_path, capsys):
    root, _ = photos
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    capsys.readouterr()
    assert cli_main(["scene", "from-images", str(root / "photos"), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").is_file()
    assert cli_main(["scene", "from-images", str(root / "photos"), "--out", str(root),
                     "--overwrite"]) == 2
    assert "holds the photos" in capsys.readouterr().err
    assert (root / "photos" / "000.png").is_file()
