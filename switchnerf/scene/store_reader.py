"""Streaming reader of a ray store: shuffled ``RayBatch``es with a prefetch thread.

Order of an epoch e (deterministic from ``seed``): the shards in the order
``default_rng([seed, e]).permutation(S)``; within shard s, this rank's contiguous slice
``[n * rank // world_size, n * (rank + 1) // world_size)`` of its (already shuffled) records,
restricted to the records of ``cell`` when given, permuted by ``default_rng([seed, e, s])``.
Rank views are therefore disjoint and together cover every record once per epoch.

A background thread loads and prepares the next shards (memory-mapped read, slicing,
filtering, permutation, and on CPU the ray generation) into a bounded queue while the
current one is consumed. Memory: ``prefetch + 1`` prepared shards.
"""

from __future__ import annotations

import contextlib

import queue
import threading
from collections.abc import Callable

import numpy as np
import torch

from switchnerf.scene.cameras import CameraTable
from switchnerf.scene.store import RayStore
from switchnerf.scene.types import RayBatch

NearFarFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
_END = object()  # end of the data (loop=False)
_CHUNK = 8192  # rays prepared per step in the prefetch thread


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def shard_order(seed: int, epoch: int, n_shards: int) -> np.ndarray:
    """Shard visiting order of an epoch: int64 [S]."""
    return np.random.default_rng([seed, epoch]).permutation(n_shards)


