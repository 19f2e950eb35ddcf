"""Fault injection, resume and logs (issue: hardening): kill -9 at random moments, damaged
and stale checkpoint files, the training clock over resumes, non-finite steps.

Each case checks the exit code, the one-line message naming the file or field, no
traceback, and that what was on disk before is still there (byte-identical where a
command must not touch it).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _faults import one_line_error, snapshot
from test_train import ROOT, TINY

from switchnerf.cli import main as cli_main
from switchnerf.errors import SwitchNerfError
from switchnerf.io_utils import write_json_atomic
from switchnerf.train.checkpoint import list_checkpoints, load_checkpoint
from switchnerf.train.metrics_log import read_log, truncate_log

TEMP_NAME = re.compile(r"^\..+\.tmp")


def _train_args(scene: Path, tmp_path: Path, steps: int, *extra: str) -> list[str]:
    """A new tiny run of ``steps`` steps (a checkpoint every 3) in ``tmp_path/run``."""
    args = ["train", "--scene", str(scene), "--config", str(ROOT / "configs" / "cpu-demo.yaml"),
            "--output", str(tmp_path / "run"), "--store", str(tmp_path / "store"),
            "--max-steps", str(steps)]
    for s in [*TINY, "model.experts.n_experts=4", "train.checkpoint_every=3", *extra]:
        args += ["--set", s]
    return args


def _resume_args(scene: Path, tmp_path: Path, steps: int, *extra: str) -> list[str]:
    """``train --resume`` of that run up to ``steps`` (``extra``: allowed --set items)."""
    args = ["train", "--scene", str(scene), "--output", str(tmp_path / "run"),
            "--store", str(tmp_path / "store"), "--max-steps", str(steps), "--resume"]
    for s in extra:
        args += ["--set", s]
    return args


def _training_steps(run: Path) -> list[int]:
    return [r["step"] for r in read_log(run / "metrics.jsonl") if "loss" in r]


def _temp_files(run: Path) -> list[Path]:
    return [p for p in run.rglob("*") if TEMP_NAME.match(p.name)]


# ------------------------------------------------------------------ kill -9, five times
def _popen_train(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "switchnerf", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _kill_after_step(proc: subprocess.Popen, run: Path, step: int, delay_s: float,
                     timeout: float = 180.0) -> None:
    """SIGKILL ``proc`` ``delay_s`` after its log reached ``step``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = _training_steps(run)
        if steps and steps[-1] >= step:
            time.sleep(delay_s)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            return
        if proc.poll() is not None:
            raise AssertionError(f"finished before step {step}: {proc.stdout.read().decode()}")
        time.sleep(0.01)
    proc.kill()
    raise AssertionError(f"step {step} not reached in time")


