"""The ray store: every training pixel of a scene, globally shuffled into shards on disk.

Layout of a store folder::

    manifest.json              written last, atomically; without it the store does not exist
    shards/shard_00000.npy     RECORD_DTYPE [n]: (image_index, pixel_index, rgb)
    shards/shard_00000.cells.npy   uint8 [n, ceil(C/8)] packed cell bits (with a partition)

``image_index`` is the global index of ``CameraTable`` (train images, then val);
``pixel_index = row * W + col``. With ``val_left_halves`` the left columns ``[0, W//2)`` of
every val image are stored too (the Mega-NeRF eval protocol trains on them).

Writing is a two-pass external shuffle with memory bounded by one image and one shard:
pass 1 streams images one at a time and scatters each pixel to a random bucket file (the
number of pixels each bucket takes from each image is drawn from a multivariate
hypergeometric over the buckets' remaining room, so the result is a uniform random
permutation cut into equal shards); pass 2 loads one bucket at a time, shuffles it in memory
and writes it as a shard. A store is built in a sibling temp folder and swapped in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from switchnerf.errors import SwitchNerfError, input_error
from switchnerf.io_utils import write_json_atomic
from switchnerf.scene.cameras import CameraTable
from switchnerf.scene.fingerprint import FINGERPRINT_RULE, fingerprint_rule_1, scene_fingerprint
from switchnerf.scene.partition import (
    DEFAULT_SAMPLES,
    Partition,
    cell_counts,
    cell_membership,
    clip_to_box,
)
from switchnerf.scene.types import SPLITS, Scene

STORE_FORMAT = "switchnerf-ray-store"
STORE_VERSION = 1
MANIFEST = "manifest.json"
# 12-byte records: int32 image index, int32 row-major pixel index, uint8 rgb, one pad byte.
RECORD_DTYPE = np.dtype({"names": ["image_index", "pixel_index", "rgb"],
                         "formats": ["<i4", "<i4", ("u1", (3,))],
                         "offsets": [0, 4, 8], "itemsize": 12})


class StoreMissingError(SwitchNerfError):
    """No complete store at the path (absent, or a build that never finished)."""


class StoreStaleError(SwitchNerfError):
    """A complete store built from other inputs or with another configuration."""


@dataclass
class ShardInfo:
    """One shard: records file, record count, optional cell-bits file and per-cell counts."""

    path: Path
    n: int
    cells_path: Path | None = None
    cell_counts: list[int] | None = None


@dataclass
class RayStore:
    """A complete store on disk (see the module docstring). Open it with ``open_store``."""

    root: Path
    manifest: dict
    shards: list[ShardInfo]
    partition: Partition | None

    @property
    def n_records(self) -> int:
        return int(self.manifest["n_records"])

    def load_records(self, i: int) -> np.ndarray:
        """Shard ``i`` memory-mapped read-only: RECORD_DTYPE [n]."""
        return np.load(self.shards[i].path, mmap_mode="r")

    def load_cells(self, i: int) -> np.ndarray:
        """Packed cell bits of shard ``i`` memory-mapped: uint8 [n, ceil(C/8)]."""
        if self.shards[i].cells_path is None:
            raise SwitchNerfError(f"{self.root}: store has no partition cells")
        return np.load(self.shards[i].cells_path, mmap_mode="r")


@dataclass(frozen=True, eq=False)
class StoreOptions:
    """What defines a ray store: a store built with other options is stale.

    shard_rays: records per shard at most; seed: the shuffle's seed; val_left_halves: also
    store the left half of every val image; partition: when given, each record's cell
    membership (``cell_membership`` with ``partition_samples`` samples between the ray's
    entry into and exit from ``scene.bbox``) is stored as packed bits. A training run
    derives its options from its config (``switchnerf.train.ray_store``), and so does
    ``switchnerf scene prepare``.
    """

    shard_rays: int = 1 << 20
    seed: int = 0
    val_left_halves: bool = False
    partition: Partition | None = None
    partition_samples: int = DEFAULT_SAMPLES

    def __post_init__(self) -> None:
        if self.shard_rays < 1:
            raise SwitchNerfError(f"store: shard_rays: must be >= 1, got {self.shard_rays}")
        if self.seed < 0:
            raise SwitchNerfError(f"store: seed: must be >= 0, got {self.seed}")
        if self.partition_samples < 1:
            raise SwitchNerfError(
                f"store: partition_samples: must be >= 1, got {self.partition_samples}")

    def manifest_config(self, scene: Scene) -> dict:
        """The configuration part of the manifest; a store is stale when it differs."""
        cfg = {"shard_rays": int(self.shard_rays), "seed": int(self.seed),
               "val_left_halves": bool(self.val_left_halves), "partition": None}
        if self.partition is not None:
            cfg["partition"] = self.partition.to_dict()
            cfg["partition_samples"] = int(self.partition_samples)
            cfg["partition_clip_box"] = np.asarray(scene.bbox, dtype=np.float64).tolist()
        return cfg


def store_options(options: StoreOptions | None = None, **fields) -> StoreOptions:
    """``options`` (default: ``StoreOptions()``) with the given fields replaced."""
    base = StoreOptions() if options is None else options
    return dataclasses.replace(base, **fields) if fields else base


def default_store_dir(scene: Scene) -> Path:
    """Where a scene's ray store lives unless told otherwise: ``<root>/.switchnerf/store``,
    inside the dataset folder, so it moves and copies with the dataset and is found there."""
    return Path(scene.root) / ".switchnerf" / "store"


def _manifest_for_scene(manifest: dict, scene: Scene) -> dict | None:
    """``manifest`` when its store was built from the scene's current content, else None.

    A store of fingerprint rule 1 (no ``fingerprint_rule`` key) is kept while its dataset
    has not moved or been touched (its rule-1 fingerprint still matches): the manifest is
    returned, in memory only, with the current fingerprint and the old one as
    ``fingerprint_rule_1`` (stream positions saved on that store name the old one)."""
    current = scene_fingerprint(scene)
    rule = manifest.get("fingerprint_rule")
    if rule == FINGERPRINT_RULE:
        return manifest if manifest["fingerprint"] == current else None
    if rule is None and manifest["fingerprint"] == fingerprint_rule_1(scene):
        return {**manifest, "fingerprint": current, "fingerprint_rule": FINGERPRINT_RULE,
                "fingerprint_rule_1": manifest["fingerprint"]}
    return None


def _image_plan(scene: Scene, val_left_halves: bool) -> list[tuple[str, int, int, int]]:
    """(split, local index, global index, stored columns) for every image that gives rays."""
    plan, k = [], 0
    for split in SPLITS:
        for i, r in enumerate(scene.frames.get(split, [])):
            if split == "train":
                plan.append((split, i, k, r.width))
            elif val_left_halves and r.width // 2 > 0:
                plan.append((split, i, k, r.width // 2))
            k += 1
    return plan


def shard_sizes(n_total: int, shard_rays: int) -> np.ndarray:
    """Sizes of the shards of ``n_total`` records: int64 [S], each <= shard_rays, equal +-1."""
    n_shards = max(1, math.ceil(n_total / shard_rays))
    sizes = np.full(n_shards, n_total // n_shards, dtype=np.int64)
    sizes[: n_total % n_shards] += 1
    return sizes


def progress_bar(enabled: bool):
    """A rich progress bar (context manager), or a null context yielding None."""
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress("[progress.description]{task.description}", BarColumn(),
                    MofNCompleteColumn(), TimeRemainingColumn(), transient=False)


def _cleanup_dead_builds(out_dir: Path) -> None:
    """Remove sibling ``.NAME.building-PID-X`` / ``.NAME.old-PID-X`` folders whose writer
    process is gone (killed mid-build or mid-swap). Folders of live processes are kept."""
    prefix = f".{out_dir.name}."
    for p in out_dir.parent.glob(f"{prefix}*"):
        parts = p.name[len(prefix):].split("-")
        if len(parts) != 3 or parts[0] not in ("building", "old") or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)
            continue  # the writer is alive
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except PermissionError:
            continue


def _check_replaceable(out_dir: Path) -> None:
    """Refuse to replace a folder that is not a ray store (never delete a user's data)."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise input_error(out_dir, None, "is a file, not a ray store folder")
    entries = {p.name for p in out_dir.iterdir()}
    if entries <= {MANIFEST, "shards"}:
        return
    raise input_error(out_dir, None, "exists and is not a ray store; choose another folder "
                                     f"(found {', '.join(sorted(entries)[:3])})")


def prepare_store(scene: Scene, out_dir, options: StoreOptions | None = None, *,
                  progress: bool = True, chunk_rays: int = 2 ** 20, membership_device="cpu",
                  **fields) -> RayStore:
    """Build the store of ``scene`` into ``out_dir`` (replacing what is there) and open it.

    options: a StoreOptions (default ``StoreOptions()``); ``fields`` (shard_rays, seed,
    val_left_halves, partition, partition_samples) replace some of its values.
    membership_device: where cell membership is computed (the costly part with a partition;
    "cuda" where there is one). chunk_rays bounds the pixels handled at once in pass 1.
    Peak memory: one image, one chunk of rays and one shard, whatever the size of the scene.
    """
    options = store_options(options, **fields)
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _cleanup_dead_builds(out_dir)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    build = out_dir.parent / f".{out_dir.name}.building-{token}"
    try:
        manifest = _build(scene, build, options, progress=progress, chunk_rays=chunk_rays,
                          membership_device=torch.device(membership_device))
        old = out_dir.parent / f".{out_dir.name}.old-{token}"
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(build, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return _from_manifest(out_dir, manifest)


def _build(scene: Scene, build: Path, options: StoreOptions, *, progress, chunk_rays,
           membership_device) -> dict:
    t0 = time.time()
    fingerprint = scene_fingerprint(scene)
    config = options.manifest_config(scene)
    partition, partition_samples = options.partition, options.partition_samples
    plan = _image_plan(scene, options.val_left_halves)
    n_per_image = [scene.images(s)[i].height * cols for s, i, _, cols in plan]
    n_total = int(sum(n_per_image))
    sizes = shard_sizes(n_total, options.shard_rays)
    n_shards = len(sizes)
    nbytes = (partition.n_cells + 7) // 8 if partition is not None else 0
    (build / "buckets").mkdir(parents=True)
    (build / "shards").mkdir()
    rng = np.random.default_rng(options.seed)
    cams = CameraTable.from_scene(scene) if partition is not None else None
    remaining = sizes.copy()

    with progress_bar(progress) as bar:
        task = bar.add_task("scatter pixels", total=n_total) if bar else None
        for (split, i, k, cols), n_img in zip(plan, n_per_image):
            rgb = scene.load_image(split, i)  # uint8 [H, W, 3]
            h, w = rgb.shape[:2]
            rows = np.arange(h, dtype=np.int64)[:, None]
            pix_all = (rows * w + np.arange(cols, dtype=np.int64)[None]).reshape(-1)  # [H*cols]
            rgb_all = rgb[:, :cols].reshape(-1, 3)
            for a in range(0, n_img, chunk_rays):
                pix = pix_all[a:a + chunk_rays]
                rec = np.zeros(pix.shape[0], dtype=RECORD_DTYPE)  # pad byte 0
                rec["image_index"] = k
                rec["pixel_index"] = pix
                rec["rgb"] = rgb_all[a:a + chunk_rays]
                bits = None
                if partition is not None:
                    o, d = cams.rays(torch.full((pix.shape[0],), k, dtype=torch.int64),
                                     torch.from_numpy(pix))
                    o, d = o.to(membership_device), d.to(membership_device)
                    near, far = clip_to_box(o, d, scene.bbox)
                    member = cell_membership(o, d, near, far, partition, partition_samples)
                    bits = np.packbits(member.cpu().numpy(), axis=1)  # uint8 [n, nbytes]
                _scatter(build / "buckets", rec, bits, remaining, rng)
                if bar:
                    bar.advance(task, pix.shape[0])

        shards, total_cells = [], np.zeros(partition.n_cells if partition else 0, np.int64)
        task = bar.add_task("shuffle shards", total=n_shards) if bar else None
        for b in range(n_shards):
            rec = np.fromfile(build / "buckets" / f"{b:05d}.rec", dtype=RECORD_DTYPE)
            if rec.shape[0] != sizes[b]:
                raise RuntimeError(f"bucket {b} holds {rec.shape[0]} records, expected {sizes[b]}")
            perm = rng.permutation(rec.shape[0])
            name = f"shard_{b:05d}"
            np.save(build / "shards" / f"{name}.npy", rec[perm])
            entry = {"file": f"shards/{name}.npy", "n": int(rec.shape[0]),
                     "bytes": (build / "shards" / f"{name}.npy").stat().st_size}
            del rec
            if partition is not None:
                bits = np.fromfile(build / "buckets" / f"{b:05d}.cells", dtype=np.uint8)
                bits = bits.reshape(-1, nbytes)[perm]
                np.save(build / "shards" / f"{name}.cells.npy", bits)
                counts = cell_counts(bits, partition.n_cells)
                total_cells += counts
                entry["cells_file"] = f"shards/{name}.cells.npy"
                entry["cells_bytes"] = (build / "shards" / f"{name}.cells.npy").stat().st_size
                entry["cell_counts"] = counts.tolist()
                del bits
            shards.append(entry)
            for suffix in (".rec", ".cells"):
                (build / "buckets" / f"{b:05d}{suffix}").unlink(missing_ok=True)
            if bar:
                bar.advance(task)
    shutil.rmtree(build / "buckets")
    n_train = sum(n for (s, *_), n in zip(plan, n_per_image) if s == "train")
    manifest = {
        "format": STORE_FORMAT, "version": STORE_VERSION,
        "record_dtype": {"names": list(RECORD_DTYPE.names), "itemsize": RECORD_DTYPE.itemsize},
        "scene": {"name": scene.name, "format": scene.format,
                  "n_images": {s: len(scene.frames.get(s, [])) for s in SPLITS}},
        "fingerprint": fingerprint, "fingerprint_rule": FINGERPRINT_RULE,
        "config": config,
        "n_records": n_total, "n_train_records": n_train, "n_val_records": n_total - n_train,
        "cell_counts": total_cells.tolist() if partition is not None else None,
        "shards": shards,
        "build_seconds": round(time.time() - t0, 3),
    }
    write_json_atomic(build / MANIFEST, manifest)  # last: the store now exists
    return manifest


def _scatter(buckets: Path, rec: np.ndarray, bits: np.ndarray | None, remaining: np.ndarray,
             rng: np.random.Generator) -> None:
    """Append ``rec`` (and its cell ``bits``) to random buckets, taking from each bucket's
    ``remaining`` room (updated in place) a multivariate-hypergeometric share."""
    n = rec.shape[0]
    counts = rng.multivariate_hypergeometric(remaining, n)  # int64 [S], sums to n
    remaining -= counts
    perm = rng.permutation(n)
    ends = np.cumsum(counts)
    starts = ends - counts
    for b in np.flatnonzero(counts):
        sel = perm[starts[b]:ends[b]]
        with open(buckets / f"{b:05d}.rec", "ab") as f:
            f.write(rec[sel].tobytes())
        if bits is not None:
            with open(buckets / f"{b:05d}.cells", "ab") as f:
                f.write(np.ascontiguousarray(bits[sel]).tobytes())


def _from_manifest(root: Path, manifest: dict) -> RayStore:
    shards = [ShardInfo(root / e["file"], int(e["n"]),
                        root / e["cells_file"] if e.get("cells_file") else None,
                        e.get("cell_counts")) for e in manifest["shards"]]
    p = manifest["config"].get("partition")
    return RayStore(root, manifest, shards, Partition.from_dict(p) if p else None)


def _read_complete(out_dir: Path) -> dict | None:
    """The manifest if ``out_dir`` holds a complete store (manifest valid, every shard file
    present with its recorded size), else None."""
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if manifest.get("format") != STORE_FORMAT or manifest.get("version") != STORE_VERSION:
        return None
    try:
        for e in manifest["shards"]:
            if (out_dir / e["file"]).stat().st_size != e["bytes"]:
                return None
            cells = e.get("cells_file")
            if cells and (out_dir / cells).stat().st_size != e["cells_bytes"]:
                return None
    except (OSError, KeyError, TypeError):
        return None
    return manifest


def _check_store(out_dir: Path, scene: Scene, options: StoreOptions) -> tuple[str, dict | None]:
    """(status as ``store_status`` says it, the manifest to open the store with when "ok")."""
    manifest = _read_complete(out_dir)
    if manifest is None:
        return "missing", None
    manifest = _manifest_for_scene(manifest, scene)
    if manifest is None or manifest["config"] != options.manifest_config(scene):
        return "stale", None
    return "ok", manifest


def store_status(out_dir, scene: Scene, options: StoreOptions | None = None, **fields) -> str:
    """"ok", "missing" (no complete store) or "stale" (other content or options).

    options, fields: as for ``prepare_store`` (the options the store should have been built
    with; omitted ones take the defaults of StoreOptions). The content is compared by
    ``scene_fingerprint``: a store stays "ok" when its dataset was moved, copied or touched.
    """
    return _check_store(Path(out_dir), scene, store_options(options, **fields))[0]


def open_store(out_dir, scene: Scene | None = None) -> RayStore:
    """Open a complete store. With ``scene``, check that it was built from the scene's
    current content. Raises ``StoreMissingError`` or ``StoreStaleError``."""
    out_dir = Path(out_dir)
    manifest = _read_complete(out_dir)
    if manifest is None:
        raise StoreMissingError(f"{out_dir}: no complete ray store "
                                "(run `switchnerf scene prepare`)")
    if scene is not None:
        manifest = _manifest_for_scene(manifest, scene)
        if manifest is None:
            raise StoreStaleError(f"{out_dir}: ray store was built from other inputs "
                                  "(images or cameras changed); rebuild it")
    return _from_manifest(out_dir, manifest)


def ensure_store(scene: Scene, out_dir, options: StoreOptions | None = None, *,
                 force: bool = False, progress: bool = True, chunk_rays: int = 2 ** 20,
                 membership_device="cpu", **fields) -> RayStore:
    """Open the store of ``scene`` at ``out_dir``, building it first when it is missing,
    incomplete, stale, built with other options, or ``force``. Arguments as for
    ``prepare_store``."""
    options = store_options(options, **fields)
    out_dir = Path(out_dir)
    status, manifest = ("missing", None) if force else _check_store(out_dir, scene, options)
    if status == "ok":
        return _from_manifest(out_dir, manifest)
    return prepare_store(scene, out_dir, options, progress=progress, chunk_rays=chunk_rays,
                         membership_device=membership_device)
