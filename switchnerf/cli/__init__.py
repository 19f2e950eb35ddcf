"""The ``switchnerf`` command line: every command lives in this package (one module per
group: scene, train/eval/demo, view, render, export); nothing else imports it.

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
    from switchnerf.cli import export, render, scene, train, view

    for command in (scene, train, view, render, export):
        command.register(sub)
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
