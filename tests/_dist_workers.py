"""Worker processes for tests/test_train_distributed.py: gloo on 127.0.0.1, one process per
rank, started with the ``spawn`` method by :func:`run_ranks`.

The parent writes the cases (:func:`make_cases`) to a folder; each rank reads them, runs
them on its slice and writes what it saw to ``rank<r>.pt``; the parent compares with one
process on the whole batch.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import time
from pathlib import Path

import torch
from torch import nn

N_EXPERTS = 4
N_LEVELS = 4
N_FEATURES = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(target, world: int, out_dir: Path, *args, join_timeout: float = 180.0):
    """Start ``target(rank, world, port, out_dir, *args)`` in ``world`` processes; return
    their exit codes (None for one still running at the deadline, which is then killed)
    and the seconds until each ended."""
    ctx = multiprocessing.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=target, args=(r, world, port, str(out_dir), *args))
             for r in range(world)]
    start = time.monotonic()
    for p in procs:
        p.start()
    ended = [None] * world
    deadline = start + join_timeout
    while any(p.exitcode is None for p in procs) and time.monotonic() < deadline:
        for r, p in enumerate(procs):
            if ended[r] is None and p.exitcode is not None:
                ended[r] = time.monotonic() - start
        time.sleep(0.05)
    codes = [p.exitcode for p in procs]
    for p in procs:
        if p.exitcode is None:
            p.kill()
        p.join()
    return codes


def _start(rank: int, world: int, port: int, out_dir: Path, timeout_s: float):
    """Wait until every rank has imported torch (startup on a busy machine is slow and
    uneven), then join the process group through torchrun's environment variables."""
    torch.set_num_threads(1)
    (out_dir / f"ready{rank}").touch()
    deadline = time.monotonic() + 120
    while not all((out_dir / f"ready{r}").exists() for r in range(world)):
        if time.monotonic() > deadline:
            raise RuntimeError("peers did not start")
        time.sleep(0.05)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    from switchnerf.train.distributed import DistributedContext

    return DistributedContext.from_env(device="cpu", timeout_s=timeout_s)


# ---------------------------------------------------------------------------- cases


def expert_specs():
    from switchnerf.encoding.experts import geometric_expert_specs

    return geometric_expert_specs(N_EXPERTS, base_resolution=4, finest_resolution=64,
                                  coarsest_fraction=0.25, log2_hashmap_size=9)


def make_cases() -> dict:
    """Experts, a head and the batches every test case uses (deterministic)."""
    from switchnerf.encoding.experts import HashExperts

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    experts = HashExperts(expert_specs(), n_levels=N_LEVELS, n_features_per_level=N_FEATURES)
    with torch.no_grad():
        experts.params.uniform_(-1.0, 1.0, generator=gen)
    head = nn.Linear(experts.output_dim, 3)

    def batch(n, ids, splits):
        x = torch.rand(n, 3, generator=gen)
        pick = torch.randint(0, len(ids), (n,), generator=gen)
        return {"x": x, "expert_id": torch.tensor(ids)[pick], "target": torch.rand(n, 3, generator=gen),
                "splits": splits}

    logits = torch.randn(50, N_EXPERTS, generator=gen) * 2
    return {
        "experts": experts.state_dict(), "head": head.state_dict(),
        "encode": {
            "mixed": batch(600, [0, 1, 1, 2, 3, 3, 3], [300, 300]),
            "rank_without_samples": batch(300, [0, 2, 3], [300, 0]),
            "owner_without_samples": batch(200, [0, 1], [120, 80]),
        },
        "stats": {"logits": logits, "pred": torch.rand(50, 3, generator=gen),
                  "target": torch.rand(50, 3, generator=gen), "splits": [37, 13]},
    }


def build_single(cases: dict):
    """The single-process experts and head of the cases."""
    from switchnerf.encoding.experts import HashExperts

    experts = HashExperts(expert_specs(), n_levels=N_LEVELS, n_features_per_level=N_FEATURES)
    experts.load_state_dict(cases["experts"])
    head = nn.Linear(experts.output_dim, 3)
    head.load_state_dict(cases["head"])
    return experts, head


def _part(tensor: torch.Tensor, splits: list[int], rank: int) -> torch.Tensor:
    start = sum(splits[:rank])
    return tensor[start:start + splits[rank]]


class _Field(nn.Module):
    """Stands for a SwitchField: expert encoder under ``experts.``, a dense head."""

    def __init__(self, experts: nn.Module, head: nn.Module):
        super().__init__()
        self.experts, self.head = experts, head


# ---------------------------------------------------------------------------- workers


