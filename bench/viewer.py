"""Viewer responsiveness on this machine, over loopback websockets only.

    python bench/viewer.py [RUN] [--seconds 30] [--clients 4] [--size 256x192]
                           [--out bench/results/viewer.json]

RUN defaults to outputs/demo/run (what `make demo` trains). Three measurements:

1. still-frame latency, one client: camera message sent -> first image (the low-resolution
   preview) and -> full-resolution image (``--size``) received, settle delay 0, over a few
   orbit poses (target <= 1 s on CPU);
2. ``--clients`` concurrent clients moving their cameras for ``--seconds``: each repeats
   "5 camera moves 50 ms apart, then wait (at most 20 s) for the full-resolution image";
   preview latency (first move -> first image) and full latency (last move -> full image)
   percentiles, abandoned renders, and the process RSS sampled once a second;
3. a client that disconnects mid-render: viewer threads left after 10 s (expected 0).

Prints a summary and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _pct(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    a = np.asarray(values)
    return {"n": int(a.size), "p50": float(np.percentile(a, 50)),
            "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max())}


def _poses(run, n: int, phase: float) -> list:
    """viser poses (wxyz, position) on the scene's orbit, starting at ``phase`` radians."""
    from switchnerf.video.paths import orbit_geometry, orbit_keyframes
    from switchnerf.viewer.viser_cameras import viser_from_c2w

    target, radius, altitude = orbit_geometry(run.scene, altitude=None, tilt_deg=35.0)
    keys = orbit_keyframes(target, radius, altitude, n)
    shift = round(phase / (2 * math.pi) * n)
    return [viser_from_c2w(keys[(k + shift) % n].c2w) for k in range(n)]


def still_latency(url: str, run, size, fov: float, n: int = 8) -> tuple[list, list]:
    """Seconds from a camera message to the first image (the preview) and to the
    full-resolution image, for ``n`` orbit poses."""
    from switchnerf.viewer.probe import ProbeClient

    first, full = [], []
    client = ProbeClient(url)
    try:
        for wxyz, pos in _poses(run, 16, 0.0)[:n]:
            t0 = time.perf_counter()
            client.send_camera(wxyz, pos, fov=fov, width=size[0] * 4, height=size[1] * 4)
            deadline, seen = t0 + 60, False
            while time.perf_counter() < deadline:
                got = client.wait_background_size(deadline - time.perf_counter())
                if got is not None and not seen:
                    first.append(time.perf_counter() - t0)
                    seen = True
                if got == size:
                    full.append(time.perf_counter() - t0)
                    break
    finally:
        client.close()
    return first, full


