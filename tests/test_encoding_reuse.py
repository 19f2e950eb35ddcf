"""A training step encodes each sample once: the pass with gradients reuses the pruning
pass's routing and grid features (``hash_encode_given``, ``SwitchField.geometry(x,
encoding)``, ``PackedSamples.source_index``) with the same values and gradients."""

from __future__ import annotations

import pytest
import torch

from switchnerf.config import load_config
from switchnerf.model.field import SwitchField
from switchnerf.ops.hash_encode import hash_encode, hash_encode_given
from switchnerf.ops.hash_encode_torch import hash_encode_reference
from switchnerf.ops.hash_levels import GridSpec, LevelTable
from switchnerf.render.occupancy import OccupancyGrid
from switchnerf.render.sampler import march_rays


def _levels() -> LevelTable:
    specs = [GridSpec(4, 10, max_resolution=64.0), GridSpec(2, 12, max_resolution=256.0)]
    return LevelTable.for_experts(specs, n_levels=5, n_features=2)


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("with_experts", [True, False])
def test_given_encoding_has_the_encodings_value_and_table_gradient(backend, with_experts,
                                                                   monkeypatch):
    if backend == "native":
        pytest.importorskip("switchnerf.ops").load_native()
    else:  # the reference's backward: the encoding recomputed with gradients
        monkeypatch.setattr("switchnerf.ops.hash_encode._select_backend",
                            lambda x, table: hash_encode_reference)
    gen = torch.Generator().manual_seed(3)
    levels = _levels()
    x = torch.rand(300, 3, generator=gen)
    eid = torch.randint(0, 2, (300,), generator=gen) if with_experts else None
    table = (torch.rand(levels.n_rows, 2, generator=gen) - 0.5).requires_grad_()
    with torch.no_grad():
        features = hash_encode(x, table, eid, levels)
    out = hash_encode_given(x, table, eid, levels, features)
    assert torch.equal(out, features)
    grad = torch.randn(out.shape, generator=gen)
    (g_given,) = torch.autograd.grad(out, table, grad)
    (g_ref,) = torch.autograd.grad(hash_encode_reference(x, table, eid, levels), table, grad)
    torch.testing.assert_close(g_given, g_ref, rtol=1e-5, atol=1e-5)


def test_given_encoding_checks_its_inputs():
    levels = _levels()
    table = torch.zeros(levels.n_rows, 2, requires_grad=True)
    with pytest.raises(ValueError, match="features have shape"):
        hash_encode_given(torch.rand(4, 3), table, None, levels, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="x requires grad"):
        hash_encode_given(torch.rand(4, 3, requires_grad=True), table, None, levels,
                          torch.zeros(4, levels.output_dim))


METHODS = {
    "switchnerf++": [],
    "switchnerf++ frozen gate": [],
    "fixed-grid": ["model.routing.kind=fixed", "model.routing.fixed_grid=[2, 4]",
                   "model.experts.shared_levels=0"],
    "single-grid": ["model.experts.n_experts=1", "model.routing.kind=single",
                    "model.experts.shared_levels=0"],
}


def _small_field(method: str) -> SwitchField:
    sets = ["model.experts.hashmap_size=4096", "model.experts.shared_log2_hashmap_size=14",
            *METHODS[method]]
    torch.manual_seed(0)
    field = SwitchField(load_config("configs/cpu-demo.yaml", sets).model, n_images=4)
    with torch.no_grad():  # features of a trained size: the gate and head see them
        for p in field.table_parameters():
            p.uniform_(-0.3, 0.3)
    if method.endswith("frozen gate"):
        field.set_gate_learning(False)
    return field.train()


