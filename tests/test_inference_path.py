"""The no-gradient render path: front-to-back evaluation, the fused MLP op, the gate's
top-1 from logits. Each is checked against the training-time (torch, two-pass) path."""


import pytest
import torch

from switchnerf.ops.mlp import GroupedMLP, apply_mlp, apply_mlp_shared, make_mlp
from switchnerf.render.composite import packed_info
from switchnerf.render.front_to_back import evaluate_front_to_back
from switchnerf.render.sampler import prune_invisible


def _packed(n_rays: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 40, (n_rays,), generator=g)
    ray_indices = torch.repeat_interleave(torch.arange(n_rays), counts)
    starts, _ = packed_info(ray_indices, n_rays)
    rank = torch.arange(len(ray_indices)) - starts[ray_indices]
    t_starts = 0.1 * rank.float() + 0.05 * torch.rand(len(ray_indices), generator=g)
    t_ends = t_starts + 0.02 + 0.1 * torch.rand(len(ray_indices), generator=g)
    # densities spanning transparent to opaque, so every rule below decides something
    sigma = torch.exp(torch.empty(len(ray_indices)).uniform_(-8.0, 5.0, generator=g))
    return t_starts, t_ends, ray_indices, sigma


@pytest.mark.parametrize("alpha_thre,eps", [(0.0, 1e-4), (1e-3, 1e-4), (1e-2, 1e-2), (0.0, 0.0)])
@pytest.mark.parametrize("rounds", [(8, 4, 4, 8, 16), (1,), (3, 7)])
def test_front_to_back_keeps_what_prune_invisible_keeps(alpha_thre, eps, rounds):
    n = 300
    t_starts, t_ends, ray_indices, sigma = _packed(n, seed=7)
    calls = []

    def fn(idx):
        calls.append(idx.clone())
        return sigma[idx], {"double": 2 * sigma[idx], "rows": torch.stack([idx, idx], 1)}

    keep, sig, extras = evaluate_front_to_back(fn, t_starts, t_ends, ray_indices, n,
                                               alpha_thre=alpha_thre, early_stop_eps=eps,
                                               round_sizes=rounds)
    expect = prune_invisible(ray_indices, t_starts, t_ends, n,
                             sigma_fn=lambda ts, te, ri: sigma_of(ts, t_starts, sigma),
                             alpha_thre=alpha_thre, early_stop_eps=eps)
    kept_t = t_starts[keep]
    assert torch.equal(kept_t, expect.t_starts)
    assert torch.equal(sig, sigma[keep]) and torch.equal(extras["double"], 2 * sigma[keep])
    assert torch.equal(extras["rows"][:, 0], keep)
    evaluated = torch.cat(calls)
    assert evaluated.unique().numel() == evaluated.numel()  # no sample evaluated twice
    if eps > 0:  # rays stop: fewer evaluations than samples
        assert evaluated.numel() < len(ray_indices)
    else:
        assert evaluated.numel() == len(ray_indices)


def sigma_of(ts, all_ts, sigma):
    """sigma of the samples whose t_start is ts (t_starts are unique in _packed)."""
    order = torch.argsort(all_ts)
    pos = torch.searchsorted(all_ts[order], ts)
    return sigma[order[pos]]


def test_front_to_back_empty_and_bad_rounds():
    t = torch.zeros(0)
    keep, sig, extras = evaluate_front_to_back(lambda i: (t[i], {}), t, t,
                                               torch.zeros(0, dtype=torch.long), 5,
                                               alpha_thre=0.0, early_stop_eps=1e-4)
    assert keep.numel() == 0 and sig.numel() == 0 and extras == {}
    with pytest.raises(ValueError, match="round_sizes"):
        evaluate_front_to_back(lambda i: (t[i], {}), t, t, torch.zeros(0, dtype=torch.long), 5,
                               alpha_thre=0.0, early_stop_eps=1e-4, round_sizes=(4, 0))


@pytest.mark.parametrize("shape", [(32, 64, 16, True), (15, 32, 8, False), (39, 64, 3, True),
                                   (7, 20, 5, True), (5, 96, 70, False)])
