"""The ``switchnerf`` command line.

Expected mistakes (bad input, missing files, config typos) print one line and exit with
code 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import sys

from switchnerf.errors import SwitchNerfError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchnerf",
        description="City-scale NeRF as a heterogeneous mixture of hash experts (Switch-NeRF++).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    from switchnerf.render.cli import register as register_render
    from switchnerf.scene.cli import register as register_scene
    from switchnerf.train.commands import register as register_train
    from switchnerf.viewer_cli import register as register_view

    for register in (register_scene, register_train, register_view, register_render):
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SwitchNerfError as exc:
        print(f"switchnerf: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("switchnerf: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
