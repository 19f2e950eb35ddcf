"""Routing: gate, top-1, load balance, capacity."""

from switchnerf.moe.gate import FixedCellRouter, GateOutput, HashGate
from switchnerf.moe.routing import (
    balance_loss,
    capacity_keep_mask,
    expert_load,
    sort_into_segments,
    top1,
)

__all__ = ["FixedCellRouter", "GateOutput", "HashGate", "balance_loss", "capacity_keep_mask",
           "expert_load", "sort_into_segments", "top1"]
