"""Native (C++/OpenMP, CPU) twins of :func:`switchnerf.render.composite.render_weights`
and :func:`switchnerf.render.sampler.march_rays`: same arguments, same results."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from switchnerf.native import load_native


def _cpu_only(name: str, *tensors: Tensor) -> None:
    for t in tensors:
        if t.device.type != "cpu":
            raise ValueError(
                f"{name}: the native op runs on CPU tensors, got a tensor on {t.device} "
                "(on CUDA use nerfacc or the torch version)"
            )


def _f32(name: str, arg: str, t: Tensor) -> Tensor:
    if t.dtype != torch.float32:
        raise ValueError(f"{name}: {arg} has dtype {t.dtype}, expected torch.float32")
    return t.contiguous()


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

    Same arguments and results as :func:`switchnerf.render.composite.render_weights`
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
    _cpu_only(name, t_starts, t_ends, sigmas, ray_indices)
    if ray_indices.dtype != torch.int64:
        raise ValueError(f"{name}: ray_indices has dtype {ray_indices.dtype}, expected int64")
    return _RenderWeights.apply(_f32(name, "t_starts", t_starts), _f32(name, "t_ends", t_ends),
                                _f32(name, "sigmas", sigmas), ray_indices.contiguous(),
                                int(n_rays))


@torch.no_grad()
def fused_march_rays(origins: Tensor, dirs: Tensor, near: Tensor, far: Tensor, grid, *,
                     step_size: float, stratified: bool = False, sigma_fn=None,
                     alpha_thre: float = 0.0, early_stop_eps: float = 1e-4,
                     max_samples_per_ray: int | None = None,
                     generator: torch.Generator | None = None,
                     chunk_samples: int = 1 << 21):
    """March rays through the occupied cells of ``grid``, native CPU op.

    Same arguments and result as :func:`switchnerf.render.sampler.march_rays` with
    ``backend="torch"`` (``chunk_samples`` is accepted for compatibility and unused: the
    native op needs no chunking). The stratified offsets are drawn with the same
    ``torch.rand`` call, so equal generators give equal samples.

    Args:
        origins, dirs: float32 [N, 3] CPU tensors, unit-cube frame. near, far: float32 [N].
        grid: :class:`switchnerf.render.occupancy.OccupancyGrid` (its ``binary`` is read).

    Returns:
        :class:`switchnerf.render.sampler.PackedSamples`.
    """
    from switchnerf.render.sampler import prune_invisible

    name = "fused_march_rays"
    n = origins.shape[0]
    if dirs.shape != (n, 3) or origins.shape != (n, 3):
        raise ValueError(f"{name}: origins {tuple(origins.shape)} and dirs "
                         f"{tuple(dirs.shape)} must be ({n}, 3)")
    if near.shape != (n,) or far.shape != (n,):
        raise ValueError(f"{name}: near {tuple(near.shape)} and far {tuple(far.shape)} "
                         f"must be ({n},)")
    if step_size <= 0:
        raise ValueError(f"{name}: step_size must be > 0, got {step_size}")
    binary = grid.binary
    _cpu_only(name, origins, dirs, near, far, binary)
    base = near.to(torch.float32)
    if stratified:
        base = base + step_size * torch.rand(n, device=near.device, generator=generator)
    max_samples = -1 if max_samples_per_ray is None else int(max_samples_per_ray)
    ray_indices, t_starts, t_ends = load_native().march_rays_forward(
        _f32(name, "origins", origins), _f32(name, "dirs", dirs), base.contiguous(),
        far.to(torch.float32).contiguous(), binary.contiguous(), float(step_size), max_samples)

    return prune_invisible(ray_indices, t_starts, t_ends, n, sigma_fn=sigma_fn,
                           alpha_thre=alpha_thre, early_stop_eps=early_stop_eps)
