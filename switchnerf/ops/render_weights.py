"""The volume-rendering-weights op (nerfacc's ``render_weight_from_density``) and the packed
layout helpers it rests on: the native CPU op, its pure-torch twin, and the choice.

Packed layout: M samples of N rays in one flat array; ``ray_indices`` int64 [M] is sorted,
the samples of a ray are contiguous and ordered by t. For one ray with
``dt_i = t_end_i - t_start_i``::

    alpha_i = 1 - exp(-sigma_i * dt_i)
    T_i     = exp(-sum_{j < i} sigma_j * dt_j)      (exclusive, per ray)
    w_i     = T_i * alpha_i

The per-ray exclusive sum is a float64 global cumsum minus its value at the ray's first
sample, so a long packed array does not lose float32 precision in later rays.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from switchnerf.ops import load_native
from switchnerf.ops._checks import cpu_only, float32_contiguous
from switchnerf.ops.counts import counts_per_id

__all__ = [
    "exclusive_sum_per_ray",
    "fused_render_weights",
    "packed_info",
    "render_weights",
    "render_weights_torch",
]


def packed_info(ray_indices: Tensor, n_rays: int) -> tuple[Tensor, Tensor]:
    """Start and count of each ray's chunk in a sorted packed array.

    Args:
        ray_indices: int64 [M], sorted.
        n_rays: N.

    Returns:
        chunk_starts, chunk_counts: int64 [N]. Equals nerfacc's ``pack_info(ray_indices,
        n_rays).unbind(-1)``, i.e. ``counts = torch.bincount(ray_indices, minlength=N)``,
        ``starts = counts.cumsum(0) - counts``.

    >>> packed_info(torch.tensor([0, 0, 2, 2, 2]), 4)
    (tensor([0, 2, 2, 5]), tensor([2, 0, 3, 0]))
    """
    counts = counts_per_id(ray_indices, n_rays)  # [N]
    starts = counts.cumsum(0) - counts  # [N]
    return starts, counts


def exclusive_sum_per_ray(values: Tensor, ray_indices: Tensor, n_rays: int) -> Tensor:
    """Exclusive prefix sum of ``values`` within each ray's contiguous chunk.

    Args:
        values: float [M] (any float dtype; accumulated in float64).
        ray_indices: int64 [M], sorted.
        n_rays: N.

    Returns:
        float64 [M]: ``out[i] = sum(values[j] for j < i if ray_indices[j] == ray_indices[i])``.
        Differentiable w.r.t. ``values``. Equals nerfacc's ``exclusive_sum(values,
        indices=ray_indices)`` (which is float32) up to its rounding.

    >>> exclusive_sum_per_ray(torch.tensor([1., 2., 3., 4.]), torch.tensor([0, 0, 1, 1]), 2)
    tensor([0., 1., 0., 3.], dtype=torch.float64)
    """
    if values.numel() == 0:
        return values.new_zeros(0, dtype=torch.float64)
    v64 = values.to(torch.float64)
    excl = torch.cumsum(v64, 0) - v64  # [M] global exclusive sum
    starts, _ = packed_info(ray_indices, n_rays)
    first = starts[ray_indices]  # [M] position of each sample's ray's first sample
    return excl - excl[first]


def render_weights(t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, ray_indices: Tensor,
                   n_rays: int) -> tuple[Tensor, Tensor, Tensor]:
    """Volume-rendering weights of packed samples.

    Args:
        t_starts, t_ends: float32 [M], world units.
        sigmas: float32 [M], density per world unit.
        ray_indices: int64 [M], sorted, samples of a ray contiguous and ordered by t.
        n_rays: N.

    Returns:
        weights, transmittance, alphas: float32 [M], differentiable w.r.t. ``sigmas``.
        Equal to ``nerfacc.render_weight_from_density(t_starts, t_ends, sigmas,
        ray_indices=ray_indices, n_rays=n_rays)``, i.e. per ray
        ``tau = sigmas * (t_ends - t_starts)``, ``alphas = 1 - exp(-tau)``,
        ``transmittance = exp(-(cumsum(tau) - tau))``, ``weights = transmittance * alphas``.

    >>> sig = torch.log(torch.tensor([2.0, 2.0]))  # alpha = 0.5 per unit interval
    >>> w, T, a = render_weights(torch.tensor([0., 1.]), torch.tensor([1., 2.]), sig,
    ...                          torch.tensor([0, 0]), 1)
    >>> w, T
    (tensor([0.5000, 0.2500]), tensor([1.0000, 0.5000]))
    """
    if not sigmas.is_cuda and sigmas.dtype == torch.float32:
        from switchnerf.ops import native_available

        if native_available():
            return fused_render_weights(t_starts, t_ends, sigmas, ray_indices, n_rays)
    return render_weights_torch(t_starts, t_ends, sigmas, ray_indices, n_rays)


def render_weights_torch(t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, ray_indices: Tensor,
                         n_rays: int) -> tuple[Tensor, Tensor, Tensor]:
    """The pure-torch :func:`render_weights` (the oracle of the native op; any device)."""
    tau = sigmas * (t_ends - t_starts)  # [M]
    alphas = 1.0 - torch.exp(-tau)  # [M]
    excl = exclusive_sum_per_ray(tau, ray_indices, n_rays)  # [M] float64
    transmittance = torch.exp(-excl).to(sigmas.dtype)  # [M]
    return transmittance * alphas, transmittance, alphas


class _RenderWeights(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t_starts, t_ends, sigmas, ray_indices, n_rays):
        ops = load_native()
        weights, trans, alphas = ops.render_weights_forward(t_starts, t_ends, sigmas,
                                                            ray_indices, n_rays)
        ctx.save_for_backward(t_starts, t_ends, sigmas, ray_indices, trans)
        ctx.n_rays = n_rays
        return weights, trans, alphas

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_w, grad_t, grad_a):
        t_starts, t_ends, sigmas, ray_indices, trans = ctx.saved_tensors

        def grad_or_zeros(g):
            return torch.zeros_like(sigmas) if g is None else g.float().contiguous()

        g_sigmas, g_starts, g_ends = load_native().render_weights_backward(
            grad_or_zeros(grad_w), grad_or_zeros(grad_t), grad_or_zeros(grad_a),
            t_starts, t_ends, sigmas, ray_indices, trans, ctx.n_rays)
        need = ctx.needs_input_grad
        return (g_starts if need[0] else None, g_ends if need[1] else None,
                g_sigmas if need[2] else None, None, None)


def fused_render_weights(t_starts: Tensor, t_ends: Tensor, sigmas: Tensor,
                         ray_indices: Tensor, n_rays: int) -> tuple[Tensor, Tensor, Tensor]:
    """Volume-rendering weights of packed samples, native CPU op.

    Same arguments and results as :func:`render_weights`
    (nerfacc's ``render_weight_from_density``): per ray, ``tau = sigmas * (t_ends - t_starts)``,
    ``alphas = 1 - exp(-tau)``, ``transmittance = exp(-(cumsum(tau) - tau))`` (accumulated in
    float64), ``weights = transmittance * alphas``.

    Args:
        t_starts, t_ends, sigmas: float32 [M] CPU tensors.
        ray_indices: int64 [M], sorted (a ray's samples contiguous).
        n_rays: N.

    Returns:
        weights, transmittance, alphas: float32 [M], differentiable w.r.t. ``sigmas``,
        ``t_starts`` and ``t_ends`` (first order).

    >>> import torch
    >>> sig = torch.log(torch.tensor([2.0, 2.0]))
    >>> w, T, a = fused_render_weights(torch.tensor([0., 1.]), torch.tensor([1., 2.]), sig,
    ...                                torch.tensor([0, 0]), 1)  # doctest: +SKIP
    >>> w  # doctest: +SKIP
    tensor([0.5000, 0.2500])
    """
    name = "fused_render_weights"
    cpu_only(name, t_starts, t_ends, sigmas, ray_indices)
    if ray_indices.dtype != torch.int64:
        raise ValueError(f"{name}: ray_indices has dtype {ray_indices.dtype}, expected int64")
    return _RenderWeights.apply(float32_contiguous(name, "t_starts", t_starts), float32_contiguous(name, "t_ends", t_ends),
                                float32_contiguous(name, "sigmas", sigmas), ray_indices.contiguous(),
                                int(n_rays))
