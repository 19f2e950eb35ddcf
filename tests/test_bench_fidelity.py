"""bench/fidelity.py (issue 14): its methods at equal parameters, its metrics on hand cases,
its training clock, agreement with switchnerf's evaluation, and the --smoke run end to end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from switchnerf.encoding.experts import geometric_expert_specs
from switchnerf.errors import SwitchNerfError
from switchnerf.ops.hash_levels import LevelTable

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, file: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


F = _load("bench_fidelity", "fidelity.py")
COMMON = _load("bench_common", "common.py")


def _specs(cfg):
    ex = cfg.model.experts
    return geometric_expert_specs(
        ex.n_experts, base_resolution=ex.base_resolution, finest_resolution=ex.finest_resolution,
        coarsest_fraction=ex.coarsest_fraction, log2_hashmap_size=ex.log2_hashmap_size,
        hashmap_size=ex.hashmap_size)


@pytest.mark.parametrize("method", list(F.METHODS))
def test_methods_hold_switchnerf_parameter_count(method):
    reference, _ = F.method_config("switchnerf++", F.BENCH_SETS)
    cfg, overrides = F.method_config(method, F.BENCH_SETS)
    target = COMMON.parameter_counts(COMMON.meta_field(reference))["total"]
    got = COMMON.parameter_counts(COMMON.meta_field(cfg))["total"]
    ex = cfg.model.experts
    hashed = int(LevelTable.for_experts(_specs(cfg), ex.n_levels, ex.n_features_per_level)
                 .hashed.sum())
    assert abs(got - target) <= ex.n_features_per_level * hashed // 2, (method, got, target)
    assert abs(got - target) <= 1e-3 * target
    # one row more or fewer per hashed level would be further away
    for delta in (-1, 1):
        if ex.hashmap_size is not None:
            other = dataclasses.replace(cfg, model=dataclasses.replace(
                cfg.model, experts=dataclasses.replace(ex, hashmap_size=ex.hashmap_size + delta)))
            n = COMMON.parameter_counts(COMMON.meta_field(other))["total"]
            assert abs(n - target) >= abs(got - target)
    # the method differs from cpu-demo only in what makes it (and its table size)
    assert (cfg.sampler, cfg.optim, cfg.train) == (reference.sampler, reference.optim,
                                                   reference.train)
    assert cfg.model.head == reference.model.head
    assert cfg.model.background == reference.model.background
    assert (overrides == []) == (method == "switchnerf++")


def test_method_structures():
    cfgs = {m: F.method_config(m, F.BENCH_SETS)[0] for m in F.METHODS}
    resolutions = {m: {s.max_resolution for s in _specs(c)} for m, c in cfgs.items()}
    assert len(resolutions["switchnerf++"]) == 8  # heterogeneous
    for m in ("moe-homogeneous", "fixed-grid-homogeneous", "single-grid"):
        assert resolutions[m] == {cfgs["switchnerf++"].model.experts.finest_resolution}, m
    assert cfgs["moe-homogeneous"].model.routing.kind == "gate"
    assert cfgs["moe-homogeneous"].model.routing == cfgs["switchnerf++"].model.routing
    assert cfgs["fixed-grid-homogeneous"].model.routing.kind == "fixed"
    assert cfgs["single-grid"].model.experts.n_experts == 1
    # the single grid solved here is the one bench/train.py writes by hand
    train = _load("bench_train_for_fidelity", "train.py")
    written = [s for s in train.CPU_METHODS["single-grid"] if "hashmap_size" in s]
    solved = cfgs["single-grid"].model.experts.hashmap_size
    assert written == [f"model.experts.hashmap_size={solved}"]


SHARED_SETS = ["model.experts.shared_levels=4", "model.experts.split_resolution=64",
               "model.experts.shared_log2_hashmap_size=18"]


@pytest.mark.parametrize("method", [m for m in F.METHODS if m != "switchnerf++"])
def test_baselines_keep_their_architecture_when_switchnerf_has_shared_levels(method):
    """A shared coarse grid is switchnerf++'s alone: a baseline is built as without it and
    sized to switchnerf++'s parameter count (shared table included); a --set table size
    does not override the solved one."""
    sets = F.BENCH_SETS + SHARED_SETS + ["model.experts.hashmap_size=1000"]
    reference, none = F.method_config("switchnerf++", sets)
    assert none == [] and reference.model.experts.shared_levels == 4
    plain, _ = F.method_config(method, F.BENCH_SETS)
    cfg, overrides = F.method_config(method, sets)
    assert F.NO_SHARED in overrides and cfg.model.experts.shared_levels == 0
    keys = ("n_experts", "n_levels", "n_features_per_level", "base_resolution",
            "finest_resolution", "coarsest_fraction")
    assert ([getattr(cfg.model.experts, k) for k in keys]
            == [getattr(plain.model.experts, k) for k in keys])
    assert cfg.model.routing == plain.model.routing
    target = COMMON.parameter_counts(COMMON.meta_field(reference))["total"]
    field = COMMON.meta_field(cfg)
    assert field.shared is None
    got = COMMON.parameter_counts(field)["total"]
    ex = cfg.model.experts
    hashed = int(LevelTable.for_experts(_specs(cfg), ex.n_levels, ex.n_features_per_level)
                 .hashed.sum())
    assert abs(got - target) <= ex.n_features_per_level * hashed // 2, (method, got, target)
    assert ex.hashmap_size != 1000
    # the run's config is rebuilt from the same pieces (bench main)
    assert F.load_config(F.CPU_BASE, sets + overrides) == cfg


def test_matched_size_of_a_shared_switchnerf_counts_the_shared_table():
    """Solving switchnerf++ with shared levels for the budget of today's switchnerf++."""
    today, _ = F.method_config("switchnerf++", F.BENCH_SETS)
    shared = F.load_config(F.CPU_BASE, F.BENCH_SETS + SHARED_SETS)
    size = COMMON.matched_hashmap_size(today, shared)
    solved = F.load_config(F.CPU_BASE, F.BENCH_SETS + SHARED_SETS
                           + [f"model.experts.hashmap_size={size}"])
    field = COMMON.meta_field(solved)
    target = COMMON.parameter_counts(COMMON.meta_field(today))["total"]
    got = COMMON.parameter_counts(field)["total"]
    assert field.shared is not None and field.experts.n_levels == 12
    # 12 hashed levels x 8 experts: one row more per level moves the count by 192
    assert abs(got - target) <= 96, (got, target)


