"""Ray store throughput: rays/s written, peak memory, rays/s streamed by RayStream.

    python bench/scene.py [--scene scenes/bigcity.yaml] [--out bench/results/scene.json]
    python bench/scene.py --make-synthetic data/synthcity --images 64 --size 400x300

The default scene is the synthetic bigcity; its data is generated first
(``switchnerf scene synth bigcity --out data/bigcity``) when absent. ``--make-synthetic DIR``
writes a small random transforms.json scene into DIR and uses it as ``--scene``. Peak memory
is the peak resident set (VmHWM) of each phase, reset between phases where the kernel
allows, and includes children.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SCENE = ROOT / "scenes" / "bigcity.yaml"


def peak_rss_bytes() -> int:
    """Peak resident set of this process since the last reset (VmHWM), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def children_peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def make_synthetic(folder: Path, n_images: int, width: int, height: int, seed: int = 0) -> Path:
    """A transforms.json scene of ``n_images`` random images (every 8th is val) of aerial
    cameras on a grid, z up, looking down 20 degrees off nadir with random headings;
    returns the folder."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    side = math.ceil(math.sqrt(n_images))
    frames = []
    for k in range(n_images):
        path = folder / "images" / f"{k:05d}.png"
        if not path.exists():
            base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
            img = np.kron(base, np.ones((8, 8, 1), np.uint8))[:height, :width]
            Image.fromarray(img).save(path, compress_level=1)
        yaw, tilt = rng.uniform(-np.pi, np.pi), np.radians(20.0)  # nadir-ish, varied heading
        rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
        ct, st = np.cos(tilt), np.sin(tilt)
        rx = np.array([[1, 0, 0], [0, ct, -st], [0, st, ct]])
        c2w = np.eye(4)
        c2w[:3, :3] = rz @ rx
        c2w[:3, 3] = (k % side * 2.0, k // side * 2.0, 10.0)
        frames.append({"file_path": f"images/{path.name}", "transform_matrix": c2w.tolist()})
    meta = {"fl_x": width * 0.8, "fl_y": width * 0.8, "cx": width / 2, "cy": height / 2,
            "w": width, "h": height, "frames": frames}
    (folder / "transforms.json").write_text(json.dumps(meta))
    return folder


def ensure_bigcity() -> None:
    data = ROOT / "data" / "bigcity"
    if not data.exists():
        print(f"generating the synthetic bigcity into {data}", flush=True)
        subprocess.run([sys.executable, "-m", "switchnerf.cli", "scene", "synth", "bigcity",
                        "--out", str(data)], check=True, cwd=ROOT)


def bench_stream(store, cams, batch_size: int, n_batches: int,
                 rays_in_prefetch: bool = True, workers: int | None = None) -> dict:
    from switchnerf.scene.store_reader import DEFAULT_WORKERS, RayStream

    workers = DEFAULT_WORKERS if workers is None else workers
    with RayStream(store, cams, batch_size=batch_size, seed=0, workers=workers,
                   rays_in_prefetch=rays_in_prefetch) as stream:
        t0 = time.perf_counter()
        next(stream)
        first = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        rays = 0
        for _ in range(n_batches):
            rays += len(next(stream))
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"batch_size": batch_size, "batches": n_batches, "seconds": dt,
            "rays_in_prefetch": rays_in_prefetch, "workers": workers,
            "first_batch_seconds": first, "rays_per_s": rays / dt,
            "cpu_seconds": cpu, "rays_per_cpu_s": rays / cpu}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", type=Path, default=DEFAULT_SCENE,
                    help="scene descriptor or dataset folder")
    ap.add_argument("--make-synthetic", type=Path, metavar="DIR",
                    help="write a random transforms.json scene into DIR and use it")
    ap.add_argument("--images", type=int, default=64, help="images of --make-synthetic")
    ap.add_argument("--size", default="400x300", help="WxH of --make-synthetic images")
    ap.add_argument("--store", type=Path, help="store folder (default: a temporary folder)")
    ap.add_argument("--shard-rays", type=int, default=2 ** 20)
    ap.add_argument("--batch-size", type=int, default=8192)
    ap.add_argument("--batches", type=int, default=1000, help="batches streamed")
    ap.add_argument("--workers", type=int, help="RayStream prefetch workers (default: its own)")
    ap.add_argument("--rays-in-consumer", action="store_true",
                    help="generate rays per batch in the consuming thread, not in the workers")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scene.json")
    args = ap.parse_args()

    from switchnerf.scene.cameras import CameraTable
    from switchnerf.scene.load import load_scene
    from switchnerf.scene.store import prepare_store

    if args.make_synthetic:
        w, h = (int(v) for v in args.size.lower().split("x"))
        args.scene = make_synthetic(args.make_synthetic, args.images, w, h)
    elif args.scene.resolve() == DEFAULT_SCENE:
        ensure_bigcity()
    scene = load_scene(args.scene)
    cams = CameraTable.from_scene(scene)
    tmp = None
    if args.store is None:
        tmp = tempfile.TemporaryDirectory(prefix="switchnerf-bench-")
        args.store = Path(tmp.name) / "store"

    load_start = os.getloadavg()
    baseline = peak_rss_bytes()
    resettable = reset_peak_rss()
    t0, c0 = time.perf_counter(), time.process_time()
    store = prepare_store(scene, args.store, shard_rays=args.shard_rays, progress=True)
    write_s, write_cpu = time.perf_counter() - t0, time.process_time() - c0
    write_peak = peak_rss_bytes()
    reset_peak_rss()
    stream = bench_stream(store, cams, args.batch_size, args.batches,
                          not args.rays_in_consumer, args.workers)
    stream_peak = peak_rss_bytes()
    result = {
        "scene": str(args.scene), "images": len(cams), "rays": store.n_records,
        "shards": len(store.shards), "shard_rays": args.shard_rays,
        "write_seconds": write_s, "write_rays_per_s": store.n_records / write_s,
        "write_cpu_seconds": write_cpu,
        "peak_rss_bytes_before": baseline, "peak_rss_bytes_write": write_peak,
        "peak_rss_bytes_stream": stream_peak, "peak_rss_reset_per_phase": resettable,
        "peak_rss_bytes_children": children_peak_rss_bytes(),
        "stream": stream, "python": platform.python_version(), "machine": platform.machine(),
        "cpus": os.cpu_count(), "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
    }
    if tmp is not None:
        tmp.cleanup()
    gib = 2 ** 30
    print(f"{result['rays']:,} rays from {result['images']} images in {result['shards']} shards")
    print(f"write : {result['write_rays_per_s'] / 1e6:6.2f} M rays/s ({write_s:.1f} s), "
          f"peak RSS {write_peak / gib:.2f} GiB (before: {baseline / gib:.2f} GiB)")
    print(f"stream: {stream['rays_per_s'] / 1e6:6.2f} M rays/s (batch {args.batch_size}, "
          f"{stream['workers']} workers, {args.batches} batches, "
          f"first batch {stream['first_batch_seconds'] * 1e3:.0f} ms, "
          f"{stream['rays_per_cpu_s'] / 1e6:.2f} M rays per CPU-second), "
          f"peak RSS {stream_peak / gib:.2f} GiB")
    print("load average (1, 5, 15 min): start {:.2f} {:.2f} {:.2f}, end {:.2f} {:.2f} {:.2f} "
          "on {} CPUs".format(*load_start, *result["loadavg_end"], result["cpus"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
