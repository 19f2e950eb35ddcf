"""The hash grids of a SwitchField, from its ``model.experts`` config: the experts' specs and
level count, and the optional shared coarse grid that every point uses.

Without shared levels (``shared_levels = 0``) every expert spans ``n_levels`` levels from
``base_resolution`` to its own finest resolution (``geometric_expert_specs``), as in
Switch-NeRF++.

With ``S = shared_levels > 0`` the resolution ladder is split at ``split_resolution`` (P):

* the shared grid has S levels from ``base_resolution`` (B) growing by
  ``g = (P / B) ** (1 / S)`` per level, so its finest level is at ``P / g``: one step of its
  own growth below P, where the experts take over;
* expert e has ``n_levels - S`` levels from P to its finest resolution ``max_e`` (its
  coarsest level at P; the heterogeneous finest resolutions are unchanged), so its table
  rows go to detail above the shared grid.

A point's features are the shared grid's S levels, then its expert's ``n_levels - S``
levels: ``n_levels * n_features_per_level`` values either way.
"""

from __future__ import annotations

from switchnerf.config import ExpertsConfig
from switchnerf.encoding.experts import geometric_expert_specs
from switchnerf.encoding.hashgrid import HashGrid
from switchnerf.ops.hash_levels import GridSpec


def expert_levels(ex: ExpertsConfig) -> int:
    """Levels of each expert: ``n_levels`` minus the shared grid's."""
    return ex.n_levels - ex.shared_levels


def expert_specs(ex: ExpertsConfig) -> list[GridSpec]:
    """Resolution range and table size of each expert (coarse, expert 0, to fine).

    Their coarsest resolution is ``base_resolution``, or ``split_resolution`` with shared
    levels.
    """
    base = ex.split_resolution if ex.shared_levels > 0 else ex.base_resolution
    return geometric_expert_specs(
        ex.n_experts, base_resolution=base, finest_resolution=ex.finest_resolution,
        coarsest_fraction=ex.coarsest_fraction, log2_hashmap_size=ex.log2_hashmap_size,
        hashmap_size=ex.hashmap_size, table_split_power=ex.table_split_power)


def shared_grid(ex: ExpertsConfig) -> HashGrid | None:
    """The shared coarse grid (its table drawn from the global RNG), or None without
    shared levels."""
    s = ex.shared_levels
    if s == 0:
        return None
    return HashGrid(n_levels=s, n_features_per_level=ex.n_features_per_level,
                    log2_hashmap_size=ex.shared_log2_hashmap_size,
                    base_resolution=ex.base_resolution,
                    per_level_scale=shared_per_level_scale(ex))


def shared_per_level_scale(ex: ExpertsConfig) -> float:
    """Growth per level of the shared grid, ``(split / base) ** (1 / S)``."""
    return (ex.split_resolution / ex.base_resolution) ** (1.0 / ex.shared_levels)
