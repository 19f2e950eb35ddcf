"""The native ops (C++/OpenMP on CPU, CUDA where built): a leaf package.

Per op, a Python wrapper with its argument checks and its pure-torch twin (the test
oracle): :mod:`.hash_encode` (twin :mod:`.hash_encode_torch`, level layout
:mod:`.hash_levels`), :mod:`.march`, :mod:`.render_weights`, :mod:`.front_to_back` (the bookkeeping of the
front-to-back rounds), :mod:`.mlp`, :mod:`.adam_sparse`
(the lazy Adam step of a hash table, twin in the same module). Their C++/CUDA
sources are ``switchnerf/csrc`` (per op a header, host checks, CPU kernel, CUDA kernel
where there is one). Nothing here imports another switchnerf package but ``errors``.

One loader for every native op:

* ``SWITCHNERF_BACKEND=native``: the native ops or a clear error (:class:`NativeUnavailableError`);
* ``SWITCHNERF_BACKEND=torch``: never load them; callers use the pure-torch references;
* unset or ``auto``: the native ops when they load (prebuilt, or JIT-built once and cached
  on disk, see :mod:`switchnerf.ops._loader`), else the torch references with one warning.

Nothing is built or loaded at import time.

>>> backend_name() in ("native", "torch")
True
"""

from __future__ import annotations

import functools
import os
import types
import warnings

from switchnerf.errors import SwitchNerfError

__all__ = [
    "NativeUnavailableError",
    "backend_name",
    "load_native",
    "native_available",
]

BACKEND_ENV = "SWITCHNERF_BACKEND"
_CHOICES = ("auto", "native", "torch")


class NativeUnavailableError(SwitchNerfError):
    """The native ops were requested but cannot be built or loaded."""


def _requested() -> str:
    value = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if value not in _CHOICES:
        raise SwitchNerfError(
            f"{BACKEND_ENV}={value!r} is not one of {', '.join(_CHOICES)}"
        )
    return value


@functools.lru_cache(maxsize=1)
def _build() -> tuple[types.ModuleType | None, str]:
    """Build or import the extension once per process: (module, "") or (None, why not)."""
    from switchnerf.ops._loader import build_or_import

    try:
        return build_or_import(), ""
    except Exception as exc:  # noqa: BLE001 - any compiler or loader failure is reported
        first = str(exc).strip().splitlines()
        return None, f"{type(exc).__name__}: {first[-1] if first else exc!r}"


@functools.cache
def _resolve(requested: str) -> types.ModuleType | None:
    """The module to use for a requested backend (warning once when falling back)."""
    if requested == "torch":
        return None
    module, why = _build()
    if module is None and requested == "auto":
        warnings.warn(
            f"switchnerf: the native ops are unavailable ({why}); using the pure-torch "
            f"reference ops instead (slower). Set {BACKEND_ENV}=torch to choose them "
            "explicitly, or install a C++ compiler and ninja to build the native ops.",
            RuntimeWarning,
            stacklevel=3,
        )
    return module


def load_native() -> types.ModuleType:
    """The native extension module, built on first use.

    Raises :class:`NativeUnavailableError` saying why when it cannot be loaded or when
    ``SWITCHNERF_BACKEND=torch`` rules it out.
    """
    requested = _requested()
    if requested == "torch":
        raise NativeUnavailableError(f"{BACKEND_ENV}=torch rules out the native ops")
    module = _resolve(requested)
    if module is None:
        raise NativeUnavailableError(f"the native ops cannot be loaded: {_build()[1]}")
    return module


def native_available() -> bool:
    """Whether the native ops will be used (builds them on first call if needed).

    Raises :class:`NativeUnavailableError` when ``SWITCHNERF_BACKEND=native`` and they
    cannot be loaded.
    """
    requested = _requested()
    if requested == "native":
        load_native()
        return True
    return _resolve(requested) is not None


def backend_name() -> str:
    """``"native"`` or ``"torch"``: which implementation of the ops this process uses."""
    return "native" if native_available() else "torch"


def __getattr__(name: str):
    # The op wrappers import torch and the render package; load them on first access.
    if name in ("fused_render_weights", "fused_march_rays"):
        from switchnerf.ops import _render

        return getattr(_render, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
