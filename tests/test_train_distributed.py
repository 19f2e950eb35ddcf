"""Distributed building blocks: two gloo processes on this machine against one process.

One spawn of two ranks runs every check (tests/_dist_workers.py: expert-parallel encode
and gradients, state dicts, global-batch statistics, collectives, launch checks); a second
one kills a rank. The single-process references are computed here.
"""

from __future__ import annotations

import json
import math

import _dist_workers as W
import pytest
import torch

from switchnerf.errors import SwitchNerfError
from switchnerf.moe.routing import balance_loss, expert_load
from switchnerf.train.distributed import (
    WORLD_RECORD,
    DistributedContext,
    check_expert_placement,
    check_run_world_size,
    config_digest,
    global_balance,
    global_expert_load,
    global_mse,
    rank_slice,
    recorded_world_size,
    write_world_record,
)

WORLD = 2
RTOL, ATOL = 1e-5, 1e-7


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, native):
    out = tmp_path_factory.mktemp("dist")
    cases = W.make_cases()
    torch.save(cases, out / "cases.pt")
    codes = W.run_ranks(W.checks_worker, WORLD, out)
    assert codes == [0, 0], f"worker exit codes {codes}"
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    return cases, ranks


def _single_encode(cases, case):
    """Features, table gradient and head gradients of one process on the whole batch."""
    experts, head = W.build_single(cases)
    feats = experts.encode(case["x"], case["expert_id"])
    loss = torch.mean((head(feats) - case["target"]) ** 2)
    loss.backward()
    return feats.detach(), experts.params.grad, [p.grad for p in head.parameters()]


# ---------------------------------------------------------------------------- expert parallel


