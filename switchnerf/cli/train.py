"""CLI commands ``train``, ``eval`` and ``demo``."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from switchnerf.cli.args import int_in, positive_int
from switchnerf.cli.common import resolve_device
from switchnerf.errors import SwitchNerfError

REPO_ROOT = Path(__file__).resolve().parents[2]


def register(sub) -> None:
    p = sub.add_parser("train", help="train a SwitchField on a scene")
    p.add_argument("--scene", required=True, help="scenes/*.yaml descriptor or dataset folder")
    p.add_argument("--config", help="preset YAML (configs/*.yaml); defaults when omitted")
    p.add_argument("--output", required=True, type=Path, help="run folder")
    p.add_argument("--max-steps", type=positive_int, help="override train.max_steps")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.rays_per_step=4096")
    p.add_argument("--resume", action="store_true", help="continue the run in --output")
    p.add_argument("--overwrite", action="store_true", help="delete an existing --output first")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--store", type=Path, help="ray store folder (default: inside the dataset)")
    p.add_argument("--viewer", action="store_true", help="serve the live viewer while training")
    p.add_argument("--port", type=int_in(1, 65535), default=7007)
    p.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a run on its val images")
    e.add_argument("run", type=Path)
    e.add_argument("--checkpoint", default="latest", help="latest, best or a path")
    e.add_argument("--device", default="auto")
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("demo", help="synthesize minicity, train, eval and render a video")
    d.add_argument("--output", type=Path, default=REPO_ROOT / "outputs" / "demo")
    d.add_argument("--config", type=Path, default=REPO_ROOT / "configs" / "cpu-demo.yaml")
    d.add_argument("--scene", type=Path, default=REPO_ROOT / "scenes" / "minicity.yaml")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    d.add_argument("--device", default="auto")
    d.set_defaults(func=cmd_demo)


def _new_config(args):
    """The config of a new run: preset, --set, --max-steps."""
    from switchnerf.config import load_config

    sets = list(args.set)
    if args.max_steps is not None:
        sets.append(f"train.max_steps={args.max_steps}")
    return load_config(args.config, sets)


def _resume_config(args):
    """The run's config.yaml with a new train.max_steps (--max-steps) or time budget
    (--set): the only keys a resumed run may change."""
    from switchnerf.config import merge, parse_set
    from switchnerf.train.run import RESUME_MAY_CHANGE, read_run_config

    if args.config:
        raise SwitchNerfError("--config: not with --resume (the run's config.yaml is used)")
    allowed = ", ".join(RESUME_MAY_CHANGE)
    for item in args.set:
        key = item.split("=", 1)[0].strip()
        if key not in RESUME_MAY_CHANGE:
            raise SwitchNerfError(f"--set: {key}: cannot change on --resume (only {allowed})")
    sets = list(args.set)
    if args.max_steps is not None:
        sets.append(f"train.max_steps={args.max_steps}")
    cfg = read_run_config(args.output)
    return merge(cfg, parse_set(sets), "--set") if sets else cfg


def cmd_train(args) -> int:
    from switchnerf.cli.common import check_scene_arg
    from switchnerf.train.data import prepare_training_data
    from switchnerf.train.run import prepare_run_dir
    from switchnerf.train.trainer import Trainer

    if args.resume and args.overwrite:
        raise SwitchNerfError("--resume and --overwrite: choose one")
    if args.max_steps is not None and args.max_steps < 1:
        raise SwitchNerfError(f"--max-steps: must be >= 1, got {args.max_steps}")
    # every check before prepare_run_dir, which may delete the old run
    device = resolve_device(args.device)
    check_scene_arg(args.scene)
    cfg = None if args.resume else _new_config(args)
    if is_torchrun_launch():
        return _cmd_train_distributed(args, device, cfg)
    prepare_run_dir(args.output, resume=args.resume, overwrite=args.overwrite, check_only=True)
    check_scene = None
    if args.resume:
        cfg = _resume_config(args)
        check_scene = _resume_scene_check(args)
    data = prepare_training_data(cfg, Path(args.scene), args.store, check_scene=check_scene)
    if not args.resume:  # after every check and the store: it may delete the old run
        prepare_run_dir(args.output, resume=False, overwrite=args.overwrite)
    trainer = Trainer(cfg, data, args.output, device=device, resume=args.resume)
    viewer = None
    try:
        if args.resume:
            _record_scene(args.output, data)
        if args.viewer:
            from switchnerf.cli.view import start_training_viewer

            viewer = start_training_viewer(trainer, port=args.port)
        summary = trainer.train(on_step=None if viewer is None else viewer.on_step)
    finally:
        trainer.close()
        if viewer is not None:
            viewer.stop()
    _print_summary(summary, args.output)
    return 0


def _resume_scene_check(args):
    """The check of ``--scene`` against the resumed run's scene (``run.check_resume_scene``),
    as a function of the scene's fingerprint."""
    from switchnerf.train.run import check_resume_scene

    return lambda fingerprint: check_resume_scene(args.output, Path(args.scene), fingerprint)


