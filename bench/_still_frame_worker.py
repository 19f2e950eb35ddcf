"""One viewer for bench/still_frame.py, in a subprocess whose PYTHONPATH is the tree under
test (a baseline commit or the current tree).

    python bench/_still_frame_worker.py RUN WIDTHxHEIGHT

Starts the tree's viewer on the run (loopback, settle delay 0, as bench/viewer.py's still
frame), connects one probe client, prints ``ready``, then answers each line ``K`` on stdin
(an orbit pose of bench/viewer.py's 16) with one JSON line: seconds from the camera message
to the first image and to the full-resolution image, and the seconds of the same view
rendered by ``render_view`` alone right after (the viewer idle). An empty line or EOF ends it.
"""

import json
import math
import sys
import time
from pathlib import Path


def main() -> int:
    run_dir, size = Path(sys.argv[1]), sys.argv[2]
    w, h = (int(v) for v in size.lower().split("x"))
    from bench.viewer import _poses
    from switchnerf.train.run import load_run
    from switchnerf.viewer import ViewerServer
    from switchnerf.viewer.probe import ProbeClient
    from switchnerf.viewer.render import render_view
    from switchnerf.viewer.viser_cameras import path_camera_from_viser, render_size

    run = load_run(run_dir)
    viewer = ViewerServer(run.renderer, run.scene, host="127.0.0.1", port=0, max_side=max(w, h),
                          checkpoint=run.checkpoint, step=run.step)
    viewer.settings.settle_s = 0.0
    fov = math.radians(50.0)
    poses = _poses(run, 16, 0.0)
    client = ProbeClient(f"ws://127.0.0.1:{viewer.port}")
    try:
        print("ready", flush=True)
        for line in sys.stdin:
            if not line.strip():
                break
            wxyz, pos = poses[int(line) % len(poses)]
            t0 = time.perf_counter()
            client.send_camera(wxyz, pos, fov=fov, width=w * 4, height=h * 4)
            first = full = None
            deadline = t0 + 60.0
            while time.perf_counter() < deadline:
                got = client.wait_background_size(deadline - time.perf_counter())
                if got is not None and first is None:
                    first = time.perf_counter() - t0
                if got == (w, h):
                    full = time.perf_counter() - t0
                    break
            session = next(iter(viewer.sessions.values()))
            pose = session.pose
            rw, rh = render_size(pose.aspect, max(w, h))
            cam = path_camera_from_viser(pose, rw, rh)
            with viewer.gate.use():
                t1 = time.perf_counter()
                render_view(viewer.renderer, cam)
                render = time.perf_counter() - t1
            print(json.dumps({"first_s": first, "full_s": full, "render_s": render}), flush=True)
    finally:
        client.close()
        viewer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
