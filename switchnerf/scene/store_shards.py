"""One shard of a ray store prepared for streaming: the work of ``RayStream``'s workers.

A *unit* is what the stream yields from position ``pos`` of epoch ``e``'s shard order (see
``store_reader``): this rank's slice of the shard, restricted to a cell, permuted, decoded
into columns and (with ``rays_in_prefetch``) turned into rays. ``ShardSource.unit(e, pos)`` is a pure function
of ``(e, pos)``, so workers computing units in parallel deliver the same data in any number.

The work is numpy over whole arrays (ray generation in chunks of ``_CHUNK``): numpy releases
the GIL in these loops and starts no thread team, so workers run beside each other and beside
a consumer using torch. (Torch ops over more elements than its grain size would each start an
intra-op thread team, whose synchronisation on a busy machine can cost more than the op.)
"""

from __future__ import annotations

import numpy as np
import torch

from switchnerf.scene.cameras import CameraTable
from switchnerf.scene.rays import AX, AY, BX, BY, RX, RY, RZN, T
from switchnerf.scene.store import RayStore

_CHUNK = 8192  # rays generated per step: the working set stays in cache
_INV255 = np.float32(1.0 / 255.0)


def shard_order(seed: int, epoch: int, n_shards: int) -> np.ndarray:
    """Shard visiting order of an epoch: int64 [S]."""
    return np.random.default_rng([seed, epoch]).permutation(n_shards)


class RayTable:
    """The numpy twin of ``rays.packed_rays`` (``CameraTable.rays``), on the camera table's
    own packed constants (float32 [K, 16], ``rays.pack_cameras``); rays equal the camera
    table's up to float32 rounding."""

    def __init__(self, cams: CameraTable):
        self.table = cams.packed.detach().cpu().numpy()  # float32 [K, 16]
        self.width = cams.width.cpu().numpy().astype(np.int32)  # records hold int32 pixels
        self.near = cams.near.cpu().numpy().astype(np.float32)
        self.far = cams.far.cpu().numpy().astype(np.float32)

    def rays_into(self, img: np.ndarray, pix: np.ndarray, origins: np.ndarray,
                  directions: np.ndarray) -> None:
        """Write the rays of pixels (global image index, row-major pixel index: int [n])
        into origins and unit directions, float32 [n, 3]. Works one component at a time
        on 1-D arrays (numpy's fast loops), as ``rays.packed_rays`` does per ray."""
        cam = self.table.take(img, axis=0)  # [n, 16]
        row, col = np.divmod(pix, self.width.take(img))
        x = col.astype(np.float32)
        x *= cam[:, AX]
        x += cam[:, BX]
        y = row.astype(np.float32)
        y *= cam[:, AY]
        y += cam[:, BY]
        d = []
        for j in range(3):  # RZN + RX * x + RY * y
            t = cam[:, RX.start + j] * x
            t += cam[:, RZN.start + j]
            t += cam[:, RY.start + j] * y
            d.append(t)
        inv = d[0] * d[0]
        inv += d[1] * d[1]
        inv += d[2] * d[2]
        np.sqrt(inv, out=inv)
        np.divide(1.0, inv, out=inv)
        for j in range(3):
            np.multiply(d[j], inv, out=directions[:, j])
        origins[:] = cam[:, T]


class ShardSource:
    """Everything a worker needs to prepare units (no reference to the stream, so the
    stream can be garbage-collected while workers run).

    rays_in_prefetch: units hold rays and their near and far bounds (else pixel indices
    for the consumer).
    """

    def __init__(self, store: RayStore, cams: CameraTable, *, seed: int, rank: int,
                 world_size: int, cell: int | None, rays_in_prefetch: bool):
        self.store, self.seed = store, seed
        self.rank, self.world_size, self.cell = rank, world_size, cell
        self.rays_in_prefetch = rays_in_prefetch
        self.table = RayTable(cams)

    def unit(self, epoch: int, pos: int) -> dict[str, torch.Tensor]:
        """The prepared records of position ``pos`` of ``epoch``'s shard order (CPU tensors):
        image_index int64 [n], and either pixel_index int64 [n] + rgb uint8 [n, 3], or
        origins, directions float32 [n, 3], rgb float32 [n, 3], near, far float32 [n]."""
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
        # 12-byte records as int32 triples (image, pixel, rgb + pad byte), gathered in order
        rec = np.take(mm[a:b].view(np.int32).reshape(-1, 3), perm, axis=0)  # [m, 3]
        img = rec[:, 0].astype(np.int64)
        pix = rec[:, 1]
        rgb = rec.view(np.uint8).reshape(-1, 12)[:, 8:11]  # [m, 3] (drop the pad)
        m = img.shape[0]
        out = {"image_index": img}
        if not self.rays_in_prefetch:
            out["pixel_index"] = pix.astype(np.int64)
            out["rgb"] = np.ascontiguousarray(rgb)
            return {k: torch.from_numpy(v) for k, v in out.items()}
        origins = out["origins"] = np.empty((m, 3), dtype=np.float32)
        dirs = out["directions"] = np.empty((m, 3), dtype=np.float32)
        for c in range(0, m, _CHUNK):
            sl = slice(c, c + _CHUNK)
            self.table.rays_into(img[sl], pix[sl], origins[sl], dirs[sl])
        out["rgb"] = np.multiply(rgb, _INV255, dtype=np.float32)
        out["near"], out["far"] = self.table.near.take(img), self.table.far.take(img)
        return {k: torch.from_numpy(v) for k, v in out.items()}
