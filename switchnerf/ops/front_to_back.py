"""The bookkeeping op of the front-to-back rounds (``switchnerf.render.front_to_back``): which
packed samples a round evaluates, which of them are visible, and which rays stay open; the
native CPU op, its pure-torch twin, and the choice.

State (:class:`RoundState`): the A rays still open, each with its ray id, the packed index
``pos`` of its next sample, the ``end`` of its samples, and ``tau``, its float64 optical
depth so far. A round takes ``take_a = min(end_a - pos_a, k)`` samples of every open ray
(:func:`round_take`: ``idx = cat([pos_a, pos_a + take_a))``), and after their densities
are known (:func:`round_update`), with ``depth = sigma * dt[idx]`` (float32)::

    inclusive   = float64 cumsum of depth over the round;  exclusive = inclusive - depth
    base_a      = exclusive[first_a]          (first_a: ray a's offset in the round)
    tau_before  = (tau_a + exclusive) - base_a
    visible     = float32(exp(-tau_before)) >= eps  and  1 - exp(-depth) >= alpha_thre
    tau_a'      = (tau_a + inclusive[first_a + take_a - 1]) - base_a
    open_a      = pos_a + take_a < end_a  and  tau_a' <= -log(eps)   (eps > 0)

The native op does the same operations in the same order (one sequential float64 sum over
the round, as torch's CPU cumsum); the two agree bit for bit except where an ``exp`` of
libm and of torch differ in the last bit across a float32 rounding boundary.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from switchnerf.ops import load_native, native_available

__all__ = ["RoundState", "packed_points", "packed_points_torch", "round_start", "round_take",
           "round_take_torch", "round_update", "round_update_torch"]


class RoundState(NamedTuple):
    """The open rays: ray, pos, end int64 [A]; tau float64 [A] (see the module docstring)."""

    ray: Tensor
    pos: Tensor
    end: Tensor
    tau: Tensor


def round_start(starts: Tensor, counts: Tensor) -> RoundState:
    """The state before the first round: every ray with samples open, at optical depth 0.

    starts, counts: int64 [N], each ray's packed chunk (``packed_info``).
    """
    ray = torch.nonzero(counts > 0).squeeze(1)
    pos = starts.index_select(0, ray)
    end = pos + counts.index_select(0, ray)
    return RoundState(ray, pos, end, torch.zeros(ray.shape[0], dtype=torch.float64,
                                                 device=starts.device))


def _use_native(state: RoundState) -> bool:
    return state.pos.device.type == "cpu" and native_available()


def round_take_torch(state: RoundState, k: int) -> Tensor:
    """The packed indices int64 [m] a round evaluates (twin of the native op)."""
    take = (state.end - state.pos).clamp(max=k)  # [A] >= 1
    first = take.cumsum(0) - take
    total = int(take.sum())
    owner = torch.repeat_interleave(torch.arange(take.shape[0], device=take.device), take,
                                    output_size=total)  # [m] position in the state
    within = torch.arange(total, device=take.device) - first.index_select(0, owner)
    return state.pos.index_select(0, owner) + within


def round_update_torch(state: RoundState, idx: Tensor, sigma: Tensor, dt: Tensor, k: int, *,
                       alpha_thre: float, early_stop_eps: float) -> tuple[Tensor, RoundState]:
    """Visibility of a round's samples and the rays left open (twin of the native op).

    Args:
        state: the open rays before the round; idx: int64 [m], ``round_take(state, k)``.
        sigma: float32 [m] density of those samples; dt: float32 [M] of all packed samples.

    Returns:
        vis int64 [K] (ascending positions in the round of the visible samples) and the
        state of the rays left open.
    """
    take = (state.end - state.pos).clamp(max=k)
    first = take.cumsum(0) - take
    owner = torch.repeat_interleave(torch.arange(take.shape[0], device=take.device), take,
                                    output_size=idx.shape[0])
    depth32 = sigma * dt.index_select(0, idx)  # [m] optical depth of each sample
    depth = depth32.to(torch.float64)
    inclusive = depth.cumsum(0)
    exclusive = inclusive - depth
    run_base = exclusive.index_select(0, first)  # [A]
    tau_before = state.tau.index_select(0, owner) + exclusive - run_base.index_select(0, owner)
    visible = torch.exp(-tau_before).to(torch.float32) >= early_stop_eps
    if alpha_thre > 0:
        visible &= 1.0 - torch.exp(-depth32) >= alpha_thre
    vis = visible.nonzero().squeeze(1)
    tau = state.tau + inclusive.index_select(0, first + take - 1) - run_base
    pos = state.pos + take
    open_ = pos < state.end
    if early_stop_eps > 0:
        open_ &= tau <= -math.log(early_stop_eps)
    keep = open_.nonzero().squeeze(1)
    return vis, RoundState(state.ray.index_select(0, keep), pos.index_select(0, keep),
                           state.end.index_select(0, keep), tau.index_select(0, keep))


def round_take(state: RoundState, k: int) -> Tensor:
    """:func:`round_take_torch` by the native op on CPU tensors when it is built."""
    if _use_native(state):
        return load_native().front_to_back_take(state.pos, state.end, int(k))
    return round_take_torch(state, k)


def round_update(state: RoundState, idx: Tensor, sigma: Tensor, dt: Tensor, k: int, *,
                 alpha_thre: float, early_stop_eps: float) -> tuple[Tensor, RoundState]:
    """:func:`round_update_torch` by the native op on CPU tensors when it is built."""
    if _use_native(state):
        vis, *rest = load_native().front_to_back_update(
            sigma.contiguous(), dt.contiguous(), idx.contiguous(), *state, int(k),
            float(alpha_thre), float(early_stop_eps))
        return vis, RoundState(*rest)
    return round_update_torch(state, idx, sigma, dt, k, alpha_thre=alpha_thre,
                              early_stop_eps=early_stop_eps)


def packed_points_torch(origins: Tensor, dirs: Tensor, ray_indices: Tensor, t_starts: Tensor,
                        t_ends: Tensor, idx: Tensor) -> Tensor:
    """The points [m, 3] of packed samples ``idx``: ``origins[r] + t_mid * dirs[r]`` with
    ``r = ray_indices[idx]`` and ``t_mid = 0.5 * (t_starts + t_ends)[idx]`` (twin of the
    native op; origins, dirs float32 [N, 3], ray_indices int64 [M], t_* float32 [M])."""
    r = ray_indices.index_select(0, idx)
    mids = 0.5 * (t_starts.index_select(0, idx) + t_ends.index_select(0, idx))
    return origins.index_select(0, r) + mids[:, None] * dirs.index_select(0, r)


def packed_points(origins: Tensor, dirs: Tensor, ray_indices: Tensor, t_starts: Tensor,
                  t_ends: Tensor, idx: Tensor) -> Tensor:
    """:func:`packed_points_torch` in one native pass on CPU tensors when it is built (the
    twin where origins or dirs need a gradient: the native pass gives none)."""
    if (origins.device.type == "cpu" and origins.dtype == torch.float32
            and dirs.dtype == torch.float32 and not origins.requires_grad
            and not dirs.requires_grad and native_available()):
        return load_native().packed_points(origins.contiguous(), dirs.contiguous(),
                                           ray_indices.contiguous(), t_starts.contiguous(),
                                           t_ends.contiguous(), idx.contiguous())
    return packed_points_torch(origins, dirs, ray_indices, t_starts, t_ends, idx)
