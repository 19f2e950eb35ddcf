"""Expert parallelism: each rank owns E / W of the hash experts, samples travel to the owner
of their expert and their features come back.

Placement: with E experts on W ranks (E a multiple of W), rank r owns experts
``[r * E / W, (r + 1) * E / W)`` and holds only their tables, a
:class:`~switchnerf.encoding.experts.HashExperts` of its local specs. The local flat table
is exactly the slice of the single-process flat table that holds those experts (experts
are laid out one after another), so state dicts convert by slicing and concatenating.

One :meth:`ExpertParallelEncoder.encode` call (every rank calls it, in the same order):

1. sort the rank's samples by expert (hence by owner rank), stable;
2. exchange the per-owner counts (``all_to_all_single`` of W integers);
3. send positions and local expert ids ([N, 4] float32) to the owners;
4. the owner encodes what it received with the fused op (one call for its experts);
5. features go back with an autograd-aware ``all_to_all_single``; unsort.

Backward runs the feature exchange in reverse: each sample's feature gradient travels to
the owner, whose table gradient sums the contributions of all ranks. No gradient flows to
the positions (as with the fused op). Because the backward exchange is a collective, every
rank must backpropagate through every training-mode encode call exactly once, in the same
order: the output must enter the loss even when it is empty (an empty ``feats.sum()``
does). Under ``torch.no_grad()`` the calls are still collective.

Expert tables are never all-reduced: :func:`dense_parameters` lists what data parallelism
averages, :func:`expert_parameters` what stays on its owner (for DDP, pass
:func:`expert_parameter_names` to
``DistributedDataParallel._set_params_and_buffers_to_ignore_for_model`` before wrapping).
The autograd exchange is this module's own small ``Function`` around the public
``torch.distributed.all_to_all_single`` (``torch.distributed.nn.functional.all_to_all_single``
does the same but is deprecated and warns on every call).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from switchnerf.encoding.experts import HashExperts
from switchnerf.errors import SwitchNerfError
from switchnerf.moe.routing import sort_into_segments
from switchnerf.ops.hash_levels import GridSpec, LevelTable

PAYLOAD_WIDTH = 4
"""Floats sent per sample to its owner: x, y, z and the local expert id (exact in float32)."""


def _dist():
    import torch.distributed as dist

    return dist


def experts_per_rank(n_experts: int, world_size: int) -> int:
    """E / W; ValueError unless E is a positive multiple of W."""
    if world_size < 1 or n_experts < 1 or n_experts % world_size != 0:
        raise ValueError(f"{n_experts} experts cannot be placed evenly on {world_size} ranks")
    return n_experts // world_size


def owned_experts(n_experts: int, world_size: int, rank: int) -> range:
    """The global ids of the experts rank ``rank`` owns.

    >>> list(owned_experts(8, 4, 1))
    [2, 3]
    """
    per = experts_per_rank(n_experts, world_size)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    return range(rank * per, (rank + 1) * per)


@dataclass
class ExchangeBytes:
    """Bytes this rank sent to other ranks (its own samples are not counted), cumulative
    since the last :meth:`ExpertParallelEncoder.reset_bytes`: ``forward`` counts, positions
    and features; ``backward`` the feature gradients; ``calls`` the encode calls."""

    forward: int = 0
    backward: int = 0
    calls: int = 0

    @property
    def total(self) -> int:
        return self.forward + self.backward


class _AllToAll(torch.autograd.Function):
    """``all_to_all_single`` along dim 0 whose backward is the reverse exchange."""

    @staticmethod
    def forward(ctx, x, out_splits, in_splits, group, rank, counter):
        ctx.splits = (out_splits, in_splits)
        ctx.group, ctx.rank, ctx.counter = group, rank, counter
        return _exchange(x, out_splits, in_splits, group)

    @staticmethod
    def backward(ctx, grad_out):
        out_splits, in_splits = ctx.splits
        grad_out = grad_out.contiguous()
        row_bytes = math.prod(grad_out.shape[1:]) * grad_out.element_size()
        ctx.counter.backward += (sum(out_splits) - out_splits[ctx.rank]) * row_bytes
        return _exchange(grad_out, in_splits, out_splits, ctx.group), None, None, None, None, None


def _exchange(x: torch.Tensor, out_splits: list[int], in_splits: list[int], group) -> torch.Tensor:
    """Rows of ``x`` split by ``in_splits`` go to the ranks in order; the result holds
    ``out_splits[r]`` rows from rank r. x [sum(in_splits), ...] -> [sum(out_splits), ...]."""
    out = x.new_empty((sum(out_splits), *x.shape[1:]))
    _dist().all_to_all_single(out, x.contiguous(), out_splits, in_splits, group=group)
    return out


def _full_levels(specs: Sequence[GridSpec], n_levels: int, n_features: int) -> LevelTable:
    return LevelTable.for_experts(specs, n_levels=n_levels, n_features=n_features)


class ExpertParallelEncoder(nn.Module):
    """This rank's share of E hash experts, and the exchange that encodes any sample.

    specs: the GridSpecs of all E experts (every rank passes the same list); the rank
    builds ``local``, a HashExperts of its ``E / W`` experts ``owned``. ``group``: the
    process group (None: the default one). With ``world_size == 1`` no collective is called
    and ``encode`` is ``local.encode``. ``rank_ranges[r]`` is ``(start, stop)`` of rank r's
    experts in the single-process flat table; ``bytes`` counts what this rank sent.
    """

    def __init__(self, specs: Sequence[GridSpec], *, rank: int, world_size: int,
                 n_levels: int = 16, n_features_per_level: int = 2, group=None):
        super().__init__()
        self.specs = tuple(specs)
        self.rank, self.world_size, self.group = rank, world_size, group
        self.owned = owned_experts(len(self.specs), world_size, rank)
        self.n_local = len(self.owned)
        self.local = HashExperts(self.specs[self.owned.start:self.owned.stop],
                                 n_levels=n_levels, n_features_per_level=n_features_per_level)
        full = _full_levels(self.specs, n_levels, n_features_per_level)
        f = n_features_per_level
        self.full_param_count = full.n_rows * f
        self.rank_ranges: tuple[tuple[int, int], ...] = tuple(
            (full.expert_rows(ex.start)[0] * f, full.expert_rows(ex.stop - 1)[1] * f)
            for ex in (owned_experts(len(self.specs), world_size, r) for r in range(world_size)))
        self.bytes = ExchangeBytes()

    @classmethod
    def from_experts(cls, experts: HashExperts, *, rank: int, world_size: int,
                     group=None) -> ExpertParallelEncoder:
        """The rank's share of a single-process ``experts``, its table values copied."""
        enc = cls(experts.specs, rank=rank, world_size=world_size, n_levels=experts.n_levels,
                  n_features_per_level=experts.n_features_per_level, group=group)
        enc.to(device=experts.params.device)
        with torch.no_grad():
            enc.local.params.copy_(enc.slice_table(experts.params))
        return enc

    # ------------------------------------------------------------------ properties
    @property
    def n_experts(self) -> int:
        return len(self.specs)

    @property
    def output_dim(self) -> int:
        return self.local.output_dim

    def reset_bytes(self) -> ExchangeBytes:
        """The byte counts so far, and start counting again from zero."""
        done, self.bytes = self.bytes, ExchangeBytes()
        return done

    # ------------------------------------------------------------------ encoding
    def encode(self, x: torch.Tensor, expert_id: torch.Tensor) -> torch.Tensor:
        """Encode each sample with its expert, wherever that expert lives.

        x: float [N, 3] in the unit cube (sent as float32; must not require grad);
        expert_id: int64 [N] global expert ids in [0, E). N may differ between ranks and
        be 0. Returns float32 [N, L * F], equal to the single-process
        ``HashExperts.encode(x, expert_id)``; differentiable w.r.t. the owners' tables.
        """
        if x.dim() != 2 or x.shape[1] != 3:
            raise ValueError(f"ExpertParallelEncoder.encode: x has shape {tuple(x.shape)}, "
                             "expected [N, 3]")
        if expert_id.shape != (x.shape[0],) or expert_id.dtype != torch.int64:
            raise ValueError(f"ExpertParallelEncoder.encode: expert_id has shape "
                             f"{tuple(expert_id.shape)} and dtype {expert_id.dtype}, expected "
                             f"int64 [{x.shape[0]}]")
        if x.requires_grad:
            raise ValueError("ExpertParallelEncoder.encode: x requires grad, but samples are "
                             "exchanged without a gradient w.r.t. their positions")
        self.bytes.calls += 1
        if self.world_size == 1:
            return self.local.encode(x, expert_id)
        w, per = self.world_size, self.n_local
        lay = sort_into_segments(expert_id, self.n_experts)  # perm [N], counts [>= E]
        if lay.counts.numel() != self.n_experts:
            raise ValueError(f"ExpertParallelEncoder.encode: expert ids must be in "
                             f"[0, {self.n_experts})")
        send_counts = lay.counts.view(w, per).sum(dim=1)  # [W] samples per owner
        recv_counts = _exchange(send_counts, [1] * w, [1] * w, self.group)  # [W]
        send, recv = send_counts.tolist(), recv_counts.tolist()
        sorted_id = expert_id[lay.perm]  # [N]
        local_id = sorted_id % per  # [N] expert id on its owner
        payload = torch.cat([x[lay.perm].float(), local_id.float()[:, None]], dim=1)  # [N, 4]
        got = _exchange(payload, recv, send, self.group)  # [M, 4]
        feats = self.local.encode(got[:, :3].contiguous(), got[:, 3].long())  # [M, L*F]
        back = _AllToAll.apply(feats, send, recv, self.group, self.rank, self.bytes)  # [N, L*F]
        row = self.output_dim * feats.element_size()
        off_sent, off_recv = sum(send) - send[self.rank], sum(recv) - recv[self.rank]
        self.bytes.forward += ((w - 1) * send_counts.element_size()
                               + off_sent * PAYLOAD_WIDTH * payload.element_size()
                               + off_recv * row)
        inverse = torch.empty_like(lay.perm)
        inverse[lay.perm] = torch.arange(lay.perm.numel(), device=lay.perm.device)
        return back[inverse]

    def forward(self, x: torch.Tensor, expert_id: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`encode`."""
        return self.encode(x, expert_id)

    # ------------------------------------------------------------------ tables and state
    def slice_table(self, full: torch.Tensor) -> torch.Tensor:
        """This rank's values [P_r] of a single-process flat expert tensor [P] (the table,
        or an optimiser moment of it), as a copy."""
        if full.dim() != 1 or full.numel() != self.full_param_count:
            raise SwitchNerfError(
                f"expert table: has shape {tuple(full.shape)}, expected [{self.full_param_count}]"
                f" for these {self.n_experts} experts (another model config?)")
        start, stop = self.rank_ranges[self.rank]
        return full[start:stop].clone()

    def gather_table(self, local: torch.Tensor, dst: int = 0) -> torch.Tensor | None:
        """The single-process flat tensor [P] assembled on rank ``dst`` from every rank's
        local values [P_r] (the table, or an optimiser moment of it); None on other ranks.
        Collective: every rank calls it."""
        start, stop = self.rank_ranges[self.rank]
        if local.shape != (stop - start,):
            raise ValueError(f"gather_table: local tensor has shape {tuple(local.shape)}, "
                             f"expected [{stop - start}]")
        if self.world_size == 1:
            return local.detach().clone()
        sizes = [b - a for a, b in self.rank_ranges]
        biggest = max(sizes)
        padded = local.detach().new_zeros(biggest)
        padded[:local.numel()] = local.detach()
        parts = [torch.empty_like(padded) for _ in sizes] if self.rank == dst else None
        _dist().gather(padded, parts, dst=dst, group=self.group)
        if self.rank != dst:
            return None
        return torch.cat([p[:n] for p, n in zip(parts, sizes)])

    def extra_repr(self) -> str:
        return (f"rank={self.rank}, world_size={self.world_size}, "
                f"experts=[{self.owned.start}, {self.owned.stop}) of {self.n_experts}")


# ---------------------------------------------------------------------------- parameters


def _encoders(module: nn.Module) -> list[tuple[str, ExpertParallelEncoder]]:
    return [(name, m) for name, m in module.named_modules() if isinstance(m, ExpertParallelEncoder)]


def expert_parameter_names(module: nn.Module) -> list[str]:
    """Qualified names of the expert-parallel tables in ``module`` (owned by one rank each)."""
    names = []
    for prefix, enc in _encoders(module):
        names += [f"{prefix}.{n}" if prefix else n for n, _ in enc.named_parameters()]
    return names


def expert_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Parameters that live on one rank only: never all-reduced."""
    return [p for _, enc in _encoders(module) for p in enc.parameters()]


