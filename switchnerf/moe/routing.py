"""Top-1 routing math: selection, load-balance loss, capacity, sorting into segments.

All functions are pure torch and differentiable where it makes sense (the balance loss
through the gate probabilities; top-1 gate values through the softmax).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from switchnerf.ops.counts import counts_per_id


def top1(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 expert of each point.

    probs: float32 [M, E] softmax probabilities. Returns expert_id int64 [M] and
    gate_value float32 [M] = probs[m, expert_id[m]] (differentiable w.r.t. probs).

    Equals ``gate_value, expert_id = probs.max(dim=-1)``.
    """
    gate_value, expert_id = probs.max(dim=-1)
    return expert_id, gate_value


GATE_SCALES = ("product", "straight_through")


def gate_scale(gate_value: torch.Tensor, mode: str) -> torch.Tensor:
    """The factor [M] that multiplies each point's expert features.

    ``product``: ``g`` itself (Switch-NeRF++'s ``y = g * E_i(x)``). ``straight_through``:
    ``1 + (g - g.detach())``: exactly 1 in the forward pass, so the experts and the head
    see features at full scale from the first step, while ``d scale / d g = 1`` gives the
    gate the same gradient as the plain product (``sum(upstream * features)`` per point).
    Without gradients it is ``ones_like(g)``.
    """
    if mode == "product":
        return gate_value
    if mode == "straight_through":
        if not (torch.is_grad_enabled() and gate_value.requires_grad):
            return torch.ones_like(gate_value)
        return 1.0 + (gate_value - gate_value.detach())
    raise ValueError(f"gate_scale: mode must be one of {GATE_SCALES}, got {mode!r}")


def balance_loss(probs: torch.Tensor, expert_id: torch.Tensor) -> torch.Tensor:
    """Switch Transformer load-balance loss ``E * sum_e f_e * P_e``.

    probs: [M, E] gate probabilities; expert_id: int64 [M] top-1 choices.
    f_e = fraction of points routed to e (no gradient); P_e = mean probability of e.
    It is 1.0 for perfectly uniform routing and grows to E when everything collapses on
    one expert. Returns a scalar (0 for M = 0).
    """
    m, e = probs.shape
    if m == 0:
        return probs.sum() * 0.0
    f = counts_per_id(expert_id, e).to(probs.dtype) / m
    p = probs.mean(dim=0)
    return e * torch.sum(f * p)


@dataclass
class SegmentLayout:
    """Points sorted by expert: ``perm`` [M] gives the sorted order, expert e's points are
    ``perm[offsets[e]:offsets[e] + counts[e]]``. counts, offsets: int64 [E]."""

    perm: torch.Tensor
    counts: torch.Tensor
    offsets: torch.Tensor


def sort_into_segments(expert_id: torch.Tensor, n_experts: int) -> SegmentLayout:
    """Stable sort of points by expert id into contiguous segments (no per-expert loop).

    >>> lay = sort_into_segments(torch.tensor([2, 0, 2, 1]), 3)
    >>> lay.perm.tolist(), lay.counts.tolist(), lay.offsets.tolist()
    ([1, 3, 0, 2], [1, 1, 2], [0, 1, 2])
    """
    perm = torch.sort(expert_id, stable=True).indices
    counts = counts_per_id(expert_id, n_experts)
    offsets = torch.cumsum(counts, 0) - counts
    return SegmentLayout(perm, counts, offsets)


def capacity_keep_mask(expert_id: torch.Tensor, gate_value: torch.Tensor, n_experts: int,
                       capacity_factor: float) -> torch.Tensor:
    """Batch-prioritised routing: which points get an expert slot.

    Each expert takes at most ``ceil(capacity_factor * M / E)`` points; slots go to the
    points with the highest gate value first (Switch-NeRF's batch-prioritised routing).
    Returns bool [M] (True = kept).
    """
    m = expert_id.shape[0]
    if m == 0:
        return torch.ones(0, dtype=torch.bool, device=expert_id.device)
    capacity = int(-(-capacity_factor * m // n_experts))
    by_priority = torch.argsort(gate_value.detach(), descending=True, stable=True)
    # stable sort of the priority order by expert: within an expert, priority order remains
    lay = sort_into_segments(expert_id[by_priority], n_experts)
    order = by_priority[lay.perm]
    sorted_expert = expert_id[order]
    rank = torch.arange(m, device=expert_id.device) - lay.offsets[sorted_expert]
    keep = torch.empty(m, dtype=torch.bool, device=expert_id.device)
    keep[order] = rank < capacity
    return keep


def expert_load(expert_id: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Fraction of points per expert, float32 [E] (zeros for M = 0)."""
    counts = counts_per_id(expert_id, n_experts).float()
    return counts / counts.sum().clamp_min(1.0)
