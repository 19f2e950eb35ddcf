"""Pieces the training benchmarks share (bench/train.py, bench/fidelity.py).

Parameter counting and matching (methods compared at equal trainable parameters), which
val images a periodic evaluation uses, and time-to-PSNR from an evaluation curve.
"""

from __future__ import annotations

import torch

from switchnerf.config import Config

META_IMAGES = 56
"""Camera-table size of fields built only to count parameters: the appearance table has the
same size in every method, so any count gives the same differences."""


def parameter_counts(field) -> dict[str, int]:
    """Trainable parameters of a SwitchField: all of them, and the hash tables among them."""
    return {"total": sum(p.numel() for p in field.parameters() if p.requires_grad),
            "tables": sum(p.numel() for p in field.table_parameters())}


def meta_field(cfg: Config):
    """The SwitchField of ``cfg`` on the meta device (no memory: counts only)."""
    from switchnerf.model import SwitchField

    with torch.device("meta"):
        return SwitchField(cfg.model, n_images=META_IMAGES)


def matched_hashmap_size(reference: Config, cfg: Config) -> int:
    """``model.experts.hashmap_size`` that gives ``cfg``'s field the trainable parameter
    count nearest to ``reference``'s (rows per hashed level of every expert; the rest of
    the field, MLPs, gate, shared grid, appearance and background, stays as ``cfg`` makes
    it)."""
    from switchnerf.model.grids import expert_levels, expert_specs
    from switchnerf.ops.hash_levels import solve_hashmap_size

    target = parameter_counts(meta_field(reference))["total"]
    field = meta_field(cfg)
    rest = parameter_counts(field)["total"] - field.experts.params.numel()
    ex = cfg.model.experts
    return solve_hashmap_size(expert_specs(ex), expert_levels(ex),
                              (target - rest) // ex.n_features_per_level)


def time_to_psnr(curve: list[dict], thresholds: list[float]) -> dict[str, dict | None]:
    """For each threshold (dB), the first evaluation of ``curve`` (dicts with ``psnr``,
    ``train_s``, ``step``, in training order) at or above it: {train_s, step}, or None.

    >>> time_to_psnr([{"psnr": 20.0, "train_s": 5.0, "step": 9},
    ...               {"psnr": 25.0, "train_s": 9.0, "step": 17}], [24, 30])
    {'24': {'train_s': 9.0, 'step': 17}, '30': None}
    """
    reached = {}
    for thr in thresholds:
        hit = next((c for c in curve if c["psnr"] is not None and c["psnr"] >= thr), None)
        reached[f"{thr:g}"] = None if hit is None else {"train_s": hit["train_s"],
                                                        "step": hit["step"]}
    return reached
