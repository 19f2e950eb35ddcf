"""Routing diagnostics in a run: logged at log steps, summarised by eval with a top-down map."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_train import _data, tiny_cfg

from switchnerf.train.routing_log import EXPERT_MAP_FILE, routing_history, summarise_routing
from switchnerf.train.trainer import Trainer


def test_training_logs_routing_and_eval_summarises_it(tiny_scene, tmp_path):
    from switchnerf.cli.train import run_eval

    cfg = tiny_cfg(extra=["train.log_every=2"])
    trainer = Trainer(cfg, _data(cfg, tiny_scene, tmp_path), tmp_path / "run", progress=False)
    trainer.train(max_steps=6)
    trainer.close()
    rows = routing_history(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [2, 4, 6]
    first, later = rows[0], rows[-1]
    assert first["churn"] is None and first["churn_steps"] is None
    assert later["churn_steps"] == 2 and 0.0 <= later["churn"] <= 1.0
    n_exp = cfg.model.experts.n_experts
    assert len(later["load"]) == n_exp and abs(sum(later["load"]) - 1.0) < 1e-9
    assert 0.0 < later["gate_value"] <= 1.0 and 0.0 <= later["disagreement"] <= 1.0

    result = run_eval(tmp_path / "run")
    routing = result["routing"]
    assert routing["churn_per_100_steps"] == pytest.approx(later["churn"] * 50.0)
    assert routing["churn_logged_at_step"] == 6 and len(routing["load"]) == n_exp
    saved = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert saved["routing"]["n_points"] == routing["n_points"] > 0
    import imageio.v3 as iio

    img = iio.imread(tmp_path / "run" / "eval" / EXPERT_MAP_FILE)
    assert img.ndim == 3 and img.shape[2] == 3 and np.any(img > 0)


def test_summary_scales_the_last_logged_churn_to_100_steps(tmp_path):
    class Field:
        n_experts = 1

    class R:
        field = Field()

    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"step": 25, "routing": {"churn": None, "churn_steps": None}},
        {"step": 50, "routing": {"churn": 0.02, "churn_steps": 25}},
        {"step": 50, "eval_psnr": 20.0},
    ]) + "\n{broken")
    assert [r["step"] for r in routing_history(path)] == [25, 50]
    assert summarise_routing(R(), path) is None  # a single grid has no routing
