"""The native bookkeeping op of the front-to-back rounds against its torch twin, round by
round, and the whole front-to-back evaluation with the op against the twin."""

from __future__ import annotations

import pytest
import torch

from switchnerf.ops import front_to_back as f2b
from switchnerf.ops.render_weights import packed_info
from switchnerf.render.front_to_back import evaluate_front_to_back


def _packed(n_rays: int, seed: int, max_per_ray: int = 60):
    """Random packed samples with some empty rays; densities from transparent to opaque."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, max_per_ray, (n_rays,), generator=g)
    counts[1::6] = 0
    counts[0] = max_per_ray  # a long ray: several rounds
    ray_indices = torch.repeat_interleave(torch.arange(n_rays), counts)
    m = ray_indices.numel()
    t_starts = torch.rand(m, generator=g) * 3
    t_ends = t_starts + 0.01 + 0.2 * torch.rand(m, generator=g)
    sigma = torch.exp(torch.empty(m).uniform_(-8.0, 4.0, generator=g))
    sigma[::11] = 0.0
    return t_starts, t_ends, ray_indices, sigma


@pytest.mark.parametrize("alpha_thre,eps", [(0.0, 1e-4), (1e-2, 1e-4), (1e-3, 1e-2), (0.0, 0.0)])
@pytest.mark.parametrize("n_rays", [1, 37, 9000])
def test_rounds_match_the_torch_twin_bit_for_bit(native, alpha_thre, eps, n_rays):
    t_starts, t_ends, ray_indices, sigma = _packed(n_rays, seed=n_rays)
    starts, counts = packed_info(ray_indices, n_rays)
    dt = t_ends - t_starts
    nat = twin = f2b.round_start(starts, counts)
    rounds = 0
    while twin.ray.numel():
        k = (8, 4, 4, 8, 16)[min(rounds, 4)]
        rounds += 1
        idx_n = native.front_to_back_take(nat.pos, nat.end, k)
        idx_t = f2b.round_take_torch(twin, k)
        assert torch.equal(idx_n, idx_t)
        vis_n, *state_n = native.front_to_back_update(sigma[idx_n], dt, idx_n, *nat, k,
                                                      alpha_thre, eps)
        vis_t, twin = f2b.round_update_torch(twin, idx_t, sigma[idx_t], dt, k,
                                             alpha_thre=alpha_thre, early_stop_eps=eps)
        assert torch.equal(vis_n, vis_t)
        nat = f2b.RoundState(*state_n)
        for a, b in zip(nat, twin):
            assert a.dtype == b.dtype and torch.equal(a, b)
    assert nat.ray.numel() == 0 and (rounds >= 2 or n_rays == 1)


def test_rounds_handle_nan_and_infinite_density(native):
    t_starts, t_ends, ray_indices, sigma = _packed(50, seed=3)
    sigma[::5] = float("nan")
    sigma[1::7] = float("inf")
    starts, counts = packed_info(ray_indices, 50)
    dt = t_ends - t_starts
    state = f2b.round_start(starts, counts)
    idx = f2b.round_take_torch(state, 6)
    vis_n, *state_n = native.front_to_back_update(sigma[idx], dt, idx, *state, 6, 1e-3, 1e-4)
    vis_t, state_t = f2b.round_update_torch(state, idx, sigma[idx], dt, 6, alpha_thre=1e-3,
                                            early_stop_eps=1e-4)
    assert torch.equal(vis_n, vis_t)
    for a, b in zip(state_n, state_t):
        assert torch.equal(a, b)


@pytest.mark.parametrize("alpha_thre,eps", [(1e-2, 1e-4), (0.0, 0.0)])
def test_evaluation_with_the_op_equals_the_twin(native, monkeypatch, alpha_thre, eps):
    n = 2000
    t_starts, t_ends, ray_indices, sigma = _packed(n, seed=11)

    def run():
        return evaluate_front_to_back(lambda i: (sigma[i], {"i": i}), t_starts, t_ends,
                                      ray_indices, n, alpha_thre=alpha_thre,
                                      early_stop_eps=eps)

    keep_n, sig_n, ex_n = run()
    monkeypatch.setattr(f2b, "_use_native", lambda state: False)
    keep_t, sig_t, ex_t = run()
    assert keep_n.numel() > 0
    assert torch.equal(keep_n, keep_t) and torch.equal(sig_n, sig_t)
    assert torch.equal(ex_n["i"], keep_n) and torch.equal(ex_t["i"], keep_t)


def test_bad_arguments_are_named(native):
    pos = torch.tensor([0, 5])
    end = torch.tensor([5, 9])
    with pytest.raises(RuntimeError, match="k is 0"):
        native.front_to_back_take(pos, end, 0)
    with pytest.raises(RuntimeError, match="open ray 1 has pos 5 and end 5"):
        native.front_to_back_take(pos, torch.tensor([5, 5]), 4)
    idx = native.front_to_back_take(pos, end, 4)
    tau = torch.zeros(2, dtype=torch.float64)
    ray = torch.tensor([0, 1])
    dt = torch.ones(9)
    with pytest.raises(RuntimeError, match="'sigma' has shape"):
        native.front_to_back_update(torch.ones(3), dt, idx, ray, pos, end, tau, 4, 0.0, 1e-4)
    with pytest.raises(RuntimeError, match="'tau' has dtype"):
        native.front_to_back_update(torch.ones(8), dt, idx, ray, pos, end, tau.float(), 4,
                                    0.0, 1e-4)
    with pytest.raises(RuntimeError, match=r"idx\[7\] = 8 is outside \[0, 8\)"):
        native.front_to_back_update(torch.ones(8), dt[:8], idx, ray, pos, end, tau, 4, 0.0,
                                    1e-4)
