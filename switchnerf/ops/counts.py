"""Counting and compaction without extra host syncs on CUDA.

``torch.bincount`` reads the largest id back to the host to size its output, and each
boolean-mask index ``x[mask]`` runs its own ``nonzero`` (one host sync per indexed tensor).
These helpers do the same work with a known output size, or with one ``nonzero`` for many
tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor


def counts_per_id(ids: Tensor, n: int) -> Tensor:
    """How many entries of ``ids`` (int64 [M], every value in [0, n)) equal each id:
    int64 [n], ``torch.bincount(ids, minlength=n)`` without its host sync.

    >>> counts_per_id(torch.tensor([2, 0, 2]), 4).tolist()
    [1, 0, 2, 0]
    """
    return torch.zeros(n, dtype=torch.int64, device=ids.device).index_add_(
        0, ids, torch.ones_like(ids))


def select_where(mask: Tensor, *tensors: Tensor) -> tuple[Tensor, ...]:
    """``tuple(t[mask] for t in tensors)`` with one ``nonzero`` (one host sync) for all.

    mask: bool [M]; each tensor [M, ...].

    >>> select_where(torch.tensor([True, False, True]), torch.arange(3), torch.arange(3.0))
    (tensor([0, 2]), tensor([0., 2.]))
    """
    idx = mask.nonzero().squeeze(1)
    return tuple(t.index_select(0, idx) for t in tensors)
