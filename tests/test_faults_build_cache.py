"""Fault injection, native build cache: an interrupted first build (Ctrl-C, SIGTERM,
SIGKILL of the whole process group) leaves a state from which the next command builds and
loads; a build waiting on another says so; build folders are keyed by the torch install.

The builds here compile a tiny stand-in source folder (one C++ file, a plain CPython module)
through the real loader, so each takes seconds, not the minute of the real native ops. A
compiler wrapper that sleeps before compiling holds a build open long enough to kill it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from switchnerf.ops import _loader

FAKE_SOURCE = r"""
// A stand-in for the native ops: a plain CPython module named by the build.
#include <Python.h>

#define SN_STR2(x) #x
#define SN_STR(x) SN_STR2(x)
#define SN_CAT2(a, b) a##b
#define SN_CAT(a, b) SN_CAT2(a, b)

static struct PyModuleDef sn_module = {PyModuleDef_HEAD_INIT, SN_STR(TORCH_EXTENSION_NAME),
                                       nullptr, -1, nullptr};

PyMODINIT_FUNC SN_CAT(PyInit_, TORCH_EXTENSION_NAME)(void) {
  PyObject *m = PyModule_Create(&sn_module);
  if (m != nullptr) PyModule_AddIntConstant(m, "answer", 42);
  return m;
}
"""

SLOW_COMPILER = """#!/bin/sh
# Compiles like g++, but first marks that a compile started and sleeps.
for a in "$@"; do
  if [ "$a" = "-c" ]; then touch "$SLOW_MARKER"; sleep 120; fi
done
exec g++ "$@"
"""

BUILD = """
import sys
from pathlib import Path
from switchnerf.ops import _loader
_loader.find_source_dir = lambda: Path(sys.argv[1])
print(_loader.build_or_import().answer)
"""

BUILD_TIMEOUT_S = 300

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals and g++")


@pytest.fixture
def fake(tmp_path):
    """(source folder, cache folder, environment) of a stand-in build."""
    src = tmp_path / "csrc"
    src.mkdir()
    (src / "bindings.cpp").write_text(FAKE_SOURCE)
    cache = tmp_path / "cache"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "SWITCHNERF_CACHE": str(cache),
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    env.pop("CXX", None)
    return src, cache, env


def _build_dir(cache: Path) -> Path:
    (folder,) = [p for p in cache.iterdir() if p.is_dir()]
    return folder


def _build(src: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(BUILD), str(src)], env=env,
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)


def _assert_builds_cleanly(src: Path, cache: Path, env: dict) -> str:
    """The next command: exit 0, the module loads, stderr only one-line notes, no traceback."""
    out = _build(src, env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["42"]
    assert "Traceback" not in out.stderr
    folder = _build_dir(cache)
    lines = out.stderr.strip().splitlines()
    assert lines[-1] == f"switchnerf: building the native ops (first run, about a minute) in {folder}"
    assert all(line.startswith("switchnerf: ") and str(folder) in line for line in lines)
    assert not (folder / "lock").exists()
    return out.stderr


def _wait_for(path: Path, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + BUILD_TIMEOUT_S
    while not path.exists():
        assert proc.poll() is None, f"the build ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _interrupted_build(src: Path, env: dict, slow: Path, marker: Path, sig) -> str:
    """Start a build with the slow compiler, kill its process group with ``sig`` once the
    compiler runs (as a terminal's Ctrl-C or a job kill does); returns its stderr."""
    marker.unlink(missing_ok=True)
    log = marker.with_suffix(".stderr")
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(BUILD), str(src)],
                                env={**env, "CXX": str(slow), "SLOW_MARKER": str(marker)},
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            _wait_for(marker, proc, "the compiler to start")
            os.killpg(proc.pid, sig)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return log.read_text()


def test_next_command_works_after_an_interrupted_first_build(fake, tmp_path):
    """SIGTERM, SIGKILL and Ctrl-C in turn, each during the first build's compile: every next
    command gets past what the previous one left (it reaches the compiler again, saying
    that it removed a stale torch lock), and the last one builds and loads the module."""
    src, cache, env = fake
    slow = tmp_path / "bin" / "slow-g++"  # torch accepts compilers whose name says g++
    slow.parent.mkdir()
    slow.write_text(SLOW_COMPILER)
    slow.chmod(0o755)
    marker = tmp_path / "compiling"
    stale_note = "switchnerf: removed a stale build lock left by an interrupted build in "
    previous = None
    for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGINT):
        err = _interrupted_build(src, env, slow, marker, sig)
        folder = _build_dir(cache)
        assert (stale_note in err) == (previous in (signal.SIGTERM, signal.SIGKILL)), err
        # killed without clean-up, torch's lock stays behind; Ctrl-C lets torch remove it
        assert (folder / "lock").exists() == (sig != signal.SIGINT)
        assert not any(folder.glob("*.so"))
        previous = sig

    _assert_builds_cleanly(src, cache, env)
    again = _build(src, env)  # cached: loads without building, says nothing
    assert again.returncode == 0 and again.stdout.split() == ["42"]
    assert again.stderr == ""


def test_a_build_waiting_on_another_says_so(fake, monkeypatch):
    from filelock import FileLock

    src, cache, env = fake
    monkeypatch.setenv("SWITCHNERF_CACHE", str(cache))
    folder = _loader.build_folder(src, _loader.source_hash(src), _loader._with_cuda())
    folder.mkdir(parents=True)
    log = folder.parent / "stderr.txt"
    lock = FileLock(str(folder / "build.lock"))
    with lock, open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(BUILD), str(src)],
                                env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        deadline = time.monotonic() + BUILD_TIMEOUT_S
        while "waiting" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    out, _ = proc.communicate(timeout=BUILD_TIMEOUT_S)
    assert proc.returncode == 0 and out.split() == ["42"]
    lines = log.read_text().strip().splitlines()
    assert lines == [
        f"switchnerf: waiting for another process building the native ops in {folder}",
        f"switchnerf: building the native ops (first run, about a minute) in {folder}",
    ]


def test_build_folder_is_keyed_by_the_torch_installation(monkeypatch, tmp_path):
    import torch

    monkeypatch.setenv("SWITCHNERF_CACHE", str(tmp_path))
    src = Path(_loader.__file__).parent
    here = _loader.build_folder(src, "0123456789abcdef", False)
    assert here == _loader.build_folder(src, "0123456789abcdef", False)
    assert here.parent == tmp_path
    assert here.name.startswith(f"native-{torch.__version__}-py{sys.version_info.major}.")
    assert "0123456789abcdef" in here.name
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "other-venv"))
    other_env = _loader.build_folder(src, "0123456789abcdef", False)
    assert other_env != here and other_env.parent == tmp_path
    monkeypatch.undo()
    monkeypatch.setenv("SWITCHNERF_CACHE", str(tmp_path))
    monkeypatch.setattr(torch, "__file__", str(tmp_path / "site" / "torch" / "__init__.py"))
    other_install = _loader.build_folder(src, "0123456789abcdef", False)
    assert other_install not in (here, other_env)
    assert _loader.build_folder(src, "0123456789abcdef", True).name != other_install.name
