"""One multiresolution hash grid with tiny-cuda-nn's ``HashGrid`` semantics and parameter layout."""

from __future__ import annotations

import torch
from torch import nn

from switchnerf.ops.hash_encode import hash_encode
from switchnerf.ops.hash_levels import (
    LevelTable,
    levels_from_buffers,
    per_level_scale_for,
    register_level_buffers,
)

PARAM_INIT_RANGE = 1e-4
"""tcnn initialises the table uniform in [-1e-4, 1e-4]."""


class HashGrid(nn.Module):
    """Multiresolution hash encoding of points in the unit cube (tcnn config keys).

    ``hashmap_size`` (rows of a hashed level, any size) overrides ``2 ** log2_hashmap_size``;
    it is not a tcnn key, and tcnn cannot load such a table.

    ``params`` is one flat parameter of ``R * F`` values: level ``l`` occupies
    rows ``levels.offset[0, l] ... + levels.size[0, l]`` of ``table_view()``
    [R, F], the same layout as tcnn's parameter vector, so weights transfer.

    >>> grid = HashGrid(n_levels=4, n_features_per_level=2, log2_hashmap_size=8,
    ...                 base_resolution=4, per_level_scale=2.0)
    >>> grid(torch.rand(10, 3)).shape
    torch.Size([10, 8])
    """

    def __init__(
        self,
        *,
        n_levels: int = 16,
        n_features_per_level: int = 2,
        log2_hashmap_size: int = 19,
        base_resolution: int = 16,
        per_level_scale: float = 2.0,
        hashmap_size: int | None = None,
    ):
        super().__init__()
        self.n_levels = n_levels
        self.n_features_per_level = n_features_per_level
        self.log2_hashmap_size = log2_hashmap_size
        self.hashmap_size = hashmap_size
        self.base_resolution = base_resolution
        self.per_level_scale = float(per_level_scale)
        self._levels = LevelTable.for_grid(
            n_levels=n_levels,
            n_features=n_features_per_level,
            log2_hashmap_size=log2_hashmap_size,
            base_resolution=base_resolution,
            per_level_scale=per_level_scale,
            hashmap_size=hashmap_size,
        )
        register_level_buffers(self, self._levels)
        n_params = self._levels.n_rows * n_features_per_level
        self.params = nn.Parameter(
            torch.empty(n_params).uniform_(-PARAM_INIT_RANGE, PARAM_INIT_RANGE)
        )

    @classmethod
    def from_max_resolution(
        cls,
        *,
        n_levels: int = 16,
        n_features_per_level: int = 2,
        log2_hashmap_size: int = 19,
        base_resolution: int = 16,
        max_resolution: float = 2048,
        hashmap_size: int | None = None,
    ) -> HashGrid:
        """A grid whose scale grows by ``exp(log(max / base) / (L - 1))`` per level."""
        return cls(
            n_levels=n_levels,
            n_features_per_level=n_features_per_level,
            log2_hashmap_size=log2_hashmap_size,
            base_resolution=base_resolution,
            per_level_scale=per_level_scale_for(base_resolution, max_resolution, n_levels),
            hashmap_size=hashmap_size,
        )

    @property
    def levels(self) -> LevelTable:
        """Level geometry (E = 1) on the module's device."""
        return levels_from_buffers(self, self._levels)

    @property
    def output_dim(self) -> int:
        return self.n_levels * self.n_features_per_level

    def table_view(self) -> torch.Tensor:
        """``params`` as the [R, F] table (a view: writes go to the parameter)."""
        return self.params.view(self._levels.n_rows, self.n_features_per_level)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float [N, 3] in the unit cube. Returns [N, n_levels * n_features_per_level]."""
        return hash_encode(x, self.table_view(), None, self.levels)

    def extra_repr(self) -> str:
        return (
            f"n_levels={self.n_levels}, n_features_per_level={self.n_features_per_level}, "
            f"log2_hashmap_size={self.log2_hashmap_size}, "
            + (f"hashmap_size={self.hashmap_size}, " if self.hashmap_size is not None else "")
            + f"base_resolution={self.base_resolution}, "
            f"per_level_scale={self.per_level_scale:.6g}, rows={self._levels.n_rows}"
        )
