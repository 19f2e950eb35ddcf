"""Where a render of a trained run goes: per phase, ms per frame and share (issue 16).

    python bench/profile_render.py RUN [--size 320x240] [--frames 6] [--out ...]

RUN is a trained run (``make demo`` writes outputs/demo/run). The frames are the first
``--frames`` of the orbit ``bench/render.py`` renders (the video bench's), rgb only, without
gradients, after one untimed frame; phases are timed exclusively by wrapping the functions
a render goes through (``bench/profile_step.py``'s instrumentation); the rest of
``render_camera`` (rays, gathers, the rounds' bookkeeping) is "rays, assembly".
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.profile_step import PhaseTimer, instrument_render, table
from bench.render import _orbit


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--size", default="320x240", help="WIDTHxHEIGHT")
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "profile_render.json")
    args = ap.parse_args()
    if not (args.run / "config.yaml").is_file():
        print(f"profile_render: {args.run} is not a trained run (no config.yaml)", file=sys.stderr)
        return 2
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        print(f"profile_render: --size {args.size!r} is not WIDTHxHEIGHT", file=sys.stderr)
        return 2
    from switchnerf.train.run import load_run

    run = load_run(args.run, device="cpu")
    cams = list(_orbit(run, args.frames / 12.0, 12.0, width, height).cameras())
    timer = PhaseTimer()
    instrument_render(run.renderer.field, timer)
    with torch.no_grad():
        run.renderer.render_camera(cams[0])  # untimed: first-touch allocations
        timer.enabled = True
        t0 = time.perf_counter()
        for cam in cams:
            with timer.phase("render"):
                run.renderer.render_camera(cam)
        elapsed = time.perf_counter() - t0
    totals = dict(timer.totals)
    totals["rays, assembly"] = totals.pop("render")
    md, rows = table(totals, len(cams), f"{width}x{height} render phase", "render")
    print(f"{len(cams)} frames of {args.run} (step {run.step}) at {width}x{height}: "
          f"{elapsed / len(cams):.3f} s/frame\n")
    print(md)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({
        "date": datetime.date.today().isoformat(), "run": str(args.run), "step": run.step,
        "size": [width, height], "frames": len(cams), "s_per_frame": elapsed / len(cams),
        "phases": rows, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
    }, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