class _Source:
    """Everything the prefetch thread needs (no reference to the stream, so it can be
    garbage-collected while the thread runs)."""

    def __init__(self, store, cams, seed, rank, world_size, cell, rays_in_prefetch):
        self.store, self.cams, self.seed = store, cams, seed
        self.rank, self.world_size, self.cell = rank, world_size, cell
        self.rays_in_prefetch = rays_in_prefetch

    def unit(self, epoch: int, pos: int) -> dict[str, torch.Tensor]:
        """The prepared records of position ``pos`` of ``epoch``'s shard order (CPU tensors):
        image_index int64 [n], and either pixel_index int64 [n] + rgb uint8 [n, 3], or
        origins, directions float32 [n, 3], rgb float32 [n, 3]."""
        s = int(shard_order(self.seed, epoch, len(self.store.shards))[pos])
        mm = self.store.load_records(s)  # memory-mapped RECORD_DTYPE [n]
        n = mm.shape[0]
        a, b = n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size
        rng = np.random.default_rng([self.seed, epoch, s])
        if self.cell is not None:
            bits = np.asarray(self.store.load_cells(s)[a:b, self.cell // 8])
            keep = np.flatnonzero(bits & np.uint8(0x80 >> (self.cell % 8)))
            perm = keep[rng.permutation(keep.shape[0])]
        else:
            perm = rng.permutation(b - a)
        # 12-byte records viewed as int32 triples (image, pixel, rgb + pad byte)
        raw = torch.from_numpy(np.array(mm[a:b]).view(np.int32).reshape(-1, 3))  # [m, 3]
        perm_t = torch.from_numpy(perm)
        m = perm.shape[0]
        img = torch.empty(m, dtype=torch.int64)
        if self.rays_in_prefetch:
            out = {"image_index": img, "origins": torch.empty(m, 3),
                   "directions": torch.empty(m, 3), "rgb": torch.empty(m, 3)}
        else:
            out = {"image_index": img, "pixel_index": torch.empty(m, dtype=torch.int64),
                   "rgb": torch.empty(m, 3, dtype=torch.uint8)}
        # Small chunks keep every op under torch's parallel grain size: this thread then
        # never starts an intra-op thread team competing with the consumer's.
        for c in range(0, m, _CHUNK):
            rec = raw.index_select(0, perm_t[c:c + _CHUNK])  # [c, 3] int32
            i = rec[:, 0].to(torch.int64)
            pix = rec[:, 1].to(torch.int64)
            rgb = rec[:, 2:3].contiguous().view(torch.uint8)[:, :3]  # [c, 3] (drop the pad)
            img[c:c + _CHUNK] = i
            if not self.rays_in_prefetch:
                out["pixel_index"][c:c + _CHUNK] = pix
                out["rgb"][c:c + _CHUNK] = rgb
                continue
            out["origins"][c:c + _CHUNK], out["directions"][c:c + _CHUNK] = self.cams.rays(i, pix)
            torch.mul(rgb, 1.0 / 255.0, out=out["rgb"][c:c + _CHUNK])
        return out


def _produce(src: _Source, start_epoch: int, start_pos: int, loop: bool,
             q: queue.Queue, stop: threading.Event) -> None:
    """Thread body: put (epoch, pos, unit) for every position from the start on ``q``."""

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    try:
        epoch, pos, n_shards = start_epoch, start_pos, len(src.store.shards)
        while not stop.is_set():
            if pos >= n_shards:
                if not loop:
                    put(_END)
                    return
                epoch, pos = epoch + 1, 0
                continue
            if not put((epoch, pos, src.unit(epoch, pos))):
                return
            pos += 1
    except BaseException as e:  # handed to the consumer, raised there
        put(_Failure(e))


class RayStream:
    """Iterate shuffled training rays of a store as ``RayBatch``es on ``device``.

    batch_size: rays per batch (with ``loop=False`` the last batch of the epoch may be
    shorter; with ``loop=True`` batches run on across epochs, always full). cell: only rays
    whose cell bit is set (store built with a partition). rank, world_size: this process's
    share (see module docstring). near_far_fn(origins, directions, image_index) -> near, far
    float32 [N]; default: the camera table's per-image near/far. Batch tensors: origins,
    directions, rgb float32 [N, 3] (rgb in [0, 1]), near, far float32 [N], image_index
    int64 [N] (global image index). Use as a context manager or call ``close()``.
    """

    def __init__(self, store: RayStore, camera_table: CameraTable, *, batch_size: int,
                 device="cpu", cell: int | None = None, rank: int = 0, world_size: int = 1,
                 seed: int = 0, loop: bool = True, near_far_fn: NearFarFn | None = None,
                 prefetch: int = 2, rays_in_prefetch: bool | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        if cell is not None:
            if store.partition is None:
                raise ValueError(f"{store.root}: store has no partition; cannot select a cell")
            if not 0 <= cell < store.partition.n_cells:
                raise ValueError(f"cell {cell} is not in [0, {store.partition.n_cells})")
        per_rank = sum(sh.n * (rank + 1) // world_size - sh.n * rank // world_size
                       for sh in store.shards)
        if per_rank == 0 or (cell is not None and not store.manifest["cell_counts"][cell]):
            raise ValueError(f"{store.root}: no records for rank {rank}/{world_size}"
                             + (f", cell {cell}" if cell is not None else ""))
        self.store, self.batch_size, self.loop = store, int(batch_size), loop
        self.device = torch.device(device)
        self.cell, self.rank, self.world_size, self.seed = cell, rank, world_size, seed
        self.near_far_fn = near_far_fn
        self.prefetch = max(1, int(prefetch))
        if rays_in_prefetch is None:
            rays_in_prefetch = self.device.type == "cpu"
        self._src = _Source(store, camera_table, seed, rank, world_size, cell, rays_in_prefetch)
        self._cams_dev = None if rays_in_prefetch else camera_table.to(self.device)
        self._pos = (0, 0, 0)  # (epoch, shard position, offset) of the next record
        self._thread = None
        self._queue = None
        self._stop = None
        self._unit = None  # (epoch, pos, unit, length)
        self._done = False

    @property
    def records_per_epoch(self) -> int | None:
        """Records this view yields per epoch (None when a cell view is split across ranks:
        only known by reading the shards)."""
        if self.cell is None:
            return sum(sh.n * (self.rank + 1) // self.world_size
                       - sh.n * self.rank // self.world_size for sh in self.store.shards)
        if self.world_size == 1:
            return int(self.store.manifest["cell_counts"][self.cell])
        return None

    # position -----------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return self._pos[0]

    def state_dict(self) -> dict:
        """Exact position of the next record: epoch, shard position in the epoch's order,
        offset in that shard's prepared records; plus the view it is valid for."""
        epoch, pos, off = self._pos
        return {"epoch": epoch, "shard": pos, "offset": off, "seed": self.seed,
                "rank": self.rank, "world_size": self.world_size, "cell": self.cell,
                "n_shards": len(self.store.shards),
                "fingerprint": self.store.manifest["fingerprint"]}

    def load_state_dict(self, state: dict) -> None:
        """Resume at ``state`` (from ``state_dict`` of a stream over the same view)."""
        for key, mine in (("seed", self.seed), ("rank", self.rank),
                          ("world_size", self.world_size), ("cell", self.cell),
                          ("n_shards", len(self.store.shards)),
                          ("fingerprint", self.store.manifest["fingerprint"])):
            if state.get(key) != mine:
                raise ValueError(f"stream state is for {key}={state.get(key)!r}, "
                                 f"this stream has {mine!r}")
        self._stop_thread()
        self._pos = (int(state["epoch"]), int(state["shard"]), int(state["offset"]))
        self._unit, self._done = None, False

    # iteration ----------------------------------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self) -> RayBatch:
        if self._done:
            raise StopIteration
        parts, need = [], self.batch_size
        while need > 0:
            if self._unit is None and not self._next_unit():
                break
            epoch, pos, unit, length = self._unit
            off = self._pos[2]
            take = min(need, length - off)
            parts.append({k: v[off:off + take] for k, v in unit.items()})
            need -= take
            if off + take >= length:
                self._unit = None
                self._pos = (epoch, pos + 1, 0)
            else:
                self._pos = (epoch, pos, off + take)
        if not parts:
            self._done = True
            raise StopIteration
        cols = parts[0] if len(parts) == 1 else {k: torch.cat([p[k] for p in parts])
                                                 for k in parts[0]}
        return self._batch(cols)

    def _next_unit(self) -> bool:
        """Take the next non-empty prepared shard from the queue; False at the end."""
        if self._thread is None:
            self._start_thread()
        while True:
            item = self._queue.get()
            if item is _END:
                self._done = True
                return False
            if isinstance(item, _Failure):
                self._done = True
                raise item.exc
            epoch, pos, unit = item
            length = unit["image_index"].shape[0]
            self._pos = (epoch, pos, self._pos[2] if (epoch, pos) == self._pos[:2] else 0)
            if self._pos[2] < length:
                self._unit = (epoch, pos, unit, length)
                return True
            self._pos = (epoch, pos + 1, 0)

    def _batch(self, cols: dict[str, torch.Tensor]) -> RayBatch:
        dev = self.device
        img = cols["image_index"].to(dev, non_blocking=True)
        if "origins" in cols:
            origins = cols["origins"].to(dev, non_blocking=True)
            dirs = cols["directions"].to(dev, non_blocking=True)
            rgb = cols["rgb"].to(dev, non_blocking=True)
            if self.near_far_fn is None:
                near, far = self._src.cams.near[img], self._src.cams.far[img]
        else:
            pix = cols["pixel_index"].to(dev, non_blocking=True)
            origins, dirs = self._cams_dev.rays(img, pix)
            rgb = cols["rgb"].to(dev, non_blocking=True).to(torch.float32) / 255.0
            if self.near_far_fn is None:
                near, far = self._cams_dev.near[img], self._cams_dev.far[img]
        if self.near_far_fn is not None:
            near, far = self.near_far_fn(origins, dirs, img)
        return RayBatch(origins=origins, directions=dirs, near=near, far=far, rgb=rgb,
                        image_index=img)

    # thread -------------------------------------------------------------------------------
    def _start_thread(self) -> None:
        self._queue = queue.Queue(maxsize=self.prefetch)
        self._stop = threading.Event()
        epoch, pos, _ = self._pos
        self._thread = threading.Thread(
            target=_produce, args=(self._src, epoch, pos, self.loop, self._queue, self._stop),
            name="switchnerf-raystream", daemon=True)
        self._thread.start()

    def _stop_thread(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):  # drain so a blocked producer can exit
                self._queue.get_nowait()
            self._thread.join(timeout=0.05)
        self._thread = self._queue = self._stop = None

    def close(self) -> None:
        """Stop the prefetch thread; the stream can no longer be iterated."""
        self._stop_thread()
        self._unit, self._done = None, True

    def __enter__(self) -> RayStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: nothing left to stop
            self._stop_thread()
