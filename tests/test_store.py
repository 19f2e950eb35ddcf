"""Ray store writer: contents, shuffling, bounded passes, crash safety, staleness."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_store_scene import make_scene

from switchnerf.errors import SwitchNerfError
from switchnerf.scene import store as store_mod
from switchnerf.scene.cameras import CameraTable
from switchnerf.scene.partition import cell_membership, clip_to_box, make_partition
from switchnerf.scene.store import (
    StoreMissingError,
    StoreStaleError,
    ensure_store,
    open_store,
    prepare_store,
    store_status,
)


@pytest.fixture
def scene(tmp_path):
    return make_scene(tmp_path / "scene")


def all_records(st) -> np.ndarray:
    return np.concatenate([np.asarray(st.load_records(i)) for i in range(len(st.shards))])


def expected_pixels(scene, val_left_halves: bool) -> dict:
    """{(global image, pixel index): rgb} of every pixel that belongs in the store."""
    out, k = {}, 0
    for split in ("train", "val"):
        for i, r in enumerate(scene.images(split)):
            rgb = np.asarray(Image.open(r.image_path).convert("RGB"))
            cols = r.width if split == "train" else (r.width // 2 if val_left_halves else 0)
            for row in range(r.height):
                for col in range(cols):
                    out[(k, row * r.width + col)] = tuple(rgb[row, col])
            k += 1
    return out


@pytest.mark.parametrize("val_left_halves", [False, True])
def test_every_pixel_exactly_once(scene, tmp_path, val_left_halves):
    st = prepare_store(scene, tmp_path / "store", shard_rays=50, val_left_halves=val_left_halves,
                       progress=False)
    rec = all_records(st)
    want = expected_pixels(scene, val_left_halves)
    got = [(int(a), int(b)) for a, b in zip(rec["image_index"], rec["pixel_index"])]
    assert len(got) == len(set(got)) == len(want) == st.n_records
    assert set(got) == set(want)
    for (key, rgb) in zip(got, rec["rgb"]):
        assert tuple(rgb) == want[key]
    n_train = 3 * 48
    assert st.manifest["n_train_records"] == n_train
    assert st.manifest["n_val_records"] == (2 * 24 if val_left_halves else 0)
    if val_left_halves:  # no right-half pixel of a val image
        val = rec[rec["image_index"] >= 3]
        assert (val["pixel_index"] % 8 < 4).all() and len(val) == 48


def test_shards_are_shuffled_and_bounded(scene, tmp_path):
    st = prepare_store(scene, tmp_path / "store", shard_rays=16, progress=False)
    sizes = [s.n for s in st.shards]
    assert len(sizes) == 9 and max(sizes) <= 16 and sum(sizes) == 144
    rec = all_records(st)
    key = rec["image_index"].astype(np.int64) * 1000 + rec["pixel_index"]
    assert not (np.diff(key) > 0).all()  # not in image order
    for i in range(len(st.shards)):  # each shard mixes images
        assert len(np.unique(np.asarray(st.load_records(i))["image_index"])) > 1
    # same seed, same store; another seed, another order
    again = all_records(prepare_store(scene, tmp_path / "b", shard_rays=16, progress=False))
    other = all_records(prepare_store(scene, tmp_path / "c", shard_rays=16, seed=1,
                                      progress=False))
    assert (again == rec).all() and not (other == rec).all()


@pytest.mark.parametrize("n_train", [2, 12])
def test_pass_sizes_do_not_grow_with_dataset(tmp_path, monkeypatch, n_train):
    """Pass 1 handles at most chunk_rays pixels at once; pass 2 loads one bucket of at most
    shard_rays records: neither depends on the number of images."""
    scene = make_scene(tmp_path / "scene", n_train=n_train, width=16, height=10)
    seen = {"scatter": 0, "bucket": 0}
    real_scatter, real_fromfile = store_mod._scatter, np.fromfile

    def scatter(buckets, rec, *a):
        seen["scatter"] = max(seen["scatter"], rec.shape[0])
        for f in Path(buckets).glob("*.rec"):  # bucket files never exceed a shard
            assert f.stat().st_size <= 40 * store_mod.RECORD_DTYPE.itemsize
        return real_scatter(buckets, rec, *a)

    def fromfile(path, *a, **kw):
        out = real_fromfile(path, *a, **kw)
        seen["bucket"] = max(seen["bucket"], out.shape[0])
        return out

    monkeypatch.setattr(store_mod, "_scatter", scatter)
    monkeypatch.setattr(np, "fromfile", fromfile)
    st = prepare_store(scene, tmp_path / "store", shard_rays=40, chunk_rays=64, progress=False)
    assert st.n_records == n_train * 160
    assert seen["scatter"] <= 64 and seen["bucket"] <= 40
    assert max(s.n for s in st.shards) <= 40


def test_failure_in_pass_two_leaves_no_store(scene, tmp_path, monkeypatch):
    out = tmp_path / "store"
    calls = []
    real_save = np.save

    def failing_save(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_save(*a, **kw)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        prepare_store(scene, out, shard_rays=20, progress=False)
    monkeypatch.undo()
    assert store_status(out, scene, shard_rays=20) == "missing"
    with pytest.raises(StoreMissingError):
        open_store(out)
    assert [p.name for p in tmp_path.iterdir()] == ["scene"]  # no temp folders left
    st = ensure_store(scene, out, shard_rays=20, progress=False)
    assert st.n_records == 144 and store_status(out, scene, shard_rays=20) == "ok"


_KILL_SCRIPT = """
import sys, time, numpy as np
from pathlib import Path
from test_store_scene import make_scene
from switchnerf.scene.store import prepare_store
root = Path(sys.argv[1])
scene = make_scene(root / "scene")
real_save = np.save
def slow_save(*a, **kw):
    print("writing shard", flush=True)
    time.sleep(30)
    return real_save(*a, **kw)
