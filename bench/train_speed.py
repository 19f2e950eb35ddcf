"""Training speed of the current tree against today's commit, interleaved on one machine:
rays/s ratio and held-out PSNR at equal steps, for switchnerf++, single-grid and fixed-grid.

    python bench/train_speed.py [--baseline 68ff41e] [--steps 2000] [--chunk 250]
                                [--methods switchnerf++,single-grid,fixed-grid]
                                [--set KEY=VALUE ...] [--scene scenes/minicity.yaml]
                                [--out bench/results/train_speed.json]

The baseline commit is checked out with ``git worktree add --detach`` into a temporary
folder (removed at the end); each tree runs in its own subprocesses with PYTHONPATH set to
it (bench/_train_speed_worker.py), so each imports its own code and native build. Every
method starts from configs/cpu-demo.yaml plus bench/train.py's ``CPU_METHODS`` overrides
(equal parameter counts), the same seed and the same scene, each tree with its own ray
store. Runs are interleaved in chunks of ``--chunk`` steps (baseline chunk, current chunk,
next method, ...), each chunk resuming the run from its checkpoint, so both trees see the
same machine load over the same minutes; rays/s counts the time inside ``train_step`` only.
At ``--steps`` both runs are evaluated on every val image (Mega-NeRF right halves).

Each tree reads its own configs/cpu-demo.yaml, whose schedule may differ (the
learning-rate decay runs over ``train.max_steps``); ``--set`` overrides go to both trees,
so ``--set train.max_steps=2000`` makes both decay over the measured steps and the PSNR
columns compare one schedule (a key the baseline does not know fails its worker).

On a shared machine run it once, at low priority (``nice -n 10``): the ratios are what
count, the absolute rays/s depend on the load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.train import CPU_METHODS

WORKER = ROOT / "bench" / "_train_speed_worker.py"


def run_chunk(tree: Path, job: dict, workdir: Path) -> dict:
    """Run one worker chunk with ``tree`` on PYTHONPATH; its result dict."""
    job_file = workdir / "job.json"
    job_file.write_text(json.dumps(job))
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run([sys.executable, str(WORKER), str(job_file)], cwd=tree, env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"train_speed: worker failed in {tree} ({job['run']}):\n"
                         f"{proc.stderr[-3000:]}")
    return json.loads(Path(job["out"]).read_text())


def write_results(args, rev: str, rows: list[dict]) -> None:
    """Print the table of the methods measured so far and write the JSON (atomically)."""
    print(f"\n| method | rays/s {args.baseline} | rays/s {rev} | speed-up | after the first "
          f"chunk | PSNR {args.baseline} | PSNR {rev} | delta |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        p = r["psnr"]
        fmt = (lambda v: "—" if v is None else f"{v:.2f}")
        delta = "—" if r["psnr_delta_db"] is None else f"{r['psnr_delta_db']:+.2f}"
        later = r["speedup_after_first_chunk"]
        print(f"| {r['method']} | {r['rays_per_s']['baseline'] / 1e3:.2f}k | "
              f"{r['rays_per_s']['current'] / 1e3:.2f}k | {r['speedup']:.2f}x | "
              f"{'—' if later is None else f'{later:.2f}x'} | "
              f"{fmt(p['baseline'])} | {fmt(p['current'])} | {delta} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(args.out.name + ".tmp")
    tmp_out.write_text(json.dumps({
        "date": datetime.date.today().isoformat(), "baseline": args.baseline, "current": rev,
        "steps": args.steps, "chunk": args.chunk, "base_config": "configs/cpu-demo.yaml",
        "sets": args.set,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "load_average": os.getloadavg()},
        "methods": rows, "written_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2))
    os.replace(tmp_out, args.out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="68ff41e", help="today's commit")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--chunk", type=int, default=250, help="steps per interleaved chunk")
    ap.add_argument("--methods", default=",".join(CPU_METHODS))
    ap.add_argument("--scene", type=Path, default=ROOT / "scenes" / "minicity.yaml")
    ap.add_argument("--no-eval", action="store_true", help="skip the held-out PSNR")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for both trees (repeatable)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_speed.json")
    args = ap.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in CPU_METHODS]
    if unknown:
        ap.error(f"--methods: unknown {unknown} (known: {', '.join(CPU_METHODS)})")

    from switchnerf.scene.load import ensure_synth_scene

    scene = ensure_synth_scene(args.scene, progress=False).resolve()
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True, check=False).stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory(prefix="train_speed_") as tmp:
        tmp = Path(tmp)
        base_tree = tmp / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(base_tree),
                        args.baseline], cwd=ROOT, check=True)
        trees = {"baseline": base_tree, "current": ROOT}
        try:
            for m in methods:
                totals = {k: {"rays": 0, "train_s": 0.0, "later_rays": 0, "later_s": 0.0,
                              "spr": []} for k in trees}
                final = {}
                until = 0
                while until < args.steps:
                    until = min(until + args.chunk, args.steps)
                    last = until >= args.steps
                    for name, tree in trees.items():
                        work = tmp / name / m
                        work.mkdir(parents=True, exist_ok=True)
                        res = run_chunk(tree, {
                            "config": str(tree / "configs" / "cpu-demo.yaml"),
                            "sets": [*CPU_METHODS[m], *args.set], "scene": str(scene),
                            "store": str(tmp / name / "store"), "run": str(work / "run"),
                            "until": until, "evaluate": last and not args.no_eval,
                            "out": str(work / f"chunk_{until}.json")}, work)
                        t = totals[name]
                        t["rays"] += res["rays"]
                        t["train_s"] += res["train_s"]
                        if until > args.chunk:  # after the first chunk (occupancy warm-up)
                            t["later_rays"] += res["rays"]
                            t["later_s"] += res["train_s"]
                        t["spr"].append(res["samples_per_ray"])
                        final[name] = res
                    b, c = totals["baseline"], totals["current"]
                    print(f"{m}: step {until}: baseline {b['rays'] / b['train_s'] / 1e3:.2f}k "
                          f"rays/s, current {c['rays'] / c['train_s'] / 1e3:.2f}k rays/s",
                          flush=True)
                speed = {k: v["rays"] / max(v["train_s"], 1e-9) for k, v in totals.items()}
                later = ({k: v["later_rays"] / v["later_s"] for k, v in totals.items()}
                         if all(v["later_s"] > 0 for v in totals.values()) else None)
                psnr = {k: final[k]["psnr"] for k in trees}
                rows.append({
                    "method": m, "steps": args.steps,
                    "rays_per_s": speed, "speedup": speed["current"] / speed["baseline"],
                    # the same after the first chunk: without the occupancy grid's warm-up
                    # (every cell re-estimated every 16 steps for the first 256 steps)
                    "rays_per_s_after_first_chunk": later,
                    "speedup_after_first_chunk": (None if later is None
                                                  else later["current"] / later["baseline"]),
                    "samples_per_ray": {k: sum(v["spr"]) / len(v["spr"]) for k, v in totals.items()},
                    "psnr": psnr,
                    "psnr_delta_db": (None if None in psnr.values()
                                      else psnr["current"] - psnr["baseline"])})
                write_results(args, rev, rows)  # a partial run keeps what it measured
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT,
                           check=False)
    write_results(args, rev, rows)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