@pytest.mark.parametrize("name", ["mixed", "rank_without_samples", "owner_without_samples"])
def test_expert_parallel_encode_and_gradients_equal_one_process(two_ranks, name):
    cases, ranks = two_ranks
    case = cases["encode"][name]
    feats, table_grad, head_grad = _single_encode(cases, case)
    got = torch.cat([r[name]["feats"] for r in ranks])
    assert got.shape == feats.shape
    torch.testing.assert_close(got, feats, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(torch.cat([r[name]["feats_no_grad"] for r in ranks]), feats,
                               rtol=RTOL, atol=ATOL)
    for r in ranks:  # each owner's table gradient is its slice of the single-process one
        start, stop = r[name]["local_range"]
        torch.testing.assert_close(r[name]["table_grad"], table_grad[start:stop],
                                   rtol=RTOL, atol=ATOL)
        for g, ref in zip(r[name]["head_grad"], head_grad):  # dense: summed over ranks
            torch.testing.assert_close(g, ref, rtol=RTOL, atol=ATOL)
        assert (r[name]["n_dense"], r[name]["n_expert"]) == (2, 1)
    assert ranks[0][name]["local_range"][1] == ranks[1][name]["local_range"][0]
    assert ranks[1][name]["local_range"][1] == table_grad.numel()
    assert table_grad.abs().sum() > 0


def test_uneven_cases_are_really_uneven(two_ranks):
    cases, ranks = two_ranks
    assert ranks[1]["rank_without_samples"]["feats"].shape[0] == 0
    assert 1 not in cases["encode"]["rank_without_samples"]["expert_id"].tolist()
    start, stop = ranks[1]["owner_without_samples"]["local_range"]
    assert torch.count_nonzero(ranks[1]["owner_without_samples"]["table_grad"]) == 0
    _, table_grad, _ = _single_encode(cases, cases["encode"]["owner_without_samples"])
    assert torch.count_nonzero(table_grad[start:stop]) == 0


@pytest.mark.parametrize("name", ["mixed", "rank_without_samples", "owner_without_samples"])
def test_bytes_exchanged_count_samples_sent_to_other_ranks(two_ranks, name):
    cases, ranks = two_ranks
    case = cases["encode"][name]
    owner = case["expert_id"] // (W.N_EXPERTS // WORLD)
    dim = W.N_LEVELS * W.N_FEATURES
    for r, res in enumerate(ranks):
        mine = W._part(owner, case["splits"], r)
        sent = int((mine != r).sum())  # my samples encoded elsewhere
        others = torch.cat([W._part(owner, case["splits"], q) for q in range(WORLD) if q != r])
        served = int((others == r).sum())  # other ranks' samples I encoded
        forward = 8 * (WORLD - 1) + 16 * sent + 4 * dim * served
        backward = 4 * dim * sent
        assert res[name]["bytes"] == [forward, backward, 1], name


# ---------------------------------------------------------------------------- state dicts


def test_gathered_state_dict_is_the_single_process_one(two_ranks):
    cases, ranks = two_ranks
    experts, head = W.build_single(cases)
    reference = W._Field(experts, head).state_dict()
    gathered = ranks[0]["state"]["gathered"]
    assert ranks[1]["state"]["gathered"] is None
    assert list(gathered) == list(reference)
    for key, value in reference.items():
        assert torch.equal(gathered[key], value), key
    # a single process loads it as is (a 2-rank run read by eval, view, render, export)
    one = W._Field(*W.build_single(cases))
    one.load_state_dict(gathered)


def test_sliced_state_dict_is_each_ranks_own(two_ranks):
    _, ranks = two_ranks
    assert all(r["state"]["sliced_equal"] for r in ranks)


# ---------------------------------------------------------------------------- statistics


def test_global_batch_statistics_equal_one_process(two_ranks):
    cases, ranks = two_ranks
    st = cases["stats"]
    logits = st["logits"].clone().requires_grad_(True)
    probs = torch.softmax(logits, dim=-1)
    expert_id = probs.argmax(dim=-1)
    bal = balance_loss(probs, expert_id)
    bal.backward()
    pred = st["pred"].clone().requires_grad_(True)
    mse = torch.mean((pred - st["target"]) ** 2)
    mse.backward()
    f_ref = torch.bincount(expert_id, minlength=W.N_EXPERTS).float() / expert_id.numel()
    for r in ranks:
        s = r["stats"]
        torch.testing.assert_close(s["fraction"], f_ref)
        torch.testing.assert_close(s["mean_prob"], probs.detach().mean(0))
        torch.testing.assert_close(s["value"], bal.detach())
        torch.testing.assert_close(s["load"], expert_load(expert_id, W.N_EXPERTS))
        torch.testing.assert_close(s["mse"], mse.detach())
        assert s["psnr"] == pytest.approx(-10 * math.log10(mse.item()), rel=1e-6)
    torch.testing.assert_close(ranks[0]["stats"]["share"] + ranks[1]["stats"]["share"], bal.detach())
    torch.testing.assert_close(torch.cat([r["stats"]["logits_grad"] for r in ranks]), logits.grad)
    torch.testing.assert_close(torch.cat([r["stats"]["pred_grad"] for r in ranks]), pred.grad)


def test_single_process_statistics_equal_the_routing_functions():
    ctx = DistributedContext.single()
    gen = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(40, 5, generator=gen), -1)
    expert_id = probs.argmax(-1)
    bal = global_balance(ctx, probs, expert_id)
    torch.testing.assert_close(bal.share, balance_loss(probs, expert_id))
    torch.testing.assert_close(bal.value, balance_loss(probs, expert_id))
    torch.testing.assert_close(global_expert_load(ctx, expert_id, 5), expert_load(expert_id, 5))
    empty = global_balance(ctx, probs[:0], expert_id[:0])
    assert float(empty.value) == 0.0 and float(empty.share) == 0.0
    a, b = torch.rand(7, 3, generator=gen), torch.rand(7, 3, generator=gen)
    m = global_mse(ctx, a, b)
    torch.testing.assert_close(m.value, torch.mean((a - b) ** 2))
    assert global_mse(ctx, a, a).psnr == math.inf


# ---------------------------------------------------------------------------- collectives


def test_collectives_and_launch_checks_across_ranks(two_ranks):
    _, ranks = two_ranks
    for r, res in enumerate(ranks):
        assert (res["rank"], res["world_size"], res["backend"]) == (r, WORLD, "gloo")
        assert float(res["mean"]) == 1.5
        assert res["same_config"] == "ok"
        assert res["config_error"].startswith("config: differs across ranks (rank 1 ")
        assert "\n" not in res["config_error"]
        assert res["main_error"] == "run: world_size: example failure"


def test_monitored_barrier_names_the_missing_rank(two_ranks):
    _, ranks = two_ranks
    err = ranks[0]["barrier_error"]
    assert err is not None and "1 failed to pass monitoredBarrier" in err, err
    assert ranks[0]["barrier_s"] < 20


