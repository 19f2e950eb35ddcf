"""Level geometry of tiny-cuda-nn hash grids, and the table that lays E grids out in one flat parameter.

Per level ``l`` of a grid (tcnn ``GridEncoding``, float32 as on the device):

* ``scale_l = exp2f(l * log2f(per_level_scale)) * base_resolution - 1``
* ``res_l = ceilf(scale_l) + 1`` vertices per axis
* ``size_l = min(next_multiple_of_8(res_l ** 3), 2 ** log2_hashmap_size)`` rows
* the level is hashed when ``size_l < stride`` with ``stride = res_l ** 3`` for
  ``res_l <= 1625`` (``0x659``, the largest cube below ``2 ** 32``) and
  ``0xFFFFFFFF`` above; otherwise it is dense (row = ``x + y * res + z * res ** 2``).

A :class:`LevelTable` holds these numbers for ``E`` experts x ``L`` levels as
tensors, plus the row offset of each (expert, level) in one flat ``[R, F]``
table: experts one after another, the levels of an expert consecutive.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

DENSE_RESOLUTION_LIMIT = 0x659
"""Largest resolution whose cube fits in uint32; finer levels always hash (tcnn ``grid_index``)."""


@dataclasses.dataclass(frozen=True)
class GridLevelSpec:
    """One level of one grid: ``scale`` is the float32 value held in a Python float."""

    level: int
    scale: float
    resolution: int
    size: int
    hashed: bool


@dataclasses.dataclass(frozen=True)
class GridSpec:
    """Resolution range and table size of one grid (one expert).

    Give exactly one of ``per_level_scale`` and ``max_resolution``; the latter
    becomes ``exp(log(max_resolution / base_resolution) / (n_levels - 1))``.
    """

    base_resolution: int
    log2_hashmap_size: int
    per_level_scale: float | None = None
    max_resolution: float | None = None

    def __post_init__(self) -> None:
        if (self.per_level_scale is None) == (self.max_resolution is None):
            raise ValueError("GridSpec: give exactly one of per_level_scale and max_resolution")
        if self.base_resolution < 1:
            raise ValueError(f"GridSpec: base_resolution must be >= 1, got {self.base_resolution}")
        if not 3 <= self.log2_hashmap_size <= 31:
            raise ValueError(
                f"GridSpec: log2_hashmap_size must be in [3, 31], got {self.log2_hashmap_size}"
            )

    def resolve_per_level_scale(self, n_levels: int) -> float:
        """The per-level growth factor for ``n_levels`` levels."""
        if self.per_level_scale is not None:
            return float(self.per_level_scale)
        return per_level_scale_for(self.base_resolution, float(self.max_resolution), n_levels)


def per_level_scale_for(base_resolution: int, max_resolution: float, n_levels: int) -> float:
    """``exp(log(max / base) / (L - 1))``, the instant-NGP rule; 1.0 for a single level."""
    if n_levels <= 1:
        return 1.0
    return math.exp(math.log(max_resolution / base_resolution) / (n_levels - 1))


def _next_multiple_of_8(n: int) -> int:
    return (n + 7) // 8 * 8


def grid_level_specs(
    n_levels: int, log2_hashmap_size: int, base_resolution: int, per_level_scale: float
) -> list[GridLevelSpec]:
    """Scale, resolution, rows and dense/hashed flag of each level, exactly as tcnn computes them.

    >>> [(s.resolution, s.size, s.hashed) for s in grid_level_specs(3, 8, 4, 2.0)]
    [(4, 64, False), (8, 256, True), (16, 256, True)]
    """
    if n_levels < 1:
        raise ValueError(f"n_levels must be >= 1, got {n_levels}")
    one = np.float32(1.0)
    log2_pls = np.log2(np.float32(per_level_scale))  # float32, as tcnn passes it to the kernel
    base = np.float32(base_resolution)
    cap = 1 << log2_hashmap_size
    specs = []
    for level in range(n_levels):
        scale = np.float32(np.exp2(np.float32(level) * log2_pls) * base - one)
        resolution = int(np.ceil(scale)) + 1
        size = min(_next_multiple_of_8(resolution**3), cap)
        stride = resolution**3 if resolution <= DENSE_RESOLUTION_LIMIT else 0xFFFFFFFF
        specs.append(GridLevelSpec(level, float(scale), resolution, size, size < stride))
    return specs


@dataclasses.dataclass(frozen=True)
class LevelTable:
    """Per-(expert, level) geometry of ``E`` grids stored in one flat ``[R, F]`` table.

    Tensors (all ``[E, L]``, on one device):
        scale: float32, ``scale_l`` of each expert's level.
        resolution: int32, vertices per axis.
        size: int32, rows of the level (its hashmap size).
        offset: int64, first row of the level in the flat table.
        hashed: bool, True where the level is indexed by the spatial hash.
    """

    scale: torch.Tensor
    resolution: torch.Tensor
    size: torch.Tensor
    offset: torch.Tensor
    hashed: torch.Tensor
    n_rows: int
    n_levels: int
    n_features: int
    n_experts: int
    level_kinds: tuple[str, ...]
    """Per level: "dense" or "hashed" when every expert agrees, else "mixed" (host-side, no sync)."""

    TENSOR_FIELDS = ("scale", "resolution", "size", "offset", "hashed")

    def __post_init__(self) -> None:
        shape = (self.n_experts, self.n_levels)
        for name in self.TENSOR_FIELDS:
            t = getattr(self, name)
            if tuple(t.shape) != shape:
                raise ValueError(f"LevelTable.{name}: shape {tuple(t.shape)}, expected {shape}")

    @classmethod
    def for_grid(
        cls,
        *,
        n_levels: int,
        n_features: int,
        log2_hashmap_size: int,
        base_resolution: int,
        per_level_scale: float,
    ) -> LevelTable:
        """The table of one grid (E = 1)."""
        spec = GridSpec(base_resolution, log2_hashmap_size, per_level_scale=per_level_scale)
        return cls.for_experts([spec], n_levels=n_levels, n_features=n_features)

    @classmethod
    def for_experts(cls, specs: Sequence[GridSpec], n_levels: int, n_features: int) -> LevelTable:
        """The table of ``len(specs)`` grids with equal ``n_levels`` and ``n_features``, one after another."""
        if len(specs) < 1:
            raise ValueError("LevelTable.for_experts: need at least one expert")
        if n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {n_features}")
        rows = []
        offset = 0
        for spec in specs:
            pls = spec.resolve_per_level_scale(n_levels)
            levels = grid_level_specs(n_levels, spec.log2_hashmap_size, spec.base_resolution, pls)
            expert_rows = []
            for s in levels:
                expert_rows.append((s.scale, s.resolution, s.size, offset, s.hashed))
                offset += s.size
            rows.append(expert_rows)
        columns = list(zip(*[list(zip(*r)) for r in rows]))  # 5 x E x L
        hashed = [[bool(h) for h in r] for r in columns[4]]
        kinds = []
        for level in range(n_levels):
            flags = {hashed[e][level] for e in range(len(specs))}
            kinds.append("mixed" if len(flags) == 2 else ("hashed" if True in flags else "dense"))
        return cls(
            scale=torch.tensor(columns[0], dtype=torch.float32),
            resolution=torch.tensor(columns[1], dtype=torch.int32),
            size=torch.tensor(columns[2], dtype=torch.int32),
            offset=torch.tensor(columns[3], dtype=torch.int64),
            hashed=torch.tensor(hashed, dtype=torch.bool),
            n_rows=offset,
            n_levels=n_levels,
            n_features=n_features,
            n_experts=len(specs),
            level_kinds=tuple(kinds),
        )

    def to(self, device: torch.device | str) -> LevelTable:
        """The same table with its tensors on ``device``."""
        return self.with_tensors(**{n: getattr(self, n).to(device) for n in self.TENSOR_FIELDS})

    def with_tensors(self, **tensors: torch.Tensor) -> LevelTable:
        """A copy with some tensors replaced (a module's buffers after ``.to()``)."""
        return dataclasses.replace(self, **tensors)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The five ``[E, L]`` tensors by field name."""
        return {n: getattr(self, n) for n in self.TENSOR_FIELDS}

    def expert_rows(self, expert: int) -> tuple[int, int]:
        """``(first_row, end_row)`` of one expert in the flat ``[R, F]`` table."""
        first = int(self.offset[expert, 0])
        return first, first + int(self.size[expert].to(torch.int64).sum())

    @property
    def output_dim(self) -> int:
        """Width of an encoding: ``n_levels * n_features``."""
        return self.n_levels * self.n_features


def register_level_buffers(module: nn.Module, levels: LevelTable) -> None:
    """Register the table's tensors as non-persistent ``level_<name>`` buffers of ``module``.

    ``scale`` is kept as its float32 bit pattern (int32), so ``module.half()``
    or ``.double()`` cannot round it: the level geometry stays tcnn's.
    """
    for name, tensor in levels.tensors().items():
        if tensor.is_floating_point():
            tensor = tensor.view(torch.int32)
        module.register_buffer(f"level_{name}", tensor, persistent=False)


def levels_from_buffers(module: nn.Module, levels: LevelTable) -> LevelTable:
    """``levels`` with its tensors replaced by the module's buffers (which follow ``.to()``)."""
    tensors = {name: getattr(module, f"level_{name}") for name in LevelTable.TENSOR_FIELDS}
    tensors["scale"] = tensors["scale"].view(torch.float32)
    return levels.with_tensors(**tensors)
