"""The shared coarse grid under the experts (``model.experts.shared_levels``): without it the
field is Switch-NeRF++ as before; with it the head reads the shared grid's features and the
gate-scaled expert features (checked against an independent torch composition, forward and
gradients), the shared table is counted, optimised with the tables and checkpointed."""

from __future__ import annotations

import math

import pytest
import torch
from test_train import TINY as TRAIN_SETS

from switchnerf.config import load_config
from switchnerf.encoding.experts import geometric_expert_specs
from switchnerf.errors import SwitchNerfError
from switchnerf.model import SwitchField
from switchnerf.model.activations import density_activation
from switchnerf.moe.expert_parallel import dense_parameters, expert_parameters
from switchnerf.ops.hash_encode_torch import hash_encode_reference
from switchnerf.ops.hash_levels import LevelTable
from switchnerf.train.builder import build_optimizer

TINY = [
    "model.experts.n_experts=4", "model.experts.n_levels=4", "model.experts.log2_hashmap_size=10",
    "model.experts.finest_resolution=64", "model.experts.coarsest_fraction=0.5",
    "model.routing.gate.n_levels=2", "model.routing.gate.log2_hashmap_size=8",
    "model.routing.gate.max_resolution=16", "model.routing.gate_hidden=8",
    "model.head.hidden=16", "model.head.color_hidden=16", "model.head.appearance_dim=4",
]
SHARED = ["model.experts.shared_levels=2", "model.experts.split_resolution=24",
          "model.experts.shared_log2_hashmap_size=13"]
"""Shared grid: 2 levels from 16 growing by sqrt(24 / 16) (resolutions 16 and 20, dense,
4,096 + 8,000 rows of a 2^13 table); experts: 2 levels each from 24 to 32, 40, 51, 64 (hashed, 1,024 rows)."""


def cfg_of(*sets):
    return load_config(None, TINY + list(sets))


def inputs(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=g)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return x, d, torch.randint(0, 3, (n,), generator=g)


def field_of(*sets, seed=0, randomise=True) -> SwitchField:
    torch.manual_seed(seed)
    field = SwitchField(cfg_of(*sets).model, n_images=3)
    if randomise:
        with torch.no_grad():
            for p in field.table_parameters():
                p.uniform_(-0.5, 0.5)
    return field


# ---------------------------------------------------------------------------- S = 0


def test_without_shared_levels_the_field_is_as_before():
    """shared_levels = 0 builds exactly the Switch-NeRF++ field: no shared module, the
    experts span every level from base_resolution, and the shared grid's other options
    change nothing, bit for bit (parameters drawn from the same seed, outputs)."""
    plain = field_of(randomise=False)
    inert = field_of("model.experts.split_resolution=40",
                     "model.experts.shared_log2_hashmap_size=5", randomise=False)
    assert plain.shared is None
    assert not any(k.startswith("shared") for k in plain.state_dict())
    ex = cfg_of().model.experts
    assert plain.experts.specs == tuple(geometric_expert_specs(
        4, base_resolution=16, finest_resolution=64, coarsest_fraction=0.5,
        log2_hashmap_size=10))
    assert plain.experts.n_levels == 4 and plain.head[0].in_features == 4 * 2
    assert plain.encoding_dim == ex.n_levels * ex.n_features_per_level
    a, b = plain.state_dict(), inert.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [id(p) for p in plain.table_parameters()] == [
        id(plain.experts.params), id(plain.router.encoding.params)]
    x, d, img = inputs()
    oa, ob = plain(x, d, img), inert(x, d, img)
    assert torch.equal(oa.sigma, ob.sigma) and torch.equal(oa.rgb, ob.rgb)


# ---------------------------------------------------------------------------- layout


def test_shared_grid_and_expert_levels_split_the_ladder():
    field = field_of(*SHARED, randomise=False)
    g = math.sqrt(24 / 16)
    shared = field.shared.levels
    assert shared.n_levels == 2
    assert shared.scale[0].tolist() == pytest.approx([15.0, 16 * g - 1], rel=1e-6)
    assert shared.resolution[0].tolist() == [16, 20]
    assert not shared.hashed.any()  # 4,096 and 8,000 rows fit the 2^13-row table
    # every expert starts at the split and ends at its own finest resolution
    experts = field.experts.levels
    assert field.experts.n_levels == 2
    assert experts.scale[:, 0].tolist() == pytest.approx([23.0] * 4)
    assert experts.scale[:, 1].tolist() == pytest.approx([31.0, 39.0, 50.0, 63.0], rel=1e-6)
    assert experts.hashed.all()
    assert field.head[0].in_features == (2 + 2) * 2 == field.encoding_dim


