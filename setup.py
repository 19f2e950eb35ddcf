"""Build hooks of the switchnerf distribution (metadata lives in pyproject.toml).

* Wheels carry the C++/CUDA sources of the native ops as ``switchnerf/_native_src`` (copied
  from ``cuda/``), so an installed package can JIT-build them on first use; an editable
  install reads them from ``cuda/`` directly.
* Opt-in prebuild: ``SWITCHNERF_BUILD_NATIVE=1 pip install --no-build-isolation .`` (or
  ``-e .``) compiles the ops into ``switchnerf._native`` against the installed torch (CUDA
  sources too where torch is a CUDA build and nvcc is found). The loader uses it only when
  its sources and torch version match, else it JIT-builds.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SOURCES = ROOT / "cuda"


def _sources_module():
    spec = importlib.util.spec_from_file_location(
        "_switchnerf_sources", ROOT / "switchnerf" / "native" / "_sources.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class BuildPyWithNativeSources(build_py):
    """build_py that also copies cuda/ into the package as _native_src."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # the loader finds cuda/ next to the package
        dest = Path(self.build_lib) / "switchnerf" / "_native_src"
        dest.mkdir(parents=True, exist_ok=True)
        for path in _sources_module().source_files(SOURCES):
            shutil.copy2(path, dest / path.name)


def _native_extensions() -> tuple[list, dict]:
    if os.environ.get("SWITCHNERF_BUILD_NATIVE") != "1":
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    sources_mod = _sources_module()
    files = sources_mod.source_files(SOURCES)
    with_cuda = torch.version.cuda is not None and CUDA_HOME is not None
    macros = [("SWITCHNERF_SOURCE_HASH", sources_mod.source_hash(SOURCES)),
              ("SWITCHNERF_TORCH_VERSION", torch.__version__)]
    cxx = ["-O3", "-ffp-contract=off", "-fopenmp"]
    sources = [str(p.relative_to(ROOT)) for p in files if p.suffix == ".cpp"]
    if with_cuda:
        macros.append(("SWITCHNERF_WITH_CUDA", None))
        sources += [str(p.relative_to(ROOT)) for p in files if p.suffix == ".cu"]
        ext = CUDAExtension("switchnerf._native", sources, define_macros=macros,
                            include_dirs=[str(SOURCES)], extra_link_args=["-fopenmp"],
                            extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]})
    else:
        ext = CppExtension("switchnerf._native", sources, define_macros=macros,
                           include_dirs=[str(SOURCES)], extra_link_args=["-fopenmp"],
                           extra_compile_args={"cxx": cxx})
    return [ext], {"build_ext": BuildExtension}


ext_modules, ext_cmds = _native_extensions()
setup(cmdclass={"build_py": BuildPyWithNativeSources, **ext_cmds}, ext_modules=ext_modules)
