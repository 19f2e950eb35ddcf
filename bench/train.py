"""Training speed and time-to-PSNR on minicity: switchnerf++ (scaled to CPU), single-grid and
fixed-grid at equal parameter count. Prints a markdown table and writes JSON.

    python bench/train.py [--seconds 600] [--eval-every 60] [--eval-images 8]
                          [--thresholds 24,26,28] [--methods switchnerf++,single-grid,fixed-grid]
                          [--set KEY=VALUE ...] [--scene scenes/minicity.yaml]
                          [--out bench/results/train.json]

CPU scaling: every method starts from configs/cpu-demo.yaml (which is switchnerf++ scaled to
2 CPU cores: 512 rays/step, occupancy threshold 0.05, a shared coarse grid under the
experts, ...) and changes only what makes it that method (``CPU_METHODS``): the routing, the
expert count, no shared grid for the baselines, and the table size solved so that its trainable parameter count (tables, MLPs, gate, appearance,
background) equals switchnerf++'s (tests/test_presets_params.py checks it).

The methods are trained one after another for ``--seconds`` of training time each (the
cpu-demo schedule of 7000 steps ends a run earlier if it is reached). Every
``--eval-every`` seconds of training the held-out PSNR is measured on ``--eval-images``
val images (Mega-NeRF right halves); evaluation pauses the training clock, so rays/s, step
times and time-to-PSNR count training only. Time-to-PSNR is the training time of the first
evaluation at or above each threshold (null: not reached). The MoE/single ratio compares
the mean step time of switchnerf++ with single-grid's (steps after the first 20).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from bench.common import parameter_counts, time_to_psnr
from switchnerf.config import Config, load_config
from switchnerf.train.evaluate import eval_indices

CPU_BASE = ROOT / "configs" / "cpu-demo.yaml"
"""The CPU scaling of every method: switchnerf++ as the demo trains it."""

CPU_METHODS: dict[str, list[str]] = {
    "switchnerf++": [],
    # configs/single-grid.yaml's structure (no shared coarse grid: the single grid spans
    # every level); 309993 rows per hashed level (~2^18.24).
    "single-grid": ["model.experts.n_experts=1", "model.experts.coarsest_fraction=1.0",
                    "model.routing.kind=single", "model.experts.shared_levels=0",
                    "model.experts.hashmap_size=309993"],
    # configs/fixed-grid.yaml's structure (homogeneous experts, no shared grid); the gate's
    # parameters go to the tables (2^15 - 1172 rows per hashed level, within 32 parameters
    # of switchnerf++).
    "fixed-grid": ["model.routing.kind=fixed", "model.routing.fixed_grid=[2, 4]",
                   "model.experts.coarsest_fraction=1.0", "model.experts.shared_levels=0",
                   "model.experts.hashmap_size=31596"],
}
"""--set overrides of configs/cpu-demo.yaml that make each method at equal parameter count."""

WARMUP_STEPS = 20  # excluded from the mean step time (allocator, first occupancy updates)


def cpu_config(method: str, extra: list[str] | None = None) -> Config:
    """The CPU-scaled config of ``method`` (cpu-demo.yaml plus the method's overrides)."""
    return load_config(CPU_BASE, CPU_METHODS[method] + list(extra or []))


def bench_method(method: str, cfg: Config, scene: Path, workdir: Path, *, seconds: float,
                 eval_every: float, eval_images: int, thresholds: list[float]) -> dict:
    from switchnerf.train.data import prepare_training_data
    from switchnerf.train.evaluate import evaluate, uses_right_half_protocol
    from switchnerf.train.trainer import Trainer

    data = prepare_training_data(cfg, scene, progress=False)
    trainer = Trainer(cfg, data, workdir / method, device="cpu", progress=False)
    params = parameter_counts(trainer.renderer.field)
    right_half = uses_right_half_protocol(trainer.scene, cfg)
    picks = eval_indices(len(trainer.scene.images("val")), eval_images)
    curve: list[dict] = []
    eval_wall = 0.0

    def run_eval(train_s: float) -> None:
        nonlocal eval_wall
        t = time.perf_counter()
        result = evaluate(trainer.renderer, trainer.scene, indices=picks,
                          right_half=right_half)
        eval_wall += time.perf_counter() - t
        curve.append({"train_s": train_s, "step": trainer.step, "psnr": result["psnr"],
                      "ssim": result["ssim"]})
        print(f"  {method}: step {trainer.step}, {train_s:.0f} s: held-out PSNR "
              f"{result['psnr']:.2f} dB ({time.perf_counter() - t:.1f} s to evaluate)", flush=True)

    step_times: list[float] = []
    samples_per_ray: list[float] = []
    train_s, rays, next_eval = 0.0, 0, eval_every
    try:
        while train_s < seconds and trainer.step < cfg.train.max_steps:
            t = time.perf_counter()
            batch = next(trainer.stream)
            stats = trainer.train_step(batch)
            dt = time.perf_counter() - t
            train_s += dt
            rays += len(batch)
            step_times.append(dt)
            samples_per_ray.append(stats.samples_per_ray)
            if eval_every > 0 and next_eval <= train_s < seconds:
                run_eval(train_s)
                while next_eval <= train_s:
                    next_eval += eval_every
        if not curve or curve[-1]["step"] != trainer.step:
            run_eval(train_s)
    finally:
        trainer.close()
    steady = step_times[WARMUP_STEPS:] or step_times
    reached = time_to_psnr(curve, thresholds)
    return {"method": method, "params_total": params["total"], "params_tables": params["tables"],
            "steps": trainer.step, "train_s": train_s, "rays_per_s": rays / max(train_s, 1e-9),
            "mean_step_s": sum(steady) / len(steady),
            "median_step_s": sorted(steady)[len(steady) // 2],
            "mean_samples_per_ray": sum(samples_per_ray[WARMUP_STEPS:] or samples_per_ray)
            / max(len(samples_per_ray[WARMUP_STEPS:] or samples_per_ray), 1),
            "heldout_psnr": curve[-1]["psnr"], "heldout_ssim": curve[-1]["ssim"],
            "time_to_psnr": reached, "eval_curve": curve, "eval_wall_s": eval_wall,
            "overrides": CPU_METHODS[method]}


def markdown(rows: list[dict], thresholds: list[float], seconds: float, ratio: float) -> str:
    thr_cols = " | ".join(f"time to {t:g} dB" for t in thresholds)
    header = (f"| method | params (tables) | steps in {seconds:.0f} s | rays/s | mean step | "
              f"held-out PSNR (dB) | {thr_cols} |")
    lines = [header, "|---|---|---|---|---|---|" + "---|" * len(thresholds)]
    for r in rows:
        times = []
        for t in thresholds:
            hit = r["time_to_psnr"][f"{t:g}"]
            times.append("—" if hit is None else f"{hit['train_s']:.0f} s ({hit['step']} steps)")
        lines.append(
            f"| {r['method']} | {r['params_total'] / 1e6:.3f} M ({r['params_tables'] / 1e6:.3f} M) | "
            f"{r['steps']} | {r['rays_per_s'] / 1e3:.2f}k | {r['mean_step_s'] * 1e3:.0f} ms | "
            f"{r['heldout_psnr']:.2f} | " + " | ".join(times) + " |")
    lines.append("")
    lines.append(f"MoE step time / single-grid step time: {ratio:.2f} (target <= 1.3)")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600.0, help="training time per method")
    ap.add_argument("--eval-every", type=float, default=60.0,
                    help="seconds of training between held-out evaluations (0: only at the end)")
    ap.add_argument("--eval-images", type=int, default=0,
                    help="val images per evaluation, spread evenly (0: all)")
    ap.add_argument("--thresholds", default="24,26,28", help="PSNR thresholds (dB), comma-separated")
    ap.add_argument("--methods", default=",".join(CPU_METHODS))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra override for every method, e.g. --set train.max_steps=20000")
    ap.add_argument("--scene", type=Path, default=ROOT / "scenes" / "minicity.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train.json")
    args = ap.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in CPU_METHODS]
    if unknown:
        ap.error(f"--methods: unknown {unknown} (known: {', '.join(CPU_METHODS)})")
    thresholds = [float(t) for t in args.thresholds.split(",") if t.strip()]
    configs = {m: cpu_config(m, args.set) for m in methods}

    from switchnerf.ops import backend_name
    from switchnerf.scene.load import ensure_synth_scene

    ensure_synth_scene(args.scene)
    backend = backend_name()  # builds the native ops now if needed, not inside a timed run
    print(f"ops: {backend}, {torch.get_num_threads()} torch threads", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in methods:
            print(f"{m}: training {args.seconds:.0f} s", flush=True)
            rows.append(bench_method(m, configs[m], args.scene, Path(tmp), seconds=args.seconds,
                                     eval_every=args.eval_every, eval_images=args.eval_images,
                                     thresholds=thresholds))
            r = rows[-1]
            print(f"{m}: {r['params_total']:,} params ({r['params_tables']:,} in tables), "
                  f"{r['steps']} steps, {r['rays_per_s'] / 1e3:.2f}k rays/s, "
                  f"held-out PSNR {r['heldout_psnr']:.2f} dB", flush=True)
    by = {r["method"]: r for r in rows}
    ratio = (by["switchnerf++"]["mean_step_s"] / by["single-grid"]["mean_step_s"]
             if "switchnerf++" in by and "single-grid" in by else math.nan)
    ref = by.get("switchnerf++")
    if ref is not None:
        for r in rows:
            if abs(r["params_total"] - ref["params_total"]) > 1e-3 * ref["params_total"]:
                print(f"WARNING: {r['method']} has {r['params_total']:,} parameters, switchnerf++ "
                      f"{ref['params_total']:,}: not an equal-parameter comparison", flush=True)
    print()
    print(markdown(rows, thresholds, args.seconds, ratio))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": datetime.date.today().isoformat(), "seconds": args.seconds,
        "eval_every_s": args.eval_every, "eval_images": args.eval_images,
        "thresholds_db": thresholds, "base_config": "configs/cpu-demo.yaml", "extra_sets": args.set,
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "ops": backend,
                    "torch": torch.__version__, "python": platform.python_version()},
        "methods": rows, "moe_over_single_step_time": ratio}, indent=2))
    print(f"\nwrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
