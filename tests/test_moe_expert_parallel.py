"""Expert parallelism without a process group: placement, table slices, state-dict
conversion, the single-rank path. The two-process exchange is tested in
tests/test_train_distributed.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from switchnerf.encoding.experts import HashExperts, geometric_expert_specs
from switchnerf.errors import SwitchNerfError
from switchnerf.moe.expert_parallel import (
    ExpertParallelEncoder,
    dense_parameters,
    expert_parameter_names,
    expert_parameters,
    experts_per_rank,
    owned_experts,
    slice_expert_state_dict,
)

L, F = 4, 2


def _experts(n: int = 4) -> HashExperts:
    specs = geometric_expert_specs(n, base_resolution=4, finest_resolution=64,
                                   coarsest_fraction=0.25, log2_hashmap_size=9)
    torch.manual_seed(0)
    experts = HashExperts(specs, n_levels=L, n_features_per_level=F)
    with torch.no_grad():
        experts.params.uniform_(-1, 1)
    return experts


class _Field(nn.Module):
    def __init__(self, experts: nn.Module):
        super().__init__()
        self.experts = experts
        self.head = nn.Linear(L * F, 3)


def test_placement():
    assert experts_per_rank(8, 4) == 2
    assert [list(owned_experts(6, 3, r)) for r in range(3)] == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(ValueError, match="6 experts cannot be placed evenly on 4 ranks"):
        experts_per_rank(6, 4)
    with pytest.raises(ValueError, match="rank 2"):
        owned_experts(4, 2, 2)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_local_tables_are_contiguous_slices_of_the_single_process_table(world):
    full = _experts(4)
    parts = [ExpertParallelEncoder.from_experts(full, rank=r, world_size=world)
             for r in range(world)]
    assert torch.equal(torch.cat([p.local.params.detach() for p in parts]), full.params.detach())
    for p in parts:
        assert p.full_param_count == full.params.numel()
        start, stop = p.rank_ranges[p.rank]
        assert start == full.expert_param_slice(p.owned.start).start
        assert stop == full.expert_param_slice(p.owned.stop - 1).stop
        # the local level geometry is the full one's rows for those experts
        lv, fl = p.local.levels, full.levels
        rows = slice(p.owned.start, p.owned.stop)
        for name in ("scale", "resolution", "size", "hashed"):
            assert torch.equal(getattr(lv, name), getattr(fl, name)[rows]), name
        assert torch.equal(lv.offset, fl.offset[rows] - fl.offset[p.owned.start, 0])


def test_one_rank_encodes_like_hash_experts(native):
    full = _experts(4)
    enc = ExpertParallelEncoder.from_experts(full, rank=0, world_size=1)
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(500, 3, generator=gen)
    eid = torch.randint(0, 4, (500,), generator=gen)
    ref = full.encode(x, eid)
    out = enc.encode(x, eid)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    out.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(enc.local.params.grad, full.params.grad, rtol=1e-6, atol=1e-7)
    assert (enc.bytes.forward, enc.bytes.backward, enc.bytes.calls) == (0, 0, 1)
    assert enc.reset_bytes().calls == 1 and enc.bytes.calls == 0
    full_back = enc.gather_table(enc.local.params.detach())
    assert torch.equal(full_back, full.params.detach())


def test_encode_rejects_bad_inputs():
    enc = ExpertParallelEncoder(geometric_expert_specs(2, finest_resolution=256, log2_hashmap_size=8),
                                rank=0, world_size=1, n_levels=L, n_features_per_level=F)
    with pytest.raises(ValueError, match="x requires grad"):
        enc.encode(torch.rand(3, 3, requires_grad=True), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expected \[N, 3\]"):
        enc.encode(torch.rand(3, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expected int64 \[3\]"):
        enc.encode(torch.rand(3, 3), torch.zeros(3, dtype=torch.int32))


@pytest.mark.parametrize("world", [1, 2, 4])
def test_state_dict_slices_round_trip_across_world_sizes(world):
    full = _experts(4)
    single = _Field(full).state_dict()
    rebuilt = []
    for r in range(world):
        enc = ExpertParallelEncoder.from_experts(_experts(4), rank=r, world_size=world)
        field = _Field(enc)
        local = slice_expert_state_dict(single, enc)
        assert set(local) == set(field.state_dict())
        field.load_state_dict(local)  # strict: the shapes fit this rank's module
        assert torch.equal(local["head.weight"], single["head.weight"])
        rebuilt.append(local["experts.local.params"])
    assert torch.equal(torch.cat(rebuilt), single["experts.params"])  # 1 -> W -> 1


def test_slicing_a_table_of_another_model_is_one_line():
    enc = ExpertParallelEncoder.from_experts(_experts(4), rank=0, world_size=2)
    with pytest.raises(SwitchNerfError, match=r"expert table: has shape \(10,\), expected \["):
        enc.slice_table(torch.zeros(10))
    with pytest.raises(SwitchNerfError, match="experts.params: missing"):
        slice_expert_state_dict({"head.weight": torch.zeros(1)}, enc)


def test_parameter_split_keeps_expert_tables_out_of_data_parallel():
    enc = ExpertParallelEncoder.from_experts(_experts(4), rank=1, world_size=2)
    field = _Field(enc)
    assert expert_parameter_names(field) == ["experts.local.params"]
    assert expert_parameter_names(enc) == ["local.params"]
    assert [p is enc.local.params for p in expert_parameters(field)] == [True]
    dense = dense_parameters(field)
    assert len(dense) == 2 and all(p is not enc.local.params for p in dense)
    replicated = _Field(_experts(4))  # plain data parallel: every table is dense
    assert expert_parameters(replicated) == []
    assert len(dense_parameters(replicated)) == 3
