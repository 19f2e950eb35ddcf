"""One optimisation step's statistics: on the training device (``StepStats``, no host
sync to build) and on the host (``StepValues``, copied only for logged steps)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from switchnerf.moe.routing import expert_load
from switchnerf.ops.counts import counts_per_id
from switchnerf.train.distributed import DistributedContext

__all__ = ["StepStats", "StepValues"]


@dataclass(frozen=True)
class StepValues:
    """One step's statistics on the host (what the metrics log and the progress bar show)."""

    loss: float
    psnr: float
    balance: float
    samples_per_ray: float
    load: list[float]
    dropped: int  # samples over an expert's capacity (zero expert features)
    skipped: bool


@dataclass(frozen=True)
class StepStats:
    """What one optimisation step measured, left on the training device.

    Building it costs no host sync; :meth:`values` copies it to the host (once), which the
    loop does only for logged steps. loss, mse, balance: float []; expert_id: int64 [M],
    the expert of each kept sample; kept: bool [M] (False: dropped by the capacity limit);
    samples_per_ray: kept samples per ray (a host number); skipped: the loss was not finite.
    """

    loss: torch.Tensor
    mse: torch.Tensor
    balance: torch.Tensor
    expert_id: torch.Tensor
    kept: torch.Tensor
    n_experts: int
    samples_per_ray: float
    skipped: bool = False
    ctx: DistributedContext | None = None
    n_rays: int = 0

    def values(self) -> StepValues:
        """The statistics as Python numbers (one device-to-host copy). Distributed: over
        the global batch (a collective: every rank calls it for the same steps)."""
        if self.ctx is not None and self.ctx.is_distributed:
            return self._global_values()
        load = expert_load(self.expert_id, self.n_experts)  # [E]
        dropped = (~self.kept).sum()
        head = torch.stack([self.loss.detach().double(), self.mse.detach().double(),
                            self.balance.detach().double(), dropped.double()])
        host = torch.cat([head, load.double()]).tolist()
        loss, mse, bal, drop = host[:4]
        return StepValues(loss=loss, psnr=-10 * math.log10(max(mse, 1e-10)), balance=bal,
                          samples_per_ray=self.samples_per_ray, load=host[4:],
                          dropped=int(drop), skipped=self.skipped)

    def _global_values(self) -> StepValues:
        """``values`` of the global batch: loss, mse and balance are global already; the
        expert load, drops and samples per ray are summed over the ranks."""
        e = self.n_experts
        counts = counts_per_id(self.expert_id, e).double()  # [E]
        local = torch.cat([torch.stack([(~self.kept).sum().double(),
                                        counts.new_tensor(float(self.expert_id.shape[0])),
                                        counts.new_tensor(float(self.n_rays))]), counts])
        total = self.ctx.all_reduce_sum(local)
        head = torch.stack([self.loss.detach().double(), self.mse.detach().double(),
                            self.balance.detach().double()])
        host = torch.cat([head, total]).tolist()
        loss, mse, bal, drop, n_samples, n_rays = host[:6]
        load = [c / max(n_samples, 1.0) for c in host[6:]]
        return StepValues(loss=loss, psnr=-10 * math.log10(max(mse, 1e-10)), balance=bal,
                          samples_per_ray=n_samples / max(n_rays, 1.0), load=load,
                          dropped=int(drop), skipped=self.skipped)
