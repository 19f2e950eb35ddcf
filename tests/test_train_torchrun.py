"""``torchrun -m switchnerf train`` on two gloo ranks (127.0.0.1) against one process.

Data parallel and expert parallel runs follow the single-process loss curve at the same
global batch; one step's expert-table and dense gradients equal one process's; a killed
rank ends every rank and the run resumes; checkpoints resume on another world size
(2 -> 1, 1 -> 2); bad launches are one line and exit 2.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import _dist_workers as W
import pytest
import torch
from _dist_train_workers import grads_at_optimizer_step, one_step_worker
from test_train import ROOT, TINY

from switchnerf.cli import main as cli_main
from switchnerf.train.checkpoint import latest_checkpoint, load_checkpoint
from switchnerf.train.run import load_run

PRESET = str(ROOT / "configs" / "cpu-demo.yaml")
# The plain gate (random start, hashed): from the partition start the gate MLP's weights
# on the table features get gradients of rounding size for a while, and Adam (eps 1e-15)
# turns those into full-size steps whose sign depends on the summation order, so a
# 2-rank run's weights would differ from one process's by the learning rate there.
PLAIN_GATE = ["model.routing.gate_init=random", "model.routing.gate_dense=false"]
SETS = TINY + ["model.experts.n_experts=4"] + PLAIN_GATE
STEPS = 20
RTOL = 1e-3


def _set_args(sets=SETS) -> list[str]:
    return [a for s in sets for a in ("--set", s)]


def _train_args(scene, run: Path, store: Path, *extra: str) -> list[str]:
    return ["train", "--scene", str(scene), "--output", str(run), "--store", str(store),
            *extra]


def _torchrun(args: list[str], *, wait: bool = True, timeout: float = 120.0):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(W.free_port()),
           "-m", "switchnerf", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
    return subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _assert_same_curve(want: dict[int, float], got: dict[int, float]) -> None:
    assert sorted(got) == sorted(want)
    for step, loss in want.items():
        assert abs(got[step] - loss) <= RTOL * abs(loss), (step, loss, got[step])


@pytest.fixture(scope="module")
def single(tiny_scene, tmp_path_factory):
    """One process, STEPS steps (also builds the store the ranks read)."""
    root = tmp_path_factory.mktemp("torchrun")
    run, store = root / "single", root / "store"
    assert cli_main(_train_args(tiny_scene, run, store, "--config", PRESET, "--max-steps",
                                str(STEPS), *_set_args())) == 0
    return run, store


@pytest.mark.parametrize("expert_parallel", [True, False], ids=["ep", "dp"])
def test_two_ranks_follow_the_single_process_curve(single, tiny_scene, tmp_path,
                                                   expert_parallel):
    ref, store = single
    run = tmp_path / "run"
    flag = f"distributed.expert_parallel={str(expert_parallel).lower()}"
    proc = _torchrun(_train_args(tiny_scene, run, store, "--config", PRESET, "--max-steps",
                                 str(STEPS), *_set_args(SETS + [flag])))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_same_curve(_losses(ref), _losses(run))
    assert json.loads((run / "distributed.json").read_text()) == {
        "world_size": 2, "expert_parallel": expert_parallel}
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["world_size"] == 2 and last["allreduce_bytes"] > 0
    assert (last["exchange_bytes"] > 0) == expert_parallel
    # the checkpoint is single-process shaped: one process loads it and renders the same
    a, b = load_run(ref), load_run(run)
    for key, value in a.renderer.field.state_dict().items():
        assert torch.allclose(b.renderer.field.state_dict()[key], value, rtol=1e-3, atol=1e-5), key
    ca, cb = load_checkpoint(latest_checkpoint(ref)), load_checkpoint(latest_checkpoint(run))
    moments_a, moments_b = ca["optimizer"]["state"][0], cb["optimizer"]["state"][0]
    assert moments_b["exp_avg"].shape == moments_a["exp_avg"].shape
    assert torch.allclose(moments_b["exp_avg_sq"], moments_a["exp_avg_sq"], rtol=1e-3,
                          atol=1e-9)


@pytest.mark.parametrize("expert_parallel", [True, False], ids=["ep", "dp"])
def test_one_step_gradients_equal_the_single_process_gradients(single, tiny_scene,
                                                               tmp_path, expert_parallel):
    from switchnerf.config import load_config
    from switchnerf.train.data import prepare_training_data
    from switchnerf.train.trainer import Trainer

    _, store = single
    codes = W.run_ranks(one_step_worker, 2, tmp_path, PRESET, SETS, str(tiny_scene),
                        str(store), expert_parallel)
    assert codes == [0, 0]
    got = torch.load(tmp_path / "grads.pt", weights_only=True)
    cfg = load_config(PRESET, SETS)
    data = prepare_training_data(cfg, tiny_scene, store, build=False, progress=False)
    trainer = Trainer(cfg, data, tmp_path / "one", progress=False)
    seen = grads_at_optimizer_step(trainer)
    trainer.train_step(next(trainer.stream))
    field = trainer.renderer.field
    table_name = next(n for n, p in field.named_parameters() if p is field.expert_table)
    want = seen.pop(table_name)
    assert got["experts"].shape == want.shape and want.abs().sum() > 0
    assert torch.allclose(got["experts"], want, rtol=1e-4, atol=1e-7)
    assert got["dense"]
    for name, grad in got["dense"].items():
        name = name.replace("experts.local.", "experts.")
        assert torch.allclose(grad, seen[name], rtol=1e-4, atol=1e-7), name
    trainer.close()


def _worker_pids(parent: int) -> dict[int, int]:
    """rank -> pid of torchrun's worker processes."""
    out = {}
    for pid in subprocess.run(["ps", "-o", "pid=", "--ppid", str(parent)], check=True,
                              capture_output=True,
                              text=True).stdout.split():
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        for item in env:
            if item.startswith(b"RANK="):
                out[int(item[5:])] = int(pid)
    return out