def test_bench_sets_switch_off_the_trainers_own_eval_and_set_the_budget():
    cfg, _ = F.method_config("switchnerf++", F.BENCH_SETS + ["train.time_budget_s=123"])
    assert cfg.train.eval_every == 0 and cfg.train.time_budget_s == 123
    assert cfg.train.checkpoint_every >= 10**9
    assert cfg.optim.decay_with_time  # the preset's rate follows the bench's training time


def test_train_clock_excludes_evaluation_and_stops():
    now = [0.0]
    evals = []

    def evaluate(train_s):
        evals.append(train_s)
        now[0] += 5.0  # evaluating takes 5 s of wall time

    clock = F.TrainClock(2.0, 0.5, evaluate, clock=lambda: now[0])
    trainer = SimpleNamespace(stopped=False, paused=0)
    trainer.request_stop = lambda: setattr(trainer, "stopped", True)

    @contextlib.contextmanager
    def clock_paused():
        trainer.paused += 1
        yield

    trainer.clock = SimpleNamespace(paused=clock_paused)
    steps = 0
    while not trainer.stopped:
        now[0] += 0.25  # one training step
        steps += 1
        clock(trainer, None)
    # the wall clock ran 8 x 0.25 s of steps and 3 x 5 s of evaluation
    assert evals == [0.5, 1.0, 1.5]
    assert steps == 8 and clock.train_s == 2.0 and clock.stopped and now[0] == 17.0
    assert trainer.paused == 3  # every evaluation stopped the trainer's own clock too
    never = F.TrainClock(1.0, 0.0, evaluate, clock=lambda: now[0])
    evals.clear()
    for _ in range(3):
        now[0] += 0.2
        never(trainer, None)
    assert evals == []