def test_kill_9_at_five_random_moments_then_resume_equals_a_straight_run(tiny_scene, tmp_path):
    steps = 36
    straight = tmp_path / "straight"
    straight.mkdir()
    proc = subprocess.run([sys.executable, "-m", "switchnerf",
                           *_train_args(tiny_scene, straight, steps)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr

    broken = tmp_path / "broken"
    broken.mkdir()
    rng = random.Random(2026)
    targets = sorted(rng.sample(range(2, steps - 4), 5))
    first = True
    for target in targets:
        proc = _popen_train(_train_args(tiny_scene, broken, steps) if first
                            else _resume_args(tiny_scene, broken, steps))
        first = False
        _kill_after_step(proc, broken / "run", target, delay_s=rng.uniform(0.0, 0.08))
    done = subprocess.run([sys.executable, "-m", "switchnerf",
                           *_resume_args(tiny_scene, broken, steps)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr

    want = load_checkpoint(list_checkpoints(straight / "run")[-1])
    got = load_checkpoint(list_checkpoints(broken / "run")[-1])
    assert want["step"] == got["step"] == steps
    for key, value in want["field"].items():
        assert torch.equal(got["field"][key], value), key
    for key, value in want["grid"].items():
        assert torch.equal(got["grid"][key], value), key
    assert _training_steps(broken / "run") == list(range(1, steps + 1))  # each step once
    times = [r["time_s"] for r in read_log(broken / "run" / "metrics.jsonl")]
    assert all(b > a for a, b in itertools.pairwise(times)), "time_s runs on over resumes"
    assert got["elapsed_s"] == pytest.approx(times[-1], abs=5.0)
    assert not _temp_files(broken / "run")


# ------------------------------------------------------------------ the log
def test_truncate_log_keeps_the_checkpointed_steps_and_drops_a_cut_line(tmp_path):
    log = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss": 0.1} for s in (1, 2, 3, 4)] + [{"step": 3, "eval_psnr": 20.0}]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5, "lo')
    assert truncate_log(log, 3) == 2  # step 4 and the cut line
    assert [(r["step"], "eval_psnr" in r) for r in read_log(log)] == [
        (1, False), (2, False), (3, False), (3, True)]
    before = log.read_bytes()
    assert truncate_log(log, 3) == 0 and log.read_bytes() == before  # nothing to drop
    assert truncate_log(tmp_path / "none.jsonl", 3) == 0


def test_non_finite_numbers_are_written_as_null(tmp_path):
    write_json_atomic(tmp_path / "m.json", {"psnr": float("nan"), "per": [float("inf"), 1.5]})
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"psnr": None, "per": [None, 1.5]}


def test_resume_continues_the_clock_and_the_time_budget(tiny_scene, tmp_path, capsys):
    assert cli_main(_train_args(tiny_scene, tmp_path, 6)) == 0
    run = tmp_path / "run"
    elapsed = load_checkpoint(list_checkpoints(run)[-1])["elapsed_s"]
    assert elapsed > 0
    # a budget the run has already spent: the resumed run takes no step
    budget = f"train.time_budget_s={elapsed / 2}"
    assert cli_main(_resume_args(tiny_scene, tmp_path, 12, budget)) == 0
    assert load_checkpoint(list_checkpoints(run)[-1])["step"] == 6
    assert cli_main(_resume_args(tiny_scene, tmp_path, 9, "train.time_budget_s=null")) == 0
    times = [r["time_s"] for r in read_log(run / "metrics.jsonl")]
    assert _training_steps(run) == list(range(1, 10)) and times[6] > elapsed
    capsys.readouterr()


# ------------------------------------------------------------------ checkpoint files
def test_resume_falls_back_to_the_previous_checkpoint_and_says_so(tiny_scene, tmp_path, capsys):
    assert cli_main(_train_args(tiny_scene, tmp_path, 6)) == 0
    run = tmp_path / "run"
    newest = run / "checkpoints" / "step_00000006.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # a damaged file
    damaged = newest.read_bytes()
    capsys.readouterr()
    assert cli_main(_resume_args(tiny_scene, tmp_path, 8)) == 0
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if "step_00000006.pt" in line]
    assert len(warning) == 1 and warning[0].startswith("switchnerf: warning: "), err
    assert "previous checkpoint" in warning[0] and "Traceback" not in err
    aside = run / "checkpoints" / "step_00000006.pt.unreadable"
    assert aside.read_bytes() == damaged  # kept for inspection, out of the way
    assert _training_steps(run) == list(range(1, 9))  # steps 4-6 logged once, again
    assert load_checkpoint(list_checkpoints(run)[-1])["step"] == 8


def test_resume_with_no_readable_checkpoint_is_one_line(tiny_scene, tmp_path, capsys):
    assert cli_main(_train_args(tiny_scene, tmp_path, 3)) == 0
    run = tmp_path / "run"
    (run / "checkpoints" / "step_00000003.pt").write_bytes(b"not a checkpoint")
    capsys.readouterr()
    rc = cli_main(_resume_args(tiny_scene, tmp_path, 6))
    one_line_error(rc, _WarningsDropped(capsys), "no readable checkpoint")


class _WarningsDropped:
    """capsys whose stderr leaves out warning lines (the error line is what is checked)."""

    def __init__(self, capsys):
        self.capsys = capsys

    def readouterr(self):
        out = self.capsys.readouterr()
        err = "".join(line for line in out.err.splitlines(keepends=True)
                      if not line.startswith("switchnerf: warning: "))
        return type(out)(out.out, err)


def test_stale_temporary_files_are_swept_at_start(tiny_scene, tmp_path, capsys):
    assert cli_main(_train_args(tiny_scene, tmp_path, 3)) == 0
    run = tmp_path / "run"
    stale = [run / "checkpoints" / ".step_00000006.k2j3.tmp.pt", run / ".config.a1b2.tmp.yaml"]
    for p in stale:
        p.write_bytes(b"half a file")
    keep = run / "checkpoints" / "notes.txt"
    keep.write_text("mine")
    assert cli_main(_resume_args(tiny_scene, tmp_path, 4)) == 0
    assert not any(p.exists() for p in stale) and keep.read_text() == "mine"
    capsys.readouterr()


# ------------------------------------------------------------------ non-finite steps
def _poison_gradients_from(monkeypatch, first_bad_step: int) -> None:
    """From training step ``first_bad_step`` on, the colour MLP's gradients are NaN while
    the loss stays finite."""
    from switchnerf.train import trainer as trainer_mod

    real = trainer_mod.Trainer.train_step

    def train_step(self, batch):
        if self.step + 1 >= first_bad_step:
            hooks = [p.register_hook(lambda g: torch.full_like(g, math.nan))
                     for p in self._checked_params[-1:]]
            try:
                return real(self, batch)
            finally:
                for h in hooks:
                    h.remove()
        return real(self, batch)

    monkeypatch.setattr(trainer_mod.Trainer, "train_step", train_step)


def test_non_finite_gradients_skip_the_step_and_stop_the_run(tiny_scene, tmp_path, capsys,
                                                             monkeypatch):
    _poison_gradients_from(monkeypatch, first_bad_step=4)
    rc = cli_main(_train_args(tiny_scene, tmp_path, 40, "train.max_skipped_steps=5"))
    run = tmp_path / "run"
    err = capsys.readouterr().err  # progress lines, then the error as the one last line
    assert rc == 2 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("switchnerf: error: ")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    for needle in ("train.max_skipped_steps", "step_00000006.pt", "step 8"):
        assert needle in errors[0], (needle, errors[0])
    good = load_checkpoint(run / "checkpoints" / "step_00000003.pt")
    later = load_checkpoint(run / "checkpoints" / "step_00000006.pt")  # skipped steps only
    for key, value in good["field"].items():
        assert torch.equal(later["field"][key], value), key
        assert torch.isfinite(value).all(), key
    rows = read_log(run / "metrics.jsonl")
    assert [r["step"] for r in rows if r.get("skipped")] == [4, 5, 6, 7, 8]
    assert all(isinstance(r["loss"], float) for r in rows)  # a finite loss, still skipped
    assert list_checkpoints(run)[-1].name == "step_00000006.pt"


def test_a_checkpoint_is_never_written_from_non_finite_weights(tiny_scene, tmp_path):
    from test_train import _data, tiny_cfg

    from switchnerf.train.trainer import Trainer

    cfg = tiny_cfg()
    trainer = Trainer(cfg, _data(cfg, tiny_scene, tmp_path), tmp_path / "run", progress=False)
    try:
        trainer.train(max_steps=2)
        before = snapshot(tmp_path / "run" / "checkpoints")
        with torch.no_grad():
            next(iter(trainer.renderer.field.parameters())).view(-1)[0] = math.inf
        with pytest.raises(SwitchNerfError, match="non-finite"):
            trainer.save()
    finally:
        trainer.close()
    assert snapshot(tmp_path / "run" / "checkpoints") == before
