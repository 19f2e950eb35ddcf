"""E heterogeneous hash-grid experts in one flat parameter, each point encoded by its own expert."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from switchnerf.encoding.hashgrid import PARAM_INIT_RANGE
from switchnerf.ops.hash_encode import hash_encode
from switchnerf.ops.hash_levels import (
    GridSpec,
    LevelTable,
    levels_from_buffers,
    register_level_buffers,
    table_size,
)

MIN_TABLE_ROWS = 8
"""Fewest rows a hashed level may hold (``check_hashmap_size``)."""


def geometric_expert_specs(
    n_experts: int,
    *,
    base_resolution: int = 16,
    finest_resolution: float = 4096,
    coarsest_fraction: float = 1 / 8,
    log2_hashmap_size: int = 19,
    hashmap_size: int | None = None,
    table_split_power: float = 0.0,
) -> list[GridSpec]:
    """Expert grids whose finest resolutions grow geometrically, coarse (expert 0) to fine.

    Expert ``e`` gets ``max_resolution = round(finest * coarsest_fraction ** ((E-1-e) / (E-1)))``;
    a single expert gets ``finest_resolution``. With ``table_split_power`` 0 every expert's
    hashed levels hold ``T = hashmap_size`` rows if given, else ``2 ** log2_hashmap_size``.
    With a power ``p > 0`` the same ``E * T`` rows per hashed level are shared out in
    proportion to ``max_resolution_e ** p`` (:func:`split_table_rows`): detail-weighted
    capacity, the fine experts that own the dense core get larger tables.

    >>> [s.max_resolution for s in geometric_expert_specs(4, finest_resolution=4096)]
    [512, 1024, 2048, 4096]
    >>> [s.hashmap_size for s in geometric_expert_specs(
    ...     2, finest_resolution=64, coarsest_fraction=0.5, hashmap_size=300, table_split_power=1)]
    [200, 400]
    """
    if n_experts < 1:
        raise ValueError(f"n_experts must be >= 1, got {n_experts}")
    if not 0 < coarsest_fraction <= 1:
        raise ValueError(f"coarsest_fraction must be in (0, 1], got {coarsest_fraction}")
    specs = []
    for e in range(n_experts):
        exponent = (n_experts - 1 - e) / (n_experts - 1) if n_experts > 1 else 0.0
        max_resolution = round(finest_resolution * coarsest_fraction**exponent)
        if max_resolution < base_resolution:
            raise ValueError(
                f"expert {e}: max resolution {max_resolution} below base_resolution "
                f"{base_resolution}; raise finest_resolution or coarsest_fraction"
            )
        specs.append(GridSpec(base_resolution, log2_hashmap_size, max_resolution=max_resolution,
                              hashmap_size=hashmap_size))
    if table_split_power == 0:
        return specs
    rows = split_table_rows([s.max_resolution for s in specs],
                            table_size(log2_hashmap_size, hashmap_size), table_split_power)
    return [dataclasses.replace(s, hashmap_size=r) for s, r in zip(specs, rows)]


def split_table_rows(max_resolutions: Sequence[float], rows: int, power: float) -> list[int]:
    """Rows per hashed level of each expert: ``E * rows`` shared in proportion to
    ``max_resolution ** power`` (largest remainders, so the total is exact; at least
    8 rows each).

    >>> split_table_rows([128, 256, 512], 1000, 1.0)
    [429, 857, 1714]
    >>> split_table_rows([128, 256], 1000, 0.0)
    [1000, 1000]
    """
    if power < 0:
        raise ValueError(f"table_split_power must be >= 0, got {power}")
    total = rows * len(max_resolutions)
    weights = np.array([float(r) ** power for r in max_resolutions])
    share = weights / weights.sum() * total
    out = np.maximum(np.floor(share).astype(np.int64), MIN_TABLE_ROWS)
    left = total - int(out.sum())
    if left >= 0:
        for e in np.argsort(-(share - np.floor(share)), kind="stable")[:left]:
            out[e] += 1
    else:  # raised to the minimum: the largest tables give the rows back
        out[int(np.argmax(out))] += left
    return [int(r) for r in out]


class HashExperts(nn.Module):
    """E hash grids with equal output width (``n_levels * n_features_per_level``).

    Each expert has its own base resolution, resolution growth and table size
    (a :class:`GridSpec`). All tables live in one flat ``params``: expert
    ``e`` occupies ``params[expert_param_slice(e)]``, laid out exactly as a
    :class:`~switchnerf.encoding.hashgrid.HashGrid` with that spec.

    >>> experts = HashExperts(geometric_expert_specs(2, finest_resolution=128,
    ...                       log2_hashmap_size=10), n_levels=4)
    >>> experts.encode(torch.rand(6, 3), torch.tensor([0, 1, 1, 0, 1, 0])).shape
    torch.Size([6, 8])
    """

    def __init__(
        self, specs: Sequence[GridSpec], *, n_levels: int = 16, n_features_per_level: int = 2
    ):
        super().__init__()
        self.specs = tuple(specs)
        self.n_levels = n_levels
        self.n_features_per_level = n_features_per_level
        self._levels = LevelTable.for_experts(
            self.specs, n_levels=n_levels, n_features=n_features_per_level
        )
        register_level_buffers(self, self._levels)
        n_params = self._levels.n_rows * n_features_per_level
        self.params = nn.Parameter(
            torch.empty(n_params).uniform_(-PARAM_INIT_RANGE, PARAM_INIT_RANGE)
        )

    @property
    def n_experts(self) -> int:
        return len(self.specs)

    @property
    def levels(self) -> LevelTable:
        """Level geometry [E, L] on the module's device."""
        return levels_from_buffers(self, self._levels)

    @property
    def output_dim(self) -> int:
        return self.n_levels * self.n_features_per_level

    def table_view(self) -> torch.Tensor:
        """``params`` as the [R, F] table of all experts (a view)."""
        return self.params.view(self._levels.n_rows, self.n_features_per_level)

    def expert_param_slice(self, expert: int) -> slice:
        """The range of ``params`` holding expert ``expert``'s levels."""
        first, end = self._levels.expert_rows(expert)
        f = self.n_features_per_level
        return slice(first * f, end * f)

    def param_count(self, expert: int | None = None) -> int:
        """Number of table values of one expert, or of all experts."""
        if expert is None:
            return self.params.numel()
        s = self.expert_param_slice(expert)
        return s.stop - s.start

    def encode(self, x: torch.Tensor, expert_id: torch.Tensor) -> torch.Tensor:
        """Encode each point with its own expert.

        x: float [N, 3] in the unit cube; expert_id: int64 [N] in [0, E).
        Returns [N, n_levels * n_features_per_level].
        """
        return hash_encode(x, self.table_view(), expert_id, self.levels)

    def forward(self, x: torch.Tensor, expert_id: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`encode`."""
        return self.encode(x, expert_id)

    def extra_repr(self) -> str:
        res = [int(r) for r in self._levels.resolution[:, -1]]
        return (
            f"n_experts={self.n_experts}, n_levels={self.n_levels}, "
            f"n_features_per_level={self.n_features_per_level}, finest_resolutions={res}, "
            f"rows={self._levels.n_rows}"
        )
