"""Inference-time evaluation of packed samples front to back, each ray stopping once opaque.

The two-pass scheme of training (a density pass over every marched sample to find the
visible ones, then the full field on those) evaluates the geometry of the visible samples
twice and of the samples behind the first opaque surface once for nothing. Without
gradients neither is needed: this module evaluates every ray's samples in rounds of a few
samples, in t order, keeps the per-sample outputs of the visible ones, and stops a ray as
soon as its transmittance drops below ``early_stop_eps`` (as instant-NGP's compacted
marching does).

The kept set is the set :func:`switchnerf.render.sampler.prune_invisible` keeps:
``(T >= early_stop_eps) & (alpha >= alpha_thre)`` with ``T`` the transmittance before the
sample and ``alpha = 1 - exp(-sigma dt)``. Samples never evaluated all lie behind a point
where ``T < early_stop_eps``, so they would have been dropped too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from switchnerf.ops.front_to_back import round_start, round_take, round_update
from switchnerf.render.composite import packed_info

__all__ = ["ROUND_SIZES", "RenderCancelled", "evaluate_front_to_back"]

#: Samples per ray taken in each round; the last size repeats. Small first rounds keep the
#: overshoot behind opaque surfaces small; growing ones bound the rounds of long rays.
ROUND_SIZES = (8, 4, 4, 8, 16, 32, 64)

SampleFn = Callable[[Tensor], tuple[Tensor, dict[str, Tensor]]]
FinishFn = Callable[[Tensor, Tensor, dict[str, Tensor]], dict[str, Tensor]]


class RenderCancelled(Exception):
    """Raised between rounds when the caller's ``should_stop`` said so (a stale view)."""


def evaluate_front_to_back(fn: SampleFn, t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor,
                           n_rays: int, *, alpha_thre: float, early_stop_eps: float,
                           round_sizes: Sequence[int] = ROUND_SIZES,
                           should_stop: Callable[[], bool] | None = None,
                           finish: FinishFn | None = None,
                           chunks: tuple[Tensor, Tensor] | None = None
                           ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Evaluate ``fn`` on the visible packed samples, front to back, without gradients.

    Args:
        fn: ``idx [m] int64 -> (sigma [m], extras)``: density per world unit of the packed
            samples ``idx`` and any per-sample tensors ``extras[name]`` ([m, ...]) to keep.
        t_starts, t_ends: float32 [M], world units; ray_indices: int64 [M], sorted, with the
            samples of each ray in increasing t.
        n_rays: N.
        alpha_thre: drop samples with ``1 - exp(-sigma dt) < alpha_thre``.
        early_stop_eps: drop samples (and stop the ray) where the transmittance before the
            sample is ``< early_stop_eps``; 0 evaluates every sample.
        round_sizes: samples per ray per round; the last repeats.
        should_stop: polled before every round; ``True`` raises :class:`RenderCancelled`.
        finish: ``(idx_vis [k], vis [k], extras) -> kept`` called in every round with the
            packed indices of its visible samples, their positions ``vis`` in the round
            and the round's extras (all its samples): it returns what to keep of the
            visible samples ([k, ...] each) instead of the extras (the renderer computes
            the colour there, reading the geometry features of the visible rows in place,
            so that only rgb [k, 3] is carried and reordered). Without it the extras'
            visible rows are kept.
        chunks: ``packed_info(ray_indices, n_rays)`` when the caller has it (the march's
            ``chunk_starts, chunk_counts``); else computed here.

    Returns:
        keep int64 [K] (ascending indices of the visible samples), sigma [K] and
        ``extras`` (or ``finish``'s outputs) restricted to them ([K, ...]), in the packed
        order.
    """
    if any(k < 1 for k in round_sizes) or not round_sizes:
        raise ValueError(f"round_sizes must be positive, got {tuple(round_sizes)}")
    device = t_starts.device
    starts, counts = packed_info(ray_indices, n_rays) if chunks is None else chunks
    dt = t_ends - t_starts  # [M] float32, as render_weights computes it
    state = round_start(starts, counts)
    keep_parts: list[Tensor] = []
    sigma_parts: list[Tensor] = []
    extra_parts: dict[str, list[Tensor]] = {}
    rounds = 0
    with torch.no_grad():
        while state.ray.numel():
            if should_stop is not None and should_stop():
                raise RenderCancelled
            k = round_sizes[min(rounds, len(round_sizes) - 1)]
            rounds += 1
            idx = round_take(state, k)  # [m] packed sample indices
            sigma, extras = fn(idx)
            sigma = sigma.reshape(-1).to(torch.float32)
            vis, state = round_update(state, idx, sigma, dt, k, alpha_thre=alpha_thre,
                                      early_stop_eps=early_stop_eps)
            idx_vis = idx.index_select(0, vis)
            keep_parts.append(idx_vis)
            sigma_parts.append(sigma.index_select(0, vis))
            if finish is not None:
                kept = finish(idx_vis, vis, extras)
            else:
                kept = {name: value.index_select(0, vis) for name, value in extras.items()}
            for name, value in kept.items():
                extra_parts.setdefault(name, []).append(value)
    if not keep_parts:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, torch.zeros(0, device=device), {}
    keep = torch.cat(keep_parts)
    order = torch.argsort(keep)
    extras_out = {name: torch.cat(parts).index_select(0, order)
                  for name, parts in extra_parts.items()}
    return keep.index_select(0, order), torch.cat(sigma_parts).index_select(0, order), extras_out
