"""CLI commands ``render`` (camera path -> video) and ``export`` (point cloud, mesh, cameras).

``switchnerf render RUN --path orbit|spiral|interpolate|FILE.json --output OUT.mp4``
renders in the run's world frame (z up, world units): ``--altitude`` is a world z,
``--tilt`` the angle below horizontal at which orbit and spiral cameras look at the scene
centre (box centre at ground altitude). Camera path files: see
``switchnerf.video.camera_path_io`` (nerfstudio camera paths and switchnerf keyframes).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from switchnerf.cli.args import (
    MAX_PIXELS,
    finite_float,
    near_far,
    positive_float,
    positive_int,
    resolution,
)
from switchnerf.errors import SwitchNerfError

PATH_KINDS = ("orbit", "spiral", "interpolate")
DEFAULT_SECONDS, DEFAULT_FPS, DEFAULT_SIZE = 6.0, 24.0, (320, 240)


def register(sub) -> None:
    r = sub.add_parser("render", help="render a camera path of a run to a video")
    r.add_argument("run", type=Path, help="run folder (from switchnerf train)")
    r.add_argument("--path", required=True,
                   help="orbit, spiral, interpolate (through training cameras) or a camera "
                        "path JSON (nerfstudio camera_path or switchnerf keyframes)")
    r.add_argument("--output", required=True, type=Path,
                   help="video file (.mp4, .mov, .mkv); its info goes to OUT.json beside it")
    r.add_argument("--outputs", default="rgb", help="comma list of rgb, depth, opacity, experts, "
                   "gate_confidence (side by side)")
    r.add_argument("--seconds", type=positive_float,
                   help=f"duration (default {DEFAULT_SECONDS:g}, or the file's)")
    r.add_argument("--fps", type=positive_float,
                   help=f"frame rate (default {DEFAULT_FPS:g}, or the file's)")
    r.add_argument("--resolution", type=resolution,
                   help="WxH of one panel (default 320x240, or the file's)")
    r.add_argument("--altitude", type=finite_float, help="orbit/spiral camera height, world z")
    r.add_argument("--tilt", type=finite_float, default=35.0,
                   help="orbit/spiral look-down angle (degrees)")
    r.add_argument("--fov", type=finite_float, default=50.0,
                   help="orbit/spiral vertical fov (degrees)")
    r.add_argument("--keyframes", type=positive_int, default=8,
                   help="interpolate: training cameras to pass")
    r.add_argument("--interpolation", choices=("catmull-rom", "linear"),
                   help="override the path's interpolation")
    r.add_argument("--depth-range", type=near_far, help="NEAR,FAR of the depth colour map "
                   "(world units; default: estimated from a few frames)")
    r.add_argument("--frames-dir", type=Path, help="keep PNG frames here; resumes an interrupted render")
    r.add_argument("--save-path", type=Path, help="also write the path as a switchnerf keyframe JSON")
    r.add_argument("--checkpoint", default="latest", help="latest, best or a path")
    r.add_argument("--device", default="auto", help="cpu, cuda or auto")
    r.set_defaults(func=cmd_render)


def build_path(args, scene):
    """The ``CameraPath`` the render arguments ask for (validated)."""
    from switchnerf.video.camera_path import CameraPath
    from switchnerf.video.camera_path_io import load_camera_path
    from switchnerf.video.paths import (
        orbit_geometry,
        orbit_keyframes,
        spiral_keyframes,
        training_keyframes,
    )

    size = args.resolution
    kind = args.path
    if kind not in PATH_KINDS:
        path = load_camera_path(kind)
        changes = {k: v for k, v in (("seconds", args.seconds), ("fps", args.fps)) if v is not None}
        if size is not None:
            changes.update(width=size[0], height=size[1])
        if args.interpolation:
            changes["interpolation"] = args.interpolation
        return replace(path, **changes) if changes else path
    seconds = args.seconds if args.seconds is not None else DEFAULT_SECONDS
    fps = args.fps if args.fps is not None else DEFAULT_FPS
    n = max(1, round(seconds * fps))
    if kind == "interpolate":
        keyframes = training_keyframes(scene, args.keyframes)
        if size is None:
            rec = scene.images("train")[0]
            size = (320, 2 * max(1, round(160 * rec.height / rec.width)))
        return CameraPath(keyframes, size[0], size[1], seconds, fps,
                          args.interpolation or "catmull-rom", False, "interpolate training cameras")
    size = size or DEFAULT_SIZE
    try:
        target, radius, altitude = orbit_geometry(scene, altitude=args.altitude, tilt_deg=args.tilt)
    except ValueError as exc:
        raise SwitchNerfError(f"--altitude: {exc}") from None
    if kind == "orbit":
        keyframes = orbit_keyframes(target, radius, altitude, n, fov_y_deg=args.fov)
    else:
        keyframes = spiral_keyframes(target, radius, altitude, n, fov_y_deg=args.fov)
    return CameraPath(keyframes, size[0], size[1], seconds, fps,
                      args.interpolation or "catmull-rom", kind == "orbit",
                      f"{kind} altitude {altitude:.4g} tilt {args.tilt:g} radius {radius:.4g}")


def check_render_request(args, outputs: tuple[str, ...]) -> None:
    """Everything about a render request that can be checked before the run is loaded:
    the path kind or file, the frame count and size, and the output files (never an
    input: the sidecar OUT.json and ``--save-path`` may not overwrite the ``--path`` file)."""
    from switchnerf.io_utils import check_output_dir, check_output_file, same_file
    from switchnerf.video.camera_path import check_frame_count
    from switchnerf.video.video_job import check_outputs_and_file, check_sidecar_target

    kind = args.path
    if kind not in PATH_KINDS and not kind.lower().endswith(".json"):
        raise SwitchNerfError(f"--path: unknown path kind {kind!r} (orbit, spiral, interpolate "
                              "or a camera path .json file)")
    if kind in ("orbit", "spiral") and not 0 < args.tilt < 90:
        raise SwitchNerfError(f"--tilt: must lie in (0, 90) degrees, got {args.tilt:g}")
    if kind in ("orbit", "spiral") and not 0 < args.fov < 180:
        raise SwitchNerfError(f"--fov: must lie in (0, 180) degrees, got {args.fov:g}")
    check_outputs_and_file(outputs, args.output)
    seconds, fps, size = DEFAULT_SECONDS, DEFAULT_FPS, DEFAULT_SIZE
    path_file = None
    if kind not in PATH_KINDS:  # a malformed file fails before the model is loaded
        from switchnerf.video.camera_path_io import load_camera_path

        path_file = Path(kind)
        cp = load_camera_path(path_file)
        seconds, fps, size = cp.seconds, cp.fps, (cp.width, cp.height)
    seconds = args.seconds if args.seconds is not None else seconds
    fps = args.fps if args.fps is not None else fps
    try:
        check_frame_count(seconds, fps)
    except SwitchNerfError as exc:
        raise SwitchNerfError(f"--seconds/--fps: {exc}") from None
    w, h = args.resolution or size
    if w * h * len(outputs) > MAX_PIXELS:
        raise SwitchNerfError(f"--resolution: {w}x{h} x {len(outputs)} panel(s) is "
                              f"{w * h * len(outputs):,} pixels per frame, at most {MAX_PIXELS:,}")
    check_output_file(args.output, "--output")
    check_sidecar_target(args.output, [("--path", path_file), ("--save-path", args.save_path)])
    if args.save_path is not None:
        if path_file is not None and same_file(args.save_path, path_file):
            raise SwitchNerfError(f"--save-path: {args.save_path} is the --path file, which "
                                  "would be overwritten; give another file name")
        check_output_file(args.save_path, "--save-path")
    if args.frames_dir is not None:
        check_output_dir(args.frames_dir, "--frames-dir")


def cmd_render(args) -> int:
    from switchnerf.cli.common import resolve_device
    from switchnerf.train.run import load_run
    from switchnerf.video.camera_path_io import save_camera_path
    from switchnerf.video.video_job import (
        Provenance,
        check_video_request,
        render_video,
        sidecar_path,
    )

    outputs = tuple(o.strip() for o in args.outputs.split(",") if o.strip())
    check_render_request(args, outputs)
    device = resolve_device(args.device)
    run = load_run(args.run, device=device, which=args.checkpoint)
    path = build_path(args, run.scene)
    check_video_request(path, outputs, args.output)
    if args.save_path is not None:
        save_camera_path(args.save_path, path)
        print(f"camera path: {args.save_path}")
    print(f"rendering {path.n_frames} frames ({path.seconds:g} s at {path.fps:g} fps) of "
          f"{path.width}x{path.height} x {len(outputs)} panel(s): {path.source}")
    info = render_video(run.renderer, path, args.output,
                        provenance=Provenance(run.run_dir, run.checkpoint, run.step),
                        outputs=outputs, frames_dir=args.frames_dir, depth_range=args.depth_range)
    reused = f", {info['frames_reused']} reused from {args.frames_dir}" if info["frames_reused"] else ""
    print(f"video: {args.output} ({info['frames']} frames in {info['elapsed_s']:.1f} s{reused}); "
          f"info: {sidecar_path(args.output)}")
    return 0
