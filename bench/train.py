"""Training speed and time-to-PSNR on minicity: switchnerf++ (scaled to CPU), single-grid,
fixed-grid at equal parameter count. Prints a markdown table and writes JSON.

    python bench/train.py [--seconds 120] [--scene scenes/minicity.yaml] [--out bench/results/train.json]

Every preset is trained for the same wall-clock budget with the CPU-scaled table sizes of
configs/cpu-demo.yaml; held-out PSNR is measured at the end. The MoE/single step-time ratio
compares the mean step time of switchnerf++ with single-grid, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from switchnerf.config import load_config  # noqa: E402
from switchnerf.scene.load import ensure_synth_scene  # noqa: E402
from switchnerf.train.evaluate import evaluate  # noqa: E402
from switchnerf.train.trainer import Trainer  # noqa: E402

# Equal parameter count: 8 experts x 2^15 rows per level vs one grid with 2^18.
PRESETS = {
    "switchnerf++": ("switchnerf++.yaml", ["model.experts.log2_hashmap_size=15",
                                            "model.experts.finest_resolution=2048"]),
    "single-grid": ("single-grid.yaml", ["model.experts.log2_hashmap_size=18",
                                          "model.experts.finest_resolution=2048"]),
    "fixed-grid": ("fixed-grid.yaml", ["model.experts.log2_hashmap_size=15",
                                        "model.experts.finest_resolution=2048"]),
}
CPU_COMMON = ["train.rays_per_step=4096", "train.eval_every=0", "train.checkpoint_every=100000",
              "sampler.grid_resolution=96", "sampler.steps_per_diagonal=512",
              "train.shard_rays=262144"]


def bench_preset(name: str, scene: Path, seconds: float, workdir: Path) -> dict:
    file, sets = PRESETS[name]
    cfg = load_config(ROOT / "configs" / file, sets + CPU_COMMON + [f"train.time_budget_s={seconds}"])
    trainer = Trainer(cfg, scene, workdir / name, device="cpu", progress=False)
    step_times: list[float] = []
    curve: list[tuple[float, float]] = []
    t0 = time.perf_counter()
    last = [t0]

    def on_step(tr, stats):
        now = time.perf_counter()
        step_times.append(now - last[0])
        last[0] = now
        if tr.step % 100 == 0:
            curve.append((now - t0, stats.psnr))

    try:
        summary = trainer.train(on_step=on_step)
        result = evaluate(trainer.field, trainer.grid, trainer.box, cfg, trainer.scene)
    finally:
        trainer.close()
    steady = step_times[20:] or step_times
    params = sum(p.numel() for p in trainer.field.table_parameters())
    return {"preset": name, "steps": summary["step"], "rays_per_s": summary["rays_per_s"],
            "mean_step_s": sum(steady) / max(len(steady), 1), "table_params": params,
            "heldout_psnr": result["psnr"], "heldout_ssim": result["ssim"],
            "train_psnr_curve": curve}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--scene", type=Path, default=ROOT / "scenes" / "minicity.yaml")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train.json")
    args = ap.parse_args()
    ensure_synth_scene(args.scene)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.presets.split(","):
            rows.append(bench_preset(name, args.scene, args.seconds, Path(tmp)))
            r = rows[-1]
            print(f"{name}: {r['steps']} steps, {r['rays_per_s'] / 1e3:.1f}k rays/s, "
                  f"held-out PSNR {r['heldout_psnr']:.2f} dB", flush=True)
    by = {r["preset"]: r for r in rows}
    ratio = (by["switchnerf++"]["mean_step_s"] / by["single-grid"]["mean_step_s"]
             if "switchnerf++" in by and "single-grid" in by else math.nan)
    print(f"\n| preset | table params | steps in {args.seconds:.0f} s | rays/s | held-out PSNR (dB) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['table_params'] / 1e6:.2f} M | {r['steps']} | "
              f"{r['rays_per_s'] / 1e3:.1f}k | {r['heldout_psnr']:.2f} |")
    print(f"\nMoE step time / single-grid step time: {ratio:.2f} (target <= 1.3)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seconds": args.seconds, "presets": rows,
                                    "moe_over_single_step_time": ratio}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
