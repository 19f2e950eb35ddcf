"""The learning rate's time share (``optim.decay_with_time``) and the trainer's clock."""

from __future__ import annotations

import itertools
import time

import pytest
import torch
from test_train import _data, tiny_cfg

from switchnerf.train.schedule import lr_factor
from switchnerf.train.trainer import Trainer

SCHEDULE = ["optim.warmup_steps=0", "optim.final_lr_factor=0.1", "train.max_steps=1000000",
            "train.time_budget_s=1000"]


def _advance(seconds: float):
    """An on_step callback: each step takes ``seconds`` more of the trainer's clock."""
    def on_step(trainer, _stats):
        trainer.clock._start -= seconds
    return on_step


@pytest.mark.parametrize("with_time", [True, False])
def test_the_rate_decays_with_the_budget_spent_when_asked(tiny_scene, tmp_path, with_time):
    cfg = tiny_cfg(extra=[*SCHEDULE, f"optim.decay_with_time={with_time}"])
    trainer = Trainer(cfg, _data(cfg, tiny_scene, tmp_path), tmp_path / "run", progress=False)
    try:
        trainer.train(max_steps=3, on_step=_advance(100.0))
        lr = trainer.optimizer.param_groups[0]["lr"]
        # the third step set its rate after 2 steps, i.e. 200 s of the 1000 s budget
        step_share = 2 / 1000000
        share = max(0.2, step_share) if with_time else step_share
        assert lr == pytest.approx(cfg.optim.lr_tables * 0.1 ** share, rel=1e-3)
        assert lr == pytest.approx(cfg.optim.lr_tables * lr_factor(
            2, warmup_steps=0, max_steps=1000000, final_factor=0.1,
            time_fraction=0.2 if with_time else 0.0), rel=1e-3)
    finally:
        trainer.close()


def test_the_budget_stops_the_run_at_the_final_rate(tiny_scene, tmp_path):
    cfg = tiny_cfg(extra=[*SCHEDULE, "optim.decay_with_time=true"])
    trainer = Trainer(cfg, _data(cfg, tiny_scene, tmp_path), tmp_path / "run", progress=False)
    try:
        summary = trainer.train(on_step=_advance(150.0))
        assert summary["step"] == 7  # 7 x 150 s > 1000 s
        # the last step set its rate at 900 s: 0.1 ** 0.9 of the start
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(
            cfg.optim.lr_tables * 0.1 ** 0.9, rel=1e-3)
    finally:
        trainer.close()


def test_a_paused_clock_is_not_training_time(tiny_scene, tmp_path):
    cfg = tiny_cfg()
    trainer = Trainer(cfg, _data(cfg, tiny_scene, tmp_path), tmp_path / "run", progress=False)
    paused = []

    def on_step(t, _stats):
        before = t.clock.elapsed_s
        with t.clock.paused():
            time.sleep(0.3)
        paused.append(t.clock.elapsed_s - before)

    try:
        trainer.train(max_steps=2, on_step=on_step)
    finally:
        trainer.close()
    assert len(paused) == 2 and all(0.0 <= p < 0.1 for p in paused)


def _gate_values(field):
    table, mlp = field.gate_parameters()
    return [p.detach().clone() for p in table + mlp]


@pytest.mark.parametrize("max_steps, budget_s, step_s, frozen_from", [
    (8, 1000, 0.0, 4),  # by steps: 4 / 8 of the schedule
    (100, 10000, 2000.0, 3),  # by time: 3 x 2000 s of the 10000 s budget
])
def test_the_gate_freezes_after_its_share_of_the_schedule(tiny_scene, tmp_path, max_steps,
                                                          budget_s, step_s, frozen_from):
    """``model.routing.gate_freeze_after``: the gate learns until that share of the schedule
    (the steps', or the time budget's when it is spent faster), then gets no gradient and
    stays put while the experts go on learning."""
    cfg = tiny_cfg(extra=["optim.warmup_steps=0", f"train.max_steps={max_steps}",
                          f"train.time_budget_s={budget_s}", "optim.decay_with_time=true",
                          "model.routing.gate_freeze_after=0.5"])
    trainer = Trainer(cfg, _data(cfg, tiny_scene, tmp_path), tmp_path / "run", progress=False)
    field = trainer.renderer.field
    seen = []  # (steps done, gate values, expert table) after each step

    def on_step(t, _stats):
        seen.append((t.step, _gate_values(field), field.expert_table.detach().clone()))
        t.clock._start -= step_s

    try:
        trainer.train(max_steps=5, on_step=on_step)
    finally:
        trainer.close()
    assert [s for s, _, _ in seen] == [1, 2, 3, 4, 5]
    for (done, gate, table), (_, gate_next, table_next) in itertools.pairwise(seen):
        moved = any(not torch.equal(a, b) for a, b in zip(gate, gate_next))
        assert moved == (done < frozen_from), done  # the step after `done` steps
        assert not torch.equal(table, table_next)  # the experts learn throughout
    assert not any(p.requires_grad for group in field.gate_parameters() for p in group)


def test_the_gate_freeze_is_checked():
    with pytest.raises(Exception, match="gate_freeze_after"):
        tiny_cfg(extra=["model.routing.gate_freeze_after=1.5"])
