"""Throughput of the hash encodings: points/s forward and forward+backward.

Measures a single HashGrid (the gate / plain-NeRF case) and HashExperts with 8
heterogeneous experts (each point routed to a random expert), on CPU and, when
present, CUDA. Prints a table and writes JSON.

    python bench/encoding.py --n 65536 --log2-hashmap-size 19 --device all
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from switchnerf.encoding import HashExperts, HashGrid
from switchnerf.encoding.experts import geometric_expert_specs

N_LEVELS, N_FEATURES, BASE_RESOLUTION = 16, 2, 16
GRID_MAX_RESOLUTION = 2048
EXPERTS, EXPERT_FINEST = 8, 4096


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(fn, n: int, device: torch.device, repeats: int) -> float:
    """Best-of-``repeats`` points per second of ``fn`` after one warm-up call."""
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return n / best


def _measure(module: torch.nn.Module, args: tuple, n: int, device, repeats: int) -> dict:
    def forward():
        with torch.no_grad():
            module(*args)

    def forward_backward():
        module.zero_grad(set_to_none=True)
        module(*args).float().square().mean().backward()

    return {
        "forward_points_per_s": _rate(forward, n, device, repeats),
        "forward_backward_points_per_s": _rate(forward_backward, n, device, repeats),
    }


def run(n: int, log2_hashmap_size: int, device: torch.device, repeats: int) -> dict:
    """Both benchmarks on one device; returns the figures."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, generator=gen).to(device)  # [N, 3] uniform in the unit cube
    expert_id = torch.randint(0, EXPERTS, (n,), generator=gen).to(device)  # int64 [N]
    grid = HashGrid.from_max_resolution(
        n_levels=N_LEVELS,
        n_features_per_level=N_FEATURES,
        log2_hashmap_size=log2_hashmap_size,
        base_resolution=BASE_RESOLUTION,
        max_resolution=GRID_MAX_RESOLUTION,
    ).to(device)
    specs = geometric_expert_specs(
        EXPERTS,
        base_resolution=BASE_RESOLUTION,
        finest_resolution=EXPERT_FINEST,
        log2_hashmap_size=log2_hashmap_size,
    )
    experts = HashExperts(specs, n_levels=N_LEVELS, n_features_per_level=N_FEATURES).to(device)
    return {
        "hash_grid": _measure(grid, (x,), n, device, repeats),
        "hash_experts_8": _measure(experts, (x, expert_id), n, device, repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1 << 16, help="points per call")
    parser.add_argument("--log2-hashmap-size", type=int, default=19)
    parser.add_argument(
        "--device", default="all", help="cpu, cuda, or all (cpu, plus cuda when present)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed calls; the best is kept")
    parser.add_argument("--out", type=Path, default=Path("bench/results/encoding.json"))
    args = parser.parse_args()

    if args.device == "all":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [args.device]
    config = {
        "n_points": args.n,
        "n_levels": N_LEVELS,
        "n_features_per_level": N_FEATURES,
        "log2_hashmap_size": args.log2_hashmap_size,
        "base_resolution": BASE_RESOLUTION,
        "grid_max_resolution": GRID_MAX_RESOLUTION,
        "experts": EXPERTS,
        "experts_finest_resolution": EXPERT_FINEST,
        "inputs": "uniform random points, random expert per point",
        "backend": "reference (pure torch)",
    }
    results = {}
    for name in devices:
        results[name] = run(args.n, args.log2_hashmap_size, torch.device(name), args.repeats)
        for model, figures in results[name].items():
            print(
                f"{name:5s} {model:15s} forward {figures['forward_points_per_s'] / 1e6:7.3f} Mpts/s"
                f"   forward+backward {figures['forward_backward_points_per_s'] / 1e6:7.3f} Mpts/s"
            )
    report = {
        "benchmark": "encoding",
        "config": config,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
