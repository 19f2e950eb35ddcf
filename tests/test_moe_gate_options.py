"""Gate options: straight-through scale, dense gate grid, partition start, gate optimiser group."""

import math

import pytest
import torch

from switchnerf.config import load_config
from switchnerf.errors import SwitchNerfError
from switchnerf.model import SwitchField
from switchnerf.model.activations import trunc_exp
from switchnerf.moe.gate import HashGate, dense_rows
from switchnerf.moe.partition_init import (
    assign_cells,
    init_partition_gate,
    partition_centroids,
    partition_grid,
)
from switchnerf.moe.routing import gate_scale
from switchnerf.train.builder import build_optimizer
from switchnerf.train.schedule import lr_factor

TINY = [
    "model.experts.n_levels=4", "model.experts.log2_hashmap_size=10",
    "model.experts.finest_resolution=64", "model.experts.coarsest_fraction=0.25",
    "model.routing.gate.n_levels=2", "model.routing.gate.log2_hashmap_size=8",
    "model.routing.gate.max_resolution=16", "model.routing.gate_hidden=8",
    "model.head.hidden=16", "model.head.color_hidden=16", "model.head.appearance_dim=4",
]


# The plain Switch-NeRF++ gate (product scale, hashed, random start, no separate gate
# learning rate); each test switches on the options it is about.
PLAIN_GATE = ["model.routing.gate_scale=product", "model.routing.gate_dense=false",
              "model.routing.gate_init=random", "model.routing.gate_lr_factor=1.0"]


def tiny(*sets, n_experts=4):
    return load_config(None, [f"model.experts.n_experts={n_experts}", *TINY, *PLAIN_GATE,
                              *sets])


# ---------------------------------------------------------------------------- gate scale
def test_straight_through_scale_is_one_with_the_product_gradient():
    gen = torch.Generator().manual_seed(0)
    g0 = torch.rand(50, generator=gen) * 0.9 + 0.05
    feats = torch.randn(50, 6, generator=gen)
    upstream = torch.randn(50, 6, generator=gen)

    g_st = g0.clone().requires_grad_()
    scale = gate_scale(g_st, "straight_through")
    assert torch.equal(scale, torch.ones(50))  # exactly 1, not merely close
    (scale[:, None] * feats * upstream).sum().backward()

    g_prod = g0.clone().requires_grad_()
    (gate_scale(g_prod, "product")[:, None] * feats * upstream).sum().backward()
    assert torch.allclose(g_st.grad, g_prod.grad, rtol=1e-6, atol=1e-7)
    assert torch.allclose(g_st.grad, (feats * upstream).sum(-1), rtol=1e-6, atol=1e-7)  # closed form

    with torch.no_grad():
        assert torch.equal(gate_scale(g0, "straight_through"), torch.ones(50))
    with pytest.raises(ValueError, match="mode"):
        gate_scale(g0, "sqrt")


def _randomise(field):
    with torch.no_grad():
        for p in field.table_parameters():
            p.uniform_(-0.5, 0.5)


