"""``switchnerf scene from-images``: camera poses for a folder of photos (COLMAP through
pycolmap, ``switchnerf.scene.sfm``), a progress bar per stage, then what the dataset holds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

STAGES = {
    "check": "checking photos",
    "features": "features (SIFT)",
    "matching": "matching pairs",
    "mapping": "registering",
    "writing": "writing dataset",
}


def add_from_images_parser(scene_subparsers) -> argparse.ArgumentParser:
    from switchnerf.scene.sfm import CAMERA_MODELS, MATCHERS, SfmOptions

    d = SfmOptions()
    p = scene_subparsers.add_parser(
        "from-images",
        help="camera poses for a folder of photos (COLMAP), written as a dataset",
        description="Feature extraction, matching and incremental mapping with COLMAP "
        "(pycolmap) on the photos directly in IMAGES_DIR; the leveled sparse model and the "
        "photos are written to DATASET_DIR, ready for `scene info` and `train --scene`.",
    )
    p.add_argument("images", type=Path, metavar="IMAGES_DIR", help="folder of photos")
    p.add_argument("--out", type=Path, required=True, metavar="DATASET_DIR", help="new dataset")
    p.add_argument(
        "--matcher",
        choices=MATCHERS,
        default=d.matcher,
        help="pairs to match: all (exhaustive), neighbours in name order (sequential, for "
        "video-like captures), or by EXIF GPS (spatial)",
    )
    p.add_argument(
        "--camera-model", choices=CAMERA_MODELS, default=d.camera_model, help="lens model"
    )
    p.add_argument(
        "--single-camera", action="store_true", help="one camera (intrinsics) for every photo"
    )
    p.add_argument(
        "--max-image-size",
        type=int,
        default=d.max_image_size,
        metavar="N",
        help="longest side, in pixels, the photos are scaled to for feature extraction",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="COLMAP's random seed")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DATASET_DIR")
    p.add_argument("--verbose", action="store_true", help="show COLMAP's own log")
    p.set_defaults(func=cmd_from_images)
    return p


class _Bars:
    """One rich progress bar per stage, made when the stage first reports."""

    def __init__(self, progress):
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        label = STAGES.get(stage, stage)
        for other, task in self.tasks.items():  # an earlier stage is over
            if other != stage and not self.progress.tasks[task].finished:
                t = self.progress.tasks[task]
                self.progress.update(task, total=t.completed or 1, completed=t.completed or 1)
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(label, total=total)
        if stage == "matching" and total is None and done:
            self.progress.update(self.tasks[stage], description=f"{label}: {done} verified")
            return
        self.progress.update(self.tasks[stage], completed=done, total=total)

    def finish(self) -> None:
        for task in self.tasks.values():
            t = self.progress.tasks[task]
            self.progress.update(task, total=t.completed or 1, completed=t.completed or 1)


def cmd_from_images(args: argparse.Namespace) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from switchnerf.cli.scene import info_lines
    from switchnerf.scene.load import load_scene
    from switchnerf.scene.sfm import SfmOptions, run_sfm

    opts = SfmOptions(
        matcher=args.matcher,
        camera_model=args.camera_model,
        single_camera=args.single_camera,
        max_image_size=args.max_image_size,
        seed=args.seed,
        verbose=args.verbose,
    )
    with Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ) as progress:
        bars = _Bars(progress)
        result = run_sfm(args.images, args.out, opts, overwrite=args.overwrite, on_progress=bars)
        bars.finish()
    n, k = len(result.photos), len(result.registered)
    lines = [
        f"posed        {k} of {n} photos ({100 * k / n:.0f}%), {result.points} sparse points, "
        + f"mean reprojection error {result.mean_reprojection_error:.2f} px"
    ]
    if result.unregistered:
        lines.append(
            f"unregistered {len(result.unregistered)} photos (no pose; not used): "
            + ", ".join(result.unregistered)
        )
    if result.other_models:
        lines.append(
            f"             {len(result.other_models)} smaller disconnected model(s) of "
            f"{', '.join(map(str, result.other_models))} photos were not kept"
        )
    g = result.gravity
    if g.source == "ground plane":
        up = (
            f"ground plane ({g.ground_points} sparse points), the cameras above it "
            f"({100 * g.cameras_above:.0f}%); {g.tilt_deg:.2f} deg from the cameras' up"
        )
    else:
        up = "the cameras' right axes (no aerial ground plane found)"
    lines.append(f"up           estimated from the {up}; the model is stored z-up, ground at z = 0")
    timing = ", ".join(f"{s} {t:.1f} s" for s, t in result.seconds.items())
    lines.append(f"time         {timing}")
    lines.append(f"wrote        {result.dataset_dir}")
    print("\n".join(lines))
    print("\n".join(info_lines(load_scene(result.dataset_dir))))
    print(f"next: switchnerf train --scene {result.dataset_dir} --output runs/<name>")
    return 0
