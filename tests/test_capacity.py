"""Capacity dropping applies to training only: rendering (no gradients, eval mode) and
occupancy updates see every sample's expert features, so pixels do not depend on how many
rays are rendered together."""

from __future__ import annotations

import numpy as np
import torch
from test_model_field import _randomise, inputs, tiny_cfg

from switchnerf.config import load_config
from switchnerf.model import SwitchField
from switchnerf.render.box import BoxFrame
from switchnerf.render.occupancy import OccupancyGrid
from switchnerf.render.renderer import Renderer
from switchnerf.scene.types import RayBatch

BOX = np.array([[-1.0, -1.0, 0.0], [1.0, 1.0, 1.0]])


def _field(capacity_factor):
    torch.manual_seed(5)
    extra = {} if capacity_factor is None else {"capacity_factor": capacity_factor}
    field = SwitchField(tiny_cfg(**extra), n_images=3)
    _randomise(field)
    with torch.no_grad():  # dense enough that rays meet many samples of every expert
        field.head[-1].bias[0] = 2.0
    return field


def _rays(n=96, seed=0) -> RayBatch:
    g = torch.Generator().manual_seed(seed)
    origins = torch.cat([torch.rand(n, 2, generator=g) * 2 - 1, torch.full((n, 1), 2.0)], 1)
    target = torch.cat([torch.rand(n, 2, generator=g) * 2 - 1, torch.zeros(n, 1)], 1)
    dirs = torch.nn.functional.normalize(target - origins, dim=-1)
    return RayBatch(origins, dirs, torch.zeros(n), torch.full((n,), 10.0), None,
                    torch.randint(0, 3, (n,), generator=g))


def _render(field, chunk):
    cfg = load_config(None, ["sampler.grid_resolution=8", "sampler.steps_per_diagonal=64"])
    grid = OccupancyGrid(cfg.sampler.grid_resolution)
    grid.binary.fill_(True)  # every cell occupied
    return Renderer(field, grid, BoxFrame.from_bbox(BOX), cfg.sampler).render_chunked(
        _rays(), chunk=chunk)


def test_rendering_with_capacity_does_not_depend_on_the_chunk():
    field = _field(capacity_factor=0.5)
    field.eval()
    whole, parts = _render(field, chunk=96), _render(field, chunk=7)
    assert whole.expert_map.ge(0).all()  # every ray met samples
    # identical but for float rounding of differently sized matrix products (dropping
    # per chunk moved pixels by ~1e-4 and depths by ~1e-3 here)
    torch.testing.assert_close(whole.rgb, parts.rgb, rtol=0, atol=1e-6)
    torch.testing.assert_close(whole.depth, parts.depth, rtol=0, atol=1e-5)
    assert torch.equal(whole.expert_map, parts.expert_map)
    # and equal to rendering without any capacity limit
    free = _field(capacity_factor=None)
    free.eval()
    torch.testing.assert_close(_render(free, chunk=96).rgb, whole.rgb, rtol=0, atol=1e-6)


def test_capacity_drops_only_with_gradients_in_training_mode():
    field = _field(capacity_factor=0.5)
    x, _d, _img = inputs(200)
    field.train()
    assert not field.geometry(x).kept.all()  # a training pass drops
    with torch.no_grad():  # occupancy updates: training mode, no gradients
        assert field.geometry(x).kept.all()
    field.eval()
    assert field.geometry(x).kept.all()
    free = _field(capacity_factor=None)
    with torch.no_grad():
        assert torch.equal(field.density(x), free.density(x))
