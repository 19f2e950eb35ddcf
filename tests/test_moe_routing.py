"""Routing math against closed forms and hand cases."""

import math

import torch

from switchnerf.moe.routing import (
    balance_loss,
    capacity_keep_mask,
    expert_load,
    sort_into_segments,
    top1,
)


def test_balance_loss_uniform_routing_is_one():
    e, per = 4, 5
    probs = torch.full((e * per, e), 1.0 / e)
    expert_id = torch.arange(e).repeat_interleave(per)
    assert math.isclose(balance_loss(probs, expert_id).item(), 1.0, rel_tol=1e-6)


def test_balance_loss_collapse_is_e():
    e = 8
    probs = torch.zeros(10, e)
    probs[:, 3] = 1.0
    expert_id = torch.full((10,), 3)
    assert math.isclose(float(balance_loss(probs, expert_id)), float(e), rel_tol=1e-6)


def test_balance_loss_hand_case_and_gradient():
    probs = torch.tensor([[0.7, 0.3], [0.6, 0.4], [0.2, 0.8]], requires_grad=True)
    expert_id = torch.tensor([0, 0, 1])
    # f = (2/3, 1/3), P = (0.5, 0.5) -> 2 * (2/3*0.5 + 1/3*0.5) = 1.0
    loss = balance_loss(probs, expert_id)
    assert math.isclose(loss.item(), 1.0, rel_tol=1e-6)
    loss.backward()
    # d/dprobs[m, e] = E * f_e / M
    expect = torch.tensor([2 * (2 / 3) / 3, 2 * (1 / 3) / 3]).expand(3, 2)
    assert torch.allclose(probs.grad, expect, atol=1e-6)


def test_balance_loss_empty_batch():
    probs = torch.zeros(0, 3, requires_grad=True)
    assert balance_loss(probs, torch.zeros(0, dtype=torch.long)).item() == 0.0


def test_top1_picks_max_and_passes_gradient():
    logits = torch.tensor([[1.0, 3.0, 2.0], [0.5, 0.1, 0.2]], requires_grad=True)
    probs = torch.softmax(logits, -1)
    expert_id, gate = top1(probs)
    assert expert_id.tolist() == [1, 0]
    gate.sum().backward()
    assert logits.grad.abs().sum() > 0


def test_sort_into_segments_groups_points():
    ids = torch.tensor([3, 1, 3, 0, 1, 3])
    lay = sort_into_segments(ids, 5)
    assert lay.counts.tolist() == [1, 2, 0, 3, 0]
    assert lay.offsets.tolist() == [0, 1, 3, 3, 6]
    assert ids[lay.perm].tolist() == [0, 1, 1, 3, 3, 3]
    assert lay.perm.tolist() == [3, 1, 4, 0, 2, 5]  # stable


def test_capacity_keeps_highest_gate_values_per_expert():
    ids = torch.tensor([0, 0, 0, 0, 1, 1])
    gate = torch.tensor([0.5, 0.9, 0.7, 0.6, 0.8, 0.55])
    # capacity = ceil(1.0 * 6 / 2) = 3 per expert: expert 0 drops its lowest (0.5)
    keep = capacity_keep_mask(ids, gate, 2, 1.0)
    assert keep.tolist() == [False, True, True, True, True, True]
    keep_tight = capacity_keep_mask(ids, gate, 2, 0.34)  # capacity 2... ceil(0.34*3)=2
    assert keep_tight.tolist() == [False, True, True, False, True, True]


def test_capacity_matches_bruteforce_random():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        m, e = 50, 4
        ids = torch.randint(0, e, (m,), generator=g)
        gate = torch.rand(m, generator=g)
        cf = 0.8
        keep = capacity_keep_mask(ids, gate, e, cf)
        cap = math.ceil(cf * m / e)
        for k in range(e):
            idx = (ids == k).nonzero().flatten()
            order = idx[torch.argsort(gate[idx], descending=True)]
            want = set(order[:cap].tolist())
            assert set(idx[keep[idx]].tolist()) == want


def test_expert_load_fractions():
    load = expert_load(torch.tensor([0, 0, 2, 2, 2, 1]), 4)
    assert torch.allclose(load, torch.tensor([2, 1, 3, 0]) / 6.0)
