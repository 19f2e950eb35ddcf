"""The native-op loader: backend choice, caching, and where the sources are found."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from switchnerf.ops import _sources


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    import os

    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                          capture_output=True, text=True, timeout=600, check=False)


def test_sources_found_and_hash_stable():
    src = _sources.find_source_dir()
    assert src is not None and (src / "bindings.cpp").is_file()
    names = {p.name for p in _sources.source_files(src)}
    # One op = header, host checks, CPU kernel (and CUDA kernel where there is one).
    for op in ("hash_encode", "march", "render_weights", "mlp"):
        assert {f"{op}.h", f"{op}.cpp", f"{op}_cpu.cpp"} <= names, op
    assert {"bindings.cpp", "hash_encode_cuda.cu"} <= names
    assert _sources.source_hash(src) == _sources.source_hash(src)
    assert len(_sources.source_hash(src)) == 16


def test_import_does_no_work():
    out = run_python("""
        import sys
        import switchnerf.ops, switchnerf.ops.hash_encode
        print(any(m.startswith("switchnerf_native_") for m in sys.modules),
              "switchnerf.ops._loader" in sys.modules)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_forced_torch_backend():
    out = run_python("""
        from switchnerf.ops import backend_name, native_available, load_native
        from switchnerf.ops import NativeUnavailableError
        print(backend_name(), native_available())
        try:
            load_native()
        except NativeUnavailableError as exc:
            print("refused:", exc)
    """, SWITCHNERF_BACKEND="torch")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "torch False"
    assert "SWITCHNERF_BACKEND=torch" in out.stdout


def test_unknown_backend_is_an_error():
    out = run_python("""
        from switchnerf.ops import backend_name
        backend_name()
    """, SWITCHNERF_BACKEND="fast")
    assert out.returncode != 0
    assert "SWITCHNERF_BACKEND='fast' is not one of auto, native, torch" in out.stderr


def test_missing_sources_fall_back_with_one_warning(monkeypatch, tmp_path):
    """Without sources (or a compiler), auto falls back to torch and says so once; native
    forced raises a clear error."""
    out = run_python("""
        import warnings
        from switchnerf.ops import _sources
        _sources.find_source_dir = lambda: None
        import switchnerf.ops as nat
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            print(nat.backend_name(), nat.native_available(), nat.backend_name())
        print(len(caught), str(caught[0].message)[:60] if caught else "")
    """, SWITCHNERF_BACKEND="auto")
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first == "torch False torch"
    assert second.startswith("1 switchnerf: the native ops are unavailable")
    out = run_python("""
        from switchnerf.ops import _sources
        _sources.find_source_dir = lambda: None
        from switchnerf.ops import load_native
        load_native()
    """, SWITCHNERF_BACKEND="native")
    assert out.returncode != 0
    assert "NativeUnavailableError" in out.stderr and "sources" in out.stderr


def test_cached_build_loads_fast_in_a_new_process(native):
    mod = native  # skipped without native ops, an error under SWITCHNERF_BACKEND=native
    assert mod.source_hash == _sources.source_hash(_sources.find_source_dir())
    out = run_python("""
        import time
        t = time.perf_counter()
        from switchnerf.ops import load_native, backend_name
        load_native()
        print(backend_name(), time.perf_counter() - t)
    """)
    assert out.returncode == 0, out.stderr
    name, seconds = out.stdout.split()
    assert name == "native"
    assert float(seconds) < 20, "a cached build should load without compiling"
