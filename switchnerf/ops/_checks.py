"""Argument checks shared by the native-op wrappers: one clear ValueError at the boundary."""

from __future__ import annotations

import torch
from torch import Tensor


def cpu_only(name: str, *tensors: Tensor) -> None:
    """Raise unless every tensor is on the CPU (the CPU-only native ops)."""
    for t in tensors:
        if t.device.type != "cpu":
            raise ValueError(
                f"{name}: the native op runs on CPU tensors, got a tensor on {t.device} "
                "(on CUDA use nerfacc or the torch twin)"
            )


def float32_contiguous(name: str, arg: str, t: Tensor) -> Tensor:
    """``t`` made contiguous; raises unless it is float32."""
    if t.dtype != torch.float32:
        raise ValueError(f"{name}: {arg} has dtype {t.dtype}, expected torch.float32")
    return t.contiguous()
