"""Density activations."""

from __future__ import annotations

import torch


class _TruncExp(torch.autograd.Function):
    """exp(x) whose backward clamps x at 15 (instant-NGP's truncated exponential)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """Forward equals ``torch.exp(x)``; gradient equals ``exp(min(x, 15))``."""
    return _TruncExp.apply(x)


def density_activation(name: str, raw: torch.Tensor) -> torch.Tensor:
    """Map the head's raw density output to sigma >= 0 (per world unit)."""
    if name == "trunc_exp":
        return trunc_exp(raw - 1.0)
    return torch.nn.functional.softplus(raw - 1.0)