def test_fused_mlp_matches_torch(native, shape):
    n_in, hidden, n_out, bias = shape
    torch.manual_seed(0)
    mlp = make_mlp(n_in, hidden, n_out, 1, bias_out=bias)
    x = torch.randn(1001, n_in)
    scale = torch.rand(1001)
    with torch.no_grad():
        ref = mlp(x * scale[:, None])
        out = apply_mlp(mlp, x, scale)
        plain = apply_mlp(mlp, x[:, :].t().contiguous().t())  # non-contiguous input
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)
    assert torch.allclose(plain, mlp(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("widths", [(12, 20, 64, 16), (4, 3, 32, 8), (1, 30, 20, 5), (9, 6, 96, 70)])
@pytest.mark.parametrize("scaled", [True, False])
def test_fused_mlp_prefix_columns_match_concatenation(native, widths, scaled):
    n_pre, n_own, hidden, n_out = widths
    torch.manual_seed(3)
    mlp = make_mlp(n_pre + n_own, hidden, n_out, 1)
    pre, x = torch.randn(1003, n_pre), torch.randn(1003, n_own)
    scale = torch.rand(1003) if scaled else None
    with torch.no_grad():
        own = x if scale is None else x * scale[:, None]
        ref = mlp(torch.cat([pre, own], dim=-1))  # only the trailing columns are scaled
        out = apply_mlp(mlp, x, scale, prefix=pre)
        strided = apply_mlp(mlp, x, scale, prefix=torch.cat([pre, pre], 1)[:, :n_pre])
        empty = apply_mlp(mlp, x[:0], None if scale is None else scale[:0], prefix=pre[:0])
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)
    assert torch.allclose(strided, ref, atol=1e-5, rtol=1e-5)
    assert empty.shape == (0, n_out)
    with pytest.raises(RuntimeError, match="x_pre"):
        native.mlp_forward(x, None, mlp[0].weight.detach(), None, mlp[2].weight.detach(), None,
                           None, None, pre[:5].contiguous())  # rows differ from x's


def test_grouped_mlp_over_successive_calls_equals_one_concatenation(native):
    torch.manual_seed(4)
    mlp = make_mlp(15 + 20, 64, 3, 1)
    shared = torch.randn(60, 20)
    x, index = torch.randn(900, 15), torch.randint(0, 60, (900,))
    with torch.no_grad():
        ref = mlp(torch.cat([x, shared[index]], dim=-1))
        head = GroupedMLP(mlp, shared, 15)
        parts = [head(x[a:b], index[a:b]) for a, b in ((0, 400), (400, 401), (401, 900))]
        with pytest.raises(ValueError, match="columns"):
            head(x[:, :14], index)
    assert head.hidden_bias is not None  # the per-group product is made once
    assert torch.allclose(torch.cat(parts), ref, atol=1e-5, rtol=1e-5)
    # rows read in place from a column slice of a wider tensor (the head's output h[:, 1:])
    wide = torch.cat([torch.randn(900, 1), x], 1)
    rows = torch.randint(0, 900, (300,))
    with torch.no_grad():
        picked = head(wide[:, 1:], index[rows], rows)
    torch_path = head(wide[:, 1:], index[rows], rows)  # with gradients: the torch layers
    assert torch.allclose(picked, ref[rows], atol=1e-5, rtol=1e-5)
    assert torch.allclose(torch_path, ref[rows], atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="x_index"):
        native.mlp_forward(x, None, mlp[0].weight.detach()[:, :15].contiguous(), None,
                           mlp[2].weight.detach(), None, head.hidden_bias, index[:2],
                           None, torch.tensor([0, 900]))


def test_front_to_back_finish_sees_each_rounds_visible_samples():
    n = 200
    t_starts, t_ends, ray_indices, sigma = _packed(n, seed=11)

    def fn(idx):
        return sigma[idx], {"geo": torch.stack([idx.float(), sigma[idx]], 1)}

    seen = []

    def finish(idx_vis, vis, ex):
        geo = ex["geo"].index_select(0, vis)  # the round's extras, all its samples
        assert torch.equal(geo[:, 0].long(), idx_vis)
        seen.append(idx_vis)
        return {"twice": 2 * geo[:, 1]}

    keep, sig, out = evaluate_front_to_back(fn, t_starts, t_ends, ray_indices, n,
                                            alpha_thre=1e-3, early_stop_eps=1e-4, finish=finish)
    plain, _, _ = evaluate_front_to_back(fn, t_starts, t_ends, ray_indices, n,
                                         alpha_thre=1e-3, early_stop_eps=1e-4)
    assert torch.equal(keep, plain) and set(out) == {"twice"}
    assert torch.equal(sig, sigma[keep])
    assert torch.equal(out["twice"], 2 * sigma[keep])  # reordered with the samples
    assert torch.equal(torch.cat(seen).sort().values, keep)


@pytest.mark.parametrize("shape", [(15, 17, 64, 3), (4, 9, 32, 8), (6, 2, 20, 5), (3, 5, 48, 70)])
def test_fused_mlp_shared_columns_match_concatenation(native, shape):
    n_own, n_shared, hidden, n_out = shape
    torch.manual_seed(1)
    mlp = make_mlp(n_own + n_shared, hidden, n_out, 1)
    x = torch.randn(997, n_own)
    shared = torch.randn(40, n_shared)
    index = torch.randint(0, 40, (997,))
    with torch.no_grad():
        ref = mlp(torch.cat([x, shared[index]], dim=-1))
        out = apply_mlp_shared(mlp, x, shared, index)
        empty = apply_mlp_shared(mlp, x[:0], shared, index[:0])
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)
    assert empty.shape == (0, n_out)


