"""Zeroed gradient tensors handed from the optimiser back to the next backward.

A CPU training step of cpu-demo produces a 23 MB gradient for the experts' hash tables
(and 5 MB for the shared grid). Allocated fresh at every step, that gradient costs a memset
and, whenever the allocator has returned the previous one to the OS, thousands of page
faults (about 4 ms of a 20 ms step, bench/RESULTS.md). Instead, the tables' optimiser step
(``switchnerf.train.optim.NativeTableAdam``) zeroes each gradient in the pass that reads it
and gives the tensor back here with :func:`give`; the next hash-encoding backward of a table
of the same size takes it with :func:`take` and accumulates into it, and autograd adopts it
as the parameter's gradient (nothing else holds it, so it is not copied).

Only tensors that are all zeros and referenced by nobody else may be given (:func:`give`
checks the second and drops tensors that are shared); a taken tensor belongs to the taker.
The pool keeps at most :data:`MAX_PER_KEY` tensors of one (size, dtype, device).
"""

from __future__ import annotations

import math
import threading

import torch

__all__ = ["MAX_PER_KEY", "clear", "give", "take"]

MAX_PER_KEY = 4
"""Tensors kept per (numel, dtype, device); more are dropped (freed)."""

_pool: dict[tuple, list[torch.Tensor]] = {}
_lock = threading.Lock()


def _key(numel: int, dtype: torch.dtype, device: torch.device) -> tuple:
    return (int(numel), dtype, torch.device(device))


def _sole_owner(t: torch.Tensor) -> bool:
    """Whether ``t`` is the only tensor on its storage (no view or alias of it elsewhere).
    False when torch does not expose the storage's use count (nothing is then recycled)."""
    try:
        storage = t.untyped_storage()
        count = torch._C._storage_Use_Count(storage._cdata)
    except (AttributeError, RuntimeError):
        return False
    # one reference from the tensor, one from the storage object made here
    return count == 2 and t.storage_offset() == 0 and t.is_contiguous() \
        and storage.nbytes() == t.numel() * t.element_size()


def give(t: torch.Tensor) -> bool:
    """Offer ``t`` (all zeros, contiguous, no other reference to its storage) to the next
    :func:`take` of its size; returns whether it was kept."""
    if t.is_sparse or not _sole_owner(t):
        return False
    with _lock:
        bucket = _pool.setdefault(_key(t.numel(), t.dtype, t.device), [])
        if len(bucket) >= MAX_PER_KEY:
            return False
        bucket.append(t.detach().view(-1))
    return True


def take(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
         ) -> torch.Tensor | None:
    """A zeroed contiguous tensor of ``shape`` given back earlier, or None (allocate one)."""
    with _lock:
        bucket = _pool.get(_key(math.prod(shape), dtype, device))
        if not bucket:
            return None
        return bucket.pop().view(shape)


def clear() -> None:
    """Drop every tensor in the pool (frees their memory)."""
    with _lock:
        _pool.clear()
