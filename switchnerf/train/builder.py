"""Build the model pieces of a run from its config and scene (shared by train and load_run)."""

from __future__ import annotations

from pathlib import Path

import torch

from switchnerf.config import Config
from switchnerf.model import SwitchField
from switchnerf.render.box import BoxFrame
from switchnerf.render.occupancy import OccupancyGrid
from switchnerf.render.renderer import Renderer


def scene_and_cameras(scene_path: str | Path):
    """Load a scene (descriptor or dataset folder) and its camera table (train, then val)."""
    from switchnerf.scene.cameras import CameraTable
    from switchnerf.scene.load import load_scene

    scene = load_scene(scene_path)
    return scene, CameraTable.from_scene(scene)


def build_renderer(cfg: Config, scene, n_images: int, *, device="cpu") -> Renderer:
    """A freshly initialised SwitchField (drawn from the global CPU RNG), an empty occupancy
    grid and the scene's box frame, on ``device``, as one Renderer."""
    field = SwitchField(cfg.model, n_images=n_images).to(device)
    grid = OccupancyGrid(resolution=cfg.sampler.grid_resolution).to(device)
    box = BoxFrame.from_bbox(scene.bbox, device=device)
    return Renderer(field, grid, box, cfg.sampler)


def build_optimizer(cfg: Config, field: SwitchField) -> torch.optim.Optimizer:
    """Adam with one learning rate for hash tables and another (with weight decay) for MLPs."""
    o = cfg.optim
    groups = [
        {"params": field.table_parameters(), "lr": o.lr_tables, "weight_decay": 0.0},
        {"params": field.mlp_parameters(), "lr": o.lr_mlps, "weight_decay": o.weight_decay_mlps},
    ]
    kwargs = {"betas": (0.9, 0.99), "eps": o.eps}
    try:
        return torch.optim.Adam(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(groups, foreach=True, **kwargs)
