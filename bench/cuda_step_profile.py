"""Where a real training step goes on a CUDA GPU: ms per step against the batch size, and the
ops that take the time (torch.profiler).

    python bench/cuda_step_profile.py [--device cuda] [--rays 512,4096,16384]
                                      [--configs configs/cpu-demo.yaml,configs/switchnerf++.yaml]
                                      [--warmup 100] [--steps 50] [--profile-steps 20] [--top 12]
                                      [--scene scenes/minicity.yaml]
                                      [--out bench/results/cuda_step_profile.json]

For every preset and batch size: a fresh ``Trainer`` on the scene, ``--warmup`` real steps
(occupancy and samples per ray settle), then ``--steps`` timed steps (device synchronised
before each clock read): ms per step, rays/s, samples/ray. Then ``--profile-steps`` steps of
every preset at its own batch size under torch.profiler: the ops with the most self
device time and the most self host time, and the host-device syncs (``cudaStreamSynchronize``,
device-to-host copies) per step, and on CUDA the lines of this repository where the host
waits (torch's sync debug mode). A step whose host time is far above its device time is
launch-bound: larger batches, fewer kernels and fewer syncs help it, faster kernels do not.
``--device cpu`` runs the same on the CPU (a smoke run with small sizes).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def make_trainer(config: Path, sets: list[str], scene: Path, run: Path, device: str):
    """A fresh Trainer of ``config`` (+ ``sets``) on ``scene``, writing into ``run``."""
    from switchnerf.config import load_config
    from switchnerf.train.data import prepare_training_data
    from switchnerf.train.trainer import Trainer

    cfg = load_config(config, ["train.checkpoint_every=1000000", *sets])
    data = prepare_training_data(cfg, scene, progress=False)
    return cfg, Trainer(cfg, data, run, device=device, progress=False)


def time_steps(trainer, n_warm: int, n_steps: int, device: str) -> dict:
    """Mean ms per step over ``n_steps`` after ``n_warm`` steps; samples per ray."""
    for _ in range(n_warm):
        trainer.train_step(next(trainer.stream))
    _sync(device)
    if n_steps == 0:
        return {}
    spr = []
    t0 = time.perf_counter()
    for _ in range(n_steps):
        spr.append(trainer.train_step(next(trainer.stream)).samples_per_ray)
    _sync(device)
    ms = 1e3 * (time.perf_counter() - t0) / n_steps
    return {"ms_per_step": ms, "samples_per_ray": sum(spr) / len(spr)}


def profile_steps(trainer, n_steps: int, device: str, top: int = 25) -> dict:
    """torch.profiler over ``n_steps`` steps: top ops by self device and self host time."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU]
    if device.startswith("cuda"):
        acts.append(ProfilerActivity.CUDA)
    _sync(device)
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        for _ in range(n_steps):
            trainer.train_step(next(trainer.stream))
        _sync(device)
    wall_ms = 1e3 * (time.perf_counter() - t0) / n_steps
    events = prof.key_averages()

    def dev_self(e) -> float:
        return float(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0)))

    def rows(key) -> list[dict]:
        ranked = sorted(events, key=key, reverse=True)[:top]
        return [{"op": e.key, "calls_per_step": e.count / n_steps,
                 "self_host_ms_per_step": e.self_cpu_time_total / 1e3 / n_steps,
                 "self_device_ms_per_step": dev_self(e) / 1e3 / n_steps} for e in ranked]

    device_total = sum(dev_self(e) for e in events) / 1e3 / n_steps
    syncs = {e.key: e.count / n_steps for e in events
             if e.key in ("cudaStreamSynchronize", "cudaDeviceSynchronize", "aten::item",
                          "aten::_local_scalar_dense", "cudaMemcpyAsync")}
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel",
                                                          "cudaLaunchKernelExC")) / n_steps
    return {"wall_ms_per_step": wall_ms, "device_busy_ms_per_step": device_total,
            "kernel_launches_per_step": launches, "syncs_per_step": syncs,
            "by_device_time": rows(dev_self), "by_host_time": rows(lambda e: e.self_cpu_time_total)}


