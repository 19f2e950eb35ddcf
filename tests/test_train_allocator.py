"""switchnerf.train.allocator: glibc takes the thresholds, once, and not against the user's
own settings (the page faults it saves are measured in bench/RESULTS.md)."""

import os
import subprocess
import sys

import pytest

APPLY = ("from switchnerf.train.allocator import keep_freed_memory\n"
         "print(keep_freed_memory(), keep_freed_memory.cache_info().misses)\n")


def _apply(env: dict) -> list[str]:
    return subprocess.run([sys.executable, "-c", APPLY], env=env, capture_output=True,
                          text=True, check=True).stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_glibc_takes_the_thresholds_once_unless_the_user_set_them():
    import ctypes.util

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    if "libc.so.6" not in (ctypes.util.find_library("c") or ""):
        pytest.skip("not glibc: nothing is tuned")
    assert _apply(env) == ["True", "1"]  # mallopt accepted both values
    assert _apply({**env, "MALLOC_TRIM_THRESHOLD_": "131072"})[0] == "False"
    assert _apply({**env, "MALLOC_MMAP_THRESHOLD_": "131072"})[0] == "False"
