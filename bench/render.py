"""Video rendering on CPU: frames/s at 320x240, and peak memory of a 10 s and a 60 s video.

    python bench/render.py [RUN] [--frames 6] [--small 32x24] [--fps 10] [--out bench/results/render.json]

RUN defaults to outputs/demo/run (what `make demo` trains). Throughput: ``--frames`` frames of
an orbit at 320x240 (rgb only) through ``render_video``, model loading excluded. Memory: a
10 s and a 60 s orbit at ``--small`` resolution with rgb | depth | experts panels, each
rendered in its own subprocess that reports its peak resident set size (VmHWM); streaming
frames to the encoder should make the two peaks equal up to noise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _orbit(run, seconds: float, fps: float, width: int, height: int):
    from switchnerf.video.camera_path import CameraPath
    from switchnerf.video.paths import orbit_geometry, orbit_keyframes

    target, radius, altitude = orbit_geometry(run.scene, altitude=None, tilt_deg=35.0)
    n = max(1, round(seconds * fps))
    return CameraPath(orbit_keyframes(target, radius, altitude, n), width, height, seconds, fps,
                      loop=True, source="orbit")


def _provenance(run):
    from switchnerf.video.video_job import Provenance

    return Provenance(run.run_dir, run.checkpoint, run.step)


def _vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def child_rss(run_dir: str, seconds: float, fps: float, size: str, out: str) -> None:
    """Subprocess body: render one video, print {"seconds", "frames", "vm_hwm_mib", ...}."""
    from switchnerf.train.run import load_run
    from switchnerf.video.video_job import render_video

    w, h = (int(v) for v in size.split("x"))
    run = load_run(run_dir, device="cpu")
    after_load = _vm_hwm_mib()
    path = _orbit(run, seconds, fps, w, h)
    t0 = time.perf_counter()
    render_video(run.renderer, path, Path(out), provenance=_provenance(run),
                 outputs=("rgb", "depth", "experts"), progress=False, log=None)
    print(json.dumps({"seconds": seconds, "frames": path.n_frames, "size": size,
                      "wall_s": time.perf_counter() - t0, "vm_hwm_after_load_mib": after_load,
                      "vm_hwm_mib": _vm_hwm_mib()}))


def throughput(run_dir: Path, frames: int) -> dict:
    from switchnerf.train.run import load_run
    from switchnerf.video.video_job import render_video

    run = load_run(run_dir, device="cpu")
    path = _orbit(run, frames / 12.0, 12.0, 320, 240)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        render_video(run.renderer, path, Path(tmp) / "fps.mp4", provenance=_provenance(run),
                     outputs=("rgb",), progress=False, log=None)
        elapsed = time.perf_counter() - t0
    return {"resolution": "320x240", "frames": path.n_frames, "elapsed_s": round(elapsed, 2),
            "frames_per_s": round(path.n_frames / elapsed, 4),
            "s_per_frame": round(elapsed / path.n_frames, 3), "step": run.step}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", type=Path, default=ROOT / "outputs" / "demo" / "run")
    ap.add_argument("--frames", type=int, default=6, help="frames for the 320x240 throughput")
    ap.add_argument("--small", default="32x24", help="resolution of the memory videos")
    ap.add_argument("--fps", type=float, default=10.0, help="frame rate of the memory videos")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "render.json")
    ap.add_argument("--child", nargs=4, metavar=("SECONDS", "FPS", "SIZE", "OUT"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_rss(str(args.run), float(args.child[0]), float(args.child[1]), args.child[2],
                  args.child[3])
        return 0
    if not (args.run / "config.yaml").is_file():
        print(f"no trained run at {args.run}; run `make demo` or pass RUN", file=sys.stderr)
        return 2
    result = {"run": str(args.run), "throughput": throughput(args.run, args.frames), "memory": []}
    t = result["throughput"]
    print(f"320x240 rgb: {t['frames_per_s']:.3f} frames/s ({t['s_per_frame']:.2f} s/frame, "
          f"{t['frames']} frames, step {t['step']})")
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in (10.0, 60.0):
            cmd = [sys.executable, str(Path(__file__).resolve()), str(args.run), "--child",
                   str(seconds), str(args.fps), args.small, str(Path(tmp) / f"v{int(seconds)}.mp4")]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(done.stderr[-2000:], file=sys.stderr)
                return 1
            row = json.loads(done.stdout.strip().splitlines()[-1])
            result["memory"].append(row)
            print(f"{seconds:>4.0f} s video ({row['frames']} frames of {args.small} x 3 panels): "
                  f"peak RSS {row['vm_hwm_mib']:.0f} MiB (after loading {row['vm_hwm_after_load_mib']:.0f}"
                  f" MiB), {row['wall_s']:.1f} s")
    m10, m60 = (r["vm_hwm_mib"] for r in result["memory"])
    result["memory_growth_mib_10s_to_60s"] = round(m60 - m10, 1)
    print(f"peak RSS growth from 10 s to 60 s: {m60 - m10:+.1f} MiB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
