"""Distributed training on the CPU (gloo): one process against two ranks, data parallel (DP)
and expert parallel (EP), at the same global batch. Prints a markdown table and writes JSON.

    python bench/distributed.py [--steps 60] [--smoke] [--out bench/results/distributed.json]

Every run trains the synthetic ``tinycity`` scene with configs/cpu-demo.yaml (4 experts,
so 2 per rank with EP) for ``--steps`` steps, logging every step. Step time: the mean of
the logged ``time_s`` differences after the first 5 steps (startup and the first occupancy
updates excluded). Bytes per step: ``exchange_bytes`` (EP sample exchange, all ranks
together, from metrics.jsonl) and ``allreduce_bytes`` (the dense-gradient buffer each rank
all-reduces). Both ranks share this machine's cores, so the ratio measures overheads on
one machine, not a speed-up. ``--smoke``: 6 steps, to check that the script runs.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "configs" / "cpu-demo.yaml"
SETS = ["model.experts.n_experts=4", "train.log_every=1", "train.eval_every=0",
        "train.checkpoint_every=100000", "train.time_budget_s=null"]
WARMUP = 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(scene: Path, store: Path, run: Path, steps: int, ranks: int, extra: list[str]) -> None:
    args = ["-m", "switchnerf", "train", "--scene", str(scene), "--config", str(PRESET),
            "--output", str(run), "--store", str(store), "--max-steps", str(steps),
            "--device", "cpu"]
    for s in SETS + extra:
        args += ["--set", s]
    if ranks > 1:
        args = ["-m", "torch.distributed.run", "--nproc-per-node", str(ranks),
                "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)


def _summary(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]
    times = [b["time_s"] - a["time_s"] for a, b in itertools.pairwise(rows)][WARMUP:]
    return {"step_s": statistics.mean(times) if times else None,
            "exchange_bytes": rows[-1].get("exchange_bytes", 0.0),
            "allreduce_bytes": rows[-1].get("allreduce_bytes", 0),
            "final_loss": rows[-1]["loss"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "distributed.json")
    args = p.parse_args()
    steps = 6 if args.smoke else args.steps
    sys.path.insert(0, str(ROOT))
    from switchnerf.io_utils import write_json_atomic
    from switchnerf.scene.synth.write import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scene, store = tmp / "tinycity", tmp / "store"
        synthesize("tinycity", scene, seed=0, progress=False)
        runs = {"1 process": (1, []),
                "2 ranks DP": (2, ["distributed.expert_parallel=false"]),
                "2 ranks EP": (2, ["distributed.expert_parallel=true"])}
        results = {}
        for name, (ranks, extra) in runs.items():
            run = tmp / name.replace(" ", "_")
            _train(scene, store, run, steps, ranks, extra)
            results[name] = _summary(run)
    base = results["1 process"]["step_s"]
    print("| run | step (ms) | step / 1 process | EP exchange (bytes/step) "
          "| dense all-reduce (bytes/rank/step) | loss at the end |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        ratio = r["step_s"] / base if r["step_s"] and base else None
        r["ratio"] = ratio
        print(f"| {name} | {1000 * r['step_s']:.1f} | {ratio:.2f} | {r['exchange_bytes']:.0f} "
              f"| {r['allreduce_bytes']} | {r['final_loss']:.5f} |")
    if not args.smoke:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.out, {"date": datetime.date.today().isoformat(),
                                     "machine": platform.processor() or platform.machine(),
                                     "cpus": os.cpu_count(), "steps": steps,
                                     "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
