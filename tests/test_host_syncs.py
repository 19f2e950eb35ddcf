"""Host-device syncs: the counter on hand cases, and the budget of a training step (on a GPU
each sync drains the launch queue; counted on the CPU, where the same ops run)."""

from __future__ import annotations

import pytest
import torch

from switchnerf.ops.counts import counts_per_id, select_where
from switchnerf.ops.host_syncs import HostSyncCounter


def test_counter_counts_the_ops_that_wait_for_the_device_and_nothing_else():
    x = torch.arange(10.0)
    mask = x > 4
    with HostSyncCounter() as syncs:
        y = x * 2 + 1  # elementwise: no sync
        torch.sort(y)
        torch.cumsum(y, 0)
        float(y.sum())  # scalar read
        x[mask]  # boolean-mask index
        torch.nonzero(mask)
        torch.unique(x)
        torch.bincount(x.long(), minlength=12)
        torch.repeat_interleave(torch.tensor([1, 2]))  # output size from the data
        torch.repeat_interleave(torch.tensor([1, 2]), output_size=3)  # size given: no sync
        y.tolist()
    assert syncs.by_kind == {"scalar read": 1, "boolean-mask index": 1, "nonzero": 1,
                             "unique": 1, "bincount": 1, "repeat_interleave": 1,
                             "copy to host (tolist)": 1}
    assert syncs.count == 7
    assert "test_host_syncs.py" in syncs.report()


def test_counts_per_id_matches_bincount_without_a_sync():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 5, (1000,), generator=gen)
    with HostSyncCounter() as syncs:
        counts = counts_per_id(ids, 7)
    assert syncs.count == 0
    assert counts.dtype == torch.int64
    assert torch.equal(counts, torch.bincount(ids, minlength=7))
    assert torch.equal(counts_per_id(ids[:0], 3), torch.zeros(3, dtype=torch.int64))


def test_select_where_is_boolean_indexing_with_one_sync():
    gen = torch.Generator().manual_seed(1)
    mask = torch.rand(500, generator=gen) > 0.3
    a, b = torch.randn(500, 3, generator=gen), torch.arange(500)
    with HostSyncCounter() as syncs:
        sa, sb = select_where(mask, a, b)
    assert syncs.count == 1
    assert torch.equal(sa, a[mask]) and torch.equal(sb, b[mask])


def _as_on_cuda(monkeypatch):
    """Choose every op as a CUDA tensor would (torch twins of the CPU-only native ops, the
    fused hash encoding standing for its CUDA kernel), so the CPU counts a GPU step's syncs."""
    import switchnerf.ops.front_to_back as f2b
    import switchnerf.ops.hash_encode as he
    from switchnerf import ops
    from switchnerf.render import sampler

    select = he._select_backend
    fused = select(torch.zeros(1, 3), torch.zeros(4, 2))
    monkeypatch.setattr(he, "_select_backend",
                        lambda x, table: fused if select(x, table) is fused else select(x, table))
    for module in (ops, sampler, f2b):
        monkeypatch.setattr(module, "native_available", lambda: False)


@pytest.mark.parametrize("prune, grid_update, budget", [
    (False, False, 3),  # the march (chunk plan, compaction), the finiteness check
    (True, False, 4),  # and the pruning pass's compaction
    (False, True, 5),  # and the occupancy update (unique cells, occupied-cell list)
])
def test_a_training_step_waits_for_the_device_a_few_times(tiny_scene, tmp_path, monkeypatch,
                                                          prune, grid_update, budget):
    """A GPU step is fast only if the host runs ahead of the device: a budget of syncs per
    step (counted on the CPU, ops chosen as on CUDA); the statistics cost one copy on log
    steps."""
    from test_train import _data, tiny_cfg

    from switchnerf.train.trainer import Trainer

    _as_on_cuda(monkeypatch)
    cfg = tiny_cfg(extra=[f"sampler.prune_in_training={prune}", "sampler.update_every=4"])
    trainer = Trainer(cfg, _data(cfg, tiny_scene, tmp_path), tmp_path / "run", progress=False)
    try:
        while trainer.step < 4 or (trainer.step % 4 == 0) != grid_update:
            trainer.train_step(next(trainer.stream))
        batch = next(trainer.stream)
        with HostSyncCounter() as syncs:
            stats = trainer.train_step(batch)
        assert syncs.count <= budget, syncs.report()
        with HostSyncCounter() as syncs:
            stats.values()
        assert syncs.count == 1, syncs.report()
    finally:
        trainer.close()