def test_killed_rank_ends_every_rank_and_the_run_resumes_on_one(single, tiny_scene,
                                                                tmp_path):
    _, store = single
    run = tmp_path / "run"
    proc = _torchrun(_train_args(tiny_scene, run, store, "--config", PRESET, "--max-steps",
                                 "100000", *_set_args(SETS + ["train.checkpoint_every=3"])),
                     wait=False)
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoints").is_dir() or latest_checkpoint(run) is None:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.2)
        ranks = _worker_pids(proc.pid)
        assert sorted(ranks) == [0, 1]
        os.kill(ranks[1], signal.SIGKILL)
        killed = time.monotonic()
        code = proc.wait(timeout=60)
        assert code != 0 and time.monotonic() - killed < 60
        for pid in ranks.values():  # every rank is gone
            assert not Path(f"/proc/{pid}").exists() or b"zombie" in Path(
                f"/proc/{pid}/status").read_bytes().lower()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    step = load_checkpoint(latest_checkpoint(run))["step"]
    assert step >= 3
    # 2 -> 1: the gathered checkpoint resumes in one process
    assert cli_main(_train_args(tiny_scene, run, store, "--resume", "--max-steps",
                                str(step + 2))) == 0
    assert load_checkpoint(latest_checkpoint(run))["step"] == step + 2


def test_one_process_run_resumes_on_two_ranks(single, tiny_scene, tmp_path):
    ref, store = single
    one, two = tmp_path / "one", tmp_path / "two"
    shutil.copytree(ref, one)
    shutil.copytree(ref, two)
    more = str(STEPS + 4)
    assert cli_main(_train_args(tiny_scene, one, store, "--resume", "--max-steps", more)) == 0
    proc = _torchrun(_train_args(tiny_scene, two, store, "--resume", "--max-steps", more))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_same_curve(_losses(one), _losses(two))
    assert json.loads((two / "distributed.json").read_text())["world_size"] == 2


def test_bad_launches_are_one_line_and_exit_2(single, tiny_scene, tmp_path):
    ref, store = single
    # experts not divisible by the world size, with expert parallelism on
    proc = _torchrun(_train_args(tiny_scene, tmp_path / "odd", store, "--config", PRESET,
                                 "--max-steps", "2",
                                 *_set_args(TINY + ["model.experts.n_experts=3"])))
    _assert_exit_2(proc, "3 experts cannot be split evenly over 2 ranks")
    # a one-process run folder, without --resume
    proc = _torchrun(_train_args(tiny_scene, ref, store, "--config", PRESET, "--max-steps",
                                 "2", *_set_args()))
    _assert_exit_2(proc, "trained by 1 process(es), this launch has 2")


def _assert_exit_2(proc, message: str) -> None:
    """Every rank printed the one-line error and exited 2 (torchrun adds its own report)."""
    assert proc.returncode != 0
    # two ranks write at once: their lines may share a line of the captured stderr
    assert proc.stderr.count("switchnerf: error: ") == 2, proc.stderr
    assert proc.stderr.count(message) == 2, proc.stderr
    assert re.search(r"exitcode\s*:\s*2", proc.stderr), proc.stderr
