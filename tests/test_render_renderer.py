"""The Renderer and its typed outputs: shape checks, depth normalisation, the render of a
ray batch against a per-ray reference, chunked and camera renders, and colorize."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from switchnerf.render import (
    EXPERT_PALETTE,
    OUTPUTS,
    RenderCancelled,
    Renderer,
    RenderOutput,
    SampleOutput,
    camera_rays,
    colorize,
    march_rays,
    turbo,
    viridis,
    weighted_mean,
)
from switchnerf.scene.types import RayBatch


def _per_ray(n: int = 3, **changes) -> dict:
    values = {"rgb": torch.rand(n, 3), "depth": torch.rand(n), "opacity": torch.rand(n),
              "expert_map": torch.zeros(n, dtype=torch.int64),
              "n_samples": torch.ones(n, dtype=torch.int64), "gate_confidence": torch.rand(n)}
    values.update(changes)
    return values


def _per_sample(m: int = 4, **changes) -> dict:
    values = {"ray_indices": torch.arange(m), "expert_id": torch.zeros(m, dtype=torch.int64),
              "gate_value": torch.rand(m), "kept": torch.ones(m, dtype=torch.bool),
              "weights": torch.rand(m), "probs": torch.rand(m, 2)}
    values.update(changes)
    return values


# ------------------------------------------------------------------ typed outputs
@pytest.mark.parametrize("changes, needle", [
    ({"rgb": torch.zeros(3, 4)}, "rgb"),
    ({"depth": torch.zeros(2)}, "depth"),
    ({"opacity": torch.zeros(3, 1)}, "opacity"),
    ({"expert_map": torch.zeros(3)}, "expert_map"),  # float ids
    ({"n_samples": torch.zeros(3, dtype=torch.int32)}, "n_samples"),
    ({"gate_confidence": torch.zeros(4)}, "gate_confidence"),
    ({"depth": [0.0, 0.0, 0.0]}, "depth"),
])
def test_render_output_rejects_bad_shapes(changes, needle):
    RenderOutput(**_per_ray())  # the good case
    with pytest.raises((ValueError, TypeError), match=needle):
        RenderOutput(**_per_ray(**changes))


def test_render_output_checks_image_size_and_samples():
    RenderOutput(**_per_ray(6), image_size=(2, 3))
    with pytest.raises(ValueError, match="image_size"):
        RenderOutput(**_per_ray(6), image_size=(4, 2))
    with pytest.raises(TypeError, match="samples"):
        RenderOutput(**_per_ray(), samples={"weights": torch.zeros(1)})


@pytest.mark.parametrize("changes, needle", [
    ({"expert_id": torch.zeros(3, dtype=torch.int64)}, "expert_id"),
    ({"gate_value": torch.zeros(4, 1)}, "gate_value"),
    ({"kept": torch.ones(4)}, "kept"),  # not bool
    ({"weights": torch.zeros(5)}, "weights"),
    ({"probs": torch.zeros(3, 2)}, "probs"),
    ({"probs": torch.zeros(4)}, "probs"),
    ({"ray_indices": torch.arange(4.0)}, "ray_indices"),
])
def test_sample_output_rejects_bad_shapes(changes, needle):
    assert len(SampleOutput(**_per_sample())) == 4
    SampleOutput(**_per_sample(probs=None))
    with pytest.raises(ValueError, match=needle):
        SampleOutput(**_per_sample(**changes))


def test_depth_normalisation_and_expected_depth():
    out = RenderOutput(**_per_ray(depth=torch.tensor([1.0, 0.0, 0.003]),
                                  opacity=torch.tensor([0.5, 0.0, 0.006])))
    torch.testing.assert_close(out.depth_normalised, torch.tensor([2.0, 0.0, 0.5]))
    d = out.expected_depth()  # opacity <= 0.01: no depth
    assert d[0].item() == 2.0 and math.isnan(d[1].item()) and math.isnan(d[2].item())
    assert out.expected_depth(0.0)[2].item() == pytest.approx(0.5)
    # the one formula, with gradients where the ray is covered
    total = torch.tensor([1.0, 2.0], requires_grad=True)
    opacity = torch.tensor([0.5, 0.0], requires_grad=True)
    weighted_mean(total, opacity).sum().backward()
    torch.testing.assert_close(total.grad, torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(opacity.grad, torch.tensor([-4.0, 0.0]))


def test_cat_joins_chunks_in_order_and_to_moves():
    a, b = RenderOutput(**_per_ray(2)), RenderOutput(**_per_ray(3))
    joined = RenderOutput.cat([a, b], image_size=(1, 5))
    assert len(joined) == 5 and joined.image_size == (1, 5) and joined.samples is None
    assert torch.equal(joined.rgb, torch.cat([a.rgb, b.rgb]))
    assert torch.equal(joined.image("opacity"), torch.cat([a.opacity, b.opacity]).view(1, 5))
    with pytest.raises(ValueError):
        RenderOutput.cat([])
    with_samples = RenderOutput(**_per_ray(4), samples=SampleOutput(**_per_sample()))
    moved = with_samples.to("cpu")
    assert torch.equal(moved.samples.probs, with_samples.samples.probs)
    assert len(RenderOutput.empty()) == 0


# ------------------------------------------------------------------ the renderer
def _reference_render(renderer: Renderer, rays: RayBatch) -> dict:
    """Per-ray reference: every marched sample (torch march, no pruning) through the
    field, then, ray by ray in Python, the visibility test and the compositing of the
    visible samples (nerfacc's rule), the expert of the heaviest sample and the
    weight-averaged gate value."""
    box, cfg, field = renderer.box, renderer.sampler, renderer.field
    o = (rays.origins - box.lo) / box.extent
    d = rays.directions / box.extent
    with torch.no_grad():
        s = march_rays(o, d, rays.near, rays.far, renderer.grid, step_size=renderer.step_size,
                       max_samples_per_ray=cfg.max_samples_per_ray, backend="torch")
        ri = s.ray_indices
        mids = 0.5 * (s.t_starts + s.t_ends)
        out = field(o[ri] + mids[:, None] * d[ri], rays.directions[ri], None)
        bg = field.background(rays.directions) if field.background is not None else None
    n = len(rays)
    res = {"rgb": torch.zeros(n, 3, dtype=torch.float64), "depth": torch.zeros(n, dtype=torch.float64),
           "opacity": torch.zeros(n, dtype=torch.float64), "expert_map": torch.full((n,), -1),
           "gate": torch.zeros(n, dtype=torch.float64), "n_samples": torch.zeros(n, dtype=torch.int64)}
    for r in range(n):
        idx = (ri == r).nonzero().flatten().tolist()
        visible, tau = [], 0.0
        for i in idx:  # visibility: transmittance before the sample and its alpha
            depth = float(out.sigma[i]) * float(s.t_ends[i] - s.t_starts[i])
            if math.exp(-tau) >= cfg.early_stop_eps and 1 - math.exp(-depth) >= cfg.alpha_thre:
                visible.append(i)
            tau += depth
        trans, best_w = 1.0, 0.0
        for i in visible:
            alpha = 1 - math.exp(-float(out.sigma[i]) * float(s.t_ends[i] - s.t_starts[i]))
            w = trans * alpha
            res["rgb"][r] += w * out.rgb[i].double()
            res["depth"][r] += w * float(mids[i])
            res["opacity"][r] += w
            res["gate"][r] += w * float(out.gate_value[i])
            if w > best_w:
                best_w, res["expert_map"][r] = w, int(out.expert_id[i])
            trans *= 1 - alpha
        if bg is not None:
            res["rgb"][r] += (1 - res["opacity"][r]) * bg[r].double()
        res["n_samples"][r] = len(visible)
        res["gate"][r] = res["gate"][r] / res["opacity"][r] if res["opacity"][r] > 0 else 0.0
    return res


@pytest.fixture(scope="module")
def loaded(_tiny_run_built):
    from switchnerf.scene.cameras import CameraTable
    from switchnerf.train.run import load_run

    scene = _tiny_run_built.scene
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("switchnerf.train.builder.scene_and_cameras",
                   lambda _path: (scene, CameraTable.from_scene(scene)))
        run = load_run(_tiny_run_built.run_dir)
    return run


def _some_rays(run, every: int = 5) -> RayBatch:
    rec = run.scene.images("train")[0]
    rays = camera_rays(rec)
    return rays[torch.arange(0, len(rays), every)]


def test_render_rays_equals_the_per_ray_reference_with_and_without_gradients(loaded):
    renderer = loaded.renderer
    rays = _some_rays(loaded)
    ref = _reference_render(renderer, rays)
    assert ref["opacity"].max() > 0.5 and (ref["opacity"] == 0).any()  # blob and empty sky
    with torch.enable_grad():
        two_pass = renderer.render_rays(rays, use_appearance_index=False)
    with torch.no_grad():
        one_pass = renderer.render_rays(rays, use_appearance_index=False)
    for out in (two_pass, one_pass):
        torch.testing.assert_close(out.rgb.detach().double(), ref["rgb"], atol=2e-5, rtol=0)
        torch.testing.assert_close(out.depth.detach().double(), ref["depth"], atol=2e-5, rtol=0)
        torch.testing.assert_close(out.opacity.detach().double(), ref["opacity"], atol=2e-5,
                                   rtol=0)
        torch.testing.assert_close(out.gate_confidence.double(), ref["gate"], atol=2e-5, rtol=0)
        assert torch.equal(out.expert_map, ref["expert_map"])
        assert torch.equal(out.n_samples, ref["n_samples"])
        s = out.samples
        assert len(s) == int(ref["n_samples"].sum()) and torch.equal(
            s.ray_indices, torch.repeat_interleave(torch.arange(len(rays)), out.n_samples))
    assert two_pass.samples.probs.shape == (len(two_pass.samples), renderer.n_experts)
    assert two_pass.rgb.requires_grad and one_pass.samples.probs is None


def test_render_chunked_and_render_camera(loaded):
    renderer = loaded.renderer
    rec = loaded.scene.images("val")[0]
    whole = renderer.render_camera(rec)
    assert whole.image_size == (rec.height, rec.width) and whole.samples is None
    with torch.no_grad():
        direct = renderer.render_rays(camera_rays(rec), use_appearance_index=False)
    for key in ("rgb", "depth", "opacity", "expert_map", "n_samples", "gate_confidence"):
        assert torch.equal(getattr(whole, key), getattr(direct, key)), key
    sizes = iter([100, 7, 1000] + [50] * 100)
    guards = []

    class Guard:
        def __enter__(self):
            guards.append(1)

        def __exit__(self, *exc):
            return False

    chunked = renderer.render_camera(rec, chunk=lambda: next(sizes), chunk_guard=Guard)
    assert len(guards) == 3  # 100 + 7 + 1000 >= 32 * 24 rays
    torch.testing.assert_close(chunked.rgb, whole.rgb, atol=1e-6, rtol=0)
    assert torch.equal(chunked.expert_map, whole.expert_map)
    # appearance: a camera-table row's embedding instead of the mean
    own = renderer.render_camera(rec, appearance=7)
    ref = renderer.render_chunked(camera_rays(rec, image_index=7), use_appearance_index=True)
    assert torch.equal(own.rgb, ref.rgb) and not torch.equal(own.rgb, whole.rgb)
    with pytest.raises(RenderCancelled):
        renderer.render_camera(rec, should_stop=lambda: True)
    with pytest.raises(ValueError, match="chunk"):
        renderer.render_camera(rec, chunk=0)


def test_renderer_properties(loaded):
    r = loaded.renderer
    assert r.device == torch.device("cpu") and r.n_experts == 4
    assert r.step_size == pytest.approx(float(torch.linalg.norm(r.box.extent))
                                        / r.sampler.steps_per_diagonal)
    assert not r.training and r.train().training and not r.eval().training


# ------------------------------------------------------------------ colorize
def _hand_output() -> RenderOutput:
    """A 1 x 3 image: a covered pixel, an empty one, an opaque one."""
    return RenderOutput(
        rgb=torch.tensor([[1.2, -0.1, 0.5], [0.0, 0.0, 0.0], [0.25, 0.75, 1.0]]),
        depth=torch.tensor([1.0, 0.0, 3.0]), opacity=torch.tensor([0.5, 0.0, 1.0]),
        expert_map=torch.tensor([1, -1, 0]), n_samples=torch.tensor([2, 0, 5]),
        gate_confidence=torch.tensor([1.0, 0.0, 0.75]), image_size=(1, 3))


def _u8(values) -> np.ndarray:
    """float32 colours in [0, 1] -> uint8, rounded to nearest."""
    return np.floor(np.asarray(values, dtype=np.float32) * np.float32(255)
                    + np.float32(0.5)).astype(np.uint8)


def test_colorize_each_output_on_a_hand_case():
    out = _hand_output()
    assert colorize(out, "rgb").tolist() == [[[255, 0, 128], [0, 0, 0], [64, 191, 255]]]
    assert colorize(out, "opacity").tolist() == [[[128] * 3, [0] * 3, [255] * 3]]
    info: dict = {}
    experts = colorize(out, "experts", n_experts=2, info=info)
    assert experts.tolist() == [[[255, 127, 14], [0, 0, 0], [31, 119, 180]]]
    assert info["share"] == [0.5, 0.5]
    info = {}
    depth = colorize(out, "depth", depth_range=(0.0, 4.0), info=info)
    assert (info["near"], info["far"]) == (0.0, 4.0)
    want = _u8(turbo(torch.tensor([0.5, 0.75])).numpy())  # depths 1 / 0.5 and 3 / 1
    assert np.array_equal(depth[0, [0, 2]], want) and depth[0, 1].tolist() == [0, 0, 0]
    info = {}
    auto = colorize(out, "depth", info=info)  # the image's own range: 2 .. 3
    assert (info["near"], info["far"]) == (2.0, 3.0)
    assert np.array_equal(auto[0, [0, 2]], _u8(turbo(torch.tensor([0.0, 1.0])).numpy()))
    gate = colorize(out, "gate_confidence", n_experts=2)  # [1/2, 1] -> [0, 1]
    assert np.array_equal(gate[0, [0, 2]], _u8(viridis(torch.tensor([1.0, 0.5])).numpy()))
    assert gate[0, 1].tolist() == [0, 0, 0]
    assert set(OUTPUTS) == {"rgb", "depth", "opacity", "experts", "gate_confidence"}
    assert EXPERT_PALETTE.shape == (16, 3)


def test_colorize_refuses_what_it_cannot_draw():
    out = _hand_output()
    with pytest.raises(ValueError, match="unknown output"):
        colorize(out, "normals")
    with pytest.raises(ValueError, match="n_experts"):
        colorize(out, "gate_confidence")
    with pytest.raises(ValueError, match="image_size"):
        colorize(RenderOutput(**_per_ray()), "rgb")


def test_sample_points_equal_the_torch_expression_and_keep_ray_gradients():
    from switchnerf.render.renderer import _sample_points

    gen = torch.Generator().manual_seed(3)
    o, d = torch.rand(40, 3, generator=gen), torch.randn(40, 3, generator=gen)
    ri = torch.sort(torch.randint(0, 40, (700,), generator=gen))[0]
    t0 = torch.rand(700, generator=gen)
    t1 = t0 + 0.01
    want = o[ri] + (0.5 * (t0 + t1))[:, None] * d[ri]
    assert torch.equal(_sample_points(o, d, ri, t0, t1), want)
    o_grad = o.clone().requires_grad_()
    pts = _sample_points(o_grad, d, ri, t0, t1)
    pts.sum().backward()
    assert torch.equal(pts.detach(), want)
    assert torch.equal(o_grad.grad, torch.bincount(ri, minlength=40)[:, None].float().expand(40, 3))
