"""Pure-torch multiresolution hash encoding with tiny-cuda-nn semantics: the test oracle.

One implementation serves a single grid and a mixture of experts: each point
reads its own expert's level geometry (gathered by expert id, no loop over
experts) and the levels are visited one at a time. uint32 arithmetic is
emulated with int64 tensors masked to 32 bits.

Exactness with respect to tcnn (float32 inputs):
  * ``pos = fmaf(scale, x, 0.5f)`` is reproduced bit for bit (the product is
    exact in float64, the sum is rounded to odd, then to float32);
  * cell, corner rows and N-linear weights (multiplied in dimension order
    0, 1, 2) are bit-exact;
  * only the sum over the 8 corners may differ in the last float bits (tcnn
    accumulates with fused multiply-adds in corner order).
float64 inputs are encoded in float64 (no tcnn counterpart; used by gradcheck).
"""

from __future__ import annotations

import torch

from switchnerf.ops.hash_levels import LevelTable

PRIMES = (1, 2654435761, 805459861)
"""tcnn's coherent prime hash factors for dimensions x, y, z."""

MASK32 = 0xFFFFFFFF


def _fma_half_f32(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``fmaf(scale, x, 0.5f)`` rounded once to float32.

    x: float32 [N, 3]; scale: float32 [N, 1] or [1, 1]. Returns float32 [N, 3].
    """
    p = x.double() * scale.double()  # exact: 24 + 24 significant bits fit in 53
    s = p + 0.5
    bb = s - p
    err = (p - (s - bb)) + (0.5 - bb)  # TwoSum: exact p + 0.5 == s + err
    # Round to odd at 53 bits, so the rounding to 24 bits below is the correct one.
    even = (s.view(torch.int64) & 1) == 0
    toward = torch.where(err > 0, float("inf"), float("-inf"))
    s = torch.where((err != 0) & even, torch.nextafter(s, toward), s)
    return s.float()


def _positions(x: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid cell and in-cell fraction of each point at one level.

    x: float32 or float64 [N, 3] in the unit cube; scale: float32 [N] or [1].
    Returns ``pos_grid`` int64 [N, 3] (signed; equal to tcnn's uint32 modulo
    2**32) and ``frac`` [N, 3] in x's dtype, differentiable w.r.t. x with
    d frac / d x = scale.
    """
    scale = scale.unsqueeze(-1)  # [N, 1] or [1, 1]
    if x.dtype == torch.float64:
        pos = x.detach() * scale.double() + 0.5
    else:
        pos = _fma_half_f32(x.detach(), scale)
    floor = torch.floor(pos)
    frac = pos - floor
    if x.requires_grad:
        xs = x * scale.to(x.dtype)
        frac = frac + (xs - xs.detach())  # value unchanged, gradient = scale
    return floor.long(), frac


def _corner_rows(
    pos_grid: torch.Tensor,
    resolution: torch.Tensor,
    size: torch.Tensor,
    offset: torch.Tensor,
    hashed: torch.Tensor,
    kind: str,
    pow2: bool = False,
) -> torch.Tensor:
    """Flat-table rows of the 8 cell corners at one level, as tcnn's ``grid_index``.

    pos_grid: int64 [N, 3]; resolution, size, offset: int64 [N] or [1];
    hashed: bool [N] or [1]; kind: "dense", "hashed" or "mixed" for this level;
    pow2: every size of this level is a power of two (a hash is then masked, not reduced).
    Returns int64 [N, 8], corner ``c`` with bit ``d`` of ``c`` selecting
    ``pos_grid[:, d] + 1`` on axis ``d``.
    """
    device = pos_grid.device
    primes = torch.tensor(PRIMES, dtype=torch.int64, device=device)  # [3]
    if kind == "hashed":
        mult = primes.expand(resolution.shape[0], 3)
    else:
        dense = torch.stack([torch.ones_like(resolution), resolution, resolution * resolution], 1)
        mult = dense if kind == "dense" else torch.where(hashed[:, None], primes, dense)
    step = torch.arange(2, dtype=torch.int64, device=device)
    terms = (pos_grid.unsqueeze(-1) + step) * mult.unsqueeze(-1)  # [N, 3, 2]: axis d, bit d
    t0 = terms[:, 0, None, None, :]
    t1 = terms[:, 1, None, :, None]
    t2 = terms[:, 2, :, None, None]  # broadcast to [N, 2(z), 2(y), 2(x)]
    size4 = size.view(-1, 1, 1, 1)
    if kind == "hashed" and pow2:
        # Power-of-two sizes divide 2**32: the mask is the modulo of the uint32 hash.
        rows = (t0 ^ t1 ^ t2) & (size4 - 1)
    elif kind == "hashed":
        rows = ((t0 ^ t1 ^ t2) & MASK32) % size4
    elif kind == "dense":
        rows = ((t0 + t1 + t2) & MASK32) % size4
    else:
        index = torch.where(hashed.view(-1, 1, 1, 1), t0 ^ t1 ^ t2, t0 + t1 + t2)
        rows = (index & MASK32) % size4
    return (rows + offset.view(-1, 1, 1, 1)).reshape(-1, 8)


def _corner_weights(frac: torch.Tensor) -> torch.Tensor:
    """N-linear weights of the 8 corners, multiplied in axis order 0, 1, 2 as tcnn.

    frac: [N, 3]. Returns [N, 8] in the corner order of :func:`_corner_rows`.
    """
    w = torch.stack([1 - frac, frac], dim=-1)  # [N, 3, 2]
    w01 = w[:, 0, None, :] * w[:, 1, :, None]  # [N, 2(y), 2(x)]
    return (w01.unsqueeze(1) * w[:, 2, :, None, None]).reshape(-1, 8)


class _CornerGather(torch.autograd.Function):
    """``out[:, l * F:(l + 1) * F] = sum_c weights[l, :, c] * table[rows[l, :, c]]``, level by level.

    table: [R, F]; rows: int64 [L, N, 8]; weights: [L, N, 8]. Returns [N, L * F]
    in the table's dtype. One gradient buffer for the whole table (plain
    autograd would zero-fill a table-sized tensor per level); the weights'
    gradient re-gathers the corner features, so nothing [N, 8, F] is kept.
    """

    @staticmethod
    def forward(ctx, table: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor):
        n_levels, n = rows.shape[:2]
        f = table.shape[1]
        out = torch.empty(n, n_levels, f, dtype=weights.dtype, device=table.device)
        for level in range(n_levels):
            feats = table.index_select(0, rows[level].view(-1)).view(n, 8, f)  # [N, 8, F]
            out[:, level] = torch.bmm(weights[level].unsqueeze(1), feats.to(weights.dtype))[:, 0]
        ctx.save_for_backward(table, rows, weights)
        return out.view(n, n_levels * f).to(table.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        table, rows, weights = ctx.saved_tensors
        n_levels, n = rows.shape[:2]
        f = table.shape[1]
        grad = grad_out.reshape(n, n_levels, f).to(weights.dtype)  # [N, L, F]
        grad_table = grad_weights = None
        if ctx.needs_input_grad[0]:
            grad_table = torch.zeros(table.shape, dtype=weights.dtype, device=table.device)
            for level in range(n_levels):
                contrib = weights[level].unsqueeze(-1) * grad[:, level].unsqueeze(1)  # [N, 8, F]
                grad_table.index_add_(0, rows[level].view(-1), contrib.view(n * 8, f))
            grad_table = grad_table.to(table.dtype)
        if ctx.needs_input_grad[2]:
            grad_weights = torch.empty_like(weights)
            for level in range(n_levels):
                feats = table.index_select(0, rows[level].view(-1)).view(n, 8, f)
                grad_weights[level] = torch.bmm(
                    feats.to(weights.dtype), grad[:, level].unsqueeze(-1)
                )[..., 0]
        return grad_table, None, grad_weights


def _check_inputs(
    x: torch.Tensor, table: torch.Tensor, expert_id: torch.Tensor | None, levels: LevelTable
) -> None:
    if x.dim() != 2 or x.shape[1] != 3:
        raise ValueError(f"hash_encode: x has shape {tuple(x.shape)}, expected [N, 3]")
    if not x.is_floating_point():
        raise ValueError(f"hash_encode: x has dtype {x.dtype}, expected a float dtype")
    expected = (levels.n_rows, levels.n_features)
    if tuple(table.shape) != expected:
        raise ValueError(f"hash_encode: table has shape {tuple(table.shape)}, expected {expected}")
    if expert_id is not None and (
        expert_id.shape != (x.shape[0],) or expert_id.dtype != torch.int64
    ):
        raise ValueError(
            f"hash_encode: expert_id has shape {tuple(expert_id.shape)} and dtype "
            f"{expert_id.dtype}, expected int64 [{x.shape[0]}]"
        )


def hash_encode_reference(
    x: torch.Tensor, table: torch.Tensor, expert_id: torch.Tensor | None, levels: LevelTable
) -> torch.Tensor:
    """Encode points with tcnn's multiresolution hash encoding, each with its own expert.

    Args:
        x: float [N, 3], positions in the unit cube of the grid's frame.
        table: [R, F] feature table (``params.view(R, F)``), R = ``levels.n_rows``.
        expert_id: int64 [N] expert of each point, or None for expert 0.
        levels: geometry of the E x L levels, on x's device.

    Returns:
        [N, L * F] in the table's dtype, level-major (``out[:, l * F + f]``).
        Differentiable w.r.t. ``table`` and ``x``.

    Per level it equals ``sum_c w_c(x) * table[row_c(x)]`` over the 8 cell corners.
    Backward is first order only (no double backward).
    """
    _check_inputs(x, table, expert_id, levels)
    n = x.shape[0]
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    acc_dtype = torch.promote_types(table.dtype, x.dtype)

    def per_point(t: torch.Tensor) -> torch.Tensor:  # [E, L] -> [N, L] or [1, L]
        return t[:1] if expert_id is None else t[expert_id]

    scale = per_point(levels.scale)
    resolution = per_point(levels.resolution).long()
    size = per_point(levels.size).long()
    offset = per_point(levels.offset)
    hashed = per_point(levels.hashed)

    rows = torch.empty(levels.n_levels, n, 8, dtype=torch.int64, device=x.device)
    weights = []
    for level in range(levels.n_levels):
        pos_grid, frac = _positions(x, scale[:, level])
        rows[level] = _corner_rows(
            pos_grid,
            resolution[:, level],
            size[:, level],
            offset[:, level],
            hashed[:, level],
            levels.level_kinds[level],
            levels.pow2_sizes[level],
        )  # [N, 8]
        weights.append(_corner_weights(frac).to(acc_dtype))  # [N, 8]
    return _CornerGather.apply(table, rows, torch.stack(weights))