def test_parameter_count_holds_the_shared_table():
    field = field_of(*SHARED, randomise=False)
    shared_rows = 16**3 + 20**3
    expert_rows = 4 * 2 * 1024
    assert field.shared.params.numel() == shared_rows * 2
    assert field.experts.params.numel() == expert_rows * 2
    tables = field.table_parameters()
    assert [id(p) for p in tables] == [id(field.experts.params), id(field.shared.params),
                                       id(field.router.encoding.params)]
    assert id(field.shared.params) not in {id(p) for p in field.mlp_parameters()}
    plain = field_of(randomise=False)
    total = sum(p.numel() for p in field.parameters())
    plain_total = sum(p.numel() for p in plain.parameters())
    # the same MLPs (head width unchanged), other tables
    assert total - plain_total == (field.shared.params.numel() + field.experts.params.numel()
                                   - plain.experts.params.numel())
    assert sum(p.numel() for p in tables) + sum(
        p.numel() for p in field.mlp_parameters()) == total


# ---------------------------------------------------------------------------- numerics


def _reference_density(field, x, scale_mode):
    """sigma [M] by an independent composition: the torch hash encoding of a shared grid and
    of the experts, each from its closed-form level geometry, the gate-scaled expert
    features after the shared ones, the field's head."""
    shared_levels = LevelTable.for_grid(n_levels=2, n_features=2, log2_hashmap_size=13,
                                        base_resolution=16, per_level_scale=math.sqrt(24 / 16))
    specs = geometric_expert_specs(4, base_resolution=24, finest_resolution=64,
                                   coarsest_fraction=0.5, log2_hashmap_size=10)
    expert_levels = LevelTable.for_experts(specs, n_levels=2, n_features=2)
    gate = field.route(x)
    shared = hash_encode_reference(x, field.shared.params.view(-1, 2), None, shared_levels)
    feats = hash_encode_reference(x, field.experts.params.view(-1, 2), gate.expert_id,
                                  expert_levels)
    g = gate.gate_value
    factor = g if scale_mode == "product" else 1.0 + (g - g.detach())
    h = field.head(torch.cat([shared, feats * factor[:, None]], dim=-1))
    return density_activation("trunc_exp", h[:, 0])


@pytest.mark.parametrize("scale", ["product", "straight_through"])
def test_shared_encoding_equals_an_independent_composition(scale):
    field = field_of(*SHARED, f"model.routing.gate_scale={scale}",
                     "model.routing.gate_init=random", seed=3)
    x, _, _ = inputs(128, seed=1)
    params = list(field.parameters())
    got = field.density(x)
    want = _reference_density(field, x, scale)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    weights = torch.linspace(0.5, 1.5, x.shape[0])
    g_got = torch.autograd.grad((got * weights).sum(), params, allow_unused=True)
    g_want = torch.autograd.grad((want * weights).sum(), params, allow_unused=True)
    names = [n for n, _ in field.named_parameters()]
    checked = 0
    for name, a, b in zip(names, g_got, g_want):
        if a is None or b is None:
            assert a is None and b is None, name
            continue
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), name
        checked += 1
    assert field.shared.params.grad is None  # autograd.grad leaves .grad alone
    shared_grad = g_got[names.index("shared.params")]
    assert shared_grad.abs().sum() > 0 and checked >= 6
    # the gate learns through the scale of the expert part
    assert g_got[names.index("router.mlp.0.weight")].abs().sum() > 0


def test_without_grad_the_fused_head_gives_the_same_density():
    """Inference (the native fused MLP on the CPU when available) equals the training path."""
    field = field_of(*SHARED, seed=4)
    x, _, _ = inputs(64, seed=2)
    with torch.no_grad():
        fast = field.density(x)
    slow = field.density(x).detach()
    assert torch.allclose(fast, slow, rtol=1e-5, atol=1e-6)


