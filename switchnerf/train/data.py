"""What a training run reads, prepared before the trainer starts: the scene, its camera
table and its ray store.

Building a missing or stale ray store is an explicit step (:func:`prepare_training_data`),
called by ``switchnerf train`` and the demo; the :class:`~switchnerf.train.trainer.Trainer`
only opens a stream on a store that exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from switchnerf.config import Config
from switchnerf.scene.store import default_store_dir
from switchnerf.train import builder
from switchnerf.train.ray_store import training_store_options

__all__ = ["TrainingData", "prepare_training_data"]


@dataclass(frozen=True)
class TrainingData:
    """A loaded scene with its camera table (train, then val) and an opened ray store.

    scene_path: the descriptor or dataset folder the scene came from (recorded in the run).
    """

    scene_path: Path
    scene: object
    cameras: object
    store: object

    @property
    def fingerprint(self) -> str:
        """The scene's content fingerprint (``scene.store.scene_fingerprint``), as the
        store's manifest records it."""
        return self.store.manifest["fingerprint"]


def prepare_training_data(cfg: Config, scene_path: str | Path, store_dir: Path | None = None,
                          *, build: bool = True, progress: bool = True,
                          check_scene: Callable[[str], None] | None = None) -> TrainingData:
    """Load the scene and open its ray store for training with ``cfg``.

    store_dir: the store folder (default ``scene.store.default_store_dir``, where
    ``switchnerf scene prepare`` writes too). build: build the store first when it is
    missing, incomplete, stale or built with other options
    (:func:`~switchnerf.train.ray_store.training_store_options`, the same mapping
    ``scene prepare --config`` uses); without
    ``build``, a missing or stale store is an error (``StoreMissingError`` /
    ``StoreStaleError``). check_scene: called with the scene's fingerprint once the scene
    is loaded, before the store is opened or built; it raises to stop (``train --resume``
    checks the run's scene with it).
    """
    from switchnerf.scene.fingerprint import scene_fingerprint
    from switchnerf.scene.store import ensure_store, open_store

    scene_path = Path(scene_path)
    scene, cameras = builder.scene_and_cameras(scene_path)
    if check_scene is not None:
        check_scene(scene_fingerprint(scene))
    store_dir = Path(store_dir) if store_dir is not None else default_store_dir(scene)
    if build:
        store = ensure_store(scene, store_dir, training_store_options(cfg, scene),
                             progress=progress)
    else:
        store = open_store(store_dir, scene)
    return TrainingData(scene_path, scene, cameras, store)
