"""bench/gpu_check.sh and bench/device_step.py (issue 16): the script parses, and without a
CUDA device it says so, writes the environment and exits non-zero; the device bench runs
its quick CPU mode and writes its figures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def _env() -> dict:
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(ROOT))
    env.pop("GPU_CHECK_DRY", None)
    return env


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_gpu_check_without_cuda_says_so_and_fails(tmp_path):
    out = tmp_path / "figures"
    proc = subprocess.run(["bash", str(SCRIPT), str(out)], env=_env(), check=False, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    assert "no CUDA device" in proc.stderr
    env = json.loads((out / "environment.json").read_text())
    assert env["cuda_available"] is False and env["torch"] == torch.__version__
    assert not (out / "summary.json").exists()


def test_device_step_quick_on_cpu(tmp_path):
    out = tmp_path / "step.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "device_step.py"), "--device",
                           "cpu", "--quick", "--out", str(out)], env=_env(), check=False,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    step = res["train_step"]
    assert step["samples_per_step"] > step["rays_per_step"]  # the all-occupied grid is marched
    assert step["rays_per_s"] > 0 and res["encode_alone"]["points_per_s"] > 0
    assert res["render"]["size"] == [16, 12] and res["render"]["samples_per_ray"] > 0


def test_cuda_step_profile_runs_on_cpu(tiny_scene, tmp_path):
    out = tmp_path / "profile.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "cuda_step_profile.py"),
                           "--device", "cpu", "--scene", str(tiny_scene), "--rays", "64,128",
                           "--warmup", "2", "--steps", "2", "--profile-steps", "1",
                           "--configs", "configs/cpu-demo.yaml", "--out", str(out)],
                          env=_env(), check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert [r["rays_per_step"] for r in res["sweep"]] == [64, 128]
    assert all(r["ms_per_step"] > 0 and r["samples_per_ray"] > 0 for r in res["sweep"])
    prof = res["profiles"][0]
    assert prof["wall_ms_per_step"] > 0 and prof["by_host_time"]
    assert "| op | calls/step |" in proc.stdout
