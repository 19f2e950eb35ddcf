"""``switchnerf view RUN|DATASET`` and the live viewer of ``switchnerf train --viewer``.

Both serve the browser viewer of ``switchnerf.viewer`` on loopback (127.0.0.1) unless
``--host`` says otherwise (then a one-line warning: there is no authentication), and
print its URL. ``view`` of a dataset folder or ``scenes/*.yaml`` shows the scene alone
(cameras with their images, sparse points, box, altitude range, partition cells), before
any training.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from switchnerf.cli.args import MAX_RESOLUTION_SIDE, int_in

__all__ = ["register", "start_training_viewer", "warn_if_exposed"]


def register(sub) -> None:
    p = sub.add_parser("view", help="browse a trained run, or a dataset before training, "
                                    "in the web viewer",
                       description="Serve an interactive viewer of a run: the field rendered "
                                   "at your browser's camera, training cameras, experts, "
                                   "camera-path editor. Of a dataset (folder or scenes/*.yaml):"
                                   " its cameras with their images, sparse points, foreground "
                                   "box, altitude range and partition cells, to check poses "
                                   "and bounds before training. Ctrl-C stops it.")
    p.add_argument("run", type=Path, metavar="RUN|DATASET",
                   help="run folder (from switchnerf train), dataset folder or scenes/*.yaml")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int_in(1, 65535), default=7007,
                   help="port (the next free one if taken)")
    p.add_argument("--checkpoint", default="latest", help="latest, best or a path")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--resolution", type=int_in(16, MAX_RESOLUTION_SIDE), default=None,
                   help="longer side of still renders in pixels (default 256 CPU, 768 CUDA)")
    p.set_defaults(func=cmd_view)


def warn_if_exposed(host: str) -> None:
    """Print the one-line no-authentication warning for a non-loopback ``host``."""
    from switchnerf.viewer.limits import no_auth_warning

    warning = no_auth_warning(host)
    if warning is not None:
        print(warning, flush=True)


def cmd_view(args: argparse.Namespace) -> int:
    from switchnerf.train.run import is_run_dir
    from switchnerf.viewer import ViewerServer

    if is_run_dir(args.run):
        from switchnerf.cli.common import resolve_device
        from switchnerf.train.run import load_run

        run = load_run(args.run, device=resolve_device(args.device), which=args.checkpoint)
        warn_if_exposed(args.host)
        viewer = ViewerServer(run.renderer, run.scene, host=args.host, port=args.port,
                              run_dir=run.run_dir, checkpoint=run.checkpoint, step=run.step,
                              max_side=args.resolution)
        what = f"run {run.run_dir}, step {run.step}"
    else:
        from switchnerf.scene import load_scene

        scene = load_scene(args.run)
        warn_if_exposed(args.host)
        viewer = ViewerServer(None, scene, host=args.host, port=args.port)
        n = sum(len(recs) for recs in scene.frames.values())
        what = f"dataset {scene.name}, {scene.format}, {n} images; no model"
    print(f"viewer: {viewer.url}  ({what}; Ctrl-C to stop)", flush=True)
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

    warn_if_exposed(host)
    viewer = ViewerServer(trainer.renderer, trainer.scene, host=host, port=port,
                          run_dir=trainer.run_dir, step=trainer.step, training=True)
    viewer.begin_training()
    print(f"viewer: {viewer.url}  (live; renders share time with training)", flush=True)
    return viewer