np.save = slow_save
prepare_store(scene, root / "store", shard_rays=20, progress=False)
"""


def test_sigkill_mid_write_then_rebuild(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).parent), str(Path(__file__).parents[1])]))
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "writing shard"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    out = tmp_path / "store"
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".store.building-")]
    assert leftovers and not out.exists()
    scene = make_scene(tmp_path / "scene")  # same files, same seed
    with pytest.raises(StoreMissingError):
        open_store(out, scene)
    st = ensure_store(scene, out, shard_rays=20, progress=False)
    assert st.n_records == 144
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene", "store"]


def test_refuses_to_replace_a_foreign_folder(scene, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(SwitchNerfError, match="not a ray store"):
        prepare_store(scene, out, progress=False)
    assert (out / "notes.txt").read_text() == "keep me"


def test_incomplete_store_is_missing(scene, tmp_path):
    out = tmp_path / "store"
    st = prepare_store(scene, out, shard_rays=50, progress=False)
    assert store_status(out, scene, shard_rays=50) == "ok"
    st.shards[1].path.write_bytes(b"\x00" * 10)  # truncated shard
    assert store_status(out, scene, shard_rays=50) == "missing"
    (out / "manifest.json").unlink()
    assert store_status(out, scene, shard_rays=50) == "missing"


def test_stale_when_image_changes(scene, tmp_path):
    out = tmp_path / "store"
    ensure_store(scene, out, shard_rays=50, progress=False)
    built = (out / "manifest.json").stat().st_mtime_ns
    path = scene.images("train")[1].image_path
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(path)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10 ** 9))
    assert store_status(out, scene, shard_rays=50) == "stale"
    with pytest.raises(StoreStaleError):
        open_store(out, scene)
    st = ensure_store(scene, out, shard_rays=50, progress=False)
    assert (out / "manifest.json").stat().st_mtime_ns != built
    rec = all_records(st)
    assert (rec["rgb"][rec["image_index"] == 1] == 0).all()


def test_stale_when_camera_or_config_changes(scene, tmp_path):
    out = tmp_path / "store"
    ensure_store(scene, out, shard_rays=50, progress=False)
    r = scene.frames["val"][0]
    c2w = r.c2w.copy()
    c2w[0, 3] += 0.01
    moved = dataclasses.replace(scene, frames={"train": scene.frames["train"],
                                               "val": [dataclasses.replace(r, c2w=c2w)]
                                               + scene.frames["val"][1:]})
    assert store_status(out, moved, shard_rays=50) == "stale"
    assert store_status(out, scene, shard_rays=50) == "ok"
    assert store_status(out, scene, shard_rays=64) == "stale"
    assert store_status(out, scene, shard_rays=50, val_left_halves=True) == "stale"
    ensure_store(moved, out, shard_rays=50, progress=False)
    assert store_status(out, moved, shard_rays=50) == "ok"
    st = ensure_store(scene, out, shard_rays=50, force=True, progress=False)
    assert store_status(out, scene, shard_rays=50) == "ok" and st.n_records == 144


def test_partition_cells_stored(scene, tmp_path):
    part = make_partition(scene, (1, 2), margin=1.15)
    st = prepare_store(scene, tmp_path / "store", shard_rays=50, partition=part,
                       partition_samples=64, progress=False)
    assert st.partition is not None and st.partition.grid == (1, 2)
    cams = CameraTable.from_scene(scene)
    total = np.zeros(2, np.int64)
    for i in range(len(st.shards)):
        rec = np.asarray(st.load_records(i))
        bits = np.unpackbits(np.asarray(st.load_cells(i)), axis=1, count=2).astype(bool)
        o, d = cams.rays(torch.from_numpy(rec["image_index"].astype(np.int64)),
                         torch.from_numpy(rec["pixel_index"].astype(np.int64)))
        near, far = clip_to_box(o, d, scene.bbox)
        want = cell_membership(o, d, near, far, part, 64).numpy()
        assert (bits == want).all()
        assert st.shards[i].cell_counts == bits.sum(0).tolist()
        total += bits.sum(0)
    assert st.manifest["cell_counts"] == total.tolist()
    assert (total > 0).all() and bits.any(1).all()
    assert store_status(tmp_path / "store", scene, shard_rays=50) == "stale"  # no partition