@pytest.mark.parametrize("method", list(METHODS))
def test_geometry_from_the_pruning_pass_equals_geometry_again(method):
    field = _small_field(method)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2000, 3, generator=gen)
    keep = torch.randperm(2000, generator=gen)[:700].sort().values
    with torch.no_grad():
        encoding = field.geometry(x).encoding.take(keep)
    params = [p for p in field.parameters() if p.requires_grad]
    results = []
    for enc in (None, encoding):
        g = field.geometry(x[keep], enc)
        loss = (g.sigma * torch.linspace(0.0, 1.0, len(keep))).sum() + g.geo.square().sum()
        if g.gate.probs.requires_grad:
            loss = loss + g.gate.probs[:, 0].sum()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        results.append((g, grads))
    (g0, grads0), (g1, grads1) = results
    assert torch.equal(g0.gate.expert_id, g1.gate.expert_id)
    torch.testing.assert_close(g1.sigma, g0.sigma, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g1.geo, g0.geo, rtol=1e-5, atol=1e-6)
    assert any(gr is not None and gr.abs().sum() > 0 for gr in grads0)
    for a, b in zip(grads0, grads1):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_march_reports_where_the_kept_samples_stood():
    grid = OccupancyGrid(4)
    grid.binary.fill_(True)
    gen = torch.Generator().manual_seed(2)
    o = torch.rand(64, 3, generator=gen) * 0.2
    d = torch.nn.functional.normalize(torch.rand(64, 3, generator=gen) + 0.1, dim=-1)
    near, far = torch.zeros(64), torch.full((64,), 3.0)
    seen = {}

    def sigma_fn(t0, t1, ri):
        seen["t0"] = t0.clone()
        return 40.0 * ((t0 * 7).sin() > 0.3).float()

    pruned = march_rays(o, d, near, far, grid, step_size=0.05, sigma_fn=sigma_fn,
                        alpha_thre=0.01, early_stop_eps=1e-3)
    plain = march_rays(o, d, near, far, grid, step_size=0.05)
    assert plain.source_index is None
    assert 0 < len(pruned) < len(plain)
    assert torch.equal(seen["t0"][pruned.source_index], pruned.t_starts)
    assert torch.equal(plain.t_starts[pruned.source_index], pruned.t_starts)


@pytest.mark.parametrize("method", ["switchnerf++", "fixed-grid"])
def test_training_render_reuses_the_pruning_pass_with_the_same_result(method, monkeypatch):
    """render_rays with gradients and pruning: rgb and every parameter gradient equal with
    and without the reuse (the pass with gradients then encodes the kept samples again)."""
    import numpy as np

    from switchnerf.render.box import BoxFrame
    from switchnerf.render.renderer import Renderer
    from switchnerf.scene.types import RayBatch

    field = _small_field(method)
    with torch.no_grad():  # dense enough that the pruning drops samples behind surfaces
        field.head[-1].bias[0] = 3.0
    cfg = load_config(None, ["sampler.grid_resolution=8", "sampler.steps_per_diagonal=64"])
    grid = OccupancyGrid(cfg.sampler.grid_resolution)
    grid.binary.fill_(True)
    renderer = Renderer(field, grid, BoxFrame.from_bbox(np.array([[-1.0, -1.0, 0.0],
                                                                  [1.0, 1.0, 1.0]])),
                        cfg.sampler)
    g = torch.Generator().manual_seed(4)
    n = 64
    origins = torch.cat([torch.rand(n, 2, generator=g) * 2 - 1, torch.full((n, 1), 2.0)], 1)
    target = torch.cat([torch.rand(n, 2, generator=g) * 2 - 1, torch.zeros(n, 1)], 1)
    rays = RayBatch(origins, torch.nn.functional.normalize(target - origins, dim=-1),
                    torch.zeros(n), torch.full((n,), 10.0), None,
                    torch.randint(0, 4, (n,), generator=g))
    params = [p for p in field.parameters() if p.requires_grad]
    weight = torch.rand(n, 3, generator=g)
    calls = []
    real_encode = type(field.experts).encode

    def counting_encode(self, x, expert_id, given=None):
        calls.append((len(x), given is not None))
        return real_encode(self, x, expert_id, given)

    monkeypatch.setattr(type(field.experts), "encode", counting_encode)
    results = []
    for reuse in (False, True):
        monkeypatch.setattr(SwitchField, "reuses_encoding", property(lambda self, r=reuse: r))
        calls.clear()
        out = renderer.render_rays(rays, stratified=True,
                                   generator=torch.Generator().manual_seed(9))
        # the pruning pass encodes every marched sample, the second pass the kept ones
        # (reusing the first pass's features when allowed)
        assert [given for _, given in calls] == [False, reuse]
        assert 0 < calls[1][0] < calls[0][0]
        grads = torch.autograd.grad((out.rgb * weight).sum() + out.opacity.sum(), params,
                                    allow_unused=True)
        results.append((out, grads))
    (a, grads_a), (b, grads_b) = results
    torch.testing.assert_close(b.rgb, a.rgb, rtol=1e-5, atol=1e-6)
    assert torch.equal(a.samples.expert_id, b.samples.expert_id)
    for ga, gb in zip(grads_a, grads_b):
        assert (ga is None) == (gb is None)
        if ga is not None:
            torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-6)
