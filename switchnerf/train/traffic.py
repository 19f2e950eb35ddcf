"""Bytes the ranks of a distributed run send each other, per step, for the metrics log."""

from __future__ import annotations

import torch

from switchnerf.moe.expert_parallel import dense_parameters

__all__ = ["ExchangeTraffic"]


class ExchangeTraffic:
    """Bytes the ranks send each other per step, for the metrics log (distributed only):
    ``exchange_bytes``, the expert-parallel sample exchange of all ranks together, and
    ``allreduce_bytes``, the dense-gradient buffer each rank all-reduces."""

    def __init__(self, trainer):
        self.trainer, self.steps = trainer, 0
        field = trainer.renderer.field
        self.encoder = field.experts if trainer.expert_parallel else None
        if self.encoder is not None:
            self.encoder.reset_bytes()
        self.dense_bytes = sum(p.numel() * p.element_size() for p in dense_parameters(field)
                               if p.requires_grad)

    def step_done(self) -> None:
        self.steps += 1

    def per_step(self) -> dict:
        """Per-step averages since the last call (a collective with expert parallelism)."""
        ctx = self.trainer.ctx
        if not ctx.is_distributed:
            return {}
        sent = 0 if self.encoder is None else self.encoder.reset_bytes().total
        if self.encoder is not None:
            sent = int(ctx.all_reduce_sum(torch.tensor([float(sent)],
                                                       device=self.trainer.device)).item())
        steps, self.steps = max(self.steps, 1), 0
        return {"world_size": ctx.world_size, "exchange_bytes": sent / steps,
                "allreduce_bytes": self.dense_bytes}
