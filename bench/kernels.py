"""Benchmark the native ops against their pure-torch references; prints and writes JSON.

Figures (one run):

* ``encode_speedup``: fused expert hash encoding, forward + backward, vs
  ``hash_encode_reference`` (target >= 5x on CPU, >= 20x on CUDA);
* ``march_composite_speedup``: native CPU ray marching + packed weights forward + backward
  vs the torch ``march_rays`` + ``render_weights`` (target >= 5x);
* ``moe_over_single``: fused encoding of a mixture of 8 heterogeneous experts over the
  same encoding with one grid of the same levels (target <= 1.2);
* ``training_batch``: the fused encoding's forward and backward at a CPU training step's
  size (512 rays of 18 samples), each call after the caches were emptied, as between
  training steps (no target: the figure that sparse visits of cold tables move);
* ``table_adam``: one Adam step of cpu-demo's 7.1 M table values with the next step's
  zeroed gradient: torch's fused Adam plus a fresh ``torch.zeros`` gradient, against the
  native step that zeroes the gradient it reads (``NativeTableAdam``); caches emptied
  before each, median (no target).

Workload (the cpu-demo config): 8 experts, 16 levels, F = 2, log2 T of 15 or 16 per
expert, ~2^18 samples along random rays through the unit cube, in ray order; each
sample's expert is its octant (spatially coherent, as a gate makes it).

    python bench/kernels.py [--out bench/results/kernels.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch

from switchnerf.ops import load_native
from switchnerf.ops.hash_encode import fused_hash_encode
from switchnerf.ops.hash_encode_torch import hash_encode_reference
from switchnerf.ops.hash_levels import GridSpec, LevelTable
from switchnerf.ops.render_weights import fused_render_weights
from switchnerf.render.composite import render_weights
from switchnerf.render.occupancy import OccupancyGrid
from switchnerf.render.sampler import march_rays


def fused_march_rays(*args, **kwargs):
    """The native march op through ``march_rays`` (pruning included)."""
    return march_rays(*args, backend="native", **kwargs)

N_LEVELS = 16
N_FEATURES = 2


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn, device: torch.device, repeats: int) -> float:
    """Fastest of ``repeats`` timed calls (after one warm-up), seconds."""
    fn()
    _sync(device)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def best_times(fns: list, device: torch.device, repeats: int) -> list[float]:
    """Fastest call of each function, interleaved round by round so that a change of load
    on the machine affects all of them alike; seconds."""
    for fn in fns:
        fn()
    _sync(device)
    best = [math.inf] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            _sync(device)
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def expert_specs() -> list[GridSpec]:
    """8 heterogeneous experts: base 16, max resolution 512..4096, log2 T 15 or 16."""
    return [
        GridSpec(16, 15 + (e % 2), max_resolution=512 * 2 ** (e // 2) * (1 + 0.25 * (e % 2)))
        for e in range(8)
    ]


def ray_samples(n_rays: int, per_ray: int, gen: torch.Generator) -> torch.Tensor:
    """Points [n_rays * per_ray, 3] along random chords of the unit cube, ray after ray."""
    a = torch.rand(n_rays, 3, generator=gen)
    b = torch.rand(n_rays, 3, generator=gen)
    t = (torch.arange(per_ray, dtype=torch.float32) + 0.5) / per_ray  # [S]
    pts = a[:, None] + t[None, :, None] * (b - a)[:, None]  # [n_rays, S, 3]
    return pts.reshape(-1, 3).clamp(0, 1).contiguous()


def octant(x: torch.Tensor) -> torch.Tensor:
    """Expert of each point: its octant of the unit cube, int64 [N]."""
    bits = (x >= 0.5).long()
    return bits[:, 0] + 2 * bits[:, 1] + 4 * bits[:, 2]


def bench_encoding(device: torch.device, n_points: int, repeats: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    per_ray = 128
    x = ray_samples(n_points // per_ray, per_ray, gen).to(device)
    eid = octant(x)
    moe = LevelTable.for_experts(expert_specs(), n_levels=N_LEVELS, n_features=N_FEATURES)
    single = LevelTable.for_experts(expert_specs()[-1:], n_levels=N_LEVELS,
                                    n_features=N_FEATURES)
    moe_d, single_d = moe.to(device), single.to(device)

    def table(levels):
        return ((torch.rand(levels.n_rows, N_FEATURES, generator=gen) * 2 - 1) * 1e-4).to(
            device).requires_grad_()

    t_moe, t_single = table(moe), table(single)
    grad = torch.randn(x.shape[0], N_LEVELS * N_FEATURES, generator=gen).to(device)

    def fwd_bwd(encode, tab, ids, levels):
        def run():
            out = encode(x, tab, ids, levels)
            (g,) = torch.autograd.grad(out, tab, grad)
            return g
        return run

    ref_s = best_time(fwd_bwd(hash_encode_reference, t_moe, eid, moe_d), device,
                      max(1, repeats // 3))
    fused_s, single_s, fwd_moe, fwd_single = best_times([
        fwd_bwd(fused_hash_encode, t_moe, eid, moe_d),
        fwd_bwd(fused_hash_encode, t_single, None, single_d),
        lambda: fused_hash_encode(x, t_moe.detach(), eid, moe_d),
        lambda: fused_hash_encode(x, t_single.detach(), None, single_d),
    ], device, repeats)
    return {
        "n_points": int(x.shape[0]),
        "n_experts": moe.n_experts,
        "table_rows_moe": moe.n_rows,
        "table_rows_single": single.n_rows,
        "reference_fwd_bwd_s": ref_s,
        "fused_fwd_bwd_s": fused_s,
        "fused_fwd_s": fwd_moe,
        "single_fwd_bwd_s": single_s,
        "single_fwd_s": fwd_single,
        "fused_mpts_per_s_fwd_bwd": x.shape[0] / fused_s / 1e6,
        "encode_speedup": ref_s / fused_s,
        "moe_over_single": fused_s / single_s,
        "moe_over_single_fwd": fwd_moe / fwd_single,
    }


def bench_training_batch(n_rays: int, per_ray: int, repeats: int) -> dict:
    """The fused encoding at a CPU training step's size and tables (cpu-demo's fixed-grid
    baseline: 512 rays of about 18 samples, 8 experts of 16 levels from 16 to 1024 with
    31,596 rows a hashed level): forward, and backward with its zeroed gradient, each with
    the caches emptied before the call by streaming 256 MB (as the optimiser's pass over
    every table row does between steps); median of ``repeats``."""
    gen = torch.Generator().manual_seed(3)
    x = ray_samples(n_rays, per_ray, gen)
    eid = octant(x)
    specs = [GridSpec(16, 15, max_resolution=1024.0, hashmap_size=31596) for _ in range(8)]
    levels = LevelTable.for_experts(specs, n_levels=N_LEVELS, n_features=N_FEATURES)
    table = (torch.rand(levels.n_rows, N_FEATURES, generator=gen) * 2 - 1) * 1e-4
    meta = [getattr(levels, n).contiguous() for n in ("scale", "resolution", "size", "offset")]
    grad = torch.randn(x.shape[0], N_LEVELS * N_FEATURES, generator=gen)
    native = load_native()
    flush = torch.empty(64 << 20)  # 256 MB
    fwd, bwd = [], []
    for k in range(repeats + 1):
        flush.fill_(float(k))
        t = time.perf_counter()
        native.hash_encode_forward(x, table, eid, *meta)
        t1 = time.perf_counter()
        flush.fill_(float(k))
        t2 = time.perf_counter()
        native.hash_encode_backward(grad, x, eid, *meta, levels.n_rows, N_FEATURES)
        t3 = time.perf_counter()
        if k:  # the first call warms the allocator
            fwd.append(t1 - t)
            bwd.append(t3 - t2)
    return {"n_points": int(x.shape[0]), "table_rows": levels.n_rows,
            "cold_fwd_s": sorted(fwd)[len(fwd) // 2], "cold_bwd_s": sorted(bwd)[len(bwd) // 2]}


def bench_table_adam(n_values: int, repeats: int) -> dict:
    """Median seconds of one table Adam step plus the next step's zeroed gradient: torch's
    fused Adam + ``torch.zeros`` (a fresh gradient every step) against the native dense step
    that zeroes the gradient in its pass (``adam_dense_step``); 20 % of the gradient values
    non-zero, caches emptied (256 MB streamed) before each call."""
    from switchnerf.ops.adam_dense import adam_dense_step

    gen = torch.Generator().manual_seed(5)
    grad = torch.randn(n_values, generator=gen) * (torch.rand(n_values, generator=gen) < 0.2)
    ref = torch.nn.Parameter(torch.randn(n_values, generator=gen) * 1e-4)
    opt = torch.optim.Adam([ref], lr=1e-2, betas=(0.9, 0.99), eps=1e-15, fused=True)
    p, m, v = ref.detach().clone(), torch.zeros(n_values), torch.zeros(n_values)
    mine = grad.clone()
    flush = torch.empty(64 << 20)  # 256 MB
    torch_s, native_s = [], []
    for k in range(repeats + 1):
        ref.grad = grad.clone()
        flush.fill_(float(k))
        t = time.perf_counter()
        opt.step()
        fresh = torch.zeros(n_values)  # the next step's gradient
        t1 = time.perf_counter()
        del fresh
        mine.copy_(grad)
        flush.fill_(float(k))
        t2 = time.perf_counter()
        adam_dense_step(p, mine, m, v, step=k + 1, lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-15,
                        zero_grad=True)
        t3 = time.perf_counter()
        if k:
            torch_s.append(t1 - t)
            native_s.append(t3 - t2)
    return {"n_values": n_values, "torch_fused_and_zeros_s": sorted(torch_s)[len(torch_s) // 2],
            "native_zeroing_s": sorted(native_s)[len(native_s) // 2]}


def bench_march(n_rays: int, repeats: int) -> dict:
    gen = torch.Generator().manual_seed(1)
    grid = OccupancyGrid(64)
    # A city-like occupancy: columns of random height on a ground slab.
    heights = torch.rand(16, 16, generator=gen) * 0.6
    ij = (torch.arange(64) // 4)
    col = heights[ij[:, None], ij[None, :]]  # [64, 64]
    z = (torch.arange(64) + 0.5) / 64
    grid.binary.copy_(z[None, None, :] < col[:, :, None] + 0.05)
    centre = torch.tensor([0.5, 0.5, 0.3])
    eye = centre + torch.tensor([1.2, 0.9, 0.9])
    target = centre + (torch.rand(n_rays, 3, generator=gen) - 0.5) * torch.tensor([1.0, 1.0, 0.5])
    dirs = torch.nn.functional.normalize(target - eye, dim=-1)  # [N, 3]
    origins = eye.expand(n_rays, 3).contiguous()
    near = torch.zeros(n_rays)
    far = torch.full((n_rays,), 4.0)
    step = math.sqrt(3) / 512

    n_max = n_rays * int(4.0 / step + 2)
    sig_all = torch.rand(n_max, generator=torch.Generator().manual_seed(2)) * 50  # densities

    def run(march, weights):
        def go():
            s = march(origins, dirs, near, far, grid, step_size=step)
            sig = sig_all[: len(s)].clone().requires_grad_()
            w, _, _ = weights(s.t_starts, s.t_ends, sig, s.ray_indices, n_rays)
            (_g,) = torch.autograd.grad(w.sum(), sig)
            return len(s)
        return go

    cpu = torch.device("cpu")
    n_samples = run(fused_march_rays, fused_render_weights)()
    ref_s = best_time(run(lambda *a, **k: march_rays(*a, backend="torch", **k), render_weights),
                      cpu, repeats)
    fused_s = best_time(run(fused_march_rays, fused_render_weights), cpu, repeats)
    return {
        "n_rays": n_rays,
        "n_samples": n_samples,
        "occupied_fraction": grid.occupied_fraction(),
        "reference_s": ref_s,
        "fused_s": fused_s,
        "march_composite_speedup": ref_s / fused_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/kernels.json")
    parser.add_argument("--points", type=int, default=1 << 18)
    parser.add_argument("--rays", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.points, args.rays, args.repeats = 1 << 14, 1024, 1

    t = time.perf_counter()
    load_native()
    build_s = time.perf_counter() - t
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__},
        "native_load_s": build_s,
        "cpu": {"encoding": bench_encoding(torch.device("cpu"), args.points, args.repeats),
                "training_batch": bench_training_batch(512, 18, 20 * args.repeats),
                "table_adam": bench_table_adam(7_122_784, 8 * args.repeats),
                "march_composite": bench_march(args.rays, args.repeats)},
        "targets": {"encode_speedup_cpu": 5.0, "march_composite_speedup": 5.0,
                    "moe_over_single": 1.2, "encode_speedup_cuda": 20.0},
    }
    if torch.cuda.is_available() and load_native().with_cuda:
        result["cuda"] = {"device": torch.cuda.get_device_name(),
                          "encoding": bench_encoding(torch.device("cuda"), args.points,
                                                     args.repeats)}
    else:
        result["cuda"] = None

    enc, mc = result["cpu"]["encoding"], result["cpu"]["march_composite"]
    print(f"threads {torch.get_num_threads()}, {enc['n_points']} ray-ordered samples, "
          f"{enc['n_experts']} experts x {N_LEVELS} levels x F={N_FEATURES}")
    print(f"encode fwd+bwd  reference {enc['reference_fwd_bwd_s'] * 1e3:8.1f} ms   fused "
          f"{enc['fused_fwd_bwd_s'] * 1e3:7.1f} ms   speedup {enc['encode_speedup']:5.1f}x "
          f"(target >= 5)")
    print(f"MoE / single grid  fwd+bwd {enc['moe_over_single']:.2f}  fwd "
          f"{enc['moe_over_single_fwd']:.2f} (target <= 1.2)")
    tb = result["cpu"]["training_batch"]
    print(f"training batch ({tb['n_points']} samples, caches emptied before each call)  "
          f"fwd {tb['cold_fwd_s'] * 1e3:.2f} ms   bwd {tb['cold_bwd_s'] * 1e3:.2f} ms")
    ta = result["cpu"]["table_adam"]
    print(f"table Adam ({ta['n_values']} values, caches emptied)  torch fused + fresh zeros "
          f"{ta['torch_fused_and_zeros_s'] * 1e3:.2f} ms   native, zeroing "
          f"{ta['native_zeroing_s'] * 1e3:.2f} ms")
    print(f"march+composite  reference {mc['reference_s'] * 1e3:8.1f} ms   fused "
          f"{mc['fused_s'] * 1e3:7.1f} ms   speedup {mc['march_composite_speedup']:5.1f}x "
          f"({mc['n_samples']} samples of {mc['n_rays']} rays; target >= 5)")
    if result["cuda"]:
        ce = result["cuda"]["encoding"]
        print(f"CUDA encode speedup {ce['encode_speedup']:.1f}x (target >= 20), MoE / single "
              f"{ce['moe_over_single']:.2f} (target <= 1.2)")
    else:
        print("CUDA: not measured (no GPU, or the native ops were built without CUDA)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
