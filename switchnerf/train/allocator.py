"""Keep glibc from returning a training step's large freed buffers to the OS.

Every CPU training step allocates and frees the same large tensors (the hash tables'
gradient alone is 23 MB on the cpu-demo preset). glibc serves such blocks by ``mmap`` or
trims them off the heap when they are freed, so the next step's first writes page-fault
the memory back in: 1000-1700 minor faults a step in ``bench/page_faults.py``, about 8 %
of the step on 2 cores (bench/RESULTS.md). Raising glibc's mmap threshold to 32 MB (its maximum) and its trim
threshold to 256 MB keeps such blocks on the heap for reuse; the process then holds up to
256 MB of freed memory instead of returning it at once.

The settings are process-wide; :func:`keep_freed_memory` applies them once, only under
glibc on Linux, and leaves alone a process whose environment already sets
``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` (glibc's own knobs).
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

__all__ = ["keep_freed_memory"]

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's upper limit on 64-bit systems
TRIM_THRESHOLD = 256 << 20


@functools.cache
def keep_freed_memory() -> bool:
    """Apply the thresholds (once per process); whether they are in effect."""
    if not sys.platform.startswith("linux"):
        return False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