def test_fused_mlp_hidden_bias_arguments_checked(native):
    w1, w2 = torch.zeros(16, 4), torch.zeros(3, 16)
    x = torch.zeros(5, 4)
    with pytest.raises(RuntimeError, match="bias_index"):
        native.mlp_forward(x, None, w1, None, w2, None, torch.zeros(2, 16),
                           torch.tensor([0, 1, 2, 0, 1]))  # row 2 does not exist
    with pytest.raises(RuntimeError, match="both or neither"):
        native.mlp_forward(x, None, w1, None, w2, None, torch.zeros(2, 16), None)
    with pytest.raises(RuntimeError, match="hidden_bias"):
        native.mlp_forward(x, None, w1, None, w2, None, torch.zeros(2, 8),
                           torch.zeros(5, dtype=torch.long))


def test_field_colour_of_rays_equals_per_sample_colour(native):
    from switchnerf.config import load_config
    from switchnerf.model.field import SwitchField

    cfg = load_config(None, [])
    torch.manual_seed(2)
    field = SwitchField(cfg.model, n_images=6)
    n_rays, m = 50, 700
    geo = torch.randn(m, cfg.model.head.geo_features)
    dirs = torch.nn.functional.normalize(torch.randn(n_rays, 3), dim=-1)
    ray_index = torch.randint(0, n_rays, (m,))
    image = torch.randint(0, 6, (n_rays,))
    with torch.no_grad():
        for img in (image, None):
            ref = field.rgb(geo, dirs[ray_index], None if img is None else img[ray_index])
            out = field.rgb_of_rays(geo, dirs, ray_index, img)
            assert torch.allclose(out, ref, atol=1e-6)


def test_fused_mlp_not_used_with_gradients(native):
    torch.manual_seed(0)
    mlp = make_mlp(6, 8, 2, 1)
    x = torch.randn(10, 6, requires_grad=True)
    y = apply_mlp(mlp, x, torch.full((10,), 0.5))
    y.sum().backward()  # torch layers: gradients flow
    assert x.grad is not None and mlp[0].weight.grad is not None


def test_fused_mlp_names_bad_arguments(native):
    w1, w2 = torch.zeros(8, 4), torch.zeros(3, 8)
    with pytest.raises(RuntimeError, match="w1"):
        native.mlp_forward(torch.zeros(5, 6), None, w1, None, w2, None)
    with pytest.raises(RuntimeError, match="row_scale"):
        native.mlp_forward(torch.zeros(5, 4), torch.ones(4), w1, None, w2, None)