def moving_clients(url: str, run, size, fov: float, n_clients: int, seconds: float) -> dict:
    from switchnerf.viewer.probe import ProbeClient

    preview, full, timeouts = [], [], [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def one(k: int) -> None:
        poses = _poses(run, 240, 2 * math.pi * k / n_clients)
        client = ProbeClient(url)
        step = 0
        try:
            while time.perf_counter() < stop_at:
                first = None
                got_preview = None
                for _ in range(5):
                    wxyz, pos = poses[step % len(poses)]
                    step += 1
                    t = time.perf_counter()
                    first = first or t
                    client.send_camera(wxyz, pos, fov=fov, width=size[0] * 4, height=size[1] * 4)
                    img = client.wait_background_size(0.05)
                    if img is not None and got_preview is None:
                        got_preview = time.perf_counter() - first
                last = time.perf_counter()
                deadline = last + 20.0
                done = None
                while time.perf_counter() < deadline:
                    img = client.wait_background_size(deadline - time.perf_counter())
                    if img is None:
                        break
                    if got_preview is None:
                        got_preview = time.perf_counter() - first
                    if img == size:
                        done = time.perf_counter() - last
                        break
                with lock:
                    if got_preview is not None:
                        preview.append(got_preview)
                    if done is not None:
                        full.append(done)
                    else:
                        timeouts[0] += 1
        finally:
            client.close()

    threads = [threading.Thread(target=one, args=(k,), name=f"bench-client-{k}")
               for k in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    return {"preview_latency_s": _pct(preview), "full_latency_s": _pct(full),
            "full_timeouts": timeouts[0]}


def disconnect_mid_render(viewer, url: str, run, fov: float) -> dict:
    from switchnerf.viewer.probe import ProbeClient

    def viewer_threads() -> list[str]:
        return [t.name for t in threading.enumerate()
                if t.name.startswith("switchnerf-view-") and t.name != "switchnerf-view-stats"]

    old = viewer.settings.max_side, viewer.settings.settle_s
    viewer.settings.max_side, viewer.settings.settle_s = 640, 0.0  # a long render
    client = ProbeClient(url)
    wxyz, pos = _poses(run, 16, 1.0)[0]
    client.send_camera(wxyz, pos, fov=fov, width=1280, height=960)
    client.wait_background_size(30.0)  # the preview; the full render is now running
    time.sleep(0.2)
    during = len(viewer_threads())
    client.close()
    deadline = time.perf_counter() + 10.0
    while viewer_threads() and time.perf_counter() < deadline:
        time.sleep(0.05)
    left = viewer_threads()
    viewer.settings.max_side, viewer.settings.settle_s = old
    return {"session_threads_during": during, "session_threads_left": len(left),
            "released_in_s": round(10.0 - max(deadline - time.perf_counter(), 0.0), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", type=Path, default=ROOT / "outputs" / "demo" / "run")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--size", default="256x192")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "viewer.json")
    args = ap.parse_args()
    import torch

    from switchnerf.train.run import load_run
    from switchnerf.viewer import ViewerServer

    w, h = (int(v) for v in args.size.lower().split("x"))
    run = load_run(args.run)
    viewer = ViewerServer(run.renderer, run.scene, host="127.0.0.1", port=0,
                          max_side=max(w, h), checkpoint=run.checkpoint, step=run.step)
    url = f"ws://127.0.0.1:{viewer.port}"
    fov = math.radians(50.0)
    rss: list[tuple[float, float]] = []
    sampling = threading.Event()
    t_start = time.perf_counter()

    def sample() -> None:
        while not sampling.wait(1.0) and len(rss) < 600:
            rss.append((round(time.perf_counter() - t_start, 1), round(_rss_mib(), 1)))

    sampler = threading.Thread(target=sample, name="bench-rss")
    sampler.start()
    try:
        viewer.settings.settle_s = 0.0
        still_first, still = still_latency(url, run, (w, h), fov)
        viewer.settings.settle_s = 0.15
        moving = moving_clients(url, run, (w, h), fov, args.clients, args.seconds)
        abandoned = sum(s.stats.abandoned for s in viewer.sessions.values())
        disconnect = disconnect_mid_render(viewer, url, run, fov)
    finally:
        sampling.set()
        sampler.join()
        viewer.stop()
    result = {
        "run": str(args.run), "step": run.step, "size": [w, h], "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "still_first_image_s": _pct(still_first), "still_latency_s": _pct(still),
        "still_target_s": 1.0, "preview_side": viewer.settings.preview_side,
        "moving": {"clients": args.clients, "seconds": args.seconds, **moving},
        "rss_mib": {"samples": rss, "max": max((r for _, r in rss), default=None),
                    "first": rss[0][1] if rss else None, "last": rss[-1][1] if rss else None},
        "disconnect_mid_render": disconnect,
        "note": f"abandoned renders seen while clients moved: {abandoned} (sessions still open)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    s, f = result["still_latency_s"], result["still_first_image_s"]
    print(f"camera -> first (preview) image: p50 {f.get('p50', float('nan')):.2f} s; "
          f"-> full {w}x{h} image: p50 {s.get('p50', float('nan')):.2f} s, "
          f"max {s.get('max', float('nan')):.2f} s (target <= 1 s)")
    for key in ("preview_latency_s", "full_latency_s"):
        p = moving[key]
        if p["n"]:
            print(f"{args.clients} moving clients, {key}: p50 {p['p50']:.2f} p90 {p['p90']:.2f} "
                  f"p99 {p['p99']:.2f} s (n={p['n']})")
    print(f"full-frame timeouts: {moving['full_timeouts']}; RSS first/max/last "
          f"{result['rss_mib']['first']}/{result['rss_mib']['max']}/{result['rss_mib']['last']} MiB")
    print(f"threads left after mid-render disconnect: {disconnect['session_threads_left']} "
          f"(released in {disconnect['released_in_s']} s)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
