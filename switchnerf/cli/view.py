"""``switchnerf view RUN`` and the live viewer of ``switchnerf train --viewer``.

Both serve the browser viewer of ``switchnerf.viewer`` on loopback (127.0.0.1) unless
``--host`` says otherwise, and print its URL.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from switchnerf.cli.args import MAX_RESOLUTION_SIDE, int_in

__all__ = ["register", "start_training_viewer"]


def register(sub) -> None:
    p = sub.add_parser("view", help="browse a trained run in the web viewer",
                       description="Serve an interactive viewer of a run: the field rendered "
                                   "at your browser's camera, training cameras, experts, "
                                   "camera-path editor. Ctrl-C stops it.")
    p.add_argument("run", type=Path, metavar="RUN", help="run folder (from switchnerf train)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int_in(1, 65535), default=7007,
                   help="port (the next free one if taken)")
    p.add_argument("--checkpoint", default="latest", help="latest, best or a path")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--resolution", type=int_in(16, MAX_RESOLUTION_SIDE), default=None,
                   help="longer side of still renders in pixels (default 256 CPU, 768 CUDA)")
    p.set_defaults(func=cmd_view)


def cmd_view(args: argparse.Namespace) -> int:
    from switchnerf.cli.common import resolve_device
    from switchnerf.train.run import load_run
    from switchnerf.viewer import ViewerServer

    run = load_run(args.run, device=resolve_device(args.device), which=args.checkpoint)
    viewer = ViewerServer(run.renderer, run.scene, host=args.host, port=args.port,
                          run_dir=run.run_dir, checkpoint=run.checkpoint, step=run.step,
                          max_side=args.resolution)
    print(f"viewer: {viewer.url}  (run {run.run_dir}, step {run.step}; Ctrl-C to stop)",
          flush=True)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("viewer: stopping")
    finally:
        viewer.stop()
    return 0


def start_training_viewer(trainer, *, port: int = 7007, host: str = "127.0.0.1"):
    """Serve the live viewer of ``trainer``; returns the ``ViewerServer``.

    Pass its ``on_step`` to ``trainer.train(on_step=...)``: renders interleave with training
    steps there (GUI: render share, pause / resume). Call ``stop()`` when training ends.
    """
    from switchnerf.viewer import ViewerServer

    viewer = ViewerServer(trainer.renderer, trainer.scene, host=host, port=port,
                          run_dir=trainer.run_dir, step=trainer.step, training=True)
    viewer.begin_training()
    print(f"viewer: {viewer.url}  (live; renders share time with training)", flush=True)
    return viewer
