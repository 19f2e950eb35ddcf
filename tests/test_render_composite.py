"""Packed rendering against nerfacc's batched functions and a per-ray loop (CPU)."""

from __future__ import annotations

import math

import nerfacc
import pytest
import torch

from switchnerf.render import (
    composite,
    exclusive_sum_per_ray,
    render_packed,
    render_weights,
    weighted_mean,
)
from switchnerf.render.composite import render_weights_torch


def _packed(counts: list[int], seed: int, sigma_scale: float = 5.0):
    """Random packed samples of len(counts) rays: (t_starts, t_ends, sigmas, ray_indices)."""
    g = torch.Generator().manual_seed(seed)
    ray_indices = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    m = ray_indices.numel()
    dt = 0.01 + 0.1 * torch.rand(m, generator=g)
    gap = 0.05 * torch.rand(m, generator=g)
    t_ends = torch.zeros(m)
    t_starts = torch.zeros(m)
    start = 0
    for c in counts:  # cumulative positions per ray (test data only)
        ends = torch.cumsum(dt[start:start + c] + gap[start:start + c], 0)
        t_ends[start:start + c] = ends
        t_starts[start:start + c] = ends - dt[start:start + c]
        start += c
    sigmas = sigma_scale * torch.rand(m, generator=g)
    return t_starts, t_ends, sigmas, ray_indices


def _to_padded(values, counts, fill):
    """Packed [M] -> padded [N, S] with `fill` (a scalar or per-ray [N]) after each ray."""
    n, s = len(counts), max(max(counts), 1)
    fill = torch.as_tensor(fill, dtype=values.dtype).expand(n)
    out = fill[:, None].repeat(1, s).clone()
    mask = torch.arange(s)[None, :] < torch.tensor(counts)[:, None]  # [N, S]
    out[mask] = values
    return out, mask


# Ray 0 is opaque (total optical depth ~1e5: a global float32 cumsum loses ~1e-2 after it),
# ray 1 empty, ray 5 long (precision within a ray), the rest ordinary.
COUNTS = [200, 0, 7, 1, 13, 4000, 0, 9, 30, 2]


def _inputs():
    t_starts, t_ends, sigmas, ray_indices = _packed(COUNTS, seed=0)
    sigmas[:200] = 1e4
    return t_starts, t_ends, sigmas, ray_indices


@pytest.mark.parametrize("weights_fn", [render_weights_torch, render_weights],
                         ids=["torch", "dispatched"])
