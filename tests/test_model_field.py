"""SwitchField: routing, gate scaling, capacity dropping, colour path, background."""

import pytest
import torch

from switchnerf.config import ModelConfig, load_config
from switchnerf.model import SwitchField
from switchnerf.model.activations import trunc_exp


def tiny_cfg(n_experts=4, **routing) -> ModelConfig:
    cfg = load_config(None, [
        f"model.experts.n_experts={n_experts}", "model.experts.n_levels=4", "model.experts.log2_hashmap_size=10",
        "model.experts.finest_resolution=64", "model.experts.coarsest_fraction=0.5",
        "model.routing.gate.n_levels=2", "model.routing.gate.log2_hashmap_size=8",
        "model.routing.gate.max_resolution=16", "model.routing.gate_hidden=8",
        "model.head.hidden=16", "model.head.color_hidden=16", "model.head.appearance_dim=4",
    ] + [f"model.routing.{k}={v}" for k, v in routing.items()]).model
    return cfg


def inputs(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=g)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return x, d, torch.randint(0, 3, (n,), generator=g)


def _randomise(field):
    with torch.no_grad():
        for p in field.table_parameters():
            p.uniform_(-0.5, 0.5)


def test_forward_shapes_and_routing_consistency():
    torch.manual_seed(0)
    field = SwitchField(tiny_cfg(), n_images=3)
    _randomise(field)
    x, d, img = inputs()
    out = field(x, d, img)
    assert out.sigma.shape == (64,) and out.rgb.shape == (64, 3)
    assert out.probs.shape == (64, 4)
    assert torch.equal(out.expert_id, out.probs.argmax(-1))
    assert torch.allclose(out.gate_value, out.probs.max(-1).values)
    assert (out.sigma >= 0).all() and (out.rgb >= 0).all() and (out.rgb <= 1).all()


@pytest.mark.parametrize("scale", ["product", "straight_through"])
def test_density_is_head_of_gate_scaled_expert_features(scale):
    """product: the head sees g * features; straight_through: the features at full scale
    (forward value 1; the gate's gradient is tested in test_moe_gate_scale)."""
    torch.manual_seed(1)
    field = SwitchField(tiny_cfg(gate_scale=scale), n_images=3)
    _randomise(field)
    x, _, _ = inputs()
    gate = field.route(x)
    g = gate.gate_value[:, None] if scale == "product" else 1.0
    feats = field.experts.encode(x, gate.expert_id) * g
    raw = field.head(feats)[:, 0]
    assert torch.allclose(field.density(x), trunc_exp(raw - 1.0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scale", ["product", "straight_through"])
def test_gate_receives_gradient_through_gate_value(scale):
    """From a random start (a partition start feeds the gate's MLP no table features at
    first, so its table gets gradient only once the MLP has moved)."""
    torch.manual_seed(2)
    field = SwitchField(tiny_cfg(gate_scale=scale, gate_init="random"), n_images=3)
    _randomise(field)
    x, d, img = inputs()
    field(x, d, img).sigma.sum().backward()
    assert field.router.mlp[0].weight.grad.abs().sum() > 0
    assert field.router.encoding.params.grad.abs().sum() > 0
    assert field.experts.params.grad.abs().sum() > 0


def test_capacity_drops_get_zero_expert_features():
    torch.manual_seed(3)
    field = SwitchField(tiny_cfg(capacity_factor=0.5), n_images=3)
    _randomise(field)
    x, d, img = inputs(200)
    out = field(x, d, img)
    dropped = ~out.kept
    assert dropped.any() and out.kept.any()
    zero_head = field.head(torch.zeros(1, field.experts.output_dim))[:, 0]
    assert torch.allclose(out.sigma[dropped], trunc_exp(zero_head - 1.0).expand(int(dropped.sum())))
    cap = -(-0.5 * 200 // 4)
    assert torch.bincount(out.expert_id[out.kept], minlength=4).max() <= cap


def test_fixed_routing_uses_ground_cells():
    cfg = tiny_cfg(kind="fixed", fixed_grid=[2, 2])
    field = SwitchField(cfg, n_images=1)
    x = torch.tensor([[0.1, 0.1, 0.5], [0.9, 0.1, 0.2], [0.1, 0.9, 0.9], [0.9, 0.9, 0.0]])
    assert field.route(x).expert_id.tolist() == [0, 1, 2, 3]


def test_single_routing_sends_all_to_expert_zero():
    cfg = tiny_cfg(n_experts=1, kind="single")
    field = SwitchField(cfg, n_images=1)
    x, d, _ = inputs(10)
    out = field(x, d)
    assert out.expert_id.eq(0).all() and out.gate_value.eq(1).all()


def test_appearance_none_uses_mean_embedding():
    torch.manual_seed(4)
    field = SwitchField(tiny_cfg(), n_images=3)
    emb = field.appearance_for(None, 5, "cpu")
    assert torch.allclose(emb[0], field.appearance.weight.mean(0))


def test_background_depends_on_direction_only():
    field = SwitchField(tiny_cfg(), n_images=1)
    with torch.no_grad():
        for p in field.background.parameters():
            p.normal_()
    up = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    side = torch.tensor([[1.0, 0.0, 0.0]])
    bg = field.background(torch.cat([up, side]))
    assert bg.shape == (3, 3)
    assert torch.allclose(bg[0], bg[1]) and not torch.allclose(bg[0], bg[2])


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_batches(n):
    field = SwitchField(tiny_cfg(), n_images=1)
    x, d, _ = inputs(n)
    assert field(x, d).sigma.shape == (n,)
    assert field.density(x).shape == (n,)


def test_trunc_exp_gradient_is_clamped():
    x = torch.tensor([0.0, 20.0], requires_grad=True)
    trunc_exp(x).sum().backward()
    assert torch.allclose(x.grad, torch.exp(torch.tensor([0.0, 15.0])))
