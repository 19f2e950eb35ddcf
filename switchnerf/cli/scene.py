"""``switchnerf scene ...``: info, synth (and prepare, partition from scene_store;
from-images from scene_sfm).

``register(subparsers)`` adds the ``scene`` group; every leaf sets ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``scene`` command group to a top-level ``add_subparsers()`` object."""
    scene = subparsers.add_parser("scene", help="scene datasets: inspect, synthesize, prepare")
    sub = scene.add_subparsers(dest="scene_command", metavar="COMMAND", required=True)

    info = sub.add_parser("info", help="formats, image counts, bounds of a scene")
    info.add_argument("scene", help="scenes/*.yaml descriptor or dataset folder")
    info.set_defaults(func=cmd_info)

    synth = sub.add_parser("synth", help="render a built-in synthetic city (Mega-NeRF format)")
    synth.add_argument(
        "name", help="preset (minicity, midcity, bigcity) or a scenes/*.yaml with synth:"
    )
    synth.add_argument(
        "--out", type=Path, default=None, help="output folder (default: the descriptor's path)"
    )
    synth.add_argument(
        "--seed", type=int, default=None, help="random seed (default: descriptor's, else 0)"
    )
    synth.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    synth.set_defaults(func=cmd_synth)

    from switchnerf.cli.scene_sfm import add_from_images_parser
    from switchnerf.cli.scene_store import add_partition_parser, add_prepare_parser

    add_prepare_parser(sub)
    add_partition_parser(sub)
    add_from_images_parser(sub)


def _fmt_range(lo: float, hi: float) -> str:
    return f"[{lo:.4g}, {hi:.4g}]"


def cmd_info(args: argparse.Namespace) -> int:
    from switchnerf.scene.load import load_scene

    print("\n".join(info_lines(load_scene(args.scene))))
    return 0


def info_lines(scene) -> list[str]:
    """What ``scene info`` prints about a loaded Scene, one line per item."""
    mpu = scene.metres_per_unit
    est = scene.estimated
    lines = [f"scene        {scene.name}  ({scene.format})  {scene.root}"]
    if scene.descriptor is not None:
        lines.append(f"descriptor   {scene.descriptor}")
    for split, recs in scene.frames.items():
        if recs:
            ws = [r.width for r in recs]
            hs = [r.height for r in recs]
            res = (
                f"{ws[0]}x{hs[0]}"
                if len(set(ws)) == 1 and len(set(hs)) == 1
                else f"{min(ws)}x{min(hs)} .. {max(ws)}x{max(hs)}"
            )
        else:
            res = "-"
        held = "  (held out: every 8th image)" if split == "val" and est.get("val_split") else ""
        lines.append(f"{split:<12} {len(recs)} images, {res}{held}")

    def tag(key):
        return "estimated" if est.get(key) else "given"

    lo, hi = scene.bbox
    lines.append(
        "box          "
        + "  ".join(f"{a}{_fmt_range(lo[k], hi[k])}" for k, a in enumerate("xyz"))
        + f"  world units ({tag('bbox')}); size "
        + " x ".join(f"{(hi[k] - lo[k]) * mpu:.4g}" for k in range(3))
        + " m"
    )
    g, t = scene.altitude_range
    lines.append(
        f"altitude     z {_fmt_range(g, t)} world units = {_fmt_range(g * mpu, t * mpu)} m "
        f"({tag('altitude_range')})"
    )
    lines.append(
        f"metres/unit  {mpu:.6g}"
        + ("  (assumed: format has no metric scale)" if est.get("metres_per_unit") else "")
    )
    if scene.extra.get("up_from") == "sfm.json":
        lines.append("up axis      as sfm.json states (estimated by scene from-images)")
    elif est.get("up"):
        lines.append("up axis      estimated from the cameras; world rotated so it is +z")
    lines.append(f"partition    {scene.partition_grid[0]} x {scene.partition_grid[1]}")
    return lines


def cmd_synth(args: argparse.Namespace) -> int:
    from switchnerf.errors import input_error
    from switchnerf.scene.synth import synthesize

    name, seed, out = args.name, args.seed, args.out
    if name.endswith((".yaml", ".yml")):
        from switchnerf.scene.descriptor import read_descriptor

        d = read_descriptor(name)
        if d.synth is None:
            raise input_error(d.source, "synth", "missing: not a synthetic scene")
        name = d.synth.preset
        seed = d.synth.seed if seed is None else seed
        out = d.path if out is None else out
    if out is None:
        raise input_error(None, "--out", "required when NAME is a preset")
    path = synthesize(
        name, out, seed=0 if seed is None else seed, progress=True, overwrite=args.overwrite
    )
    print(f"wrote {path}")
    return 0
