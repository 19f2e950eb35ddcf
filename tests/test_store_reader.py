"""RayStream: coverage per epoch, determinism, exact resume, rank and cell views, thread."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest
import torch
from test_store_scene import make_scene

from switchnerf.scene.cameras import CameraTable
from switchnerf.scene.partition import make_partition
from switchnerf.scene.store import prepare_store
from switchnerf.scene.store_reader import THREAD_NAME, RayStream
from switchnerf.scene.store_shards import RayTable


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("reader")
    scene = make_scene(root / "scene", n_train=4, width=10, height=7)  # 280 train records
    part = make_partition(scene, (1, 2))
    store = prepare_store(scene, root / "store", shard_rays=37, val_left_halves=True,
                          partition=part, partition_samples=32, progress=False)
    return scene, store, CameraTable.from_scene(scene)


def keys(batches) -> list[tuple[int, int]]:
    """(image index, rgb as int) of every ray, enough to tell records apart here."""
    out = []
    for b in batches:
        rgb = (b.rgb * 255).round().to(torch.int64)
        code = rgb[:, 0] * 65536 + rgb[:, 1] * 256 + rgb[:, 2]
        d = (b.directions * 1e4).round().to(torch.int64)
        out += list(zip(b.image_index.tolist(), code.tolist(), d[:, 0].tolist(), d[:, 1].tolist()))
    return out


def store_keys(store, cams, cell=None) -> list:
    out = []
    for i in range(len(store.shards)):
        rec = np.asarray(store.load_records(i))
        if cell is not None:
            bits = np.unpackbits(np.asarray(store.load_cells(i)), axis=1, count=2)
            rec = rec[bits[:, cell].astype(bool)]
        img = torch.from_numpy(rec["image_index"].astype(np.int64))
        _, d = cams.rays(img, torch.from_numpy(rec["pixel_index"].astype(np.int64)))
        rgb = rec["rgb"].astype(np.int64)
        code = rgb[:, 0] * 65536 + rgb[:, 1] * 256 + rgb[:, 2]
        d = (d * 1e4).round().to(torch.int64)
        out += list(zip(img.tolist(), code.tolist(), d[:, 0].tolist(), d[:, 1].tolist()))
    return out


def test_one_epoch_yields_every_record_once(built):
    _, store, cams = built
    with RayStream(store, cams, batch_size=50, loop=False) as s:
        batches = list(s)
    assert [len(b) for b in batches[:-1]] == [50] * (len(batches) - 1)
    assert sum(len(b) for b in batches) == store.n_records == 280 + 2 * 35 == s.records_per_epoch
    assert sorted(keys(batches)) == sorted(store_keys(store, cams))
    b = batches[0]
    assert b.origins.dtype == b.rgb.dtype == b.near.dtype == torch.float32
    assert b.image_index.dtype == torch.int64
    torch.testing.assert_close(b.near, cams.near[b.image_index])
    torch.testing.assert_close(b.directions.norm(dim=-1), torch.ones(len(b)))
    torch.testing.assert_close(b.origins, cams.c2w[b.image_index, :3, 3])


def test_rays_on_consumer_side_match(built):
    _, store, cams = built
    with RayStream(store, cams, batch_size=64, loop=False) as a, \
            RayStream(store, cams, batch_size=64, loop=False, rays_in_prefetch=False) as b:
        for x, y in zip(a, b):
            torch.testing.assert_close(x.directions, y.directions)
            torch.testing.assert_close(x.rgb, y.rgb)
            assert torch.equal(x.image_index, y.image_index)
            assert torch.equal(x.near, y.near) and torch.equal(x.far, y.far)


def test_deterministic_and_reshuffled_per_epoch(built):
    _, store, cams = built
    n = store.n_records

    def take(seed, count):
        with RayStream(store, cams, batch_size=n, seed=seed) as s:
            return [keys([next(s)]) for _ in range(count)]

    e0, e1 = take(0, 2)
    assert take(0, 2) == [e0, e1]
    assert sorted(e0) == sorted(e1) and e0 != e1  # a new order each epoch
    assert take(1, 1)[0] != e0


def test_exact_resume(built):
    _, store, cams = built
    s = RayStream(store, cams, batch_size=29, seed=3)
    for _ in range(17):  # across shard and epoch boundaries
        next(s)
    state = s.state_dict()
    want = [next(s) for _ in range(20)]
    s.close()
    r = RayStream(store, cams, batch_size=29, seed=3)
    r.load_state_dict(state)
    got = [next(r) for _ in range(20)]
    r.close()
    assert keys(got) == keys(want)
    with pytest.raises(ValueError, match="seed"):
        RayStream(store, cams, batch_size=29, seed=4).load_state_dict(state)


def test_rank_views_disjoint_and_covering(built):
    _, store, cams = built
    views = []
    for rank in range(3):
        with RayStream(store, cams, batch_size=40, rank=rank, world_size=3, loop=False) as s:
            views.append(keys(list(s)))
    sizes = [len(v) for v in views]
    assert sizes == [RayStream(store, cams, batch_size=1, rank=r, world_size=3).records_per_epoch
                     for r in range(3)]
    assert max(sizes) - min(sizes) <= len(store.shards)
    flat = [k for v in views for k in v]
    assert len(flat) == len(set(flat)) == store.n_records
    assert sorted(flat) == sorted(store_keys(store, cams))


def test_cell_view(built):
    _, store, cams = built
    for cell in (0, 1):
        with RayStream(store, cams, batch_size=33, cell=cell, loop=False) as s:
            got = keys(list(s))
        assert len(got) == store.manifest["cell_counts"][cell] == s.records_per_epoch
        assert sorted(got) == sorted(store_keys(store, cams, cell))
    with pytest.raises(ValueError):
        RayStream(store, cams, batch_size=8, cell=2)


def _stream_threads() -> list:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)]


@pytest.mark.parametrize("workers", [1, 3])
def test_thread_stops_on_close_and_gc(built, workers):
    _, store, cams = built
    s = RayStream(store, cams, batch_size=8, prefetch=1, workers=workers)
    next(s)
    assert _stream_threads()
    s.close()
    assert not _stream_threads()
    s = RayStream(store, cams, batch_size=8, prefetch=1, workers=workers)
    next(s)
    del s
    gc.collect()
    for t in _stream_threads():
        t.join(timeout=2)
    assert not _stream_threads()


@pytest.mark.parametrize("view", [{}, {"cell": 1}, {"rank": 1, "world_size": 2}])
def test_order_independent_of_workers(built, view):
    """Shards prepared in parallel are delivered in the one deterministic order."""
    _, store, cams = built

    def run(workers, prefetch):
        with RayStream(store, cams, batch_size=23, seed=5, workers=workers,
                       prefetch=prefetch, **view) as s:
            unit = s._src.unit

            def uneven(epoch, pos):  # later shards often finish first
                time.sleep(0.01 * (pos % 3 == 0))
                return unit(epoch, pos)

            s._src.unit = uneven
            return [next(s) for _ in range(40)]  # several epochs of the view

    want = run(1, 2)
    for workers, prefetch in ((2, 2), (3, 1), (4, 6)):
        got = run(workers, prefetch)
        for a, b in zip(want, got, strict=True):
            for k in ("origins", "directions", "near", "far", "rgb", "image_index"):
                assert torch.equal(getattr(a, k), getattr(b, k)), (workers, prefetch, k)


def test_resume_with_other_worker_count(built):
    _, store, cams = built
    with RayStream(store, cams, batch_size=31, seed=2, workers=1) as s:
        for _ in range(13):
            next(s)
        state = s.state_dict()
        want = keys([next(s) for _ in range(15)])
    with RayStream(store, cams, batch_size=31, seed=2, workers=2) as r:
        r.load_state_dict(state)
        assert keys([next(r) for _ in range(15)]) == want


def test_worker_failure_raised_in_consumer(built, monkeypatch):
    _, store, cams = built
    s = RayStream(store, cams, batch_size=8, workers=2)

    def broken(epoch, pos):
        raise OSError(f"shard {pos} unreadable")

    monkeypatch.setattr(s._src, "unit", broken)
    with pytest.raises(OSError, match="unreadable"):
        next(s)
    with pytest.raises(StopIteration):
        next(s)
    s.close()
    assert not _stream_threads()


def test_ray_table_equals_camera_table(built):
    _, store, cams = built
    rec = np.asarray(store.load_records(0))
    img, pix = rec["image_index"], rec["pixel_index"]
    o = np.empty((len(rec), 3), np.float32)
    d = np.empty_like(o)
    RayTable(cams).rays_into(img.astype(np.int64), pix, o, d)
    o_ref, d_ref = cams.rays(torch.from_numpy(img.astype(np.int64)),
                             torch.from_numpy(pix.astype(np.int64)))
    assert torch.equal(torch.from_numpy(o), o_ref)
    torch.testing.assert_close(torch.from_numpy(d), d_ref, rtol=0, atol=1e-6)
