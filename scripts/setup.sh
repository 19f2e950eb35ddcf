#!/usr/bin/env bash
# Create or reuse the local virtual environment and install switchnerf into it.
#
#   scripts/setup.sh          runtime + dev dependencies
#
# Environment:
#   SWITCHNERF_VENV   where the environment lives (default: .venv in the repository)
#   SWITCHNERF_TORCH  the torch requirement to install when the environment has no torch
#                     (default: torch==2.13.0, the CPU wheel). An existing torch, CUDA or
#                     not, is never replaced.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SWITCHNERF_VENV:-$root/.venv}"
torch_req="${SWITCHNERF_TORCH:-torch==2.13.0}"

say() { printf '[setup] %s\n' "$*"; }

# System libraries: open3d needs libusb-1.0; the viewer's browser test needs chromium.
need_pkgs=()
ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || need_pkgs+=(libusb-1.0-0)
if [ "${SWITCHNERF_BROWSER:-0}" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
    need_pkgs+=(chromium)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing system packages: ${need_pkgs[*]}"
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
    else
        say "warning: missing system packages ${need_pkgs[*]} (install them with your package manager; open3d needs libusb-1.0)"
    fi
fi

if [ ! -x "$venv/bin/python" ]; then
    say "creating virtual environment $venv"
    python3 -m venv "$venv"
fi
py="$venv/bin/python"

if ! "$py" -c 'import torch' >/dev/null 2>&1; then
    say "installing $torch_req"
    "$py" -m pip install -q "$torch_req"
else
    say "keeping installed torch $("$py" -c 'import torch; print(torch.__version__)')"
fi

# Reinstall the package only when its metadata changed.
stamp="$venv/.switchnerf-stamp"
want="$(sha256sum "$root/pyproject.toml" | cut -d" " -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    say "installing switchnerf (editable) with its dependencies"
    "$py" -m pip install -q -e "$root[dev]"
    echo "$want" > "$stamp"
fi

# Build the native ops once into the on-disk cache (a cached build loads in well under a second).
if [ "${SWITCHNERF_BACKEND:-auto}" != torch ]; then
    "$py" - <<'PY' || say "warning: native ops did not build; the slower torch ops will be used"
import time
from switchnerf.ops import backend_name, native_available
t = time.perf_counter()
ok = native_available()
print(f"[setup] native ops: {backend_name()} ({time.perf_counter() - t:.1f} s)")
PY
fi
say "ready: $venv"
