"""Still-frame render time of a trained run on CPU: the inference path against the
training-time path, interleaved in one process.

    python bench/inference.py [RUN] [--size 256x192] [--repeats 5] [--views 3]
                              [--out bench/results/inference.json]

RUN defaults to outputs/demo/run (what `make demo` trains). For ``--views`` orbit poses,
each repeat renders the view twice, in the chunks of ``switchnerf.viewer.render.render_view``
(what the viewer and ``switchnerf render`` run):

* ``two_pass``: ``Renderer.render_rays`` with gradients enabled but no parameter recording a
  graph: a density pass over every marched sample to find the visible ones, then the full
  field on them, torch layers for the MLPs and a softmax gate (what inference did before
  the front-to-back path);
* ``front_to_back``: the inference path (``render_view``, no gradients): each marched
  sample's geometry once, rays stopped once opaque, colour only where visible, fused
  native MLPs.

The two are interleaved so that machine load hits both alike; the ratio of their medians
is the figure to trust on a shared machine. Also reported: samples marched and evaluated
per ray, and the largest pixel difference between the two images.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _cameras(run, n: int, width: int, height: int):
    from switchnerf.video.paths import (
        PathCamera,
        intrinsics_from_fov,
        orbit_geometry,
        orbit_keyframes,
    )

    target, radius, altitude = orbit_geometry(run.scene, altitude=None, tilt_deg=35.0)
    keys = orbit_keyframes(target, radius, altitude, max(n, 1) * 4)[::4]
    fx, fy, cx, cy = intrinsics_from_fov(width, height, keys[0].fov)
    return [PathCamera(k.c2w, fx, fy, cx, cy, width, height) for k in keys[:n]]


def two_pass_view(renderer, cam, chunk: int):
    """The view through the training-time path: gradients on (so ``render_rays`` takes the
    two-pass path and the MLPs their torch layers), chunk by chunk, no graph recorded (the
    parameters are frozen)."""
    from switchnerf.render import RenderOutput, camera_rays

    rays = camera_rays(cam).to(renderer.device)
    with torch.enable_grad():
        parts = [renderer.render_rays(rays[s:s + chunk], use_appearance_index=False)
                 for s in range(0, len(rays), chunk)]
    return RenderOutput.cat(parts)


def _frozen(renderer):
    for p in renderer.field.parameters():
        p.requires_grad_(False)


def _counts(renderer, cam) -> dict:
    """Samples per ray: marched (occupancy grid) and evaluated front to back."""
    from switchnerf.render.front_to_back import evaluate_front_to_back
    from switchnerf.render.sampler import march_rays
    from switchnerf.scene.types import pixel_rays

    o, d = pixel_rays(cam.c2w, cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height)
    n = o.shape[0]
    box, cfg = renderer.box, renderer.sampler
    ou, du = (o - box.lo) / box.extent, d / box.extent
    with torch.no_grad():
        s = march_rays(ou, du, torch.zeros(n), torch.full((n,), 1e10), renderer.grid,
                       step_size=renderer.step_size, max_samples_per_ray=cfg.max_samples_per_ray)
        evaluated = [0]

        def fn(idx):
            evaluated[0] += idx.numel()
            r = s.ray_indices[idx]
            mid = 0.5 * (s.t_starts[idx] + s.t_ends[idx])
            return renderer.field.density(ou[r] + mid[:, None] * du[r]), {}

        keep, _, _ = evaluate_front_to_back(fn, s.t_starts, s.t_ends, s.ray_indices, n,
                                            alpha_thre=cfg.alpha_thre,
                                            early_stop_eps=cfg.early_stop_eps)
    return {"marched_per_ray": len(s.t_starts) / n, "evaluated_per_ray": evaluated[0] / n,
            "visible_per_ray": keep.numel() / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", type=Path, default=ROOT / "outputs" / "demo" / "run")
    ap.add_argument("--size", default="256x192")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--views", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "inference.json")
    args = ap.parse_args()

    from switchnerf.ops import backend_name
    from switchnerf.train.run import load_run
    from switchnerf.viewer.render import DEFAULT_CHUNK, render_view

    width, height = (int(v) for v in args.size.split("x"))
    run = load_run(args.run, device="cpu")
    renderer = run.renderer
    _frozen(renderer)
    cams = _cameras(run, args.views, width, height)
    backend = backend_name()  # builds the native ops before any timing
    render_view(renderer, cams[0])  # warm-up
    times: dict[str, list[float]] = {"two_pass": [], "front_to_back": []}
    max_diff = 0.0
    for _ in range(args.repeats):
        for cam in cams:
            t0 = time.perf_counter()
            a = two_pass_view(renderer, cam, DEFAULT_CHUNK)
            times["two_pass"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            b = render_view(renderer, cam)
            times["front_to_back"].append(time.perf_counter() - t0)
            max_diff = max(max_diff, float((a.rgb - b.rgb).abs().max()))
    counts = [_counts(renderer, cam) for cam in cams]
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "run": str(args.run), "size": args.size, "backend": backend,
        "machine": platform.machine(), "threads": torch.get_num_threads(),
        "median_s": med, "times_s": times,
        "speedup": med["two_pass"] / med["front_to_back"],
        "max_rgb_difference": max_diff,
        "samples_per_ray": {k: statistics.mean(c[k] for c in counts) for k in counts[0]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.out)
    spr = result["samples_per_ray"]
    print(f"{args.size} still frame, {len(times['two_pass'])} renders each ({backend} ops, "
          f"{result['threads']} threads):")
    print(f"  two-pass (training-time path): median {med['two_pass']:.2f} s")
    print(f"  front-to-back inference path:  median {med['front_to_back']:.2f} s  "
          f"({result['speedup']:.2f}x)")
    print(f"  samples per ray: marched {spr['marched_per_ray']:.1f}, evaluated "
          f"{spr['evaluated_per_ray']:.1f}, visible {spr['visible_per_ray']:.1f}; "
          f"max rgb difference {max_diff:.2e}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
