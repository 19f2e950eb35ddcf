"""Level geometry of tiny-cuda-nn hash grids, and the table that lays E grids out in one flat parameter.

Per level ``l`` of a grid (tcnn ``GridEncoding``, float32 as on the device):

* ``scale_l = exp2f(l * log2f(per_level_scale)) * base_resolution - 1``
* ``res_l = ceilf(scale_l) + 1`` vertices per axis
* ``size_l = min(next_multiple_of_8(res_l ** 3), T)`` rows, with the table size
  ``T = 2 ** log2_hashmap_size`` (tcnn) or an explicit ``hashmap_size`` of any value
  (not a tcnn option: lets grids of different shapes hold equal parameter counts; a
  non-power-of-two ``T`` reduces the hash modulo ``T`` instead of masking it)
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
    ``hashmap_size``, when given, is the row count of each hashed level and
    overrides ``2 ** log2_hashmap_size`` (see :attr:`table_size`).
    """

    base_resolution: int
    log2_hashmap_size: int
    per_level_scale: float | None = None
    max_resolution: float | None = None
    hashmap_size: int | None = None

    def __post_init__(self) -> None:
        if (self.per_level_scale is None) == (self.max_resolution is None):
            raise ValueError("GridSpec: give exactly one of per_level_scale and max_resolution")
        if self.base_resolution < 1:
            raise ValueError(f"GridSpec: base_resolution must be >= 1, got {self.base_resolution}")
        if not 3 <= self.log2_hashmap_size <= 31:
            raise ValueError(
                f"GridSpec: log2_hashmap_size must be in [3, 31], got {self.log2_hashmap_size}"
            )
        if self.hashmap_size is not None:
            check_hashmap_size(self.hashmap_size, "GridSpec: hashmap_size")

    @property
    def table_size(self) -> int:
        """Rows of a hashed level: ``hashmap_size`` if given, else ``2 ** log2_hashmap_size``."""
        return table_size(self.log2_hashmap_size, self.hashmap_size)

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


MAX_HASHMAP_SIZE = (1 << 31) - 1
"""Largest table size: level sizes are held as int32 (and uint32 in the kernels)."""


def check_hashmap_size(hashmap_size: int, where: str = "hashmap_size") -> None:
    """Raise unless ``hashmap_size`` is an integer (TypeError) in ``[8, 2**31 - 1]`` (ValueError)."""
    if isinstance(hashmap_size, bool) or not isinstance(hashmap_size, (int, np.integer)):
        raise TypeError(f"{where}: expected an integer, got {hashmap_size!r}")
    if not 8 <= hashmap_size <= MAX_HASHMAP_SIZE:
        raise ValueError(f"{where}: must be in [8, 2**31 - 1], got {hashmap_size}")


def table_size(log2_hashmap_size: int, hashmap_size: int | None = None) -> int:
    """Rows of a hashed level: ``hashmap_size`` when given, else ``2 ** log2_hashmap_size``."""
    return int(hashmap_size) if hashmap_size is not None else 1 << log2_hashmap_size


def _next_multiple_of_8(n: int) -> int:
    return (n + 7) // 8 * 8


def grid_level_specs(
    n_levels: int,
    log2_hashmap_size: int,
    base_resolution: int,
    per_level_scale: float,
    *,
    hashmap_size: int | None = None,
) -> list[GridLevelSpec]:
    """Scale, resolution, rows and dense/hashed flag of each level, exactly as tcnn computes them.

    ``hashmap_size`` (rows of a hashed level) overrides ``2 ** log2_hashmap_size``.

    >>> [(s.resolution, s.size, s.hashed) for s in grid_level_specs(3, 8, 4, 2.0)]
    [(4, 64, False), (8, 256, True), (16, 256, True)]
    >>> [s.size for s in grid_level_specs(3, 8, 4, 2.0, hashmap_size=300)]
    [64, 300, 300]
    """
    if n_levels < 1:
        raise ValueError(f"n_levels must be >= 1, got {n_levels}")
    if hashmap_size is not None:
        check_hashmap_size(hashmap_size)
    one = np.float32(1.0)
    log2_pls = np.log2(np.float32(per_level_scale))  # float32, as tcnn passes it to the kernel
    base = np.float32(base_resolution)
    cap = table_size(log2_hashmap_size, hashmap_size)
    specs = []
    for level in range(n_levels):
        scale = np.float32(np.exp2(np.float32(level) * log2_pls) * base - one)
        resolution = int(np.ceil(scale)) + 1
        size = min(_next_multiple_of_8(resolution**3), cap)
        stride = resolution**3 if resolution <= DENSE_RESOLUTION_LIMIT else 0xFFFFFFFF
        specs.append(GridLevelSpec(level, float(scale), resolution, size, size < stride))
    return specs


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def experts_rows(specs: Sequence[GridSpec], n_levels: int) -> int:
    """Total table rows of the grids ``specs`` (what :meth:`LevelTable.for_experts` lays out)."""
    total = 0
    for spec in specs:
        pls = spec.resolve_per_level_scale(n_levels)
        levels = grid_level_specs(n_levels, spec.log2_hashmap_size, spec.base_resolution, pls,
                                  hashmap_size=spec.hashmap_size)
        total += sum(s.size for s in levels)
    return total


def solve_hashmap_size(specs: Sequence[GridSpec], n_levels: int, target_rows: int) -> int:
    """The ``hashmap_size`` that, given to every grid of ``specs``, brings their total row
    count nearest to ``target_rows`` (the smaller size on a tie).

    Rows grow with the table size ``T`` by one per hashed level, so a total is hit exactly
    only when the remainder divides evenly; otherwise the result is off by at most half
    the number of hashed levels. Used to write explicit sizes into presets that must match
    another preset's parameter count (tests/test_presets_params.py).

    >>> spec = GridSpec(4, 8, per_level_scale=2.0)  # levels: 64 dense rows + 2 hashed
    >>> solve_hashmap_size([spec], 3, 64 + 2 * 300)
    300
    """

    def rows(size: int) -> int:
        return experts_rows([dataclasses.replace(s, hashmap_size=size) for s in specs], n_levels)

    lo, hi = 8, MAX_HASHMAP_SIZE
    if rows(hi) <= target_rows:
        return hi
    while hi - lo > 1:  # rows(lo) < target <= rows(hi), or lo is the floor
        mid = (lo + hi) // 2
        if rows(mid) < target_rows:
            lo = mid
        else:
            hi = mid
    if rows(lo) >= target_rows:
        return lo
    return lo if target_rows - rows(lo) <= rows(hi) - target_rows else hi


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
    pow2_sizes: tuple[bool, ...]
    """Per level: True when every expert's row count is a power of two, so a hash may be
    masked instead of reduced modulo the size (host-side)."""

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
        hashmap_size: int | None = None,
    ) -> LevelTable:
        """The table of one grid (E = 1)."""
        spec = GridSpec(base_resolution, log2_hashmap_size, per_level_scale=per_level_scale,
                        hashmap_size=hashmap_size)
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
            levels = grid_level_specs(n_levels, spec.log2_hashmap_size, spec.base_resolution, pls,
                                      hashmap_size=spec.hashmap_size)
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
        pow2 = tuple(all(_is_pow2(int(r[level])) for r in columns[2]) for level in range(n_levels))
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
            pow2_sizes=pow2,
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
