"""A tiny trained-looking run for the viewer tests (built directly, no dataset reader).

Scene: a 2 x 2 x 1 box (world frame, z up) seen by 4 train and 1 val camera of 16 x 12
pixels around and above it, with small PNGs. Model: the tiny SwitchField of
tests/test_model_field.py with random hash tables (a colourful, non-blank field) and an
all-occupied occupancy grid. Saved with ``save_checkpoint`` + ``write_run_header`` and
loaded through ``load_run`` with ``scene_and_cameras`` patched to return this scene.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from switchnerf.config import load_config
from switchnerf.scene.cameras import CameraTable
from switchnerf.scene.types import ImageRecord, Scene
from switchnerf.train.builder import build_renderer
from switchnerf.train.checkpoint import save_checkpoint
from switchnerf.train.run import load_run, write_run_header
from switchnerf.video.paths import look_at

W, H = 16, 12
TINY = [
    "model.experts.n_experts=4", "model.experts.n_levels=4", "model.experts.log2_hashmap_size=10",
    "model.experts.finest_resolution=64", "model.experts.coarsest_fraction=0.5",
    "model.routing.gate.n_levels=2", "model.routing.gate.log2_hashmap_size=8",
    "model.routing.gate.max_resolution=16", "model.routing.gate_hidden=8",
    "model.head.hidden=16", "model.head.color_hidden=16", "model.head.appearance_dim=4",
    "sampler.grid_resolution=16", "sampler.steps_per_diagonal=48", "train.keep_last=1",
]


def make_scene(root: Path) -> Scene:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    f = 0.5 * H / np.tan(np.radians(25.0))
    frames: dict[str, list[ImageRecord]] = {"train": [], "val": []}
    for k in range(5):
        split = "val" if k == 4 else "train"
        a = 2 * np.pi * k / 5
        c2w = look_at((2.2 * np.cos(a), 2.2 * np.sin(a), 1.8), (0.0, 0.0, 0.3))
        path = root / f"img_{k}.png"
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)
        frames[split].append(ImageRecord(len(frames[split]), split, c2w, f, f, W / 2, H / 2, W, H,
                                         path))
    return Scene("tiny", root, "transforms", frames, np.array([[-1.0, -1.0, 0.0], [1.0, 1.0, 1.0]]),
                 (0.0, 1.0), partition_grid=(2, 2))


def make_run(tmp: Path, monkeypatch: pytest.MonkeyPatch):
    """Write the run folder and return ``load_run`` of it (scene loading patched)."""
    scene = make_scene(tmp / "scene")
    cams = CameraTable.from_scene(scene)
    monkeypatch.setattr("switchnerf.train.builder.scene_and_cameras",
                        lambda _path: (scene, cams))
    cfg = load_config(None, TINY)
    torch.manual_seed(0)
    renderer = build_renderer(cfg, scene, len(cams))
    field, grid = renderer.field, renderer.grid
    with torch.no_grad():
        for p in field.table_parameters():
            p.uniform_(-1.0, 1.0)
        field.head[-1].bias[0] += 4.0  # dense: density ~ e^3 per world unit
        field.color[-1].weight.mul_(30.0)  # saturated colours that vary in space
        grid.density.fill_(1.0)
        grid.binary.fill_(True)
    run_dir = tmp / "run"
    write_run_header(run_dir, cfg, tmp / "scene")
    save_checkpoint(run_dir, 7, {"step": 7, "field": field.state_dict(),
                                 "grid": grid.state_dict()}, keep_last=1)
    return load_run(run_dir)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