@pytest.mark.parametrize("mode,timeout_s", [("dead", 10.0), ("hung", 5.0)])
def test_lost_rank_makes_the_others_fail_within_the_timeout(tmp_path, mode, timeout_s):
    codes = W.run_ranks(W.lost_rank_worker, WORLD, tmp_path, timeout_s, mode, join_timeout=120)
    assert codes[1] == 3
    assert codes[0] not in (0, None), f"rank 0 exit code {codes[0]}"
    seen = json.loads((tmp_path / "rank0.json").read_text())
    assert seen["error"] in ("RuntimeError", "DistBackendError"), seen
    assert seen["seconds"] < timeout_s + 5, seen
    if mode == "hung":  # the process group's timeout, not a closed socket, ended the wait
        assert seen["seconds"] >= timeout_s - 0.5 and "Timed out" in seen["message"], seen


# ---------------------------------------------------------------------------- pure functions


@pytest.mark.parametrize("batch,world", [(8192, 2), (10, 3), (7, 8), (0, 2), (5, 1)])
def test_rank_slices_cover_the_global_batch_exactly_once(batch, world):
    rows = torch.arange(batch)
    parts = [rows[rank_slice(batch, r, world)] for r in range(world)]
    assert torch.equal(torch.cat(parts), rows)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_rank_slice_rejects_a_bad_rank():
    with pytest.raises(ValueError, match="rank 2"):
        rank_slice(8, 2, 2)


def test_single_process_twin_from_an_environment_without_torchrun():
    ctx = DistributedContext.from_env(device="cpu", environ={})
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.is_distributed) == (0, 1, True, False)
    t = torch.tensor([2.0, 3.0])
    assert torch.equal(ctx.all_reduce_mean(t), t) and torch.equal(ctx.all_gather(t), t[None])
    ctx.barrier()

    def check():
        raise SwitchNerfError("run: boom")

    with pytest.raises(SwitchNerfError, match="run: boom"):
        ctx.check_on_main(check)


@pytest.mark.parametrize("env,message", [
    ({"WORLD_SIZE": "2"}, "environment: RANK: not set"),
    ({"WORLD_SIZE": "two", "RANK": "0"}, "environment: WORLD_SIZE: expected an integer, got 'two'"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "environment: RANK: 2 is not in"),
    ({"WORLD_SIZE": "2", "RANK": "0"}, "environment: MASTER_ADDR: not set"),
])
def test_bad_torchrun_environment_is_one_line(env, message):
    with pytest.raises(SwitchNerfError, match=message):
        DistributedContext.from_env(device="cpu", environ=env)


def test_experts_not_divisible_by_world_size_is_a_launch_error():
    with pytest.raises(SwitchNerfError) as err:
        check_expert_placement(6, 4, expert_parallel=True)
    assert str(err.value).startswith("config: model.experts.n_experts: 6 experts cannot be split "
                                     "evenly over 4 ranks")
    check_expert_placement(6, 4, expert_parallel=False)
    check_expert_placement(8, 4, expert_parallel=True)
    check_expert_placement(3, 1, expert_parallel=True)


def test_config_digest_ignores_key_order_and_sees_values():
    a = {"model": {"n": 8, "k": [1, 2]}, "train": {"seed": 0}}
    b = {"train": {"seed": 0}, "model": {"k": [1, 2], "n": 8}}
    assert config_digest(a) == config_digest(b)
    assert config_digest(a) != config_digest({**a, "train": {"seed": 1}})


def test_run_folder_from_another_world_size(tmp_path):
    run = tmp_path / "run"
    assert recorded_world_size(run) is None
    assert check_run_world_size(run, 4, resume=False) is None
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")
    assert recorded_world_size(run) == 1  # a single-process run has no record
    write_world_record(run, 2, expert_parallel=True)
    assert json.loads((run / WORLD_RECORD).read_text()) == {"world_size": 2,
                                                            "expert_parallel": True}
    with pytest.raises(SwitchNerfError) as err:
        check_run_world_size(run, 4, resume=False)
    assert str(err.value) == (f"{run}: run folder was trained by 2 process(es), this launch has 4;"
                              " pass --resume to continue it with 4 or --overwrite to start again")
    assert check_run_world_size(run, 4, resume=True) == 2  # 2 -> 4 on resume
    assert check_run_world_size(run, 2, resume=False) == 2
    (run / WORLD_RECORD).write_text('{"world_size": "x"}')
    with pytest.raises(SwitchNerfError, match="world_size: expected a positive integer"):
        recorded_world_size(run)