def test_gate_top1_without_gradients_matches_softmax():
    from switchnerf.config import load_config
    from switchnerf.moe.gate import HashGate

    cfg = load_config(None, ["model.routing.gate.n_levels=3", "model.routing.gate.max_resolution=32"])
    torch.manual_seed(0)
    gate = HashGate(cfg.model.routing.gate, 6, hidden=16)
    with torch.no_grad():
        gate.encoding.params.uniform_(-1, 1)
    x = torch.rand(2000, 3)
    train = gate(x)
    with torch.no_grad():
        infer = gate(x)
    assert torch.equal(infer.expert_id, train.expert_id)
    assert torch.allclose(infer.gate_value, train.gate_value.detach(), atol=1e-6)
    assert torch.allclose(infer.probs, train.probs.detach(), atol=1e-6)  # computed on demand


def test_render_without_gradients_equals_two_pass(tiny_run):
    from switchnerf.scene.types import RayBatch, pixel_rays
    from switchnerf.train.run import load_run

    renderer = load_run(tiny_run.run_dir).renderer
    rec = tiny_run.scene.images("train")[0]
    o, d = pixel_rays(rec.c2w, rec.fx, rec.fy, rec.cx, rec.cy, rec.width, rec.height)
    rays = RayBatch(o, d, torch.zeros(len(o)), torch.full((len(o),), 1e10))
    with torch.enable_grad():  # the training-time path: a density pass, then the field
        two_pass = renderer.render_rays(rays, use_appearance_index=False)
    with torch.no_grad():
        one_pass = renderer.render_rays(rays, use_appearance_index=False)
    assert two_pass.opacity.max() > 0.5  # the blob is in view
    for key in ("rgb", "depth", "opacity", "gate_confidence"):
        assert torch.allclose(getattr(one_pass, key), getattr(two_pass, key).detach(),
                              atol=1e-5), key
    assert torch.equal(one_pass.expert_map, two_pass.expert_map)
    assert torch.equal(one_pass.n_samples, two_pass.n_samples)
    assert one_pass.samples.probs is None and two_pass.samples.probs is not None
    assert torch.equal(one_pass.samples.ray_indices, two_pass.samples.ray_indices)
    assert torch.equal(one_pass.samples.expert_id, two_pass.samples.expert_id)

def test_native_packed_points_equal_the_torch_expression(native):
    from switchnerf.ops.front_to_back import packed_points, packed_points_torch

    g = torch.Generator().manual_seed(9)
    n, m = 40, 700
    origins, dirs = torch.rand(n, 3, generator=g), torch.randn(n, 3, generator=g)
    ray_indices = torch.sort(torch.randint(0, n, (m,), generator=g)).values
    t_starts = 3 * torch.rand(m, generator=g)
    t_ends = t_starts + 0.01
    idx = torch.randperm(m, generator=g)[:300]
    out = packed_points(origins, dirs, ray_indices, t_starts, t_ends, idx)
    ref = packed_points_torch(origins, dirs, ray_indices, t_starts, t_ends, idx)
    mids = 0.5 * (t_starts + t_ends)
    r = ray_indices[idx]
    assert torch.equal(out, ref)  # float32 operation for operation, no FMA
    assert torch.equal(ref, origins[r] + mids[idx][:, None] * dirs[r])  # the renderer's form
    with pytest.raises(RuntimeError, match="idx"):
        native.packed_points(origins, dirs, ray_indices, t_starts, t_ends, torch.tensor([m]))


@pytest.mark.parametrize("n_experts", [8, 5])
def test_top1_of_logits_matches_the_softmax(native, n_experts):
    from switchnerf.moe.gate import top1_of_logits

    torch.manual_seed(5)
    logits = 4 * torch.randn(5000, n_experts)
    logits[:10, 3] = logits[:10, 1] = 50.0  # ties: the first maximum wins
    logits[10, 2] = -200.0  # far below the others: exp underflows to 0
    expert_id, value = top1_of_logits(logits)
    ref_value, ref_id = torch.softmax(logits, dim=-1).max(dim=-1)
    assert torch.equal(expert_id, ref_id) and (expert_id[:10] == 1).all()
    assert torch.allclose(value, ref_value, atol=0, rtol=1e-6)
    out_id, out_value = native.top1_softmax(logits)  # the op itself, vectorised or not
    assert torch.equal(out_id, ref_id) and torch.allclose(out_value, ref_value, rtol=1e-6)
    e, v = top1_of_logits(logits[:0])
    assert e.shape == (0,) and v.shape == (0,)