def _record_scene(run_dir: Path, data) -> None:
    """Record a resumed run's scene path and fingerprint in RUN/scene.json once the trainer
    has restored the run (a new run's header records them); say so when the path moved."""
    from switchnerf.train.run import record_run_scene

    note = record_run_scene(run_dir, data.scene_path, data.fingerprint)
    if note is not None:
        print(f"switchnerf: note: {note}", file=sys.stderr, flush=True)


def _print_summary(summary: dict, run_dir: Path) -> None:
    state = "interrupted, checkpoint saved" if summary["interrupted"] else "done"
    print(f"train {state}: step {summary['step']} in {summary['elapsed_s']:.0f} s "
          f"({summary['rays_per_s'] / 1000:.1f}k rays/s); run in {run_dir}")


def is_torchrun_launch() -> bool:
    """Whether this process was started by torchrun (``WORLD_SIZE`` is set)."""
    import os

    return os.environ.get("WORLD_SIZE", "") != ""


def _cmd_train_distributed(args, device: str, cfg) -> int:
    """``switchnerf train`` on one rank of a torchrun launch (docs/DISTRIBUTED.md).

    Every rank reads the config; rank 0 alone checks and prepares the run folder and builds
    a missing ray store while the others wait; every launch check fails on all ranks
    together with one line (exit 2).
    """
    from switchnerf.train.data import prepare_training_data
    from switchnerf.train.distributed import (
        DistributedContext,
        check_expert_placement,
        check_run_world_size,
        check_same_config,
    )
    from switchnerf.train.run import prepare_run_dir
    from switchnerf.train.trainer import Trainer

    if args.viewer:
        raise SwitchNerfError("--viewer: not under torchrun (serve a run with switchnerf view)")
    if args.resume:
        cfg = _resume_config(args)
    timeouts = cfg.distributed
    ctx = DistributedContext.from_env(device=None if args.device == "auto" else device,
                                      timeout_s=timeouts.timeout_s)
    try:
        check_same_config(ctx, cfg.to_dict())
        check_expert_placement(cfg.model.experts.n_experts, ctx.world_size,
                               expert_parallel=cfg.distributed.expert_parallel)

        def check_folder():
            check_run_world_size(args.output, ctx.world_size, resume=args.resume,
                                 overwrite=args.overwrite)
            prepare_run_dir(args.output, resume=args.resume, overwrite=args.overwrite,
                            check_only=True)
            if args.resume:  # loads the scene once more, so that every rank stops together
                from switchnerf.scene.fingerprint import scene_fingerprint
                from switchnerf.train.builder import scene_and_cameras

                scene, _ = scene_and_cameras(Path(args.scene))
                _resume_scene_check(args)(scene_fingerprint(scene))

        ctx.check_on_main(check_folder)
        data = None
        if ctx.is_main:  # builds a missing store; the others open it once it is there
            data = prepare_training_data(cfg, Path(args.scene), args.store)
            if not args.resume:
                prepare_run_dir(args.output, resume=False, overwrite=args.overwrite)
        ctx.barrier(timeout_s=timeouts.wait_timeout_s)
        if data is None:
            data = prepare_training_data(cfg, Path(args.scene), args.store, build=False,
                                         progress=False)
        trainer = Trainer(cfg, data, args.output, resume=args.resume, ctx=ctx)
        try:
            if ctx.is_main and args.resume:
                _record_scene(args.output, data)
            summary = trainer.train()
        finally:
            trainer.close()
        if ctx.is_main:
            _print_summary(summary, args.output)
        ctx.barrier(timeout_s=timeouts.wait_timeout_s)  # no rank tears the group down early
    finally:
        ctx.close()
    return 0


