"""Trainer: preset smoke runs, exact resume, interruption, skipped steps, run loading, CLI."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from switchnerf.cli import main as cli_main
from switchnerf.config import load_config
from switchnerf.train.checkpoint import list_checkpoints, load_checkpoint
from switchnerf.train.data import prepare_training_data
from switchnerf.train.evaluate import eval_view, uses_right_half_protocol
from switchnerf.train.run import load_run, read_run_config
from switchnerf.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.experts.n_levels=4", "model.experts.log2_hashmap_size=10",
    "model.experts.finest_resolution=64", "model.experts.coarsest_fraction=0.5",
    "model.experts.base_resolution=8",
    # cpu-demo's shared coarse grid, scaled down with it (2 of the 4 levels, 8 to 16)
    "model.experts.shared_levels=2", "model.experts.split_resolution=16",
    "model.experts.shared_log2_hashmap_size=10",
    "model.routing.gate.n_levels=2", "model.routing.gate.log2_hashmap_size=8",
    "model.routing.gate.max_resolution=16", "model.routing.gate_hidden=8",
    "model.head.hidden=16", "model.head.color_hidden=16", "model.head.appearance_dim=4",
    "sampler.grid_resolution=16", "sampler.steps_per_diagonal=64", "sampler.warmup_steps=2",
    "sampler.update_every=2", "train.rays_per_step=128", "train.shard_rays=4096",
    "train.eval_every=0", "train.checkpoint_every=1000", "train.log_every=1",
    "optim.decay_with_time=false",  # the steps alone set the rate: runs are bit-reproducible
]


def _data(cfg, tiny_scene, tmp_path):
    """The scene and its ray store (built once per test folder), as training reads them."""
    return prepare_training_data(cfg, tiny_scene, tmp_path / "store", progress=False)


def tiny_cfg(preset: str | None = "cpu-demo", extra=()):
    path = ROOT / "configs" / f"{preset}.yaml" if preset else None
    sets = list(TINY)
    cfg0 = load_config(path)
    if cfg0.model.experts.shared_levels == 0:  # a preset without a shared grid keeps none
        sets.append("model.experts.shared_levels=0")
    if cfg0.model.experts.n_experts == 8:
        sets.append("model.experts.n_experts=4")
        if cfg0.model.routing.kind == "fixed":
            sets.append("model.routing.fixed_grid=[2, 2]")
    return load_config(path, sets + list(extra))


@pytest.mark.parametrize("preset", ["cpu-demo", "switchnerf++", "single-grid", "fixed-grid"])
def test_two_step_smoke_train_of_every_preset(preset, tiny_scene, tmp_path):
    cfg = tiny_cfg(preset)
    before = copy.deepcopy(cfg.to_dict())
    trainer = Trainer(cfg, _data(cfg, tiny_scene, tmp_path), tmp_path / "run", progress=False)
    try:
        summary = trainer.train(max_steps=2)
    finally:
        trainer.close()
    assert cfg.to_dict() == before  # the config is copied into the run, never mutated
    assert summary["step"] == 2
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and (run / "scene.json").is_file()
    assert [p.name for p in list_checkpoints(run)] == ["step_00000002.pt"]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    assert all(torch.isfinite(torch.tensor(x["loss"])) for x in lines)
    assert len(lines[-1]["load"]) == cfg.model.experts.n_experts


def _params(field) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in field.state_dict().items()}


def test_resume_reproduces_the_uninterrupted_run(tiny_scene, tmp_path):
    cfg = tiny_cfg()
    n = 6
    straight = Trainer(cfg, _data(cfg, tiny_scene, tmp_path), tmp_path / "a", progress=False)
    straight.train(max_steps=n)
    straight.close()

    first = Trainer(cfg, _data(cfg, tiny_scene, tmp_path), tmp_path / "b", progress=False)
    first.train(max_steps=n // 2)
    first.close()
    del first
    resumed = Trainer(cfg, _data(cfg, tiny_scene, tmp_path), tmp_path / "b", resume=True,
                      progress=False)
    assert resumed.step == n // 2
    resumed.train(max_steps=n)
    resumed.close()
    a, b = _params(straight.renderer.field), _params(resumed.renderer.field)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6), k
    assert torch.equal(straight.renderer.grid.binary, resumed.renderer.grid.binary)


def test_non_finite_loss_skips_the_step(tiny_scene, tmp_path, monkeypatch):
    cfg = tiny_cfg()
    trainer = Trainer(cfg, _data(cfg, tiny_scene, tmp_path), tmp_path / "run", progress=False)
    before = _params(trainer.renderer.field)
    real = trainer.renderer.render_rays

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        return dataclasses.replace(out, rgb=out.rgb * float("nan"))

    monkeypatch.setattr(trainer.renderer, "render_rays", poisoned)
    summary = trainer.train(max_steps=2)
    trainer.close()
    assert summary["skipped_steps"] == 2
    for k, v in _params(trainer.renderer.field).items():
        assert torch.equal(v, before[k]), k
    logged = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(x["skipped"] for x in logged)


def test_load_run_restores_the_trained_field(tiny_scene, tmp_path):
    cfg = tiny_cfg()
    trainer = Trainer(cfg, _data(cfg, tiny_scene, tmp_path), tmp_path / "run", progress=False)
    trainer.train(max_steps=3)
    trainer.close()
    run = load_run(tmp_path / "run")
    assert run.step == 3
    for k, v in trainer.renderer.field.state_dict().items():
        assert torch.equal(run.renderer.field.state_dict()[k], v), k
    assert torch.equal(run.renderer.grid.binary, trainer.renderer.grid.binary)
    assert not run.renderer.training


def test_eval_protocol_measures_right_halves(tiny_scene):
    from switchnerf.scene.load import load_scene

    scene = load_scene(tiny_scene)
    cfg = tiny_cfg()
    assert uses_right_half_protocol(scene, cfg)
    n_train = len(scene.images("train"))
    view = eval_view(scene, n_train, 1, right_half=True)
    rec = scene.images("val")[1]
    w, h = rec.width, rec.height
    assert view.col0 == w // 2 and view.target.shape == (h, w - w // 2, 3)
    _origins, dirs = scene.rays_for_image("val", 1)
    right = (torch.arange(h * w) % w) >= w // 2
    assert torch.equal(view.rays.directions, dirs[right])
    assert view.rays.image_index.eq(n_train + 1).all()
    full = eval_view(scene, n_train, 1, right_half=False)
    assert full.target.shape == (h, w, 3)


def test_cli_refuses_to_overwrite_and_names_config_typos(tiny_scene, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "something").write_text("x")
    code = cli_main(["train", "--scene", str(tiny_scene), "--output", str(run)])
    assert code == 2
    assert "--resume" in capsys.readouterr().err
    code = cli_main(["train", "--scene", str(tiny_scene), "--output", str(tmp_path / "new"),
                     "--set", "train.rays_per_stepp=4"])
    assert code == 2
    assert "train.rays_per_stepp" in capsys.readouterr().err


def _start_train(tiny_scene, tmp_path, steps=100000):
    cmd = [sys.executable, "-m", "switchnerf", "train", "--scene", str(tiny_scene),
           "--config", str(ROOT / "configs" / "cpu-demo.yaml"), "--output", str(tmp_path / "run"),
           "--store", str(tmp_path / "store"), "--max-steps", str(steps)]
    for s in TINY + ["model.experts.n_experts=4", "train.checkpoint_every=3"]:
        cmd += ["--set", s]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_for_steps(run: Path, proc, n: int, timeout=120.0):
    log = run / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.is_file() and len(log.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode())
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("training did not start in time")


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tiny_scene, tmp_path):
    proc = _start_train(tiny_scene, tmp_path)
    _wait_for_steps(tmp_path / "run", proc, 4)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, out
    assert "interrupted, checkpoint saved" in out
    last = list_checkpoints(tmp_path / "run")[-1]
    state = load_checkpoint(last)
    logged = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert state["step"] == json.loads(logged[-1])["step"]


def test_kill_9_never_leaves_a_corrupt_checkpoint(tiny_scene, tmp_path):
    proc = _start_train(tiny_scene, tmp_path)
    _wait_for_steps(tmp_path / "run", proc, 8)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    ckpts = list_checkpoints(tmp_path / "run")
    assert ckpts, "a checkpoint every 3 steps should exist by step 8"
    for p in ckpts:
        assert load_checkpoint(p)["step"] % 3 == 0
    leftovers = [p for p in (tmp_path / "run" / "checkpoints").iterdir() if p.suffix != ".pt"]
    for p in leftovers:  # an interrupted write leaves only a temporary name, never a step file
        assert p.name.startswith(".")
    # and the run resumes from the newest checkpoint
    cfg = read_run_config(tmp_path / "run")
    resumed = Trainer(cfg, _data(cfg, tiny_scene, tmp_path), tmp_path / "run", resume=True,
                      progress=False)
    assert resumed.step == load_checkpoint(ckpts[-1])["step"]
    resumed.close()


def test_capacity_drops_are_counted_in_the_log(tiny_scene, tmp_path):
    cfg = tiny_cfg(extra=["model.routing.capacity_factor=0.5"])
    trainer = Trainer(cfg, _data(cfg, tiny_scene, tmp_path), tmp_path / "run", progress=False)
    trainer.train(max_steps=2)
    trainer.close()
    logged = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(x["dropped"] > 0 for x in logged)


# ------------------------------------------------------------------ construction, RNG, stop
def test_constructing_a_trainer_leaves_the_global_rng_alone(tiny_scene, tmp_path):
    cfg = tiny_cfg()
    data = _data(cfg, tiny_scene, tmp_path)
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    trainer = Trainer(cfg, data, tmp_path / "a", progress=False)
    trainer.close()
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(99)  # another global state: the same model, from the run's seed
    other = Trainer(cfg, data, tmp_path / "b", progress=False)
    other.close()
    for k, v in _params(trainer.renderer.field).items():
        assert torch.equal(_params(other.renderer.field)[k], v), k


def test_trainer_generator_continues_the_seeded_stream(tiny_scene, tmp_path):
    """The trainer draws what training drew when it seeded the global RNG: the model
    initialised from ``manual_seed(seed)``, then the same stream for offsets and grid."""
    from switchnerf.train.builder import build_renderer

    cfg = tiny_cfg()
    data = _data(cfg, tiny_scene, tmp_path)
    trainer = Trainer(cfg, data, tmp_path / "run", progress=False)
    trainer.close()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        ref = build_renderer(cfg, data.scene, len(data.cameras))
        ref_draws = torch.rand(16)
    for k, v in _params(ref.field).items():
        assert torch.equal(_params(trainer.renderer.field)[k], v), k
    assert torch.equal(torch.rand(16, generator=trainer.generator), ref_draws)


def test_build_step_is_explicit(tiny_scene, tmp_path):
    from switchnerf.scene.store import StoreMissingError

    cfg = tiny_cfg()
    with pytest.raises(StoreMissingError):
        prepare_training_data(cfg, tiny_scene, tmp_path / "nowhere", build=False)
    assert not (tmp_path / "nowhere").exists()


def test_on_step_callback_and_public_stop_end_training(tiny_scene, tmp_path):
    """A viewer-like caller drives training only through on_step and request_stop."""
    cfg = tiny_cfg()
    trainer = Trainer(cfg, _data(cfg, tiny_scene, tmp_path), tmp_path / "run", progress=False)
    seen = []

    def on_step(t, stats):
        values = stats.values()
        seen.append((t.step, values.psnr, t.stop_requested))
        if t.step == 2:
            t.request_stop()

    try:
        summary = trainer.train(max_steps=10, on_step=on_step)
    finally:
        trainer.close()
    assert [s for s, _, _ in seen] == [1, 2] and not any(stop for _, _, stop in seen)
    assert trainer.stop_requested and summary["interrupted"] and summary["step"] == 2
    assert all(math.isfinite(p) for _, p, _ in seen)
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_00000002.pt"]


def test_statistics_reach_the_host_only_on_logged_steps(tiny_scene, tmp_path, monkeypatch):
    from switchnerf.train.trainer import StepStats

    cfg = tiny_cfg(extra=["train.log_every=2"])
    trainer = Trainer(cfg, _data(cfg, tiny_scene, tmp_path), tmp_path / "run", progress=False)
    calls = []
    real = StepStats.values

    def counted(self):
        calls.append(trainer.step)
        return real(self)

    monkeypatch.setattr(StepStats, "values", counted)
    kinds = []
    try:
        summary = trainer.train(max_steps=5, on_step=lambda t, s: kinds.append(
            isinstance(s.loss, torch.Tensor) and isinstance(s.expert_id, torch.Tensor)))
    finally:
        trainer.close()
    assert all(kinds) and len(kinds) == 5
    assert calls == [2, 4, 5]  # logged steps 2 and 4, and the last (the summary reuses it)
    logged = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in logged] == [2, 4, 5]
    assert summary["last_train_psnr"] == logged[-1]["psnr"]
    assert summary["last_train_psnr"] is not None


def test_viewer_serves_a_live_trainer_and_a_loaded_run_through_one_renderer(tiny_scene, tmp_path):
    import numpy as np
    from _viewer_run import free_port

    from switchnerf.render import Renderer
    from switchnerf.video.paths import PathCamera
    from switchnerf.viewer import ViewerServer

    cfg = tiny_cfg()
    trainer = Trainer(cfg, _data(cfg, tiny_scene, tmp_path), tmp_path / "run", progress=False)
    live = ViewerServer(trainer.renderer, trainer.scene, port=free_port(),
                        run_dir=trainer.run_dir, step=trainer.step, training=True)
    offline = None
    try:
        live.begin_training()
        trainer.train(max_steps=3, on_step=live.on_step)
        live.gate.end_training()
        assert live.stats.step == 3 and live.stats.psnr is not None
        run = load_run(tmp_path / "run")
        assert isinstance(trainer.renderer, Renderer) and isinstance(run.renderer, Renderer)
        offline = ViewerServer(run.renderer, run.scene, port=free_port(), run_dir=run.run_dir,
                               checkpoint=run.checkpoint, step=run.step)
        rec = run.scene.images("val")[0]
        s = 32 / rec.width
        cam = PathCamera(rec.c2w, rec.fx * s, rec.fy * s, rec.cx * s, rec.cy * s, 32,
                         max(2, round(rec.height * s)), rec.near, rec.far)
        for output in ("rgb", "experts"):
            live.settings.output = offline.settings.output = output
            a, _ = live.render_image(cam)
            b, _ = offline.render_image(cam)
            assert a.shape == (cam.height, 32, 3) and np.array_equal(a, b), output
    finally:
        trainer.close()
        live.stop()
        if offline is not None:
            offline.stop()