def test_straight_through_field_feeds_unscaled_features_and_trains_the_gate():
    torch.manual_seed(1)
    field = SwitchField(tiny("model.routing.gate_scale=straight_through").model, n_images=3)
    _randomise(field)
    x = torch.rand(64, 3)
    gate = field.route(x)
    raw = field.head(field.experts.encode(x, gate.expert_id))[:, 0]
    sigma = field.density(x)
    assert torch.allclose(sigma, trunc_exp(raw - 1.0), rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # inference path: same values
        assert torch.allclose(field.density(x), sigma, rtol=1e-5, atol=1e-6)
    field.density(x).sum().backward()
    assert field.router.mlp[0].weight.grad.abs().sum() > 0
    assert field.router.encoding.params.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- dense gate
def test_dense_gate_has_no_hashed_level():
    cfg = tiny("model.routing.gate_dense=true", "model.routing.gate.n_levels=3",
               "model.routing.gate.max_resolution=40", "model.routing.gate.log2_hashmap_size=10")
    gate = HashGate(cfg.model.routing.gate, 4, 8, dense=True)
    levels = gate.encoding._levels
    assert not levels.hashed.any()
    res = int(levels.resolution[0, -1])
    assert dense_rows(cfg.model.routing.gate) == (res**3 + 7) // 8 * 8
    assert int(levels.size[0, -1]) == (res**3 + 7) // 8 * 8
    hashed = HashGate(cfg.model.routing.gate, 4, 8)  # 2^10 rows: the fine levels collide
    assert hashed.encoding._levels.hashed.any()
    # Every vertex of the finest level has its own row: distinct points one cell apart
    # never share a row.
    assert gate.encoding.params.numel() == 2 * int(levels.size.sum())


def test_dense_gate_too_large_names_the_key():
    cfg = tiny("model.routing.gate_dense=true", "model.routing.gate.max_resolution=2000",
               "model.routing.gate.n_levels=2")
    with pytest.raises(SwitchNerfError, match="model.routing.gate_dense"):
        SwitchField(cfg.model, n_images=1)


# ---------------------------------------------------------------------------- partition
def test_partition_grid_and_cells():
    assert partition_grid(8) == (2, 4) and partition_grid(6) == (2, 3) and partition_grid(1) == (1, 1)
    # 2 x 4 cells: the centre columns (1, 2) are nearest the centre and get the finest experts.
    cells = assign_cells([128, 181, 256, 362, 512, 724, 1024, 1448], (2, 4))
    central = {1, 2, 5, 6}
    assert {cells[e] for e in range(4, 8)} == central
    assert {cells[e] for e in range(4)} == {0, 3, 4, 7}
    assert sorted(cells) == list(range(8))


def test_partition_start_routes_by_nearest_ground_centroid():
    cfg = tiny("model.routing.gate_init=partition", n_experts=8)
    torch.manual_seed(2)
    field = SwitchField(cfg.model, n_images=1)
    x = torch.rand(4000, 3)
    ids = field.route(x).expert_id
    specs = [s.max_resolution for s in field.experts.specs]
    cells = assign_cells(specs, (2, 4))
    col = (x[:, 0] * 4).floor().clamp(max=3).long()
    row = (x[:, 1] * 2).floor().clamp(max=1).long()
    want_cell = row * 4 + col
    got_cell = torch.tensor(cells)[ids]
    assert (got_cell == want_cell).float().mean() > 0.999  # exact up to points on boundaries
    # Independent of height, and the same without gradients (the fused inference path).
    x2 = x.clone()
    x2[:, 2] = torch.rand(4000)
    assert torch.equal(field.route(x2).expert_id, ids)
    with torch.no_grad():
        assert torch.equal(field.route(x).expert_id, ids)


def test_partition_start_margin_at_cell_centres():
    centroids = partition_centroids((2, 4))
    mlp = torch.nn.Sequential(torch.nn.Linear(7, 8), torch.nn.ReLU(),
                              torch.nn.Linear(8, 8, bias=False))
    init_partition_gate(mlp, centroids, margin=4.0)
    u = torch.cat([torch.zeros(8, 4), centroids, torch.zeros(8, 1)], -1)  # hash feats 0
    logits = mlp(u)
    top = logits.topk(2, dim=-1)
    assert torch.equal(top.indices[:, 0], torch.arange(8))
    assert torch.allclose(top.values[:, 0] - top.values[:, 1], torch.full((8,), 4.0), atol=1e-4)
    # The closed form beta * (2 u.c - |c|^2), beta = margin / d_min^2 (d_min = 0.5 here).
    beta = 4.0 / 0.25
    ref = beta * (2 * centroids @ centroids.T - centroids.pow(2).sum(-1)[None, :])
    assert torch.allclose(logits, ref, atol=1e-4)


def test_partition_needs_hidden_units():
    with pytest.raises(SwitchNerfError, match="model.routing.gate_hidden"):
        SwitchField(tiny("model.routing.gate_init=partition", "model.routing.gate_hidden=4").model,
                    n_images=1)


@pytest.mark.parametrize("key,value", [("gate_scale", "sqrt"), ("gate_init", "kmeans"),
                                       ("gate_lr_factor", "-1"), ("gate_eps", "0"),
                                       ("gate_init_sharpness", "0")])
def test_bad_gate_options_name_the_key(key, value):
    with pytest.raises(SwitchNerfError, match=f"model.routing.{key}"):
        SwitchField(tiny(f"model.routing.{key}={value}").model, n_images=1)


# ---------------------------------------------------------------------------- optimiser
def _ids(params):
    return sorted(id(p) for p in params)


def test_optimizer_without_gate_settings_keeps_two_groups():
    cfg = tiny()
    field = SwitchField(cfg.model, n_images=2)
    opt = build_optimizer(cfg, field)
    assert len(opt.param_groups) == 2
    assert _ids(opt.param_groups[0]["params"]) == _ids(field.table_parameters())


def test_gate_group_follows_the_schedule_with_its_own_eps():
    cfg = tiny("model.routing.gate_lr_factor=0.1", "model.routing.gate_eps=1.0e-8")
    field = SwitchField(cfg.model, n_images=2)
    opt = build_optimizer(cfg, field)
    assert len(opt.param_groups) == 4
    table, mlp = field.gate_parameters()
    assert _ids(opt.param_groups[2]["params"]) == _ids(table)
    assert _ids(opt.param_groups[3]["params"]) == _ids(mlp)
    every = [p for g in opt.param_groups for p in g["params"]]
    assert _ids(every) == _ids(field.parameters())  # each parameter exactly once
    assert opt.param_groups[2]["eps"] == 1e-8 and opt.param_groups[0]["eps"] == cfg.optim.eps
    # The trainer sets groups 0 and 1 from the schedule; the gate groups follow at the step.
    o = cfg.optim
    f = lr_factor(5, warmup_steps=o.warmup_steps, max_steps=100, final_factor=o.final_lr_factor)
    opt.param_groups[0]["lr"] = o.lr_tables * f
    opt.param_groups[1]["lr"] = o.lr_mlps * f
    x = torch.rand(32, 3)
    field.density(x).sum().backward()
    before = field.router.encoding.params.detach().clone()
    opt.step()
    assert math.isclose(opt.param_groups[2]["lr"], 0.1 * o.lr_tables * f, rel_tol=1e-12)
    assert math.isclose(opt.param_groups[3]["lr"], 0.1 * o.lr_mlps * f, rel_tol=1e-12)
    # Adam's first step moves each entry by lr * g / (|g| + eps): at most the gate's lr.
    step = (field.router.encoding.params.detach() - before).abs().max()
    assert 0 < step <= 0.1 * o.lr_tables * f * (1 + 1e-5)
    # Checkpoints: the follow settings are saved and restored with the optimiser.
    again = build_optimizer(cfg, field)
    again.load_state_dict(opt.state_dict())
    assert again.param_groups[2]["lr_ratio"] == 0.1 and again.param_groups[3]["lr_follows"] == 1
