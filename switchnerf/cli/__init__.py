"""The ``switchnerf`` command line: every command lives in this package (one module per
group: scene, train/eval/demo, view, render, export); nothing else imports it.

Errors a user can act on print ONE line, ``switchnerf: error: <file or --flag>: <what>``,
and exit with code 2: bad arguments (checked while parsing, see :mod:`.args`), bad input
files, and the faults of the machine mapped in :func:`main` (an unwritable or full folder,
out of memory, a number too large). ``SWITCHNERF_DEBUG=1`` adds the traceback of mapped
errors. Anything else is a bug and keeps its traceback. Ctrl-C exits with 130; warnings
print as one line, ``switchnerf: warning: ...``.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings

from switchnerf.errors import SwitchNerfError, one_line

DEBUG_ENV = "SWITCHNERF_DEBUG"


def build_parser():
    from switchnerf.cli.args import Parser

    parser = Parser(
        prog="switchnerf",
        description="City-scale NeRF as a heterogeneous mixture of hash experts (Switch-NeRF++).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    from switchnerf.cli import export, render, scene, train, view

    for command in (scene, train, view, render, export):
        command.register(sub)
    return parser


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "0") not in ("", "0")


def describe_fault(exc: BaseException) -> str | None:
    """One line for a fault of the machine or of the input that is not a bug, else None.

    OSError: the file(s) and the system's reason; MemoryError and CUDA out-of-memory: what
    ran out, with a hint; OverflowError: a number too large; a SwitchNerfError: its text.
    """
    if isinstance(exc, SwitchNerfError):
        return one_line(str(exc))
    if isinstance(exc, OSError):
        reason = exc.strerror or one_line(str(exc)) or type(exc).__name__
        files = [os.fspath(f) for f in (exc.filename, exc.filename2) if f is not None]
        return f"{' -> '.join(map(str, files))}: {reason}" if files else reason
    torch = sys.modules.get("torch")
    cuda_oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if isinstance(exc, MemoryError) or (cuda_oom is not None and isinstance(exc, cuda_oom)):
        where = "GPU" if not isinstance(exc, MemoryError) else "CPU"
        return (f"out of {where} memory; use a smaller --resolution or fewer rays per step "
                "(--set train.rays_per_step=...)")
    if isinstance(exc, OverflowError):
        return f"a number is too large ({one_line(str(exc))}); check numeric arguments"
    return None


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a bad argument already printed as one line
        return exc.code if isinstance(exc.code, int) else 2
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warnings(warnings.showwarning)
        try:
            return int(args.func(args) or 0)
        except KeyboardInterrupt:
            print("switchnerf: interrupted", file=sys.stderr)
            return 130
        except (SwitchNerfError, OSError, MemoryError, OverflowError, RuntimeError) as exc:
            line = describe_fault(exc)
            if line is None:  # a RuntimeError that is not out-of-memory: a bug
                raise
            if _debug():
                traceback.print_exc()
            print(f"switchnerf: error: {line}", file=sys.stderr)
            return getattr(exc, "exit_code", 2)


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _one_line_warnings(fallback):
    """A ``warnings.showwarning``: warnings raised by switchnerf's code as one line,
    ``switchnerf: warning: ...``; others through ``fallback`` (as Python prints them)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if not os.path.abspath(str(filename)).startswith(_PACKAGE_DIR + os.sep):
            fallback(message, category, filename, lineno, file, line)
            return
        text = one_line(str(message))
        text = text.removeprefix("switchnerf: ")
        print(f"switchnerf: warning: {text}", file=file or sys.stderr)

    return show


if __name__ == "__main__":
    sys.exit(main())
