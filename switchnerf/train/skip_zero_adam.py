"""Adam whose hash-table groups update only the entries that have a gradient.

A training step touches a small share of a hash table (about 15 % of the rows on the
cpu-demo workload); dense Adam still reads and writes every entry's value and moments, and
moves the untouched ones by their decaying momentum. ``SkipZeroAdam`` steps groups marked
``skip_zero`` by the rule of ``torch.optim.SparseAdam`` and of instant-NGP's optimiser for
hash encodings: where the gradient is zero the entry keeps its value and its moments; the
others take the Adam step with the tensor's step count t (bias corrections 1 - b^t as
torch's Adam; instant-NGP counts steps per entry). One native pass over the gradient
(``switchnerf.ops.adam_sparse.adam_skip_zero_step``) reads the moments and values only
where it is non-zero.

This is a different optimiser, not a faster dense Adam: untouched entries no longer drift.
Its effect on PSNR is measured in bench/RESULTS.md. The state has dense Adam's layout
(``step``, ``exp_avg``, ``exp_avg_sq``), so checkpoints load either way.
"""

from __future__ import annotations

import math

import torch

from switchnerf.ops.adam_sparse import adam_skip_zero_step, adam_skip_zero_step_torch

__all__ = ["SkipZeroAdam"]


class SkipZeroAdam(torch.optim.Adam):
    """``torch.optim.Adam`` whose groups with ``skip_zero=True`` update only the entries
    with a non-zero gradient.

    Args:
        params: parameter groups as for ``torch.optim.Adam``; a ``skip_zero`` group must
            hold contiguous float32 CPU tensors and have ``weight_decay`` 0 (no amsgrad or
            maximize).
        native: use the native op (else its pure-torch twin).
        **kwargs: ``lr``, ``betas``, ``eps``, ``weight_decay``, ``fused``, ``foreach``.
    """

    def __init__(self, params, *, native: bool = True, **kwargs):
        super().__init__(params, **kwargs)
        self._native = native
        for g in self.param_groups:
            g.setdefault("skip_zero", False)
            if not g["skip_zero"]:
                continue
            if g["weight_decay"] != 0 or g["amsgrad"] or g["maximize"]:
                raise ValueError("SkipZeroAdam: a skip_zero group takes no weight decay, "
                                 "amsgrad or maximize")
            for p in g["params"]:
                if p.dtype != torch.float32 or p.device.type != "cpu" or not p.is_contiguous():
                    raise ValueError(f"SkipZeroAdam: a skip_zero parameter must be a contiguous "
                                     f"float32 CPU tensor, got {p.dtype} {tuple(p.shape)} on "
                                     f"{p.device}")

    def _step_skip_zero(self, group: dict, p: torch.Tensor) -> None:
        st = self.state[p]
        if "exp_avg" not in st:
            st["step"] = torch.tensor(0.0)
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        st["step"] += 1
        t = float(st["step"])
        beta1, beta2 = group["betas"]
        fn = adam_skip_zero_step if self._native else adam_skip_zero_step_torch
        fn(p.data, p.grad, st["exp_avg"], st["exp_avg_sq"],
           step_size=group["lr"] / (1.0 - beta1 ** t), bc2_sqrt=math.sqrt(1.0 - beta2 ** t),
           beta1=beta1, beta2=beta2, eps=group["eps"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        hidden = []
        for g in self.param_groups:
            if not g["skip_zero"]:
                continue
            for p in g["params"]:
                if p.grad is None:
                    continue
                self._step_skip_zero(g, p)
                hidden.append((p, p.grad))
                p.grad = None
        try:
            super().step()  # every other group: torch's Adam (fused where it can be)
        finally:
            for p, grad in hidden:
                p.grad = grad
        return loss

    def load_state_dict(self, state_dict) -> None:
        """Load a state saved by this class or by ``torch.optim.Adam`` (the groups keep
        this optimiser's ``skip_zero``: how to step is not part of the state)."""
        layout = [g["skip_zero"] for g in self.param_groups]
        super().load_state_dict(state_dict)
        for g, skip in zip(self.param_groups, layout, strict=True):
            g["skip_zero"] = skip