def _label(root: Path, stem: str, mask: np.ndarray) -> Path:
    (root / "val" / "regions").mkdir(parents=True, exist_ok=True)
    (root / "val" / "rgbs").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(
        root / "val" / "regions" / f"{stem}.png")
    return root / "val" / "rgbs" / f"{stem}.png"


def _fake(monkeypatch, tmp_path, masks, preds):
    """heldout_metrics on hand-made views: targets 0, predictions given; labels on disk."""
    recs, views = [], []
    for i, (mask, pred) in enumerate(zip(masks, preds)):
        path = tmp_path / "val" / "rgbs" / f"{i:06d}.png"
        if mask is not None:
            path = _label(tmp_path, f"{i:06d}", mask)
        recs.append(SimpleNamespace(image_path=path))
        h, wm = pred.shape[:2]
        views.append(SimpleNamespace(index=i, target=torch.zeros(h, wm, 3), height=h, width=wm,
                                     col0=6 - wm))
    scene = SimpleNamespace(images=lambda split: recs)
    monkeypatch.setattr(F, "render_heldout",
                        lambda trainer, indices: ((views[i], preds[i]) for i in indices))
    return SimpleNamespace(scene=scene)


def test_region_psnr_on_a_hand_case(monkeypatch, tmp_path):
    # image 0: 4x6, measured columns 3..5; downtown is column 4 (and column 0, not measured)
    mask0 = np.zeros((4, 6), bool)
    mask0[:, [0, 4]] = True
    pred0 = torch.full((4, 3, 3), 0.2)
    pred0[:, 1] = 0.1  # error 0.1 downtown, 0.2 elsewhere
    # image 1: no downtown pixel, error 0.2 everywhere
    pred1 = torch.full((4, 3, 3), 0.2)
    trainer = _fake(monkeypatch, tmp_path, [mask0, np.zeros((4, 6), bool)], [pred0, pred1])
    m = F.heldout_metrics(trainer, [0, 1])
    assert m["psnr_downtown"] == pytest.approx(20.0)  # -10 log10(0.01)
    assert m["psnr_rest"] == pytest.approx(-10 * math.log10(0.04))
    per_image = [-10 * math.log10((4 * 0.01 + 8 * 0.04) / 12), -10 * math.log10(0.04)]
    assert m["psnr"] == pytest.approx(np.mean(per_image), abs=1e-5)
    assert [r["downtown_pixels"] for r in m["images"]] == [4, 0]
    only_rest = F.heldout_metrics(trainer, [1])
    assert only_rest["psnr_downtown"] is None
    assert only_rest["psnr_rest"] == pytest.approx(-10 * math.log10(0.04))


def test_region_psnr_needs_every_label(monkeypatch, tmp_path):
    pred = torch.full((4, 3, 3), 0.2)
    trainer = _fake(monkeypatch, tmp_path, [np.ones((4, 6), bool), None], [pred, pred])
    m = F.heldout_metrics(trainer, [0, 1])
    assert m["psnr_downtown"] is None and m["psnr_rest"] is None
    assert m["psnr"] == pytest.approx(-10 * math.log10(0.04), abs=1e-5)


def test_region_label_of_another_size_is_an_error(monkeypatch, tmp_path):
    pred = torch.full((4, 3, 3), 0.2)
    trainer = _fake(monkeypatch, tmp_path, [np.ones((5, 6), bool)], [pred])
    with pytest.raises(SwitchNerfError, match="regions/000000.png"):
        F.heldout_metrics(trainer, [0])


