"""The single entry point of the hash encoding; picks the backend that runs it.

Every backend takes the same arguments and returns the same numbers as
:func:`switchnerf.encoding.reference.hash_encode_reference`: the fused native op
(:func:`switchnerf.encoding.fused.fused_hash_encode`, CPU and CUDA) where it is built and
applicable, else the pure-torch reference. ``SWITCHNERF_BACKEND=torch|native`` forces one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from switchnerf.encoding.levels import LevelTable
from switchnerf.encoding.reference import hash_encode_reference

EncodeFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", LevelTable], torch.Tensor]


def _select_backend(x: torch.Tensor, table: torch.Tensor) -> EncodeFn:
    """The function that encodes ``x`` [N, 3] with ``table`` [R, F] on their device and dtype.

    The fused op gives no gradient w.r.t. ``x`` and runs float32 tables of 1, 2, 4 or 8
    features; anything else uses the reference.
    """
    if (x.requires_grad or x.dtype != torch.float32 or table.dtype != torch.float32
            or table.dim() != 2 or table.shape[1] not in (1, 2, 4, 8)):
        return hash_encode_reference
    from switchnerf.native import load_native, native_available

    if not native_available():
        return hash_encode_reference
    if x.is_cuda and not getattr(load_native(), "with_cuda", False):
        return hash_encode_reference
    from switchnerf.encoding.fused import fused_hash_encode

    return fused_hash_encode


def hash_encode(
    x: torch.Tensor, table: torch.Tensor, expert_id: torch.Tensor | None, levels: LevelTable
) -> torch.Tensor:
    """Multiresolution hash encoding of each point with its own expert's grid.

    Args:
        x: float [N, 3], points in the unit cube of the grid's frame.
        table: [R, F] feature table, ``params.view(levels.n_rows, levels.n_features)``.
        expert_id: int64 [N] expert of each point, or None (every point uses expert 0).
        levels: level geometry of the E experts, on x's device.

    Returns:
        [N, L * F], level-major features, differentiable w.r.t. ``table`` and ``x``.

    >>> from switchnerf.encoding.levels import LevelTable
    >>> lv = LevelTable.for_grid(n_levels=2, n_features=2, log2_hashmap_size=8,
    ...                          base_resolution=4, per_level_scale=2.0)
    >>> hash_encode(torch.rand(5, 3), torch.zeros(lv.n_rows, 2), None, lv).shape
    torch.Size([5, 4])
    """
    return _select_backend(x, table)(x, table, expert_id, levels)
