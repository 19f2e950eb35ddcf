"""Streaming reader of a ray store: shuffled ``RayBatch``es prepared by prefetch workers.

Order of an epoch e (deterministic from ``seed``): the shards in the order
``default_rng([seed, e]).permutation(S)``; within shard s, this rank's contiguous slice
``[n * rank // world_size, n * (rank + 1) // world_size)`` of its (already shuffled) records,
restricted to the records of ``cell`` when given, permuted by ``default_rng([seed, e, s])``.
Rank views are therefore disjoint and together cover every record once per epoch.

Background workers (threads) load and prepare the next shards (``store_shards``:
memory-mapped read, slicing, filtering, permutation, and the ray generation) while the
current one is consumed. With several workers, shards are prepared in parallel and delivered
in the order above: the batches do not depend on the number of workers. Memory:
``max(prefetch, workers) + 1`` prepared shards.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Self

import torch

from switchnerf.scene.cameras import CameraTable
from switchnerf.scene.store import RayStore
from switchnerf.scene.store_shards import ShardSource, shard_order
from switchnerf.scene.types import RayBatch

__all__ = ["DEFAULT_WORKERS", "RayStream", "shard_order"]

THREAD_NAME = "switchnerf-raystream"  # prefix of the workers' thread names
DEFAULT_WORKERS = 2  # they only work while fewer than max(prefetch, workers) shards wait


class RayStream:
    """Iterate shuffled training rays of a store as CPU ``RayBatch``es.

    batch_size: rays per batch (with ``loop=False`` the last batch of the epoch may be
    shorter; with ``loop=True`` batches run on across epochs, always full). cell: only rays
    whose cell bit is set (store built with a partition). rank, world_size: this process's
    share (see module docstring). Batch tensors: origins, directions, rgb float32 [N, 3]
    (rgb in [0, 1]), near, far float32 [N] (the camera table's per-image bounds),
    image_index int64 [N] (global image index). prefetch: prepared shards queued ahead;
    workers: threads preparing shards in parallel (same batches whatever their number).
    rays_in_prefetch: generate rays in the workers (default) rather than per batch in the
    consuming thread. Use as a context manager or call ``close()``.
    """

    def __init__(self, store: RayStore, camera_table: CameraTable, *, batch_size: int,
                 cell: int | None = None, rank: int = 0, world_size: int = 1,
                 seed: int = 0, loop: bool = True, prefetch: int = 2,
                 workers: int = DEFAULT_WORKERS, rays_in_prefetch: bool = True):
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
        self.cell, self.rank, self.world_size, self.seed = cell, rank, world_size, seed
        self.prefetch = max(1, int(prefetch))
        self.workers = max(1, int(workers))
        self._src = ShardSource(store, camera_table, seed=seed, rank=rank,
                                world_size=world_size, cell=cell,
                                rays_in_prefetch=rays_in_prefetch)
        self._cams = camera_table
        self._pos = (0, 0, 0)  # (epoch, shard position, offset) of the next record
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[tuple[int, int, Future]] = deque()  # in delivery order
        self._submit_at: tuple[int, int] | None = None  # next (epoch, pos) to submit; None: end
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
        """Resume at ``state`` (from ``state_dict`` of a stream over the same view).

        A state saved on a store of other content (another fingerprint or shard count: the
        images or cameras changed and the store was rebuilt) names no position in this one:
        the stream restarts at the first shard of the state's epoch, and a one-line warning
        naming the store says so. Another seed, rank, world size or cell is a ValueError.
        """
        for key, mine in (("seed", self.seed), ("rank", self.rank),
                          ("world_size", self.world_size), ("cell", self.cell)):
            if state.get(key) != mine:
                raise ValueError(f"stream state is for {key}={state.get(key)!r}, "
                                 f"this stream has {mine!r}")
        manifest = self.store.manifest
        names = {manifest["fingerprint"], manifest.get("fingerprint_rule_1")} - {None}
        same_store = (state.get("n_shards") == len(self.store.shards)
                      and state.get("fingerprint") in names)
        self._stop_workers()
        if same_store:
            self._pos = (int(state["epoch"]), int(state["shard"]), int(state["offset"]))
        else:
            self._pos = (int(state["epoch"]), 0, 0)
            warnings.warn(f"{self.store.root}: ray store holds other rays than when the "
                          "checkpoint was saved (images or cameras changed and it was "
                          f"rebuilt); the ray stream position was reset to the start of epoch "
                          f"{self._pos[0]}", UserWarning, stacklevel=2)
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
        """Take the next non-empty prepared shard, in order; False at the end."""
        if self._pool is None:
            self._start_workers()
        while True:
            if not self._pending:
                self._done = True
                return False
            epoch, pos, fut = self._pending.popleft()
            self._submit()  # keep the workers busy while this one is awaited and consumed
            try:
                unit = fut.result()
            except BaseException:
                self._done = True
                self._stop_workers()
                raise
            length = unit["image_index"].shape[0]
            self._pos = (epoch, pos, self._pos[2] if (epoch, pos) == self._pos[:2] else 0)
            if self._pos[2] < length:
                self._unit = (epoch, pos, unit, length)
                return True
            self._pos = (epoch, pos + 1, 0)

    def _batch(self, cols: dict[str, torch.Tensor]) -> RayBatch:
        img = cols["image_index"]
        if "origins" in cols:
            origins, dirs, rgb = cols["origins"], cols["directions"], cols["rgb"]
            near, far = cols["near"], cols["far"]
        else:
            origins, dirs = self._cams.rays(img, cols["pixel_index"])
            rgb = cols["rgb"].to(torch.float32) / 255.0
            near, far = self._cams.near[img], self._cams.far[img]
        return RayBatch(origins=origins, directions=dirs, near=near, far=far, rgb=rgb,
                        image_index=img)

    # workers ------------------------------------------------------------------------------
    def _start_workers(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=THREAD_NAME)
        self._submit_at = self._pos[:2]
        self._submit()

    def _submit(self) -> None:
        """Queue shard preparations, in delivery order, up to max(prefetch, workers)."""
        n_shards = len(self.store.shards)
        while self._submit_at is not None and \
                len(self._pending) < max(self.prefetch, self.workers):
            epoch, pos = self._submit_at
            if pos >= n_shards:
                self._submit_at = (epoch + 1, 0) if self.loop else None
                continue
            self._pending.append((epoch, pos, self._pool.submit(self._src.unit, epoch, pos)))
            self._submit_at = (epoch, pos + 1)

    def _stop_workers(self) -> None:
        """Cancel queued preparations and wait for running ones (at most one shard each)."""
        if self._pool is None:
            return
        for *_, fut in self._pending:
            fut.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool, self._submit_at = None, None

    def close(self) -> None:
        """Stop the workers; the stream can no longer be iterated."""
        self._stop_workers()
        self._unit, self._done = None, True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: nothing left to stop
            self._stop_workers()
