"""Packed volume rendering with nerfacc 0.5's semantics: per-ray colour, depth, opacity and
expert map from per-sample values (the weights come from :mod:`switchnerf.ops.render_weights`).

Packed layout: M samples of N rays in one flat array; ``ray_indices`` int64 [M] is sorted,
the samples of a ray are contiguous and ordered by t. ``t_starts``/``t_ends`` float32 [M]
are ray parameters in world units (``dirs_unit = d / (hi - lo)`` keeps t in world units),
``sigmas`` float32 [M] is density per world unit.

For one ray with intervals dt_i = t_end_i - t_start_i:

    alpha_i = 1 - exp(-sigma_i * dt_i)
    T_i     = exp(-sum_{j < i} sigma_j * dt_j)      (exclusive, per ray)
    w_i     = T_i * alpha_i

"""

from __future__ import annotations

import torch
from torch import Tensor

from switchnerf.ops.render_weights import (
    exclusive_sum_per_ray,
    packed_info,
    render_weights,
    render_weights_torch,
)

__all__ = [
    "composite",
    "composite_rays",
    "exclusive_sum_per_ray",
    "packed_info",
    "render_packed",
    "render_weights",
    "render_weights_torch",
]


def composite(weights: Tensor, values: Tensor, ray_indices: Tensor, n_rays: int) -> Tensor:
    """Weighted sum of per-sample values along each ray.

    Args:
        weights: float [M].
        values: float [M, C] (or [M], treated as C = 1 and returned as [N]).
        ray_indices: int64 [M] (need not be sorted).
        n_rays: N.

    Returns:
        float [N, C] (or [N]): ``zeros(N, C).index_add_(0, ray_indices, weights[:, None] *
        values)``; equals nerfacc's ``accumulate_along_rays(weights, values, ray_indices,
        n_rays)``. Rays without samples get 0.

    >>> composite(torch.tensor([0.5, 0.25, 1.0]), torch.ones(3, 1), torch.tensor([0, 0, 2]), 3)
    tensor([[0.7500],
            [0.0000],
            [1.0000]])
    """
    squeeze = values.dim() == 1
    v = values[:, None] if squeeze else values  # [M, C]
    out = v.new_zeros(n_rays, v.shape[1]).index_add(0, ray_indices, weights[:, None] * v)
    return out[:, 0] if squeeze else out


def _argmax_per_ray(weights: Tensor, ray_indices: Tensor, n_rays: int) -> Tensor:
    """Index into [M] of each ray's highest-weight sample (first on ties); -1 when the ray
    has no sample of positive weight. int64 [N]."""
    m = weights.shape[0]
    w = weights.detach()
    wmax = w.new_zeros(n_rays).scatter_reduce(0, ray_indices, w, "amax", include_self=True)
    is_max = (w == wmax[ray_indices]) & (w > 0)  # [M]
    pos = torch.arange(m, device=w.device)
    cand = torch.where(is_max, pos, torch.full_like(pos, m))
    best = torch.full((n_rays,), m, dtype=torch.int64, device=w.device)
    best = best.scatter_reduce(0, ray_indices, cand, "amin", include_self=True)
    return torch.where(best < m, best, torch.full_like(best, -1))


