"""The ray store a training run reads, derived from its config: one mapping, used by the
trainer and by ``switchnerf scene prepare`` so that a prepared store is the one train opens."""

from __future__ import annotations

from switchnerf.config import Config
from switchnerf.scene.store import StoreOptions
from switchnerf.train.evaluate import uses_right_half_protocol


def training_store_options(cfg: Config, scene) -> StoreOptions:
    """StoreOptions of a run of ``cfg`` on ``scene``: ``train.shard_rays``, ``train.seed``
    and the val left halves exactly when the Mega-NeRF eval protocol applies (it trains on
    them); no partition cells."""
    return StoreOptions(shard_rays=cfg.train.shard_rays, seed=cfg.train.seed,
                        val_left_halves=uses_right_half_protocol(scene, cfg))