def test_weights_and_gradients_match_nerfacc_batched(weights_fn):
    t_starts, t_ends, sigmas, ray_indices = _inputs()
    n = len(COUNTS)
    sig_p = sigmas.clone().requires_grad_(True)
    w, trans, alphas = weights_fn(t_starts, t_ends, sig_p, ray_indices, n)

    # batched oracle, zero-length padding intervals (dt = 0 -> alpha 0, no effect)
    last_end = torch.zeros(n).scatter_reduce(0, ray_indices, t_ends, "amax")
    ts_b, mask = _to_padded(t_starts, COUNTS, last_end)
    te_b, _ = _to_padded(t_ends, COUNTS, last_end)
    sig_b, _ = _to_padded(sigmas, COUNTS, 0.0)
    sig_b.requires_grad_(True)
    w_b, trans_b, alphas_b = nerfacc.render_weight_from_density(ts_b, te_b, sig_b)

    torch.testing.assert_close(w, w_b[mask], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(trans, trans_b[mask], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(alphas, alphas_b[mask], rtol=1e-6, atol=1e-7)

    g = torch.Generator().manual_seed(1)
    cw, ct = torch.randn(w.shape, generator=g), torch.randn(w.shape, generator=g)
    ((w * cw).sum() + (trans * ct).sum()).backward()
    cw_b, _ = _to_padded(cw, COUNTS, 0.0)
    ct_b, _ = _to_padded(ct, COUNTS, 0.0)
    ((w_b * cw_b).sum() + (trans_b * ct_b).sum()).backward()
    torch.testing.assert_close(sig_p.grad, sig_b.grad[mask], rtol=1e-4, atol=1e-6)


def test_exclusive_sum_is_per_ray_and_precise_after_a_large_prefix():
    t_starts, t_ends, sigmas, ray_indices = _inputs()
    tau = sigmas * (t_ends - t_starts)
    got = exclusive_sum_per_ray(tau, ray_indices, len(COUNTS))
    start = 0
    for c in COUNTS:
        seg = tau[start:start + c].double()
        ref = torch.cumsum(seg, 0) - seg
        torch.testing.assert_close(got[start:start + c], ref, rtol=1e-12, atol=1e-9)
        start += c
    # the failure mode this guards against: a global float32 cumsum is off by > 1e-3 here
    naive = torch.cumsum(tau, 0) - tau
    counts = torch.tensor(COUNTS)
    naive = naive - naive[(counts.cumsum(0) - counts)[ray_indices]]
    assert (naive[200:] - got[200:]).abs().max() > 1e-3


def test_rays_without_samples_and_empty_input():
    w, trans, alphas = render_weights(torch.zeros(0), torch.zeros(0), torch.zeros(0),
                                      torch.zeros(0, dtype=torch.int64), 3)
    assert w.shape == trans.shape == alphas.shape == (0,)
    out = render_packed(torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 3,
                        torch.zeros(0, 3), torch.zeros(0),
                        expert_ids=torch.zeros(0, dtype=torch.int64),
                        background_rgb=torch.tensor([0.2, 0.4, 0.6]))
    torch.testing.assert_close(out["rgb"], torch.tensor([[0.2, 0.4, 0.6]]).repeat(3, 1))
    assert out["expert_map"].tolist() == [-1, -1, -1]
    assert out["n_samples"].tolist() == [0, 0, 0]
    assert weighted_mean(out["depth"], out["opacity"]).tolist() == [0.0, 0.0, 0.0]


def test_render_packed_matches_per_ray_loop():
    counts = [5, 0, 12, 1, 40, 3]
    t_starts, t_ends, sigmas, ray_indices = _packed(counts, seed=3, sigma_scale=8.0)
    n, m = len(counts), ray_indices.numel()
    g = torch.Generator().manual_seed(4)
    rgb = torch.rand(m, 3, generator=g)
    expert_ids = torch.randint(0, 8, (m,), generator=g)
    bg = torch.rand(n, 3, generator=g)
    out = render_packed(t_starts, t_ends, ray_indices, n, rgb, sigmas, expert_ids=expert_ids,
                        background_rgb=bg)

    start = 0
    for r, c in enumerate(counts):
        trans, col, depth, acc, best, best_w = 1.0, [0.0, 0.0, 0.0], 0.0, 0.0, -1, 0.0
        for i in range(start, start + c):
            dt = float(t_ends[i] - t_starts[i])
            alpha = 1.0 - math.exp(-float(sigmas[i]) * dt)
            w = trans * alpha
            col = [col[k] + w * float(rgb[i, k]) for k in range(3)]
            depth += w * 0.5 * float(t_starts[i] + t_ends[i])
            acc += w
            if w > best_w:
                best, best_w = int(expert_ids[i]), w
            trans *= 1.0 - alpha
        col = [col[k] + (1.0 - acc) * float(bg[r, k]) for k in range(3)]
        torch.testing.assert_close(out["rgb"][r], torch.tensor(col), rtol=1e-5, atol=1e-6)
        assert out["opacity"][r].item() == pytest.approx(acc, rel=1e-5, abs=1e-6)
        assert out["depth"][r].item() == pytest.approx(depth, rel=1e-5, abs=1e-6)
        norm = depth / acc if acc > 0 else 0.0
        assert weighted_mean(out["depth"], out["opacity"])[r].item() == pytest.approx(
            norm, rel=1e-5, abs=1e-6)
        assert out["expert_map"][r].item() == best
        assert out["n_samples"][r].item() == c
        start += c


def test_render_packed_gradcheck():
    counts = [3, 0, 4]
    t_starts, t_ends, sigmas, ray_indices = _packed(counts, seed=5)
    rgb = torch.rand(7, 3, dtype=torch.float64, requires_grad=True)
    sig = sigmas.double().requires_grad_(True)
    ts, te = t_starts.double(), t_ends.double()

    def fn(rgb_, sig_):
        out = render_packed(ts, te, ray_indices, 3, rgb_, sig_,
                            background_rgb=torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
        return (out["rgb"], out["depth"], out["opacity"],
                weighted_mean(out["depth"], out["opacity"]))

    assert torch.autograd.gradcheck(fn, (rgb, sig))


def test_composite_is_a_segment_sum():
    ray_indices = torch.tensor([2, 0, 2, 2])  # unsorted is fine for composite
    weights = torch.tensor([0.5, 1.0, 0.25, 0.125])
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    got = composite(weights, values, ray_indices, 4)
    want = torch.tensor([[3.0, 4.0], [0.0, 0.0],
                         [0.5 + 1.25 + 0.875, 1.0 + 1.5 + 1.0], [0.0, 0.0]])
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(composite(weights, values[:, 0], ray_indices, 4), want[:, 0])


@pytest.mark.parametrize("with_background", [True, False])
def test_composite_rays_native_equals_render_packed(native, with_background):
    from switchnerf.render.composite import composite_rays

    counts = [0, 5, 1, 30, 0, 12, 7, 3]
    t_starts, t_ends, sigmas, ray_indices = _packed(counts, seed=5)
    sigmas[ray_indices == 6] = 0.0  # a ray of zero weights: expert map -1
    m, n = ray_indices.numel(), len(counts)
    g = torch.Generator().manual_seed(6)
    rgb, values = torch.rand(m, 3, generator=g), torch.rand(m, 2, generator=g)
    expert_ids = torch.randint(0, 8, (m,), generator=g)
    expert_ids[3] = expert_ids[4] = 5
    sigmas[3] = sigmas[4] = 0.0  # ties in weight are broken by the first sample
    background = torch.tensor([0.2, 0.4, 0.9]) if with_background else None
    with torch.no_grad():
        out = composite_rays(t_starts, t_ends, ray_indices, n, rgb, sigmas,
                             expert_ids=expert_ids, values=values, background_rgb=background)
        ref = render_packed(t_starts, t_ends, ray_indices, n, rgb, sigmas,
                            expert_ids=expert_ids, background_rgb=background)
        ref_values = composite(ref["weights"], values, ray_indices, n)
    for key in ("rgb", "opacity", "depth", "weights"):
        assert torch.allclose(out[key], ref[key], atol=1e-6, rtol=1e-6), key
    assert torch.allclose(out["values"], ref_values, atol=1e-6, rtol=1e-6)
    assert torch.equal(out["expert_map"], ref["expert_map"])
    assert torch.equal(out["n_samples"], ref["n_samples"])
    assert out["expert_map"][6] == -1 and out["expert_map"][0] == -1
    empty = composite_rays(t_starts[:0], t_ends[:0], ray_indices[:0], 3, rgb[:0], sigmas[:0],
                           expert_ids=expert_ids[:0], values=values[:0])
    assert torch.equal(empty["expert_map"], torch.full((3,), -1))
    assert empty["rgb"].shape == (3, 3) and not empty["opacity"].any()


def test_composite_rays_with_gradients_is_render_packed():
    from switchnerf.render.composite import composite_rays

    t_starts, t_ends, sigmas, ray_indices = _packed([4, 2], seed=8)
    sigmas.requires_grad_(True)
    rgb = torch.rand(6, 3)
    out = composite_rays(t_starts, t_ends, ray_indices, 2, rgb, sigmas,
                         expert_ids=torch.zeros(6, dtype=torch.long), values=torch.ones(6, 1))
    out["rgb"].sum().backward()  # the torch path keeps the graph
    assert sigmas.grad is not None and torch.allclose(out["values"][:, 0], out["opacity"])
