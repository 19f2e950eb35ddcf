"""``switchnerf scene prepare`` (build the ray store) and ``switchnerf scene partition``.

Both register on the ``scene`` subcommand's subparsers with ``set_defaults(func=fn)``,
``fn(args) -> int`` exit code. Default output folders: ``<scene.root>/.switchnerf/store`` and
``<scene.root>/.switchnerf/partition``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from switchnerf.cli.args import finite_float
from switchnerf.errors import SwitchNerfError
from switchnerf.scene.partition import DEFAULT_MARGIN, DEFAULT_SAMPLES, Partition

PARTITION_FILE = "partition.json"
COUNTS_FILE = "cell_counts.json"
MAP_FILE = "partition_map.png"


def default_partition_dir(scene) -> Path:
    return Path(scene.root) / ".switchnerf" / "partition"


def parse_grid(text: str) -> tuple[int, int]:
    """"RxC" -> (rows, cols), both >= 1."""
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"grid {text!r} is not ROWSxCOLS (e.g. 2x2)") from None
    if rows < 1 or cols < 1:
        raise argparse.ArgumentTypeError(f"grid {text!r} needs at least one row and column")
    return rows, cols


def _load(scene_arg: str):
    from switchnerf.scene.load import load_scene

    return load_scene(scene_arg)


def add_prepare_parser(scene_subparsers) -> argparse.ArgumentParser:
    p = scene_subparsers.add_parser(
        "prepare", help="build the shuffled ray store of a scene",
        description="Write every training pixel, shuffled, into shards on disk (out-of-core "
                    "training data), with the options `switchnerf train` derives from the "
                    "same --config, so that train reads this store. Rebuilt only when "
                    "missing, incomplete or stale.")
    p.add_argument("scene", metavar="SCENE", help="scene descriptor (YAML) or dataset folder")
    p.add_argument("--out", type=Path, help="store folder (default <scene>/.switchnerf/store)")
    p.add_argument("--config", help="the training preset (configs/*.yaml) the store is for: "
                                    "its train.shard_rays, train.seed and eval protocol "
                                    "(typed defaults when omitted), as `switchnerf train` "
                                    "reads them")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, as for `switchnerf train`")
    p.add_argument("--shard-rays", type=int, default=None,
                   help="records per shard (default: the config's train.shard_rays)")
    p.add_argument("--seed", type=int, default=None,
                   help="shuffle seed (default: the config's train.seed)")
    p.add_argument("--val-left-halves", action=argparse.BooleanOptionalAction, default=None,
                   help="also store the left half of every val image (default: as training "
                        "with the config: when the Mega-NeRF eval protocol applies)")
    p.add_argument("--partition", nargs="?", const="", default=None, metavar="PARTITION_JSON",
                   help="store per-ray cell membership; uses PARTITION_JSON, else the scene's "
                        "partition folder, else a new partition of the scene's grid")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                   help="samples per ray for cell membership")
    p.add_argument("--device", default="cpu",
                   help="device for the cell membership of --partition (cpu, cuda)")
    p.add_argument("--force", action="store_true", help="rebuild even when up to date")
    p.set_defaults(func=run_prepare)
    return p


def add_partition_parser(scene_subparsers) -> argparse.ArgumentParser:
    p = scene_subparsers.add_parser(
        "partition", help="split a scene into overlapping cells (Mega-NeRF grid)",
        description="Place a grid of cell centroids over the camera extent, count the "
                    "training rays of each cell and draw a top-down map.")
    p.add_argument("scene", metavar="SCENE", help="scene descriptor (YAML) or dataset folder")
    p.add_argument("--grid", type=parse_grid, default=None, metavar="RxC",
                   help="rows x cols (default: the scene descriptor's grid)")
    p.add_argument("--margin", type=finite_float, default=DEFAULT_MARGIN,
                   help="boundary margin: distance ratio to the nearest centroid")
    p.add_argument("--ground-z", type=finite_float, default=None,
                   help="centroid altitude in world units (default: the scene's ground)")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="samples per ray")
    p.add_argument("--stride", type=int, default=1,
                   help="count every STRIDE-th pixel of each image row and column")
    p.add_argument("--out", type=Path, help="output folder (default <scene>/.switchnerf/partition)")
    p.set_defaults(func=run_partition)
    return p


def _resolve_partition(scene, arg: str) -> Partition:
    from switchnerf.scene.partition import make_partition

    path = Path(arg) if arg else default_partition_dir(scene) / PARTITION_FILE
    if path.is_file() or arg:
        return Partition.load(path)
    part = make_partition(scene)
    part.save(path)
    return part


def prepare_options(args, scene, cfg):
    """The StoreOptions of ``scene prepare``: what `switchnerf train` with the same config
    ``cfg`` (--config/--set) reads, then the explicit --shard-rays/--seed/
    --[no-]val-left-halves and --partition."""
    from switchnerf.scene.store import store_options
    from switchnerf.train.ray_store import training_store_options

    explicit = {"shard_rays": args.shard_rays, "seed": args.seed,
                "val_left_halves": args.val_left_halves}
    options = store_options(training_store_options(cfg, scene),
                            **{k: v for k, v in explicit.items() if v is not None})
    if args.partition is not None:
        options = store_options(options, partition=_resolve_partition(scene, args.partition),
                                partition_samples=args.samples)
    return options


def run_prepare(args) -> int:
    from rich.console import Console

    from switchnerf.config import load_config
    from switchnerf.scene.store import default_store_dir, prepare_store, store_status

    console = Console(stderr=True)
    if args.shard_rays is not None and args.shard_rays < 1:
        raise SwitchNerfError(f"--shard-rays: must be >= 1, got {args.shard_rays}")
    if args.seed is not None and args.seed < 0:
        raise SwitchNerfError(f"--seed: must be >= 0, got {args.seed}")
    if args.samples < 1:
        raise SwitchNerfError(f"--samples: must be >= 1, got {args.samples}")
    cfg = load_config(args.config, args.set)
    scene = _load(args.scene)
    out = args.out or default_store_dir(scene)
    options = prepare_options(args, scene, cfg)
    status = "forced" if args.force else store_status(out, scene, options)
    if status == "ok":
        console.print(f"ray store up to date: {out}")
        return 0
    console.print(f"building ray store ({status}) in {out}")
    t0 = time.perf_counter()
    st = prepare_store(scene, out, options, progress=True, membership_device=args.device)
    dt = time.perf_counter() - t0
    console.print(f"{st.n_records:,} rays in {len(st.shards)} shards, {dt:.1f} s "
                  f"({st.n_records / max(dt, 1e-9) / 1e6:.2f} M rays/s)")
    if st.partition is not None:
        console.print("rays per cell: " + ", ".join(
            f"{j}: {n:,}" for j, n in enumerate(st.manifest["cell_counts"])))
    return 0


def count_cells(scene, partition: Partition, *, samples: int, stride: int = 1,
                progress: bool = True) -> dict:
    """Per-cell training-ray counts over every ``stride``-th pixel row and column.

    Rays are clipped to ``scene.bbox`` before sampling (as in the ray store). Returns
    {"cells": [C], "overlap": rays in 2+ cells, "none": rays in no cell, "rays": counted}.
    """
    from switchnerf.scene.cameras import CameraTable
    from switchnerf.scene.partition import cell_membership, clip_to_box
    from switchnerf.scene.store import progress_bar

    cams = CameraTable.from_scene(scene)
    cells = np.zeros(partition.n_cells, dtype=np.int64)
    overlap = none = total = 0
    with progress_bar(progress) as bar:
        task = bar.add_task("count rays per cell", total=cams.n_train) if bar else None
        for k in range(cams.n_train):
            w, h = int(cams.width[k]), int(cams.height[k])
            rows = torch.arange(0, h, stride)
            pix = (rows[:, None] * w + torch.arange(0, w, stride)[None]).reshape(-1)
            for a in range(0, pix.numel(), 1 << 18):
                p = pix[a:a + (1 << 18)]
                o, d = cams.rays(torch.full_like(p, k), p)
                near, far = clip_to_box(o, d, scene.bbox)
                m = cell_membership(o, d, near, far, partition, samples)
                per_ray = m.sum(1)
                cells += m.sum(0).numpy()
                overlap += int((per_ray > 1).sum())
                none += int((per_ray == 0).sum())
                total += p.numel()
            if bar:
                bar.advance(task)
    return {"cells": cells.tolist(), "overlap": overlap, "none": none, "rays": total,
            "stride": stride, "samples": samples}


def _write_partition(out: Path, part: Partition, counts: dict, scene) -> None:
    """partition.json, cell_counts.json and partition_map.png, replaced together: each is
    checked (read back) before any of them replaces an earlier one."""
    from switchnerf.io_utils import atomic_paths, json_bytes, readable_image, same_bytes
    from switchnerf.scene.partition import draw_partition_map

    blobs = [json_bytes(part.to_dict()), json_bytes(counts)]
    with atomic_paths([out / PARTITION_FILE, out / COUNTS_FILE, out / MAP_FILE],
                      verify=[*map(same_bytes, blobs), readable_image]) as (p, c, m):
        p.write_bytes(blobs[0])
        c.write_bytes(blobs[1])
        draw_partition_map(part, scene).save(m, format="PNG")


def run_partition(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from switchnerf.scene.partition import make_partition

    console = Console(stderr=True)
    if args.stride < 1 or args.samples < 1:
        raise SwitchNerfError("--stride and --samples must be >= 1")
    if not args.margin >= 1.0:
        raise SwitchNerfError(f"--margin: must be >= 1, got {args.margin}")
    scene = _load(args.scene)
    out = args.out or default_partition_dir(scene)
    part = make_partition(scene, args.grid, margin=args.margin, ground_z=args.ground_z)
    counts = count_cells(scene, part, samples=args.samples, stride=args.stride)
    _write_partition(out, part, counts, scene)
    table = Table(title=f"{scene.name}: {part.grid[0]}x{part.grid[1]} cells, "
                        f"margin {part.margin}")
    for col in ("cell", "centroid (x, y, z)", "rays", "share"):
        table.add_column(col, justify="right")
    for j, n in enumerate(counts["cells"]):
        c = part.centroids[j]
        table.add_row(str(j), f"({c[0]:.2f}, {c[1]:.2f}, {c[2]:.2f})", f"{n:,}",
                      f"{n / max(counts['rays'], 1):.1%}")
    console.print(table)
    console.print(f"rays in 2+ cells: {counts['overlap']:,} of {counts['rays']:,}; "
                  f"wrote {out / PARTITION_FILE}, {out / COUNTS_FILE}, {out / MAP_FILE}")
    return 0