def render_packed(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor, n_rays: int,
                  rgb: Tensor, sigmas: Tensor, *, expert_ids: Tensor | None = None,
                  background_rgb: Tensor | None = None) -> dict[str, Tensor]:
    """Render packed samples into per-ray colour, depth, opacity and expert map.

    Args:
        t_starts, t_ends: float32 [M], world units; ray_indices: int64 [M], sorted.
        n_rays: N.
        rgb: float32 [M, 3]; sigmas: float32 [M], density per world unit.
        expert_ids: optional int64 [M], the expert that produced each sample.
        background_rgb: optional float32 [N, 3] or [3], composited behind the samples.

    Returns:
        dict with (``w, T, a = render_weights(...)``, ``t_mid = (t_starts + t_ends) / 2``,
        ``sum_r`` the per-ray sum of :func:`composite`):

        - ``rgb`` [N, 3]: ``sum_r(w * rgb) + (1 - opacity) * background_rgb``;
        - ``opacity`` [N]: ``sum_r(w)``;
        - ``depth`` [N]: ``sum_r(w * t_mid)``, *not* normalised (world units of t; it tends
          to 0 where the ray is transparent, as nerfacc's ``rendering`` returns it;
          :func:`switchnerf.render.outputs.weighted_mean` normalises it);
        - ``weights`` [M], ``transmittance`` [M], ``alphas`` [M];
        - ``n_samples`` int64 [N]: samples per ray;
        - ``expert_map`` int64 [N] (only when ``expert_ids`` is given): the expert of each
          ray's highest-weight sample (first on ties), -1 for rays with no sample of
          positive weight (in particular rays with no samples).

        All float outputs are differentiable w.r.t. ``rgb`` and ``sigmas``.

    >>> out = render_packed(torch.tensor([0.]), torch.tensor([1.]), torch.tensor([0]), 2,
    ...                     torch.ones(1, 3), torch.tensor([1e3]))
    >>> out["opacity"], out["n_samples"]
    (tensor([1., 0.]), tensor([1, 0]))
    """
    weights, transmittance, alphas = render_weights(t_starts, t_ends, sigmas, ray_indices,
                                                    n_rays)
    t_mid = 0.5 * (t_starts + t_ends)  # [M]
    colour = composite(weights, rgb, ray_indices, n_rays)  # [N, 3]
    opacity = composite(weights, weights.new_ones(weights.shape), ray_indices, n_rays)  # [N]
    depth = composite(weights, t_mid, ray_indices, n_rays)  # [N]
    if background_rgb is not None:
        colour = colour + (1.0 - opacity)[:, None] * background_rgb.expand(n_rays, 3)
    out = {
        "rgb": colour,
        "opacity": opacity,
        "depth": depth,
        "weights": weights,
        "transmittance": transmittance,
        "alphas": alphas,
        "n_samples": packed_info(ray_indices, n_rays)[1],
    }
    if expert_ids is not None:
        best = _argmax_per_ray(weights, ray_indices, n_rays)  # [N]
        ids = torch.cat([expert_ids.to(torch.int64), best.new_full((1,), -1)])  # [M + 1]
        out["expert_map"] = ids[torch.where(best >= 0, best, best.new_full((), ids.numel() - 1))]
    return out


def composite_rays(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor, n_rays: int,
                   rgb: Tensor, sigmas: Tensor, *, expert_ids: Tensor, values: Tensor,
                   background_rgb: Tensor | None = None) -> dict[str, Tensor]:
    """:func:`render_packed` for rendering without gradients, plus the per-ray composite of
    more per-sample values; one native pass per ray on the CPU.

    Args: as :func:`render_packed` (``expert_ids`` required), and values float32 [M, V].

    Returns:
        ``rgb``, ``opacity``, ``depth``, ``weights``, ``n_samples`` and ``expert_map`` as
        :func:`render_packed` (no ``transmittance`` / ``alphas``), and ``values`` [N, V]:
        ``composite(weights, values, ray_indices, n_rays)``. With the native op the sums
        run in sample order in float32 (as ``index_add``), so they equal
        :func:`render_packed`'s to float32 rounding.
    """
    if (torch.is_grad_enabled() or sigmas.is_cuda or sigmas.dtype != torch.float32
            or not _native()):
        out = render_packed(t_starts, t_ends, ray_indices, n_rays, rgb, sigmas,
                            expert_ids=expert_ids, background_rgb=background_rgb)
        out["values"] = composite(out["weights"], values, ray_indices, n_rays)
        for key in ("transmittance", "alphas"):
            del out[key]
        return out
    from switchnerf.ops import load_native

    columns = torch.cat([rgb.to(torch.float32), values.to(torch.float32)], dim=1)  # [M, 3 + V]
    weights, sums, opacity, depth, best, count = load_native().composite_rays_forward(
        t_starts.contiguous(), t_ends.contiguous(), sigmas.contiguous(), ray_indices.contiguous(),
        int(n_rays), columns.contiguous())
    colour = sums[:, :3]
    if background_rgb is not None:
        colour = colour + (1.0 - opacity)[:, None] * background_rgb.expand(n_rays, 3)
    ids = torch.cat([expert_ids.to(torch.int64), best.new_full((1,), -1)])  # [M + 1]
    return {"rgb": colour, "opacity": opacity, "depth": depth, "weights": weights,
            "n_samples": count, "values": sums[:, 3:],
            "expert_map": ids[torch.where(best >= 0, best, best.new_full((), ids.numel() - 1))]}


def _native() -> bool:
    from switchnerf.ops import native_available

    return native_available()