def test_routing_summary_reads_the_log():
    rows = [{"step": s, "loss": 1.0, "load": [0.5, 0.5] if s < 90 else [0.75, 0.25]}
            for s in range(0, 100, 5)]
    rows.append({"step": 100, "train_s": 3.0, "eval_psnr": 20.0})
    rows.insert(-1, {"step": 100, "loss": 1.0, "load": [0.75, 0.25], "churn": 0.004})
    out = F.routing_summary(rows)
    assert out["load"] == [0.75, 0.25] and out["max_load"] == 0.75
    assert out["churn"] == 0.004 and "loss" not in out
    assert F.routing_summary([])["diagnostics_module"] in (True, False)


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory):
    from switchnerf.scene.synth import synthesize

    return synthesize("tinymidcity", tmp_path_factory.mktemp("fid") / "tinymidcity",
                      progress=False)


def test_heldout_metrics_agree_with_evaluate(tiny_scene, tmp_path):
    from switchnerf.train.data import prepare_training_data
    from switchnerf.train.evaluate import evaluate, uses_right_half_protocol
    from switchnerf.train.trainer import Trainer

    cfg, _ = F.method_config("switchnerf++", F.BENCH_SETS + F.SMOKE["sets"])
    data = prepare_training_data(cfg, tiny_scene, progress=False)
    trainer = Trainer(cfg, data, tmp_path / "run", progress=False)
    try:
        for _ in range(3):
            trainer.train_step(next(trainer.stream))
        ours = F.heldout_metrics(trainer, [0, 2])
        ref = evaluate(trainer.renderer, trainer.scene, indices=[0, 2],
                       right_half=uses_right_half_protocol(trainer.scene, cfg))
    finally:
        trainer.close()
    assert ref["protocol"] == "mega-nerf right half"
    assert ours["psnr"] == pytest.approx(ref["psnr"], abs=1e-4)
    assert ours["ssim"] == pytest.approx(ref["ssim"], abs=1e-5)
    assert ours["psnr_downtown"] is not None and ours["psnr_rest"] is not None
    assert any(r["downtown_pixels"] for r in ours["images"])


def test_smoke_run(tmp_path):
    out = tmp_path / "fidelity.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "fidelity.py"), "--smoke",
                           "--out", str(out), "--runs", str(tmp_path / "runs")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    wall = time.perf_counter() - t
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    print(f"bench/fidelity.py --smoke took {wall:.0f} s")
    data = json.loads(out.read_text())
    assert data["smoke"] and set(data["methods"]) == set(F.METHODS)
    runs = data["runs"]
    assert [r["method"] for r in runs] == list(F.METHODS)
    ref = runs[0]["params_total"]
    for r in runs:
        assert r["scene"] == "tinymidcity" and r["steps"] >= 1
        assert abs(r["params_total"] - ref) <= 1e-3 * ref
        assert r["train_s"] >= data["seconds"]  # stopped by the clock, not by max_steps
        assert math.isfinite(r["heldout_psnr"]) and 0 < r["heldout_ssim"] <= 1
        assert math.isfinite(r["psnr_downtown"]) and math.isfinite(r["psnr_rest"])
        assert r["eval_curve"] and r["eval_curve"][-1]["train_s"] == r["train_s"]
        assert set(r["time_to_psnr"]) == {"10", "12"}
        # the curve is what the run's metrics.jsonl says
        log = (tmp_path / "runs" / "tinymidcity" / "seed0" / r["method"] / "metrics.jsonl")
        evals = [json.loads(x) for x in log.read_text().splitlines() if "eval_psnr" in x]
        assert [e["eval_psnr"] for e in evals] == [c["psnr"] for c in r["eval_curve"]]
        assert not (log.parent / "checkpoints").exists()
    loads = {r["method"]: r["routing"].get("load") for r in runs}
    assert len(loads["switchnerf++"]) == 8 and loads["single-grid"] == [1.0]
    assert len(data["summary"]) == 4
    assert "| method | params |" in done.stdout and "downtown PSNR" in done.stdout
    with Image.open(out.with_suffix(".png")) as im:
        assert im.size[0] >= 400 and im.size[1] >= 300