def run_eval(run_dir: Path, *, checkpoint="latest", device="cpu") -> dict:
    """Evaluate every val image of a run; write RUN/eval/metrics.json and side-by-sides."""
    from switchnerf.io_utils import write_json_atomic
    from switchnerf.moe.diagnostics import RoutingProbe
    from switchnerf.render.palette import EXPERT_PALETTE
    from switchnerf.train.evaluate import evaluate, uses_right_half_protocol
    from switchnerf.train.metrics import LpipsMetric
    from switchnerf.train.routing_log import EXPERT_MAP_FILE, summarise_routing
    from switchnerf.train.run import load_run

    run = load_run(run_dir, device=device, which=checkpoint)
    lp = LpipsMetric()
    if not lp.available:
        print(f"eval: LPIPS reported as null: {lp.reason}")
    out_dir = Path(run_dir) / "eval"
    result = evaluate(run.renderer, run.scene, out_dir=out_dir, lpips=lp,
                      right_half=uses_right_half_protocol(run.scene, run.cfg))
    result["step"] = run.step
    result["checkpoint"] = run.checkpoint.name
    routing = summarise_routing(run.renderer, Path(run_dir) / "metrics.jsonl")
    if routing is not None:
        result["routing"] = routing
        RoutingProbe().write_topdown(out_dir / EXPERT_MAP_FILE, run.renderer.field,
                                     run.renderer.grid, EXPERT_PALETTE)
    write_json_atomic(out_dir / "metrics.json", result)
    return result


def cmd_eval(args) -> int:
    result = run_eval(args.run, checkpoint=args.checkpoint, device=resolve_device(args.device))
    lp = "null" if result["lpips"] is None else f"{result['lpips']:.4f}"
    print(f"eval ({result['protocol']}, {len(result['images'])} images, step {result['step']}): "
          f"PSNR {result['psnr']:.2f} dB  SSIM {result['ssim']:.4f}  LPIPS {lp}")
    routing = result.get("routing")
    if routing is not None and routing["n_points"]:
        churn = routing["churn_per_100_steps"]
        churn = "n/a" if churn is None else f"{100 * churn:.2f}% per 100 steps"
        print(f"routing: gate value {routing['gate_value']:.3f}, neighbour disagreement "
              f"{100 * routing['disagreement']:.1f}%, churn {churn}; top-down map "
              f"{Path(args.run) / 'eval' / 'experts_topdown.png'}")
    print(f"metrics: {Path(args.run) / 'eval' / 'metrics.json'}")
    return 0


def cmd_demo(args) -> int:
    """The README's main job: minicity -> store -> train -> eval -> orbit video."""
    from switchnerf.config import load_config
    from switchnerf.scene.load import ensure_synth_scene
    from switchnerf.train.data import prepare_training_data
    from switchnerf.train.run import prepare_run_dir
    from switchnerf.train.trainer import Trainer
    from switchnerf.video.video_job import missing_video_encoder

    t0 = time.perf_counter()
    device = resolve_device(args.device)
    cfg = load_config(args.config, args.set)
    scene_path = Path(args.scene)
    print(f"[demo] scene {scene_path}")
    no_video = missing_video_encoder()
    if no_video is not None:
        print(f"[demo] warning: no orbit video at the end: {no_video}")
    ensure_synth_scene(scene_path)
    t_scene = time.perf_counter() - t0
    run_dir = Path(args.output) / "run"
    data = prepare_training_data(cfg, scene_path)
    prepare_run_dir(run_dir, resume=False, overwrite=True)  # after every check: it deletes
    trainer = Trainer(cfg, data, run_dir, device=device)
    try:
        summary = trainer.train()
    finally:
        trainer.close()
    t_train = time.perf_counter() - t0 - t_scene
    print(f"[demo] trained {summary['step']} steps in {t_train:.0f} s")
    result = run_eval(run_dir, device=device)
    t_eval = time.perf_counter() - t0 - t_scene - t_train
    print(f"[demo] held-out PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.4f} "
          f"({result['protocol']}, {len(result['images'])} images)")
    video = (demo_video(run_dir, Path(args.output) / "orbit.mp4", device=device)
             if no_video is None else "not written (no video encoder)")
    total = time.perf_counter() - t0
    print(f"[demo] finished in {total:.0f} s (scene {t_scene:.0f}, train {t_train:.0f}, "
          f"eval {t_eval:.0f}, video {total - t_scene - t_train - t_eval:.0f})")
    print(f"[demo] run:     {run_dir}")
    print(f"[demo] metrics: {run_dir / 'eval' / 'metrics.json'}")
    print(f"[demo] images:  {run_dir / 'eval'}")
    print(f"[demo] video:   {video}")
    return 0


def demo_video(run_dir: Path, out_path: Path, *, device="cpu", seconds: float = 4.0,
               fps: int = 12, width: int = 160, height: int = 120) -> Path:
    """The demo's short orbit video of a run: rgb | depth | experts side by side."""
    from switchnerf.train.run import load_run
    from switchnerf.video.video_job import Provenance, render_orbit_video

    run = load_run(run_dir, device=device)
    render_orbit_video(run.renderer, run.scene, out_path,
                       provenance=Provenance(run.run_dir, run.checkpoint, run.step),
                       seconds=seconds, fps=fps, width=width, height=height)
    return Path(out_path)
