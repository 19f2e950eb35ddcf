"""Load the native ops: prebuilt, else JIT-built once into a cache folder, else None.

Order of attempts in :func:`build_or_import`:

1. ``switchnerf._native``, an extension built by ``setup.py`` (opt-in, see there), used
   when it was built from the same sources and the same torch;
2. a JIT build with ``torch.utils.cpp_extension.load`` into
   ``$SWITCHNERF_CACHE/native-<torch>-py<X.Y>-<source hash>-<where>-<cpu>`` (default cache
   ``~/.cache/switchnerf``; ``<where>`` hashes the checkout and the torch installation, see
   :func:`build_folder`), under a file lock so two processes never build at once; later
   processes and runs load the cached library without compiling.

An interrupted build (Ctrl-C, SIGTERM, SIGKILL, a timeout) never blocks the next one: torch
guards a build folder with its own ``lock`` file, which a killed process leaves behind and
every later ``load`` would wait on for ever. Such a file found while this module holds the
folder's ``build.lock`` belongs to no running build, so it is removed; ninja recompiles
whatever the interrupted build left unfinished.

CUDA sources are compiled only when torch is a CUDA build and nvcc is found
(``CUDA_HOME``); a CPU-only torch builds the CPU ops only.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import platform
import sys
import types
from pathlib import Path

import torch

from switchnerf.ops._sources import (
    CUDA_FLAGS,
    cxx_flags,
    find_source_dir,
    source_files,
    source_hash,
)

LOCK_TIMEOUT_S = 1800
"""How long a process waits for another one's build of the same sources."""


def cache_root() -> Path:
    """``$SWITCHNERF_CACHE``, else ``~/.cache/switchnerf``."""
    env = os.environ.get("SWITCHNERF_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "switchnerf"


def _with_cuda() -> bool:
    from torch.utils.cpp_extension import CUDA_HOME

    return torch.version.cuda is not None and CUDA_HOME is not None


def _tune_for_host() -> bool:
    """Whether to compile for this machine's instruction set (``-march=native``): on by
    default for Linux x86_64 / aarch64 builds (the build cache is keyed by the CPU, see
    :func:`cpu_tag`); ``SWITCHNERF_PORTABLE_BUILD=1`` turns it off."""
    if os.environ.get("SWITCHNERF_PORTABLE_BUILD", "0") not in ("", "0"):
        return False
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "aarch64")


def cpu_tag() -> str:
    """8 hex digits naming this CPU's model and feature flags ("generic" for portable
    builds): a cache folder shared between machines never hands one CPU another's build."""
    if not _tune_for_host():
        return "generic"
    try:
        info = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        info = []
    keys = ("model name", "flags", "Features", "CPU part")
    ident = sorted({line for line in info if line.split(":")[0].strip() in keys})
    return hashlib.sha256("\n".join([platform.machine(), *ident]).encode()).hexdigest()[:8]


def _cflags() -> list[str]:
    return cxx_flags(tune_for_host=_tune_for_host(), openmp=sys.platform != "darwin")


def _ldflags() -> list[str]:
    return ["-fopenmp"] if sys.platform != "darwin" else []


def _import_prebuilt(digest: str) -> types.ModuleType | None:
    try:
        mod = importlib.import_module("switchnerf._native")
    except ImportError:
        return None
    if getattr(mod, "source_hash", None) != digest:
        return None
    if getattr(mod, "torch_version", None) != torch.__version__:
        return None
    return mod


def build_folder(src: Path, digest: str, with_cuda: bool) -> Path:
    """The cache folder of one build (not created here).

    Keyed by the torch version, the Python version, the source hash, CUDA or not, the CPU
    (:func:`cpu_tag`) and ``<where>``: a hash of the checkout's source folder (torch's
    ``load`` rebuilds when the absolute source paths change) and of the torch installation
    (``torch.__file__`` and ``sys.prefix``), so two environments with the same torch version
    never rebuild over each other's libraries.
    """
    py = f"py{sys.version_info.major}.{sys.version_info.minor}"
    tag = "-cuda" if with_cuda else ""
    install = Path(torch.__file__).resolve().parent
    key = "\0".join((str(src.resolve()), str(install), str(Path(sys.prefix).resolve())))
    where = hashlib.sha256(key.encode()).hexdigest()[:8]
    return cache_root() / f"native-{torch.__version__}-{py}-{digest}{tag}-{where}-{cpu_tag()}"


TORCH_BATON = "lock"
"""The file torch's ``cpp_extension`` creates in a build folder while it builds there."""


def remove_stale_baton(build_dir: Path) -> bool:
    """Remove torch's ``lock`` file from ``build_dir``; True when there was one.

    Call only while holding ``build_dir/build.lock``: every build in the folder runs under
    it, so a torch lock found then was left by a process that died mid-build.
    """
    try:
        (build_dir / TORCH_BATON).unlink()
    except FileNotFoundError:
        return False
    return True


def _say(message: str) -> None:
    print(f"switchnerf: {message}", file=sys.stderr, flush=True)


def build_or_import(verbose: bool = False) -> types.ModuleType:
    """The native extension module; raises RuntimeError saying why when there is none."""
    src = find_source_dir()
    if src is None:
        raise RuntimeError("the C++ sources of the native ops are not installed (no switchnerf/csrc folder)")
    digest = source_hash(src)
    prebuilt = _import_prebuilt(digest)
    if prebuilt is not None:
        return prebuilt

    from filelock import FileLock, Timeout
    from torch.utils import cpp_extension

    with_cuda = _with_cuda()
    build_dir = build_folder(src, digest, with_cuda)
    build_dir.mkdir(parents=True, exist_ok=True)
    files = [p for p in source_files(src) if p.suffix == ".cpp"]
    if with_cuda:
        files += [p for p in source_files(src) if p.suffix == ".cu"]
    defines = [f"-DSWITCHNERF_SOURCE_HASH={digest}"]
    if with_cuda:
        defines.append("-DSWITCHNERF_WITH_CUDA")
    name = f"switchnerf_native_{digest}{'_cuda' if with_cuda else ''}"
    lock = FileLock(str(build_dir / "build.lock"), timeout=LOCK_TIMEOUT_S)
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            _say(f"waiting for another process building the native ops in {build_dir}")
            lock.acquire()
        try:
            if remove_stale_baton(build_dir):
                _say(f"removed a stale build lock left by an interrupted build in {build_dir}")
            if not any(build_dir.glob(f"{name}*.so")) and not any(build_dir.glob(f"{name}*.pyd")):
                _say(f"building the native ops (first run, about a minute) in {build_dir}")
            # load() appends to the flag lists it is given: always pass fresh ones.
            return cpp_extension.load(
                name=name,
                sources=[str(p) for p in files],
                extra_cflags=_cflags() + defines,
                extra_cuda_cflags=[*CUDA_FLAGS, *defines] if with_cuda else None,
                extra_ldflags=_ldflags(),
                extra_include_paths=[str(src)],
                build_directory=str(build_dir),
                with_cuda=with_cuda,
                verbose=verbose,
            )
        finally:
            lock.release()
    except Timeout as exc:
        raise RuntimeError(
            f"waited {LOCK_TIMEOUT_S} s for another process building the native ops in "
            f"{build_dir}; delete {build_dir / 'build.lock'} if no build is running"
        ) from exc
