"""Every module of the package imports without the optional packages (lpips, pycolmap,
tiny-cuda-nn), so doctest collection over switchnerf/ never breaks on a missing extra."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ("lpips", "pycolmap", "tinycudann")


def test_every_module_imports_without_optional_packages():
    code = textwrap.dedent(f"""
        import importlib, pkgutil, sys
        for name in {OPTIONAL!r}:
            sys.modules[name] = None  # `import name` raises ImportError
        import switchnerf
        names = [m.name for m in pkgutil.walk_packages(switchnerf.__path__, "switchnerf.")
                 if not m.name.endswith("__main__")]
        for name in names:
            importlib.import_module(name)
        print(len(names))
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) > 50  # the walk found the package's modules
