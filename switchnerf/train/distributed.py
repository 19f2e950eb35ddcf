"""Many processes with torch.distributed, launched by torchrun: who am I, and the collectives
the trainer needs.

:class:`DistributedContext` holds rank, world size, local rank and device.
:meth:`DistributedContext.from_env` reads torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and starts the process group: NCCL when the
device is CUDA, gloo on the CPU. Without ``WORLD_SIZE`` it returns the single-process twin,
whose collectives are no-ops, so one code path serves both.

Failure: the process group gets a finite timeout, so no rank waits forever for a peer.

* gloo: a peer that dies closes its sockets and the others' pending collectives raise at
  once ("Connection reset by peer"); a peer that hangs makes them raise after the timeout
  ("Timed out waiting ... for recv"). :meth:`DistributedContext.barrier` is a
  ``monitored_barrier`` on gloo: rank 0 names the ranks that did not arrive.
  ``TORCH_NCCL_ASYNC_ERROR_HANDLING`` does not apply to gloo.
* NCCL: collectives are asynchronous; a watchdog thread enforces the timeout, and with
  ``TORCH_NCCL_ASYNC_ERROR_HANDLING=1`` (torchrun's default, set here when unset) it aborts
  the communicator and ends the process instead of leaving it blocked in a kernel.

torchrun itself stops the other workers of a node when one exits non-zero; the timeout
covers what it cannot see (a peer on another node, a hung peer).

The timeout also bounds work done by one rank while the others wait in a collective (rank
0's periodic eval or checkpoint write): keep such work shorter than the timeout, or wait
for it with ``barrier(timeout_s=...)``.

Batches: ``train.rays_per_step`` is the global batch. Rank r trains on
``rank_slice(B, r, W)`` of exactly the batch one process would draw. The statistics below
return each rank's *share* of a global-batch quantity: shares sum over ranks to what one
process computes on the whole batch, so gradients **summed** over ranks (the expert
exchange does this for the expert tables; :meth:`DistributedContext.all_reduce_gradients`
with ``op="sum"`` for the dense parameters) equal one process's gradients. A trainer that
wraps the dense parameters in DDP (which averages) multiplies its loss by the world size.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from switchnerf.errors import SwitchNerfError
from switchnerf.io_utils import write_json_atomic

DEFAULT_TIMEOUT_S = 30.0
"""Process-group timeout: a hung peer makes the others raise after this many seconds."""

WORLD_RECORD = "distributed.json"
"""File in a run folder that records the world size the run was trained with."""


def _dist():
    import torch.distributed as dist

    return dist


def _env_int(environ: Mapping[str, str], name: str, default: int | None = None) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        if default is None:
            raise SwitchNerfError(f"environment: {name}: not set (launch with torchrun)")
        return default
    try:
        return int(raw)
    except ValueError:
        raise SwitchNerfError(f"environment: {name}: expected an integer, got {raw!r}") from None


@dataclass(frozen=True)
class DistributedContext:
    """Rank, world size, local rank and device of this process.

    ``backend`` is None for the single-process twin (no process group; every collective
    returns its input). ``group`` is the process group the collectives use (None: the
    default group); ``wait_group``, with NCCL, a gloo group of the same ranks for
    :meth:`barrier` (a barrier with its own timeout while rank 0 works alone).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None
    group: Any = None
    wait_group: Any = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def single(cls, device: str | torch.device = "cpu") -> DistributedContext:
        """The single-process twin: rank 0 of 1, no process group."""
        return cls(device=torch.device(device))

    @classmethod
    def from_env(cls, *, device: str | torch.device | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S,
                 environ: Mapping[str, str] | None = None) -> DistributedContext:
        """This process's place in a torchrun launch, with the process group started.

        device: None picks ``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU; a
        bare ``"cuda"`` becomes ``cuda:<LOCAL_RANK>``. The backend is NCCL for CUDA and
        gloo for the CPU. Without ``WORLD_SIZE`` in the environment: the single-process
        twin on ``device``. A bad variable raises SwitchNerfError naming it.
        """
        env = os.environ if environ is None else environ
        if env.get("WORLD_SIZE") in (None, ""):
            return cls.single(device if device is not None else _default_device(0))
        world = _env_int(env, "WORLD_SIZE")
        rank = _env_int(env, "RANK")
        local_rank = _env_int(env, "LOCAL_RANK", rank)
        if world < 1 or not 0 <= rank < world:
            raise SwitchNerfError(f"environment: RANK: {rank} is not in [0, WORLD_SIZE={world})")
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if not env.get(name):
                raise SwitchNerfError(f"environment: {name}: not set (launch with torchrun)")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        dev = _resolve_device(device, local_rank)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(dev)
            os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        dist = _dist()
        timeout = datetime.timedelta(seconds=timeout_s)
        if not dist.is_initialized():
            dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world,
                                    timeout=timeout)
        wait_group = dist.new_group(backend="gloo", timeout=timeout) if backend == "nccl" else None
        return cls(rank=rank, world_size=world, local_rank=local_rank, device=dev,
                   backend=backend, wait_group=wait_group)

    def close(self) -> None:
        """Destroy the process group (nothing for the single-process twin)."""
        if self.is_distributed and _dist().is_initialized():
            _dist().destroy_process_group()

    # ------------------------------------------------------------------ who am I
    @property
    def is_distributed(self) -> bool:
        """True when a process group is running (even a group of one)."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """Rank 0: the rank that writes the run folder."""
        return self.rank == 0

    # ------------------------------------------------------------------ collectives
    def barrier(self, timeout_s: float | None = None) -> None:
        """Wait for every rank: a gloo ``monitored_barrier`` (on ``wait_group`` with NCCL)
        whose error names the ranks that did not arrive within ``timeout_s`` (None: the
        group's timeout)."""
        if not self.is_distributed:
            return
        dist = _dist()
        gloo_group = self.group if self.backend == "gloo" else self.wait_group
        if self.backend == "gloo" or gloo_group is not None:
            timeout = None if timeout_s is None else datetime.timedelta(seconds=timeout_s)
            dist.monitored_barrier(group=gloo_group, timeout=timeout, wait_all_ranks=True)
        else:
            dist.barrier(group=self.group, device_ids=[self.device.index or 0])

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum of ``tensor`` over ranks, as a new tensor (no gradient flows through it)."""
        out = tensor.detach().clone()
        if self.is_distributed:
            _dist().all_reduce(out, group=self.group)
        return out

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """Mean of a floating-point ``tensor`` over ranks, as a new tensor."""
        return self.all_reduce_sum(tensor) / self.world_size

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` of every rank stacked: [W, *tensor.shape] (equal shapes on all ranks)."""
        if not self.is_distributed:
            return tensor.detach().clone()[None]
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        _dist().all_gather(parts, tensor.detach().contiguous(), group=self.group)
        return torch.stack(parts)

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s picklable ``obj`` on every rank."""
        if not self.is_distributed:
            return obj
        box = [obj]
        _dist().broadcast_object_list(box, src=src, group=self.group,
                                      device=self.device if self.backend == "nccl" else None)
        return box[0]

    def all_reduce_gradients(self, params: Iterable[torch.nn.Parameter], *,
                             op: str = "sum") -> None:
        """Sum (or mean) the ``.grad`` of ``params`` over ranks in place, one flat buffer per
        dtype. A parameter without a gradient counts as zeros (and gets one), so every rank
        sends buffers of the same size. Pass the dense parameters only (never the expert
        tables of expert parallelism)."""
        if op not in ("sum", "mean"):
            raise ValueError(f"op must be 'sum' or 'mean', got {op!r}")
        params = [p for p in params if p.requires_grad]
        if not self.is_distributed or not params:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}
        for p in params:
            by_dtype.setdefault(p.grad.dtype, []).append(p)
        for group in by_dtype.values():
            flat = torch.cat([p.grad.reshape(-1) for p in group])
            _dist().all_reduce(flat, group=self.group)
            if op == "mean":
                flat /= self.world_size
            for p, part in zip(group, flat.split([p.numel() for p in group])):
                p.grad.copy_(part.view_as(p.grad))

    def check_on_main(self, check: Callable[[], None]) -> None:
        """Run ``check`` on rank 0 only (it may read the run folder, which other nodes may
        not see) and raise its SwitchNerfError on every rank, so all exit together."""
        message = None
        failure: BaseException | None = None
        if self.is_main:
            try:
                check()
            except SwitchNerfError as exc:
                message = str(exc)
            except Exception as exc:  # noqa: BLE001 - reported to the other ranks, re-raised here
                message, failure = f"rank 0 failed a launch check ({type(exc).__name__})", exc
        message = self.broadcast_object(message)
        if failure is not None:
            raise failure
        if message is not None:
            raise SwitchNerfError(message)


def _default_device(local_rank: int) -> torch.device:
    return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")


def _resolve_device(device: str | torch.device | None, local_rank: int) -> torch.device:
    if device is None:
        dev = _default_device(local_rank)
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", local_rank)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SwitchNerfError(f"device: {dev}: CUDA is not available")
        if dev.index >= torch.cuda.device_count():
            raise SwitchNerfError(f"environment: LOCAL_RANK: device {dev} does not exist "
                                  f"({torch.cuda.device_count()} CUDA devices)")
    return dev


# ---------------------------------------------------------------------------- global batch


def rank_slice(global_batch_size: int, rank: int, world_size: int) -> slice:
    """The rows of a global batch that rank ``rank`` of ``world_size`` trains on.

    Contiguous blocks ``[r * B // W, (r + 1) * B // W)``: every row belongs to exactly one
    rank and sizes differ by at most one.

    >>> [rank_slice(10, r, 4) for r in range(4)]
    [slice(0, 2, None), slice(2, 5, None), slice(5, 7, None), slice(7, 10, None)]
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    if global_batch_size < 0:
        raise ValueError(f"global_batch_size must be >= 0, got {global_batch_size}")
    return slice(rank * global_batch_size // world_size,
                 (rank + 1) * global_batch_size // world_size)


@dataclass
class BalanceTerms:
    """Switch load-balance statistics of the global batch (``E * sum_e f_e * P_e``).

    fraction: f_e [E], fraction of the global batch's points routed to e (no gradient);
    mean_prob: P_e [E], mean gate probability over the global batch (no gradient);
    value: scalar, the global balance loss (no gradient, for logging);
    share: scalar with gradient, this rank's share ``E * sum_e f_e * sum(probs[:, e]) / M``
    (M the global point count); the shares sum over ranks to ``value``.
    """

    fraction: torch.Tensor
    mean_prob: torch.Tensor
    value: torch.Tensor
    share: torch.Tensor


def global_balance(ctx: DistributedContext, probs: torch.Tensor,
                   expert_id: torch.Tensor) -> BalanceTerms:
    """Balance-loss terms over the global batch from this rank's probs [M_r, E] and top-1
    expert_id int64 [M_r]. One all-reduce of 2E + 1 numbers. With one process ``share`` and
    ``value`` equal :func:`switchnerf.moe.routing.balance_loss` (0 for an empty batch)."""
    e = probs.shape[1]
    prob_sum = probs.sum(dim=0)  # [E], differentiable
    counts = torch.bincount(expert_id, minlength=e)[:e].to(probs.dtype)  # [E]
    m = torch.tensor([expert_id.shape[0]], dtype=probs.dtype, device=probs.device)
    total = ctx.all_reduce_sum(torch.cat([counts, prob_sum.detach(), m]))  # [2E + 1]
    m_all = total[-1].clamp_min(1.0)
    fraction, mean_prob = total[:e] / m_all, total[e:2 * e] / m_all
    share = e * torch.sum(fraction * prob_sum) / m_all
    return BalanceTerms(fraction, mean_prob, e * torch.sum(fraction * mean_prob), share)


def global_expert_load(ctx: DistributedContext, expert_id: torch.Tensor,
                       n_experts: int) -> torch.Tensor:
    """Fraction of the global batch's points per expert, float32 [E] (zeros when empty);
    equals :func:`switchnerf.moe.routing.expert_load` of the whole batch."""
    counts = ctx.all_reduce_sum(torch.bincount(expert_id, minlength=n_experts)[:n_experts].float())
    return counts / counts.sum().clamp_min(1.0)


@dataclass
class GlobalMse:
    """Mean squared error over the global batch: ``value`` (no gradient) and this rank's
    ``share`` (with gradient, ``sum((pred - target)^2) / n_global``; shares sum to value)."""

    value: torch.Tensor
    share: torch.Tensor

    @property
    def psnr(self) -> float:
        """``-10 log10(value)``, the PSNR of the global batch (inf for a perfect fit)."""
        mse = float(self.value)
        return math.inf if mse <= 0 else -10.0 * math.log10(mse)


def global_mse(ctx: DistributedContext, pred: torch.Tensor, target: torch.Tensor) -> GlobalMse:
    """MSE of pred vs target ([N_r, C] each on this rank) over the global batch; with one
    process ``share == value == mean((pred - target)^2)``."""
    sq = torch.sum((pred.float() - target.float()) ** 2)
    local = torch.stack([sq.detach(), sq.new_tensor(float(pred.numel()))])
    total = ctx.all_reduce_sum(local)  # [2]
    n = total[1].clamp_min(1.0)
    return GlobalMse(total[0] / n, sq / n)


# ---------------------------------------------------------------------------- launch checks


def check_expert_placement(n_experts: int, world_size: int, *, expert_parallel: bool) -> None:
    """Expert parallelism places E / W experts on each rank: E must be a multiple of W."""
    if expert_parallel and world_size > 1 and n_experts % world_size != 0:
        raise SwitchNerfError(
            f"config: model.experts.n_experts: {n_experts} experts cannot be split evenly over "
            f"{world_size} ranks with expert parallelism on; use a multiple of {world_size}, "
            "another number of processes, or plain data parallelism")


def config_digest(cfg_dict: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a config dict, independent of key order."""
    text = json.dumps(cfg_dict, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def check_same_config(ctx: DistributedContext, cfg_dict: Mapping[str, Any]) -> None:
    """Raise SwitchNerfError on every rank unless all ranks hold the same config (compared
    by digest with one all_gather)."""
    if not ctx.is_distributed:
        return
    digest = config_digest(cfg_dict)
    word = int.from_bytes(bytes.fromhex(digest[:16]), "big", signed=True)
    words = ctx.all_gather(torch.tensor([word], dtype=torch.int64, device=ctx.device))
    words = [int(w) for w in words.view(-1).tolist()]
    differ = [r for r, w in enumerate(words) if w != words[0]]
    if differ:
        raise SwitchNerfError(
            f"config: differs across ranks (rank {differ[0]} has another config than rank 0; "
            f"{len(differ)} of {ctx.world_size} ranks differ); launch every rank with the same "
            "--config and --set")


def write_world_record(run_dir: Path, world_size: int, *, expert_parallel: bool) -> None:
    """Record in the run folder how many ranks train it (atomic write; rank 0 only)."""
    write_json_atomic(Path(run_dir) / WORLD_RECORD,
                      {"world_size": int(world_size), "expert_parallel": bool(expert_parallel)})


def recorded_world_size(run_dir: Path) -> int | None:
    """World size a run folder was trained with: its record, 1 for a run folder without one
    (single-process runs), None when there is no run there."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return None
    path = run_dir / WORLD_RECORD
    if not path.is_file():
        return 1
    try:
        value = json.loads(path.read_text())["world_size"]
    except (ValueError, KeyError, TypeError):
        raise SwitchNerfError(f"{path}: world_size: missing or unreadable") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SwitchNerfError(f"{path}: world_size: expected a positive integer, got {value!r}")
    return value


def check_run_world_size(run_dir: Path, world_size: int, *, resume: bool,
                         overwrite: bool = False) -> int | None:
    """Refuse to start a new run in a folder trained with another world size.

    Checkpoints are single-process shaped, so ``--resume`` continues with any world size
    (2 -> 1 and 1 -> 2). Returns the recorded world size (None: no run there).
    """
    found = recorded_world_size(run_dir)
    if found is not None and found != world_size and not resume and not overwrite:
        raise SwitchNerfError(
            f"{run_dir}: run folder was trained by {found} process(es), this launch has "
            f"{world_size}; pass --resume to continue it with {world_size} or --overwrite "
            "to start again")
    return found
