"""Worker for tests/test_train_torchrun.py: one Trainer step on each of two gloo ranks
(127.0.0.1), writing the gathered expert-table gradient and the dense gradients."""

from __future__ import annotations

from pathlib import Path

import torch


def grads_at_optimizer_step(trainer) -> dict[str, torch.Tensor]:
    """Make ``trainer``'s next optimiser steps record every parameter's gradient as the
    optimiser sees it (its step consumes the hash tables' gradients); returns the dict it
    fills, by parameter name."""
    field = trainer.renderer.field
    grads: dict[str, torch.Tensor] = {}
    step = trainer.optimizer.step

    def record_then_step(*args, **kwargs):
        grads.update({n: p.grad.clone() for n, p in field.named_parameters()
                      if p.grad is not None})
        return step(*args, **kwargs)

    trainer.optimizer.step = record_then_step
    return grads


def one_step_worker(rank: int, world: int, port: int, out_dir: str, preset: str,
                    sets: list[str], scene: str, store: str, expert_parallel: bool) -> None:
    from _dist_workers import _start

    out = Path(out_dir)
    ctx = _start(rank, world, port, out, 60.0)
    from switchnerf.config import load_config
    from switchnerf.train.data import prepare_training_data
    from switchnerf.train.trainer import Trainer

    cfg = load_config(preset, sets + [f"distributed.expert_parallel={str(expert_parallel).lower()}"])
    data = prepare_training_data(cfg, Path(scene), Path(store), build=False, progress=False)
    trainer = Trainer(cfg, data, out / "run", progress=False, ctx=ctx)
    field = trainer.renderer.field
    grads = grads_at_optimizer_step(trainer)
    trainer.train_step(next(trainer.stream))
    table_name = next(n for n, p in field.named_parameters() if p is field.expert_table)
    grad = grads.pop(table_name)
    if expert_parallel:
        grad = field.experts.gather_table(grad)
    dense = grads
    if rank == 0:
        torch.save({"experts": grad, "dense": dense}, out / "grads.pt")
    trainer.close()
    ctx.barrier()  # every rank done with the group before it is destroyed (gloo teardown race)
    ctx.close()
