"""Quality and routing of one method variant at a fixed step count on minicity.

    python bench/routing.py --name NAME [--method switchnerf++] [--steps 2000]
                            [--set KEY=VALUE ...] [--probe-every 100] [--probe-start 500]
                            [--scene scenes/minicity.yaml] [--out bench/results/routing]

Trains ``--method`` (configs/cpu-demo.yaml plus the method's overrides, as in
bench/train.py, plus ``--set``) for exactly ``--steps`` steps with the learning-rate
schedule ending there (``train.max_steps = steps``): quality at an equal step count does
not depend on how loaded the machine is. Then it measures held-out PSNR/SSIM on the right
halves of all val images (Mega-NeRF protocol) and the routing diagnostics
(switchnerf.moe.diagnostics) on a fixed probe set of occupied points: churn per
``--probe-every`` steps from ``--probe-start`` on, neighbour disagreement (and that of the
compact 2x4 ground partition on the same points, for reference), mean gate value, load.
Writes NAME.json, NAME.pt (field and grid state) and NAME_experts.png (top-down expert
map) under ``--out`` and prints one markdown row.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from switchnerf.io_utils import atomic_path, write_json_atomic


def _bench_train():
    spec = importlib.util.spec_from_file_location("bench_train", ROOT / "bench" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def partition_disagreement(probe, grid_shape=(2, 4)) -> float:
    """Neighbour disagreement of the compact rows x cols ground partition on the probe set."""
    from switchnerf.moe.diagnostics import neighbour_disagreement
    from switchnerf.moe.gate import FixedCellRouter

    router = FixedCellRouter(grid_shape)
    return neighbour_disagreement(lambda x: router(x).expert_id, probe.points, probe.offsets)


def run(args) -> dict:
    from switchnerf.moe.diagnostics import RoutingProbe
    from switchnerf.render.palette import EXPERT_PALETTE
    from switchnerf.scene.load import ensure_synth_scene
    from switchnerf.train.evaluate import evaluate
    from switchnerf.train.trainer import Trainer

    bench_train = _bench_train()
    cfg = bench_train.cpu_config(args.method, [f"train.max_steps={args.steps}"] + args.set)
    ensure_synth_scene(args.scene)
    probe = RoutingProbe(8192, seed=0)
    trace = []
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, args.scene, Path(tmp) / "run", device="cpu", progress=False)
        params = bench_train.parameter_counts(trainer.field)
        t0 = time.perf_counter()
        try:
            while trainer.step < args.steps:
                stats = trainer.train_step(next(trainer.stream))
                s = trainer.step
                if s >= args.probe_start and (s - args.probe_start) % args.probe_every == 0:
                    m = probe.measure(trainer.field, trainer.grid, step=s)
                    trace.append({"step": s, "churn": m["churn"], "disagreement": m["disagreement"],
                                  "gate_value": m["gate_value"], "load": m["load"],
                                  "train_psnr": stats.psnr})
                    print(f"  step {s}: churn {m['churn']}, disagreement "
                          f"{m['disagreement']:.4f}, gate {m['gate_value']:.3f}, "
                          f"train PSNR {stats.psnr:.2f}", flush=True)
            train_s = time.perf_counter() - t0
            result = evaluate(trainer.field, trainer.grid, trainer.box, cfg, trainer.scene)
            final = probe.measure(trainer.field, trainer.grid)
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            with atomic_path(out / f"{args.name}.pt") as p:
                torch.save({"field": trainer.field.state_dict(), "grid": trainer.grid.state_dict(),
                            "config": cfg.to_dict()}, p)
            probe.write_topdown(out / f"{args.name}_experts.png", trainer.field, trainer.grid,
                                EXPERT_PALETTE)
        finally:
            trainer.close()
    late = [t["churn"] for t in trace if t["churn"] is not None and t["step"] > args.steps // 2]
    row = {"name": args.name, "method": args.method, "sets": args.set, "steps": args.steps,
           "train_s": train_s, "params_total": params["total"],
           "heldout_psnr": result["psnr"], "heldout_ssim": result["ssim"],
           "churn_late_mean": sum(late) / len(late) if late else None,
           "disagreement": final["disagreement"],
           "disagreement_2x4": partition_disagreement(probe),
           "gate_value": final["gate_value"], "load": final["load"],
           "region_expert": final["region_expert"], "region_resolution": final["region_resolution"],
           "trace": trace}
    write_json_atomic(Path(args.out) / f"{args.name}.json", row)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--method", default="switchnerf++")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--probe-every", type=int, default=100)
    ap.add_argument("--probe-start", type=int, default=500)
    ap.add_argument("--scene", type=Path, default=ROOT / "scenes" / "minicity.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "routing")
    args = ap.parse_args()
    r = run(args)
    churn = "—" if r["churn_late_mean"] is None else f"{100 * r['churn_late_mean']:.2f} %"
    print(f"| {r['name']} | {r['steps']} | {r['params_total']:,} | {r['heldout_psnr']:.2f} | "
          f"{r['heldout_ssim']:.3f} | {churn} | {r['disagreement']:.4f} "
          f"({r['disagreement_2x4']:.4f}) | {r['gate_value']:.3f} | {r['train_s']:.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
