"""The routing gate: hash grid -> small MLP -> softmax (fp32) -> top-1."""

from __future__ import annotations

import torch
from torch import nn

from switchnerf.config import GridConfig
from switchnerf.encoding import HashGrid
from switchnerf.errors import SwitchNerfError
from switchnerf.moe.partition_init import (
    assign_cells,
    init_partition_gate,
    partition_centroids,
    partition_grid,
)
from switchnerf.moe.routing import top1
from switchnerf.ops.hash_levels import MAX_HASHMAP_SIZE, grid_level_specs, per_level_scale_for
from switchnerf.ops.mlp import apply_mlp, make_mlp
from switchnerf.scene.partition import GridPartition


class GateOutput:
    """probs float32 [M, E]; expert_id int64 [M]; gate_value float32 [M] (differentiable).

    Without gradients the gate hands its logits [M, E] instead of ``probs``; ``probs`` is
    then computed from them on first access (inference only needs the top-1 choice).
    """

    __slots__ = ("_probs", "expert_id", "gate_value", "logits")

    def __init__(self, probs: torch.Tensor | None, expert_id: torch.Tensor,
                 gate_value: torch.Tensor, *, logits: torch.Tensor | None = None) -> None:
        if probs is None and logits is None:
            raise ValueError("GateOutput needs probs or logits")
        self._probs = probs
        self.expert_id = expert_id
        self.gate_value = gate_value
        self.logits = logits

    @property
    def probs(self) -> torch.Tensor:
        if self._probs is None:
            self._probs = torch.softmax(self.logits.float(), dim=-1)
        return self._probs


def dense_rows(cfg: GridConfig) -> int:
    """Rows of the finest level of ``cfg`` when it is stored densely: ``res^3`` rounded up
    to a multiple of 8, with ``res`` its vertices per axis (tcnn's level rule)."""
    pls = per_level_scale_for(cfg.base_resolution, cfg.max_resolution, cfg.n_levels)
    finest = grid_level_specs(cfg.n_levels, 31, cfg.base_resolution, pls)[-1]
    return (finest.resolution**3 + 7) // 8 * 8


def grid_from_config(cfg: GridConfig, *, dense: bool = False) -> HashGrid:
    """A HashGrid whose finest level has ``cfg.max_resolution`` vertices-ish (tcnn scale).

    dense: every level is stored densely (no hash collisions): the table size is raised to
    the finest level's vertex count and ``cfg.log2_hashmap_size`` is not used.
    """
    hashmap_size = None
    if dense:
        hashmap_size = max(dense_rows(cfg), 8)
        if hashmap_size > MAX_HASHMAP_SIZE:
            raise SwitchNerfError(
                f"config: model.routing.gate_dense: a dense gate of max_resolution "
                f"{cfg.max_resolution} needs {hashmap_size} rows per level (at most "
                f"{MAX_HASHMAP_SIZE}); lower model.routing.gate.max_resolution")
    return HashGrid.from_max_resolution(
        n_levels=cfg.n_levels,
        n_features_per_level=cfg.n_features_per_level,
        log2_hashmap_size=cfg.log2_hashmap_size,
        base_resolution=cfg.base_resolution,
        max_resolution=cfg.max_resolution,
        hashmap_size=hashmap_size,
    )


class HashGate(nn.Module):
    """``i, g = top1(softmax(MLP([Hash(x), 2x - 1])))`` with the MLP and softmax in fp32.

    x: points in the unit cube [M, 3]. The centred position joins the hash features so
    that routing varies smoothly in space from the first step: the hash table starts at
    ~1e-4, and a gate fed only by it would send every point to the same expert until the
    balance loss pulled it apart.

    dense: store every level of the gate's grid densely (:func:`grid_from_config`).
    """

    def __init__(self, grid: GridConfig, n_experts: int, hidden: int = 64, *,
                 dense: bool = False):
        super().__init__()
        self.n_experts = n_experts
        self.encoding = grid_from_config(grid, dense=dense)
        self.mlp = make_mlp(self.encoding.output_dim + 3, hidden, n_experts, 1, bias_out=False)

    def start_from_partition(self, finest_resolutions: list[float], margin: float) -> None:
        """Rewrite the MLP so that the gate routes by a compact ground partition, the finest
        experts nearest the centre (module ``switchnerf.moe.partition_init``); ``margin``:
        the logit lead of a cell centre's expert over the nearest other cell's."""
        grid = partition_grid(self.n_experts)
        cells = assign_cells(list(finest_resolutions), grid)
        init_partition_gate(self.mlp, partition_centroids(grid)[cells], margin)

    def forward(self, x: torch.Tensor) -> GateOutput:
        feats = self.encoding(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = apply_mlp(self.mlp, 2.0 * x.float() - 1.0, prefix=feats.float())
            if not torch.is_grad_enabled():
                # top-1 of softmax(logits) without forming it: the argmax of the logits,
                # and max softmax = 1 / sum(exp(logits - max)).
                expert_id, gate_value = top1_of_logits(logits)
                return GateOutput(None, expert_id, gate_value, logits=logits)
            probs = torch.softmax(logits, dim=-1)
        expert_id, gate_value = top1(probs)
        return GateOutput(probs, expert_id, gate_value)


def top1_of_logits(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 of ``softmax(logits)`` without forming it, logits float32 [M, E]: the first
    argmax int64 [M] and max softmax = 1 / sum(exp(logits - max)) [M]. One vectorised
    native pass on the CPU where built for it (8 experts, AVX2; within 1e-6 relative of the
    torch form); else torch."""
    from switchnerf.ops import load_native, native_available

    if (logits.device.type == "cpu" and logits.dtype == torch.float32 and logits.dim() == 2
            and native_available() and load_native().top1_softmax_fast(logits.shape[1])):
        return load_native().top1_softmax(logits.contiguous())
    top, expert_id = logits.max(dim=-1)
    return expert_id, torch.exp(logits - top[:, None]).sum(-1).reciprocal_()


class FixedCellRouter(nn.Module):
    """Hand-crafted decomposition baseline: expert = ground cell (rows x cols) of the point.

    ``cells`` is ``GridPartition.unit_square(grid)``: cells tile the unit square of (x, y),
    cell index = row * cols + col (``switchnerf.scene.partition``). Gate value is 1.
    """

    def __init__(self, grid: tuple[int, int]):
        super().__init__()
        self.cells = GridPartition.unit_square(grid)
        self.rows, self.cols = self.cells.grid
        self.n_experts = self.cells.n_cells

    def forward(self, x: torch.Tensor) -> GateOutput:
        expert_id = self.cells.cell_of(x)  # [M] int64
        probs = torch.nn.functional.one_hot(expert_id, self.n_experts).float()
        return GateOutput(probs, expert_id, torch.ones_like(x[:, 0]))
