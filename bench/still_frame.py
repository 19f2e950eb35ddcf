"""The viewer's still frame of a run, this tree against a baseline commit, interleaved.

    python bench/still_frame.py [RUN] [--baseline 107fa5d] [--size 256x192] [--repeats 3]
                                [--poses 8] [--out bench/results/still_frame.json]

RUN defaults to outputs/demo/run. The baseline commit is checked out with ``git worktree add
--detach`` into a temporary folder (removed at the end). Each tree runs one viewer in its own
subprocess (bench/_still_frame_worker.py, PYTHONPATH set to the tree, so each imports its own
code and native build) with one loopback probe client, and the two are asked for the same
orbit poses in turn, the order of the two swapped every repeat, so that both see the same
machine load. Per tree: seconds from the camera message to the first image and to the
full-resolution image (bench/viewer.py's still frame: settle delay 0, the preview included
where the viewer draws one), and the same view rendered by ``render_view`` alone.

On a shared machine the ratios are what count; the absolute times depend on the load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "bench" / "_still_frame_worker.py"
FIGURES = ("full_s", "first_s", "render_s")


def _start(tree: Path, run: Path, size: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.Popen([sys.executable, str(WORKER), str(run), size], cwd=tree, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:  # the native build and the model load come first
        if line.strip() == "ready":
            return proc
    raise SystemExit(f"still_frame: the worker in {tree} ended before it was ready "
                     f"(exit {proc.wait()})")


def _ask(proc: subprocess.Popen, pose: int) -> dict:
    proc.stdin.write(f"{pose}\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"still_frame: a worker ended (exit {proc.wait()})")
    return json.loads(line)


def _stats(values: list) -> dict:
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if not a.size:
        return {"n": 0}
    return {"n": int(a.size), "p50": float(np.median(a)), "p90": float(np.percentile(a, 90)),
            "max": float(a.max()), "missing": len(values) - int(a.size)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", type=Path, default=ROOT / "outputs" / "demo" / "run")
    ap.add_argument("--baseline", default="107fa5d", help="the commit to compare against")
    ap.add_argument("--size", default="256x192")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--poses", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "still_frame.json")
    args = ap.parse_args()
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True, check=False).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                                text=True, check=False).stdout.strip())
    times: dict[str, list[dict]] = {"baseline": [], "current": []}
    load = []
    with tempfile.TemporaryDirectory(prefix="still_frame_") as tmp:
        base_tree = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(base_tree),
                        args.baseline], cwd=ROOT, check=True)
        procs = {}
        try:
            procs = {"baseline": _start(base_tree, args.run.resolve(), args.size),
                     "current": _start(ROOT, args.run.resolve(), args.size)}
            for rep in range(args.repeats):
                order = list(procs) if rep % 2 == 0 else list(procs)[::-1]
                for pose in range(args.poses):
                    for name in order:
                        times[name].append(_ask(procs[name], pose))
                load.append(os.getloadavg()[0])
                full = {k: np.median([t["full_s"] or np.nan for t in v]) for k, v in times.items()}
                print(f"repeat {rep + 1}/{args.repeats}: still frame p50 baseline "
                      f"{full['baseline']:.3f} s, current {full['current']:.3f} s "
                      f"(load average {load[-1]:.1f})", flush=True)
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.stdin.write("\n")
                    proc.stdin.flush()
                    proc.wait(60)
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT,
                           check=False)
    stats = {k: {f: _stats([t[f] for t in v]) for f in FIGURES} for k, v in times.items()}
    print(f"\n{args.size} still frame, {args.poses} poses x {args.repeats} repeats, interleaved; "
          f"load average {min(load):.1f}-{max(load):.1f}\n")
    print(f"| figure | {args.baseline} p50 | p90 | {rev}{'+' if dirty else ''} p50 | p90 | ratio p50 |")
    print("|---|---|---|---|---|---|")
    labels = {"full_s": "camera message -> full image", "first_s": "camera message -> first image",
              "render_s": "render_view alone"}
    for f in FIGURES:
        b, c = stats["baseline"][f], stats["current"][f]
        if b["n"] and c["n"]:
            print(f"| {labels[f]} | {b['p50']:.3f} s | {b['p90']:.3f} s | {c['p50']:.3f} s | "
                  f"{c['p90']:.3f} s | {b['p50'] / c['p50']:.2f}x |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(args.out.name + ".tmp")
    tmp_out.write_text(json.dumps({
        "date": datetime.date.today().isoformat(), "run": str(args.run), "size": args.size,
        "baseline": args.baseline, "current": rev, "current_dirty": dirty,
        "repeats": args.repeats, "poses": args.poses, "load_average": load,
        "stats": stats, "times": times, "written_at": time.strftime("%Y-%m-%dT%H:%M:%S")},
        indent=2))
    os.replace(tmp_out, args.out)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