def sync_sites(trainer, n_steps: int) -> dict[str, float]:
    """CUDA only: where the host waits for the device, per step: torch's sync debug mode
    warns at every synchronising call; each warning is charged to the innermost frame of
    this repository (``path:line``)."""
    import traceback
    import warnings
    from collections import Counter

    sites: Counter[str] = Counter()
    here = Path(__file__).resolve()

    def record(message, category, filename, lineno, file=None, line=None):
        frames = [f for f in traceback.extract_stack()
                  if f.filename.startswith(str(ROOT)) and Path(f.filename).resolve() != here]
        where = (f"{Path(frames[-1].filename).relative_to(ROOT)}:{frames[-1].lineno}"
                 if frames else f"{filename}:{lineno}")
        sites[where] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(n_steps):
                trainer.train_step(next(trainer.stream))
            torch.cuda.synchronize()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return {k: v / n_steps for k, v in sites.most_common()}


def print_rows(title: str, rows: list[dict]) -> None:
    print(f"\n{title}\n| op | calls/step | self host ms | self device ms |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['op'][:60]} | {r['calls_per_step']:.1f} | {r['self_host_ms_per_step']:.3f} "
              f"| {r['self_device_ms_per_step']:.3f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--rays", default="512,4096,16384")
    ap.add_argument("--configs", default="configs/cpu-demo.yaml,configs/switchnerf++.yaml")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--profile-steps", type=int, default=20)
    ap.add_argument("--top", type=int, default=12, help="ops listed per table")
    ap.add_argument("--scene", type=Path, default=ROOT / "scenes" / "minicity.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" /
                    "cuda_step_profile.json")
    args = ap.parse_args()

    from switchnerf.ops import backend_name
    from switchnerf.scene.load import ensure_synth_scene

    if args.scene.suffix in (".yaml", ".yml"):  # a descriptor: synthesize if missing
        ensure_synth_scene(args.scene, progress=False)
    configs = [ROOT / c if not Path(c).is_absolute() else Path(c)
               for c in args.configs.split(",")]
    rays = [int(r) for r in args.rays.split(",")]
    sweep = []
    print("| preset | rays/step | ms/step | rays/s | samples/ray |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for config in configs:
            for n in rays:
                _, trainer = make_trainer(config, [f"train.rays_per_step={n}"], args.scene,
                                          Path(tmp) / f"{config.stem}-{n}", args.device)
                try:
                    r = time_steps(trainer, args.warmup, args.steps, args.device)
                finally:
                    trainer.close()
                r.update(preset=config.name, rays_per_step=n,
                         rays_per_s=n / (r["ms_per_step"] / 1e3))
                sweep.append(r)
                print(f"| {config.name} | {n} | {r['ms_per_step']:.2f} | "
                      f"{r['rays_per_s'] / 1e3:.1f}k | {r['samples_per_ray']:.1f} |", flush=True)
        profiles = []
        for config in configs:
            cfg, trainer = make_trainer(config, [], args.scene, Path(tmp) / f"p-{config.stem}",
                                        args.device)
            try:
                time_steps(trainer, args.warmup, 0, args.device)
                prof = profile_steps(trainer, args.profile_steps, args.device, args.top)
                if args.device.startswith("cuda"):
                    try:  # a diagnostic: its failure must not lose the figures above
                        prof["sync_sites_per_step"] = sync_sites(trainer, args.profile_steps)
                    except Exception as exc:  # noqa: BLE001
                        prof["sync_sites_error"] = f"{type(exc).__name__}: {exc}"
                        print(f"sync sites: {prof['sync_sites_error']}")
            finally:
                trainer.close()
            profiles.append({"preset": config.name, "rays_per_step": cfg.train.rays_per_step,
                             **prof})
            print(f"\nprofile: {config.name}, {cfg.train.rays_per_step} rays/step: "
                  f"{prof['wall_ms_per_step']:.2f} ms wall per step, device busy "
                  f"{prof['device_busy_ms_per_step']:.2f} ms, "
                  f"{prof['kernel_launches_per_step']:.0f} kernel launches, "
                  f"syncs {prof['syncs_per_step']}")
            print_rows("top ops by self device time (per step)", prof["by_device_time"])
            print_rows("top ops by self host time (per step)", prof["by_host_time"])
            for site, n in prof.get("sync_sites_per_step", {}).items():
                print(f"sync per step {n:5.2f}  {site}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps({
        "date": datetime.date.today().isoformat(), "device": args.device,
        "device_name": (torch.cuda.get_device_name() if args.device.startswith("cuda")
                        else platform.processor()),
        "ops": backend_name(), "torch": torch.__version__, "warmup": args.warmup,
        "steps": args.steps, "sweep": sweep, "profiles": profiles}, indent=2) + "\n")
    os.replace(tmp_out, args.out)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
