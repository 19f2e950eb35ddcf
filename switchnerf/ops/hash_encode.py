"""The hash-encoding op: one entry point (:func:`hash_encode`), the fused native kernel for one
grid or a mixture of experts, and the choice between it and its pure-torch twin
(:mod:`switchnerf.ops.hash_encode_torch`).

:func:`fused_hash_encode` takes the arguments of
:func:`switchnerf.ops.hash_encode_torch.hash_encode_reference` and returns the same numbers
(float32; the sum over the 8 corners may differ in the last bits). Each point is encoded
with its own expert's levels in one call for all experts, without gathering the batch per
expert. The gradient flows to ``table`` only: the op gives **no gradient w.r.t. x** and
refuses an ``x`` that requires one (use the reference for that).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.autograd.function import once_differentiable

from switchnerf.ops import load_native, zeroed_grads
from switchnerf.ops.hash_encode_torch import hash_encode_reference
from switchnerf.ops.hash_levels import LevelTable


class _FusedHashEncode(torch.autograd.Function):
    """``out = encode(x, table)``; backward gives d out / d table (accumulated per row) in a
    zeroed tensor from :mod:`switchnerf.ops.zeroed_grads` when one of the table's size was
    given back, else in a fresh one."""

    @staticmethod
    def forward(ctx, table, x, expert_id, scale, resolution, size, offset):
        out = load_native().hash_encode_forward(x, table, expert_id, scale, resolution, size,
                                                offset)  # [N, L * F]
        ctx.save_for_backward(x, expert_id, scale, resolution, size, offset)
        ctx.table_shape = tuple(table.shape)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, expert_id, scale, resolution, size, offset = ctx.saved_tensors
        n_rows, n_features = ctx.table_shape
        # a zeroed gradient the tables' optimiser gave back, if any (no fresh allocation)
        out = zeroed_grads.take((n_rows, n_features), torch.float32, x.device)
        grad_table = load_native().hash_encode_backward(
            grad_out.float().contiguous(), x, expert_id, scale, resolution, size, offset,
            n_rows, n_features, out=out)  # [R, F]
        return grad_table, None, None, None, None, None, None


def fused_hash_encode(
    x: torch.Tensor, table: torch.Tensor, expert_id: torch.Tensor | None, levels: LevelTable
) -> torch.Tensor:
    """Multiresolution hash encoding (tiny-cuda-nn semantics) by the native op.

    Args:
        x: float32 [N, 3] in the unit cube; must not require grad (no gradient w.r.t. x).
        table: float32 [R, F] (``params.view(R, F)``), R = ``levels.n_rows``, F in 1, 2, 4, 8.
        expert_id: int64 [N] expert of each point, or None (every point uses expert 0).
        levels: geometry of the E x L levels; its small tensors are moved to x's device if
            they live elsewhere.

    Returns:
        float32 [N, L * F], level-major, differentiable w.r.t. ``table`` (first order).

    Equals ``hash_encode_reference(x, table, expert_id, levels)`` up to float rounding of
    the corner sum. Non-contiguous inputs are made contiguous here.
    """
    name = "fused_hash_encode"
    if x.dim() != 2 or x.shape[1] != 3:
        raise ValueError(f"{name}: x has shape {tuple(x.shape)}, expected [N, 3]")
    if x.dtype != torch.float32 or table.dtype != torch.float32:
        raise ValueError(f"{name}: x and table must be float32, got {x.dtype} and {table.dtype} "
                         "(the reference encodes other dtypes)")
    if x.requires_grad:
        raise ValueError(f"{name}: x requires grad, but the native op gives no gradient w.r.t. "
                         "x; use switchnerf.ops.hash_encode_torch.hash_encode_reference")
    expected = (levels.n_rows, levels.n_features)
    if tuple(table.shape) != expected:
        raise ValueError(f"{name}: table has shape {tuple(table.shape)}, expected {expected}")
    if expert_id is not None:
        if expert_id.shape != (x.shape[0],) or expert_id.dtype != torch.int64:
            raise ValueError(f"{name}: expert_id has shape {tuple(expert_id.shape)} and dtype "
                             f"{expert_id.dtype}, expected int64 [{x.shape[0]}]")
        expert_id = expert_id.contiguous()
    dev = x.device
    meta = [getattr(levels, n).to(dev).contiguous()
            for n in ("scale", "resolution", "size", "offset")]
    return _FusedHashEncode.apply(table.contiguous(), x.contiguous(), expert_id, *meta)


EncodeFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", LevelTable], torch.Tensor]


def _select_backend(x: torch.Tensor, table: torch.Tensor) -> EncodeFn:
    """The function that encodes ``x`` [N, 3] with ``table`` [R, F] on their device and dtype.

    The fused op gives no gradient w.r.t. ``x`` and runs float32 tables of 1, 2, 4 or 8
    features; anything else uses the reference.
    """
    if (x.requires_grad or x.dtype != torch.float32 or table.dtype != torch.float32
            or table.dim() != 2 or table.shape[1] not in (1, 2, 4, 8)):
        return hash_encode_reference
    from switchnerf.ops import load_native, native_available

    if not native_available():
        return hash_encode_reference
    if x.is_cuda and not getattr(load_native(), "with_cuda", False):
        return hash_encode_reference
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

    >>> from switchnerf.ops.hash_levels import LevelTable
    >>> lv = LevelTable.for_grid(n_levels=2, n_features=2, log2_hashmap_size=8,
    ...                          base_resolution=4, per_level_scale=2.0)
    >>> hash_encode(torch.rand(5, 3), torch.zeros(lv.n_rows, 2), None, lv).shape
    torch.Size([5, 4])
    """
    return _select_backend(x, table)(x, table, expert_id, levels)
