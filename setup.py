"""Build hooks of the switchnerf distribution (metadata lives in pyproject.toml).

The C++/CUDA sources of the native ops are package data (``switchnerf/csrc``), so every
install can JIT-build them on first use. Opt-in prebuild:
``SWITCHNERF_BUILD_NATIVE=1 pip install --no-build-isolation .`` (or ``-e .``) compiles the
ops into ``switchnerf._native`` against the installed torch (CUDA sources too where torch is
a CUDA build and nvcc is found), with the flags the JIT loader uses
(``switchnerf/ops/_sources.py``). The loader uses it only when its sources and torch version
match, else it JIT-builds.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def _sources_module():
    spec = importlib.util.spec_from_file_location(
        "_switchnerf_sources", ROOT / "switchnerf" / "ops" / "_sources.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _native_extensions() -> tuple[list, dict]:
    if os.environ.get("SWITCHNERF_BUILD_NATIVE") != "1":
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    src = _sources_module()
    files = src.source_files(src.SOURCE_DIR)
    with_cuda = torch.version.cuda is not None and CUDA_HOME is not None
    macros = [("SWITCHNERF_SOURCE_HASH", src.source_hash(src.SOURCE_DIR)),
              ("SWITCHNERF_TORCH_VERSION", torch.__version__)]
    # A prebuilt wheel may run on another CPU: never -march=native here.
    cxx = src.cxx_flags(tune_for_host=False)
    sources = [str(p.relative_to(ROOT)) for p in files if p.suffix == ".cpp"]
    common = {"define_macros": macros, "include_dirs": [str(src.SOURCE_DIR)],
              "extra_link_args": ["-fopenmp"]}
    if with_cuda:
        macros.append(("SWITCHNERF_WITH_CUDA", None))
        sources += [str(p.relative_to(ROOT)) for p in files if p.suffix == ".cu"]
        ext = CUDAExtension("switchnerf._native", sources, **common,
                            extra_compile_args={"cxx": cxx, "nvcc": list(src.CUDA_FLAGS)})
    else:
        ext = CppExtension("switchnerf._native", sources, **common,
                           extra_compile_args={"cxx": cxx})
    return [ext], {"build_ext": BuildExtension}


ext_modules, ext_cmds = _native_extensions()
setup(cmdclass=ext_cmds, ext_modules=ext_modules)