def test_capacity_drop_zeroes_only_the_expert_part():
    field = field_of(*SHARED, "model.routing.capacity_factor=0.5", seed=5)
    field.train()
    x, d, img = inputs(200, seed=3)
    out = field(x, d, img)
    dropped = ~out.kept
    assert dropped.any() and out.kept.any()
    shared = field.shared(x[dropped])
    zeros = torch.zeros(shared.shape[0], field.experts.output_dim)
    h = field.head(torch.cat([shared, zeros], dim=-1))
    assert torch.allclose(out.sigma[dropped], density_activation("trunc_exp", h[:, 0]),
                          rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- training wiring


def test_optimiser_steps_the_shared_table_with_the_tables():
    cfg = cfg_of(*SHARED)
    field = field_of(*SHARED, seed=6)
    opt = build_optimizer(cfg, field)
    group0 = opt.param_groups[0]
    assert group0["lr"] == cfg.optim.lr_tables
    assert group0["params"][0] is field.experts.params  # dist_state's EXPERT_PARAM_INDEX
    assert any(p is field.shared.params for p in group0["params"])
    x, _, _ = inputs(64, seed=4)
    before = field.shared.params.detach().clone()
    field.density(x).sum().backward()
    opt.step()
    assert not torch.equal(before, field.shared.params.detach())
    state = opt.state_dict()["state"]
    assert state[0]["exp_avg"].numel() == field.experts.params.numel()


def test_lazy_table_adam_steps_the_shared_table_like_dense_adam(native):
    cfg = cfg_of(*SHARED)
    fields = [field_of(*SHARED, seed=7) for _ in range(2)]
    opts = [build_optimizer(cfg, fields[0]), build_optimizer(cfg, fields[1], lazy_tables=True)]
    assert opts[1].param_groups[0].get("lazy")
    assert any(p is fields[1].shared.params for p in opts[1].param_groups[0]["params"])
    for step in range(3):
        x, _, _ = inputs(48, seed=10 + step)
        for field, opt in zip(fields, opts):
            opt.zero_grad()
            field.density(x).sum().backward()
            opt.step()
    opts[1].flush()
    start = field_of(*SHARED, seed=7).shared.params.detach()
    dense, lazy = fields[0].shared.params.detach() - start, fields[1].shared.params.detach() - start
    # three steps of about lr_tables each; the lazy replay agrees to float32 drift
    assert dense.abs().max() > 1e-2
    assert torch.allclose(lazy, dense, rtol=1e-3, atol=2e-5)


def test_shared_table_is_a_dense_parameter_under_expert_parallelism():
    field = field_of(*SHARED, seed=8)
    x, _, _ = inputs(40, seed=5)
    with torch.no_grad():
        before = field.density(x)
    field.use_expert_parallel(rank=0, world_size=1)
    dense = {id(p) for p in dense_parameters(field)}
    assert id(field.shared.params) in dense
    assert id(field.shared.params) not in {id(p) for p in expert_parameters(field)}
    assert field.table_parameters()[0] is field.experts.local.params
    with torch.no_grad():
        assert torch.equal(field.density(x), before)


def test_checkpoint_round_trip_keeps_the_shared_grid(tmp_path):
    from switchnerf.train.checkpoint import newest_readable_checkpoint, save_checkpoint

    field = field_of(*SHARED, seed=9)
    save_checkpoint(tmp_path, 5, {"field": field.state_dict()}, keep_last=1)
    _, state = newest_readable_checkpoint(tmp_path)
    assert "shared.params" in state["field"]
    restored = field_of(*SHARED, seed=10, randomise=False)
    assert not torch.equal(restored.shared.params, field.shared.params)
    restored.load_state_dict(state["field"])
    x, d, img = inputs(32, seed=6)
    with torch.no_grad():
        assert torch.equal(restored(x, d, img).sigma, field(x, d, img).sigma)
    # a field without shared levels does not load it silently
    with pytest.raises(RuntimeError, match="shared.params"):
        field_of(seed=0, randomise=False).load_state_dict(state["field"])


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize("sets, message", [
    (["model.experts.shared_levels=-1"], "model.experts.shared_levels: must be >= 0, got -1"),
    (["model.experts.shared_levels=4"], "model.experts.shared_levels: must be < n_levels (4)"),
    (["model.experts.shared_levels=2", "model.experts.split_resolution=16"],
     "model.experts.split_resolution: must be > base_resolution (16)"),
    (["model.experts.shared_levels=2", "model.experts.split_resolution=40"],
     "model.experts.split_resolution: must be <= the coarsest expert's finest resolution (32)"),
    (["model.experts.shared_levels=two"], "model.experts.shared_levels: expected an integer"),
    (["model.experts.shared_log2_hashmap_size=40"],
     "model.experts.shared_log2_hashmap_size: must be in [3, 31], got 40"),
])
def test_bad_shared_settings_name_the_key(sets, message):
    with pytest.raises(SwitchNerfError) as info:
        cfg_of(*sets)
    text = str(info.value)
    assert "\n" not in text and message in text and text.startswith("--set: ")


TRAIN_TINY = ["model.experts.n_experts=4", *TRAIN_SETS]  # test_train's tiny cpu-demo run


def test_resume_with_a_shared_grid_reproduces_the_uninterrupted_run(tiny_scene, tmp_path):
    """The shared table and its Adam moments go through the trainer's checkpoint."""
    from pathlib import Path

    from switchnerf.train.data import prepare_training_data
    from switchnerf.train.trainer import Trainer

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "configs" / "cpu-demo.yaml", TRAIN_TINY)
    data = prepare_training_data(cfg, tiny_scene, tmp_path / "store", progress=False)
    n = 4
    straight = Trainer(cfg, data, tmp_path / "a", progress=False)
    initial = straight.renderer.field.shared.params.detach().clone()
    straight.train(max_steps=n)
    straight.close()
    first = Trainer(cfg, data, tmp_path / "b", progress=False)
    first.train(max_steps=n // 2)
    first.close()
    resumed = Trainer(cfg, data, tmp_path / "b", resume=True, progress=False)
    assert resumed.step == n // 2
    resumed.train(max_steps=n)
    resumed.close()
    a = straight.renderer.field.state_dict()
    b = resumed.renderer.field.state_dict()
    assert a.keys() == b.keys() and "shared.params" in a
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6), k
    assert not torch.equal(a["shared.params"], initial)  # the shared table trained
