"""CUDA twins of the native ops: compile check of the .cu sources and GPU tests."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

from switchnerf.ops import _sources


def _nvcc() -> str | None:
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME is not None:
        return f"{CUDA_HOME}/bin/nvcc"
    return shutil.which("nvcc")


@pytest.mark.skipif(_nvcc() is None, reason="nvcc is not installed (no CUDA toolkit found)")
def test_cuda_sources_compile(tmp_path):
    """``nvcc -c`` of every .cu file. The kernels need only the CUDA runtime headers, so
    this runs wherever nvcc exists, CUDA torch or not."""
    from torch.utils.cpp_extension import include_paths

    src = _sources.find_source_dir()
    cu_files = [p for p in _sources.source_files(src) if p.suffix == ".cu"]
    assert cu_files
    includes = [f"-I{src}"] + [f"-I{p}" for p in include_paths()]
    for cu in cu_files:
        cmd = [_nvcc(), "-c", str(cu), "-o", str(tmp_path / f"{cu.stem}.o"), "-std=c++17",
               "-DSWITCHNERF_WITH_CUDA", "-Xcompiler", "-fPIC", *includes]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stderr}"


needs_gpu = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA GPU (torch.cuda.is_available() is False)",
)


@pytest.fixture(scope="session")
def native_cuda():
    from switchnerf.ops import load_native

    mod = load_native()
    if not mod.with_cuda:
        pytest.fail("a CUDA GPU is present but the native ops were built without CUDA "
                    "(is nvcc on PATH / CUDA_HOME set?)")
    return mod


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("n_experts", [1, 3, 8])
@pytest.mark.parametrize("n_points", [0, 1, 5000])
def test_cuda_encoding_matches_reference(native_cuda, n_experts, n_points):
    from switchnerf.ops.hash_encode import fused_hash_encode
    from switchnerf.ops.hash_encode_torch import hash_encode_reference
    from switchnerf.ops.hash_levels import GridSpec, LevelTable

    gen = torch.Generator().manual_seed(n_points + n_experts)
    specs = [GridSpec(2 + e, 9 + (e % 3), max_resolution=float(24 + 40 * e))
             for e in range(n_experts)]
    levels = LevelTable.for_experts(specs, n_levels=6, n_features=2).to("cuda")
    x = torch.rand(n_points, 3, generator=gen).cuda()
    eid = torch.randint(0, n_experts, (n_points,), generator=gen).cuda()
    table = (torch.rand(levels.n_rows, 2, generator=gen) * 2 - 1).cuda()
    t_ref, t_nat = table.clone().requires_grad_(), table.clone().requires_grad_()
    ref = hash_encode_reference(x, t_ref, eid, levels)
    out = fused_hash_encode(x, t_nat, eid, levels)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    if n_points:
        grad = torch.randn(ref.shape, device="cuda")
        (g_ref,) = torch.autograd.grad(ref, t_ref, grad)
        (g_nat,) = torch.autograd.grad(out, t_nat, grad)
        torch.testing.assert_close(g_nat, g_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
@needs_gpu
def test_cuda_encoding_gives_out_of_range_experts_zero_features_without_a_sync(native_cuda):
    """On CUDA the host does not read expert ids (no synchronisation per call): an id outside
    [0, E) gets zero features and no gradient; valid points are unaffected."""
    from switchnerf.ops.hash_encode import fused_hash_encode
    from switchnerf.ops.hash_encode_torch import hash_encode_reference
    from switchnerf.ops.hash_levels import GridSpec, LevelTable

    gen = torch.Generator().manual_seed(7)
    specs = [GridSpec(4, 10, max_resolution=64.0), GridSpec(4, 10, max_resolution=128.0)]
    levels = LevelTable.for_experts(specs, n_levels=4, n_features=2).to("cuda")
    x = torch.rand(64, 3, generator=gen).cuda()
    eid = torch.randint(0, 2, (64,), generator=gen).cuda()
    bad = torch.zeros(64, dtype=torch.bool, device="cuda")
    bad[::5] = True
    eid_bad = torch.where(bad, torch.full_like(eid, 5), eid)
    table = (torch.rand(levels.n_rows, 2, generator=gen) * 2 - 1).cuda().requires_grad_()
    out = fused_hash_encode(x, table, eid_bad, levels)
    assert torch.all(out[bad] == 0)
    ref = hash_encode_reference(x[~bad], table.detach(), eid[~bad], levels)
    torch.testing.assert_close(out[~bad], ref, rtol=1e-5, atol=1e-6)
    (g,) = torch.autograd.grad(out[bad].sum() * 0 + out[~bad].sum(), table)
    (g_ref,) = torch.autograd.grad(
        hash_encode_reference(x[~bad], table, eid[~bad], levels).sum(), table)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-4)
