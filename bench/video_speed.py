"""Video frames/s at 320x240 of the current tree against a baseline commit, interleaved on
one machine: each tree renders its own trained run (issue 16's "video frames/s on the demo
run >= 2x today's").

    python bench/video_speed.py RUN --baseline 68ff41e --baseline-run BASE_RUN
                                [--frames 6] [--rounds 3] [--out bench/results/video_speed.json]

RUN is a run trained by the current tree (``make demo`` writes outputs/demo/run), BASE_RUN
one trained by the baseline commit on the same scene (``switchnerf train`` of its own
configs/cpu-demo.yaml): a checkpoint of one tree does not load in the other when the model
changed between them. The baseline is checked out with ``git worktree add --detach`` into a
temporary folder (removed at the end). Each round renders ``--frames`` frames of the same
orbit (``bench/render.py``'s ``throughput``: 320x240, rgb only, model loading excluded) in
a fresh subprocess per tree, baseline first, so both trees see the same machine load over
the same minutes; the ratio is that of the median frames/s over the rounds. One untimed
frame per tree first (native builds, caches). ``--baseline-tree DIR`` uses an existing
checkout of the baseline instead of a temporary one.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = ("import json, sys\nfrom pathlib import Path\nsys.path.insert(0, '.')\n"
          "from bench.render import throughput\n"
          "print(json.dumps(throughput(Path(sys.argv[1]), int(sys.argv[2]))))\n")


def render_round(tree: Path, run: Path, frames: int) -> dict:
    """``throughput`` of ``run`` with ``tree``'s own code, in a fresh subprocess."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run([sys.executable, "-c", WORKER, str(run), str(frames)], cwd=tree,
                          env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"video_speed: rendering {run} with {tree} failed:\n"
                         f"{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_run(run: Path, what: str) -> None:
    if not (run / "config.yaml").is_file():
        raise SystemExit(f"video_speed: {what} {run} is not a trained run (no config.yaml)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="run trained by the current tree")
    ap.add_argument("--baseline", default="68ff41e", help="baseline commit")
    ap.add_argument("--baseline-tree", type=Path, default=None,
                    help="an existing checkout of the baseline (else a temporary worktree)")
    ap.add_argument("--baseline-run", type=Path, required=True,
                    help="run trained by the baseline commit")
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "video_speed.json")
    args = ap.parse_args()
    check_run(args.run, "RUN")
    check_run(args.baseline_run, "--baseline-run")
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                         capture_output=True, check=True).stdout.strip()
    rounds: dict[str, list[dict]] = {"baseline": [], "current": []}
    with tempfile.TemporaryDirectory() as tmp:
        base_tree = args.baseline_tree
        if base_tree is None:
            base_tree = Path(tmp) / "baseline"
            subprocess.run(["git", "worktree", "add", "--detach", str(base_tree),
                            args.baseline], cwd=ROOT, check=True, capture_output=True)
        trees = (("baseline", base_tree.resolve(), args.baseline_run.resolve()),
                 ("current", ROOT, args.run.resolve()))
        try:
            for name, tree, run in trees:  # untimed: native builds, first-touch caches
                render_round(tree, run, 1)
            for k in range(args.rounds):
                for name, tree, run in trees:
                    r = render_round(tree, run, args.frames)
                    rounds[name].append(r)
                    print(f"round {k + 1} {name}: {r['frames_per_s']:.3f} frames/s "
                          f"({r['s_per_frame']:.2f} s/frame, step {r['step']})", flush=True)
        finally:
            if args.baseline_tree is None:
                subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)],
                               cwd=ROOT, check=False, capture_output=True)
    med = {k: statistics.median(r["frames_per_s"] for r in v) for k, v in rounds.items()}
    ratio = med["current"] / med["baseline"]
    print(f"\n| tree | run | frames/s 320x240 (median of {args.rounds}) |\n|---|---|---|")
    print(f"| {args.baseline} | {args.baseline_run} | {med['baseline']:.3f} |")
    print(f"| {rev} | {args.run} | {med['current']:.3f} |")
    print(f"speed-up {ratio:.2f}x")
    result = {"date": datetime.date.today().isoformat(), "baseline": args.baseline,
              "current": rev, "frames": args.frames, "rounds": rounds,
              "median_frames_per_s": med, "speedup": round(ratio, 3),
              "cpu_count": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    tmp_out.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
