"""Shared fixtures.

``tiny_run``: a small trained-looking run folder that ``switchnerf.train.run.load_run``
loads, built without the trainer or the scene readers so that render/export tests do not
depend on them:

- scene: world box [-1, 1] x [-1, 1] x [0, 1] (z up); 6 train + 2 val cameras of 32 x 24
  pixels on a ring (radius 2.5, height 1.5) looking at the blob centre; tiny PNGs on disk;
- field: a tiny SwitchField (4 experts, 4 levels, 2^10 tables) whose density is fitted to a
  known dense sphere (centre ``BLOB_CENTER``, radius ``BLOB_RADIUS``, world units; density
  ``BLOB_DENSITY`` inside, 0 outside); the gate is randomised and frozen so that several
  experts own parts of the blob;
- occupancy grid updated from that density; one checkpoint written with ``save_checkpoint``
  and a header with ``write_run_header``.

The scene is handed to ``load_run`` by monkeypatching
``switchnerf.train.builder.scene_and_cameras`` (the run's scene.json points at the folder
of PNGs, which is not a dataset a reader understands).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

BLOB_CENTER = (0.0, 0.0, 0.4)
BLOB_RADIUS = 0.35
BLOB_DENSITY = 200.0
BOX = np.array([[-1.0, -1.0, 0.0], [1.0, 1.0, 1.0]])
TINY_W, TINY_H = 32, 24
FIT_STEPS = 150

TINY_SETS = [
    "model.experts.n_experts=4", "model.experts.n_levels=4", "model.experts.log2_hashmap_size=10",
    "model.experts.finest_resolution=64", "model.experts.coarsest_fraction=0.5",
    "model.routing.gate.n_levels=2", "model.routing.gate.log2_hashmap_size=8",
    "model.routing.gate.max_resolution=16", "model.routing.gate_hidden=8",
    "model.head.hidden=16", "model.head.color_hidden=16", "model.head.appearance_dim=4",
    "sampler.grid_resolution=32", "sampler.steps_per_diagonal=128",
]


@dataclass
class TinyRun:
    """What ``tiny_run`` yields: the run folder and the in-memory scene it stands for."""

    run_dir: Path
    scene: object
    n_train: int


def _look_at(eye, target) -> np.ndarray:
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    fwd = target - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, -fwd, eye
    return c2w


def _make_scene(root: Path):
    import imageio.v3 as iio

    from switchnerf.scene.types import ImageRecord, Scene

    f = 0.5 * TINY_H / math.tan(math.radians(50.0) / 2)
    rng = np.random.default_rng(0)
    frames: dict[str, list] = {"train": [], "val": []}
    for k in range(8):
        split = "train" if k < 6 else "val"
        a = 2 * math.pi * (k + 0.5 * (split == "val")) / 6
        c2w = _look_at((2.5 * math.cos(a), 2.5 * math.sin(a), 1.5), BLOB_CENTER)
        path = root / split / f"{k:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, rng.integers(0, 255, (TINY_H, TINY_W, 3), dtype=np.uint8))
        frames[split].append(ImageRecord(len(frames[split]), split, c2w, f, f, TINY_W / 2,
                                         TINY_H / 2, TINY_W, TINY_H, path))
    return Scene(name="tiny", root=root, format="transforms", frames=frames, bbox=BOX.copy(),
                 altitude_range=(0.0, 1.0))


def blob_density(world: torch.Tensor) -> torch.Tensor:
    """The fitted target: BLOB_DENSITY inside the sphere, 0 outside. world [M, 3] -> [M]."""
    d = torch.linalg.norm(world - torch.tensor(BLOB_CENTER, dtype=world.dtype), dim=-1)
    return torch.where(d < BLOB_RADIUS, torch.full_like(d, BLOB_DENSITY), torch.zeros_like(d))


def _fit_field(cfg, n_images: int):
    from switchnerf.model import SwitchField

    torch.manual_seed(0)
    field = SwitchField(cfg.model, n_images=n_images)
    with torch.no_grad():  # a gate with structure: several experts share the blob
        field.router.encoding.params.uniform_(-1.0, 1.0)
    params = [field.experts.params] + list(field.head.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    lo, ext = torch.tensor(BOX[0], dtype=torch.float32), torch.tensor(BOX[1] - BOX[0], dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    for _ in range(FIT_STEPS):
        unit = torch.rand(1024, 3, generator=gen)  # [M, 3] unit cube
        target = blob_density(lo + unit * ext)
        loss = torch.mean((torch.log1p(field.density(unit)) - torch.log1p(target)) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    field.eval()
    return field


@pytest.fixture(scope="session")
def _tiny_run_built(tmp_path_factory):
    from switchnerf.config import load_config
    from switchnerf.render import BoxFrame, Renderer
    from switchnerf.render.occupancy import OccupancyGrid
    from switchnerf.train.checkpoint import save_checkpoint
    from switchnerf.train.run import write_run_header

    root = tmp_path_factory.mktemp("tiny_scene")
    scene = _make_scene(root / "data")
    cfg = load_config(None, TINY_SETS)
    n_images = sum(len(v) for v in scene.frames.values())
    field = _fit_field(cfg, n_images)
    grid = OccupancyGrid(resolution=cfg.sampler.grid_resolution)
    box = BoxFrame.from_bbox(scene.bbox)
    with torch.no_grad():
        grid.update(field.density, step=0, step_size=Renderer(field, grid, box, cfg.sampler).step_size,
                    n_samples_per_cell=4, generator=torch.Generator().manual_seed(0))
    run_dir = root / "run"
    write_run_header(run_dir, cfg, scene.root)
    save_checkpoint(run_dir, 250, {"step": 250, "field": field.state_dict(),
                                   "grid": grid.state_dict()}, keep_last=1)
    return TinyRun(run_dir, scene, len(scene.images("train")))


@pytest.fixture
def tiny_run(_tiny_run_built, monkeypatch) -> TinyRun:
    """A loadable tiny run (see the module docstring); ``load_run(tiny_run.run_dir)`` works."""
    from switchnerf.scene.cameras import CameraTable
    from switchnerf.train import builder

    scene = _tiny_run_built.scene
    monkeypatch.setattr(builder, "scene_and_cameras",
                        lambda _path: (scene, CameraTable.from_scene(scene)))
    return _tiny_run_built


@pytest.fixture(scope="session")
def native():
    """The native ops, built once per session (and cached on disk across sessions)."""
    from switchnerf.ops import NativeUnavailableError, load_native

    try:
        return load_native()
    except NativeUnavailableError as exc:
        if os.environ.get("SWITCHNERF_BACKEND", "").lower() == "native":
            raise
        pytest.skip(f"native ops unavailable: {exc}")


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory) -> Path:
    """A synthesized tinycity dataset, once per session (the training tests' scene)."""
    from switchnerf.scene.synth.write import synthesize

    root = tmp_path_factory.mktemp("tinycity") / "data"
    synthesize("tinycity", root, seed=0, progress=False)
    return root