def dense_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Every other parameter of ``module``: replicated, gradients all-reduced."""
    experts = {id(p) for p in expert_parameters(module)}
    return [p for p in module.parameters() if id(p) not in experts]


# ---------------------------------------------------------------------------- state dicts


def gather_expert_state_dict(state: dict[str, torch.Tensor], encoder: ExpertParallelEncoder,
                             *, prefix: str = "experts.",
                             dst: int = 0) -> dict[str, torch.Tensor] | None:
    """A single-process state dict on rank ``dst`` from each rank's expert-parallel one.

    ``state``: this rank's ``module.state_dict()``, whose ``encoder`` is registered under
    ``prefix`` (``experts.`` in a SwitchField); its ``<prefix>local.params`` [P_r] become
    the full ``<prefix>params`` [P] that a single-process ``HashExperts`` loads; every
    other entry is kept (dense parameters are equal on all ranks). None on other ranks.
    Collective: every rank calls it.
    """
    key = prefix + "local.params"
    if key not in state:
        raise KeyError(f"gather_expert_state_dict: no {key!r} in the state dict")
    full = encoder.gather_table(state[key], dst=dst)
    if full is None:
        return None
    return {(prefix + "params" if k == key else k): (full if k == key else v)
            for k, v in state.items()}


def slice_expert_state_dict(state: dict[str, torch.Tensor], encoder: ExpertParallelEncoder,
                            *, prefix: str = "experts.") -> dict[str, torch.Tensor]:
    """The inverse of :func:`gather_expert_state_dict` for this rank: a single-process state
    dict (full ``<prefix>params``) turned into the one this rank's module loads
    (``<prefix>local.params``, its experts only). Works for any world size, so a checkpoint
    resumes on another number of ranks."""
    key = prefix + "params"
    if key not in state:
        raise SwitchNerfError(f"state dict: {key}: missing (not a switchnerf field?)")
    return {(prefix + "local.params" if k == key else k):
            (encoder.slice_table(v) if k == key else v) for k, v in state.items()}
