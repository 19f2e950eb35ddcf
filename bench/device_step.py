"""Training-step and render throughput on one device with a synthetic workload (no dataset).

    python bench/device_step.py [--device cuda] [--config configs/switchnerf++.yaml]
                                [--rays 8192] [--steps 30] [--render-size 256x192]
                                [--renders 5] [--set KEY=VALUE ...] [--out FILE.json]

Workload: a freshly initialised field of ``--config`` over the unit box, an all-occupied
occupancy grid (every march sample is evaluated), ``--rays`` random rays per step from
points outside the box towards random targets inside it, random target colours; the real
``Renderer.render_rays`` (two-pass, pruning off so the sample count is the march's),
photometric MSE, backward and the run's optimiser (``build_optimizer``). The render times
``Renderer.render_camera`` of a camera looking at the box centre (front-to-back path,
no gradients). Steps and renders are timed with the device synchronised.

Reports samples/s and rays/s of a training step, the encoding's own fwd+bwd throughput on
the same samples (so a step can be compared with the encoding alone), and render ms.
Runs on CPU too (``--device cpu --quick``: the test suite's smoke run).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_rays(n: int, gen: torch.Generator, device: torch.device):
    """``n`` rays from a sphere of radius 1.5 around the box centre towards random points
    in the box: a RayBatch with random target colours (image index 0)."""
    from switchnerf.scene.types import RayBatch

    centre = torch.full((3,), 0.5)
    u = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
    origins = centre + 1.5 * u
    target = torch.rand(n, 3, generator=gen)
    dirs = torch.nn.functional.normalize(target - origins, dim=-1)
    return RayBatch(origins, dirs, torch.zeros(n), torch.full((n,), 4.0),
                    torch.rand(n, 3, generator=gen), torch.zeros(n, dtype=torch.long)).to(device)


def build(cfg, device: torch.device):
    from switchnerf.model import SwitchField
    from switchnerf.render.box import BoxFrame
    from switchnerf.render.occupancy import OccupancyGrid
    from switchnerf.render.renderer import Renderer
    from switchnerf.train.builder import build_optimizer

    field = SwitchField(cfg.model, n_images=1).to(device)
    grid = OccupancyGrid(resolution=cfg.sampler.grid_resolution).to(device)
    grid.binary.fill_(True)
    grid.density.fill_(1.0)
    box = BoxFrame.from_bbox([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], device=device)
    renderer = Renderer(field, grid, box, cfg.sampler)
    return renderer, build_optimizer(cfg, field)


def bench_train(renderer, optimizer, args, device: torch.device) -> dict:
    gen = torch.Generator().manual_seed(0)
    batches = [random_rays(args.rays, gen, device) for _ in range(4)]
    renderer.train()
    times, samples = [], []
    for i in range(args.warmup + args.steps):
        batch = batches[i % len(batches)]
        _sync(device)
        t = time.perf_counter()
        out = renderer.render_rays(batch, stratified=False, prune=False)
        loss = torch.mean((out.rgb.float() - batch.rgb) ** 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
            samples.append(out.samples.expert_id.shape[0])
    med = float(np.median(times))
    n_samples = float(np.mean(samples))
    return {"rays_per_step": args.rays, "samples_per_step": n_samples,
            "median_step_s": med, "rays_per_s": args.rays / med,
            "samples_per_s": n_samples / med}


def bench_encode(renderer, n_points: int, args, device: torch.device) -> dict:
    """The field's expert encoding alone, fwd+bwd, on ``n_points`` random points."""
    field = renderer.field
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(n_points, 3, generator=gen).to(device)
    eid = torch.randint(0, field.n_experts, (n_points,), generator=gen).to(device)
    eid, order = torch.sort(eid)
    x = x[order]
    times = []
    for i in range(args.warmup + args.steps):
        _sync(device)
        t = time.perf_counter()
        f = field.experts.encode(x, eid)
        torch.autograd.grad(f.sum(), field.experts.params)
        _sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    med = float(np.median(times))
    return {"points": n_points, "median_fwd_bwd_s": med, "points_per_s": n_points / med}


def bench_render(renderer, args, device: torch.device) -> dict:
    w, h = (int(v) for v in args.render_size.lower().split("x"))
    eye = np.array([0.5, -1.0, 1.2])
    fwd = np.array([0.5, 0.5, 0.5]) - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, -fwd, eye
    f = 0.8 * w
    cam = SimpleNamespace(c2w=c2w, fx=f, fy=f, cx=w / 2, cy=h / 2, width=w, height=h,
                          near=0.0, far=4.0)
    renderer.eval()
    times = []
    for i in range(1 + args.renders):
        _sync(device)
        t = time.perf_counter()
        out = renderer.render_camera(cam)
        _sync(device)
        if i >= 1:
            times.append(time.perf_counter() - t)
    return {"size": [w, h], "median_s": float(np.median(times)),
            "samples_per_ray": float(out.n_samples.float().mean())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "switchnerf++.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--rays", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--render-size", default="256x192")
    ap.add_argument("--renders", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "device_step.json")
    args = ap.parse_args()
    sets = list(args.set)
    if args.quick:
        args.rays, args.steps, args.warmup, args.renders = 64, 2, 1, 1
        args.render_size = "16x12"
        sets = ["model.experts.log2_hashmap_size=12", "model.experts.n_levels=4",
                "model.routing.gate.n_levels=2", "sampler.grid_resolution=16",
                "sampler.steps_per_diagonal=64", *sets]
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("device_step: CUDA is not available in this torch", file=sys.stderr)
        return 1

    from switchnerf.config import load_config
    from switchnerf.ops import backend_name

    cfg = load_config(args.config, sets)
    torch.manual_seed(0)
    renderer, optimizer = build(cfg, device)
    train = bench_train(renderer, optimizer, args, device)
    encode = bench_encode(renderer, int(train["samples_per_step"]) or 1, args, device)
    render = bench_render(renderer, args, device)
    result = {
        "date": datetime.date.today().isoformat(), "device": str(device),
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else platform.processor() or platform.machine()),
        "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT)
                      else args.config), "sets": sets, "ops": backend_name(),
        "torch": torch.__version__, "cpu_count": os.cpu_count(),
        "train_step": train, "encode_alone": encode, "render": render,
        "step_over_encode_time": train["median_step_s"] / encode["median_fwd_bwd_s"],
    }
    print(f"{device}: training step {train['median_step_s'] * 1e3:.1f} ms "
          f"({train['rays_per_s'] / 1e3:.1f}k rays/s, {train['samples_per_s'] / 1e6:.2f} M "
          f"samples/s); encoding alone {encode['points_per_s'] / 1e6:.2f} M points/s fwd+bwd; "
          f"step / encoding time {result['step_over_encode_time']:.2f}; render "
          f"{render['size'][0]}x{render['size'][1]} {render['median_s'] * 1e3:.1f} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0 if math.isfinite(result["step_over_encode_time"]) else 1


if __name__ == "__main__":
    sys.exit(main())
