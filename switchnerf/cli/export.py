"""CLI ``switchnerf export pointcloud|mesh|cameras RUN --output FILE``."""

from __future__ import annotations

from pathlib import Path

from switchnerf.cli.args import positive_float, positive_int
from switchnerf.errors import SwitchNerfError


def _common(p) -> None:
    p.add_argument("run", type=Path, help="run folder (from switchnerf train)")
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--checkpoint", default="latest", help="latest, best or a path")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")


def register(sub) -> None:
    e = sub.add_parser("export", help="export a point cloud, mesh or cameras of a run")
    kinds = e.add_subparsers(dest="export_kind", metavar="KIND")
    kinds.required = True

    pc = kinds.add_parser("pointcloud", help="points from rendered depth of training views (PLY)")
    _common(pc)
    pc.add_argument("--color", choices=("rgb", "expert"), default="rgb",
                    help="rendered colour, or the palette colour of the point's routed expert")
    pc.add_argument("--num-points", type=positive_int, default=100_000)
    pc.add_argument("--std-ratio", type=positive_float, default=2.0,
                    help="outlier filter threshold")
    pc.add_argument("--seed", type=int, default=0)
    pc.set_defaults(func=cmd_pointcloud)

    me = kinds.add_parser("mesh", help="TSDF fusion of rendered depth and colour (PLY)")
    _common(me)
    me.add_argument("--voxel-size", type=positive_float,
                    help="world units (default: box diagonal / 512)")
    me.add_argument("--downscale", type=positive_float, default=1.0,
                    help="render views this much smaller")
    me.add_argument("--max-views", type=positive_int, help="fuse at most this many training views")
    me.set_defaults(func=cmd_mesh)

    ca = kinds.add_parser("cameras", help="cameras as JSON plus a frustum line-set PLY")
    ca.add_argument("run", type=Path)
    ca.add_argument("--output", required=True, type=Path, help="CAMS.json")
    ca.add_argument("--frustum-size", type=positive_float,
                    help="world units (default: 3%% of the box diagonal)")
    ca.set_defaults(func=cmd_cameras)


def _suffix(path: Path, suffix: str) -> None:
    """Refuse, before loading anything, an --output of the wrong kind or not writable."""
    from switchnerf.io_utils import check_output_file

    if path.suffix.lower() != suffix:
        raise SwitchNerfError(f"--output: {path}: expected a {suffix} file")
    check_output_file(path, "--output")


def _load(args):
    from switchnerf.cli.common import resolve_device
    from switchnerf.train.run import load_run

    return load_run(args.run, device=resolve_device(args.device), which=args.checkpoint)


def _bar(label: str, total: int | None):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    task = bar.add_task(label, total=total)
    return bar, (lambda done, total=total: bar.update(task, completed=done, total=total))


def cmd_pointcloud(args) -> int:
    from switchnerf.export.pointcloud import export_pointcloud

    _suffix(args.output, ".ply")
    if args.num_points <= 0:
        raise SwitchNerfError(f"--num-points: must be > 0, got {args.num_points}")
    run = _load(args)
    bar, update = _bar("points", args.num_points)
    with bar:
        info = export_pointcloud(run.renderer, run.camera_table, args.output,
                                 num_points=args.num_points, color=args.color,
                                 std_ratio=args.std_ratio, seed=args.seed, progress=update)
    print(f"point cloud: {info['output']} ({info['points']} points, colour {info['color']}, "
          f"{info['outliers_removed']} outliers removed)")
    return 0


def cmd_mesh(args) -> int:
    from switchnerf.export.mesh import export_mesh
    from switchnerf.export.views import view_indices

    _suffix(args.output, ".ply")
    if args.max_views is not None and args.max_views <= 0:
        raise SwitchNerfError(f"--max-views: must be > 0, got {args.max_views}")
    run = _load(args)
    total = len(view_indices(len(run.scene.images("train")), args.max_views))
    bar, update = _bar("views", total)
    with bar:
        info = export_mesh(run.renderer, run.scene, args.output, voxel_size=args.voxel_size,
                           downscale=args.downscale, max_views=args.max_views,
                           progress=lambda n: update(n))
    print(f"mesh: {info['output']} ({info['vertices']} vertices, {info['triangles']} triangles "
          f"from {info['views']} views, voxel {info['voxel_size']:.4g})")
    return 0


def cmd_cameras(args) -> int:
    from switchnerf.export.cameras import export_cameras, frustums_path
    from switchnerf.io_utils import check_output_file, same_file
    from switchnerf.train.run import read_run_config, read_scene_path

    _suffix(args.output, ".json")
    check_output_file(frustums_path(args.output), "--output")
    read_run_config(args.run)  # a clear error when RUN is not a run
    scene_path = read_scene_path(args.run)
    for given in (Path(args.run) / "config.yaml", Path(args.run) / "scene.json", scene_path):
        for out in (Path(args.output), frustums_path(args.output)):
            if out.exists() and given.is_file() and same_file(out, given):
                raise SwitchNerfError(f"--output: {out} is an input of the run ({given}), "
                                      "which would be overwritten; give another file name")
    from switchnerf.train.builder import scene_and_cameras

    scene, _ = scene_and_cameras(scene_path)
    info = export_cameras(scene, args.output, size=args.frustum_size)
    print(f"cameras: {info['output']} ({info['cameras']} cameras); frustums: {info['frustums']}")
    return 0
