"""A dense Adam step that zeroes the gradient as it reads it: the native CPU op and its
pure-torch twin.

torch's fused CPU Adam without weight decay, amsgrad or maximize, operation for operation
in float32 (the native op equals ``torch.optim.Adam(..., fused=True)`` bit for bit)::

    m <- m.lerp(g, 1 - b1) = fma(1 - b1, g - m, m)      (b1 in (0.5, 1))
    v <- v.mul(b2).addcmul(g, g, value=1 - b2) = fma((1 - b2) * g, g, v * b2)
    p <- p + (-step_size * m) / (sqrt(v) / bc2_sqrt + eps)
    step_size = lr / (1 - b1^t),   bc2_sqrt = sqrt(1 - b2^t)   (float64, then float32)

with ``zero_grad`` the gradient is zeroed in the same pass (one pass over memory instead of
the step plus a memset of a fresh gradient at the next step).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from switchnerf.ops import load_native

__all__ = ["adam_dense_step", "adam_dense_step_torch"]


def adam_dense_step(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, *,
                    step: int, lr: float, beta1: float, beta2: float, eps: float,
                    zero_grad: bool) -> None:
    """The native step, in place on param, exp_avg, exp_avg_sq (and grad with zero_grad).

    All four: contiguous float32 CPU tensors of the same numel (any shape); ``step``: the
    step being taken, 1 for the first.
    """
    load_native().adam_dense_step(param, grad, exp_avg, exp_avg_sq, int(step), float(lr),
                                  float(beta1), float(beta2), float(eps), bool(zero_grad))


@torch.no_grad()
def adam_dense_step_torch(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, *,
                          step: int, lr: float, beta1: float, beta2: float, eps: float,
                          zero_grad: bool) -> None:
    """The pure-torch twin of :func:`adam_dense_step` (same arguments, same float32 order)."""
    def f32(value: float) -> Tensor:
        return torch.tensor(value, dtype=torch.float32)

    g = grad.reshape(param.shape)
    m = exp_avg.view(param.shape).lerp_(g, f32(1.0 - beta1))
    v = exp_avg_sq.view(param.shape)
    v.mul_(f32(beta2)).addcmul_(g, g, value=1.0 - beta2)
    # a tensor divisor: torch divides by a scalar as a product with its reciprocal
    denom = v.sqrt() / torch.full_like(v, math.sqrt(1.0 - beta2 ** step)) + f32(eps)
    param.add_(f32(-(lr / (1.0 - beta1 ** step))) * m / denom)
    if zero_grad:
        grad.zero_()