def checks_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    """Every multi-process check but the dead rank; results to ``rank<r>.pt``."""
    from switchnerf.errors import SwitchNerfError
    from switchnerf.moe.expert_parallel import (
        ExpertParallelEncoder,
        dense_parameters,
        expert_parameters,
        gather_expert_state_dict,
        slice_expert_state_dict,
    )
    from switchnerf.train.distributed import (
        check_same_config,
        global_balance,
        global_expert_load,
        global_mse,
    )

    out_dir = Path(out_dir)
    ctx = _start(rank, world, port, out_dir, timeout_s=60)
    cases = torch.load(out_dir / "cases.pt", weights_only=True)
    res: dict = {"world_size": ctx.world_size, "rank": ctx.rank, "backend": ctx.backend}

    # expert-parallel encode + dense head, loss as this rank's share of the global mean
    for name, case in cases["encode"].items():
        experts, head = build_single(cases)
        enc = ExpertParallelEncoder.from_experts(experts, rank=rank, world_size=world)
        field = _Field(enc, head)
        x, eid, target = (_part(case[k], case["splits"], rank) for k in ("x", "expert_id", "target"))
        feats = enc.encode(x, eid)  # [N_r, L*F]
        n_all = sum(case["splits"]) * 3
        share = ((field.head(feats) - target) ** 2).sum() / n_all
        share.backward()
        ctx.all_reduce_gradients(dense_parameters(field), op="sum")
        grad = enc.local.params.grad
        res[name] = {
            "feats": feats.detach(),
            "table_grad": torch.zeros_like(enc.local.params) if grad is None else grad.clone(),
            "head_grad": [p.grad.clone() for p in field.head.parameters()],
            "n_dense": len(dense_parameters(field)), "n_expert": len(expert_parameters(field)),
            "bytes": [enc.bytes.forward, enc.bytes.backward, enc.bytes.calls],
            "local_range": list(enc.rank_ranges[rank]),
        }
        with torch.no_grad():
            res[name]["feats_no_grad"] = enc.encode(x, eid)

    # state dicts: gather to rank 0, slice back
    experts, head = build_single(cases)
    enc = ExpertParallelEncoder.from_experts(experts, rank=rank, world_size=world)
    field = _Field(enc, head)
    ep_state = field.state_dict()
    gathered = gather_expert_state_dict(ep_state, enc)
    single_state = _Field(experts, head).state_dict()
    sliced = slice_expert_state_dict(single_state, enc)
    field.load_state_dict(sliced)
    res["state"] = {"gathered": gathered, "sliced_equal": all(
        torch.equal(sliced[k], ep_state[k]) for k in ep_state) and sliced.keys() == ep_state.keys()}

    # global-batch statistics on uneven slices
    st = cases["stats"]
    logits = _part(st["logits"], st["splits"], rank).clone().requires_grad_(True)
    probs = torch.softmax(logits, dim=-1)
    expert_id = probs.argmax(dim=-1)
    bal = global_balance(ctx, probs, expert_id)
    bal.share.backward()
    pred = _part(st["pred"], st["splits"], rank).clone().requires_grad_(True)
    mse = global_mse(ctx, pred, _part(st["target"], st["splits"], rank))
    mse.share.backward()
    res["stats"] = {"fraction": bal.fraction, "mean_prob": bal.mean_prob, "value": bal.value,
                    "share": bal.share.detach(), "logits_grad": logits.grad,
                    "load": global_expert_load(ctx, expert_id, N_EXPERTS),
                    "mse": mse.value, "psnr": mse.psnr, "pred_grad": pred.grad}

    # collectives and launch checks
    res["mean"] = ctx.all_reduce_mean(torch.tensor([float(rank + 1)]))
    ctx.barrier()
    check_same_config(ctx, {"model": {"n_experts": 4}, "train": {"seed": 0}})
    res["same_config"] = "ok"
    try:
        check_same_config(ctx, {"model": {"n_experts": 4}, "train": {"seed": rank}})
        res["config_error"] = None
    except SwitchNerfError as exc:
        res["config_error"] = str(exc)

    def fails_on_main():
        raise SwitchNerfError("run: world_size: example failure")

    try:
        ctx.check_on_main(fails_on_main)
        res["main_error"] = None
    except SwitchNerfError as exc:
        res["main_error"] = str(exc)

    # a rank that does not arrive: the monitored barrier names it
    if rank == 1:
        torch.save(res, out_dir / f"rank{rank}.pt")
        time.sleep(4.0)
        return
    start = time.monotonic()
    try:
        ctx.barrier(timeout_s=1.0)
        res["barrier_error"] = None
    except RuntimeError as exc:
        res["barrier_error"] = str(exc)
    res["barrier_s"] = time.monotonic() - start
    torch.save(res, out_dir / f"rank{rank}.pt")


def lost_rank_worker(rank: int, world: int, port: int, out_dir: str, timeout_s: float,
                     mode: str) -> None:
    """Rank 1 dies with ``os._exit`` (mode ``dead``) or stops answering for longer than the
    timeout (``hung``); rank 0 keeps reducing and must fail, not wait forever."""
    out_dir = Path(out_dir)
    ctx = _start(rank, world, port, out_dir, timeout_s=timeout_s)
    ctx.barrier()
    if rank == 1:
        if mode == "hung":
            time.sleep(timeout_s + 3)
        os._exit(3)
    start = time.monotonic()
    try:
        for _ in range(1000):
            ctx.all_reduce_sum(torch.ones(4))
            time.sleep(0.01)
    except Exception as exc:
        (out_dir / "rank0.json").write_text(json.dumps(
            {"error": type(exc).__name__, "message": str(exc)[:300],
             "seconds": time.monotonic() - start}))
        raise
