"""Bytes per training step on paper: data parallel, expert parallel and NeRF-XL-style.

Nothing is timed; every figure follows from the formulas below and the model sizes of
``configs/switchnerf++.yaml`` (counted from the config, no table is allocated). Bytes are
what one GPU sends per step (it receives as much); 4-byte floats.

* (a) DDP, experts replicated: ring all-reduce of every gradient,
  ``2 (W - 1) / W * 4 * P_all``.
* (b) expert parallel (switchnerf.moe.expert_parallel): each GPU has ``n = R * S / W``
  samples, a fraction ``(W - 1) / W`` of them owned elsewhere (uniform routing, which the
  balance loss aims at). Per such sample: position + local expert id out (16 B), features
  back (4 D B), feature gradients to the owner in backward (4 D B), D = levels x features;
  the counts (8 B per peer); plus the ring all-reduce of the dense parameters
  ``2 (W - 1) / W * 4 * P_dense``.
  When E is not a multiple of W but W is a multiple of E, the placement that fits is a
  hybrid (not implemented): expert parallel within groups of E GPUs, each table
  replicated W / E times and all-reduced over its replicas,
  ``2 (W/E - 1) / (W/E) * 4 * P_experts / E`` more, and the exchange stays in the group
  (remote fraction ``(E - 1) / E``).
* (c) NeRF-XL: every GPU owns a spatial tile and marches all R rays through it; the
  per-ray partial sums (k floats: transmittance, colour, depth, ...) are all-gathered in
  the forward pass only, ``(W - 1) * R * k * 4`` per GPU (ring all-gather).

Compute per GPU is put beside the bytes as ``R * S / W`` samples at an assumed rate
(``--samples-per-s``, forward + backward of the fused path on one GPU).

    python bench/distributed_paper.py                 # the table in docs/DISTRIBUTED_SCALING.md
    python bench/distributed_paper.py --json out.json --samples 24 --worlds 8 16 64
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from switchnerf.config import load_config
from switchnerf.encoding.experts import geometric_expert_specs
from switchnerf.ops.hash_levels import experts_rows

PRESET = Path(__file__).resolve().parents[1] / "configs" / "switchnerf++.yaml"
FLOAT = 4
PAYLOAD = 16  # bytes out per sample: x, y, z and the local expert id as float32
COUNT = 8  # bytes of one int64 count per peer


@dataclass
class ModelSize:
    n_experts: int
    expert_params: int  # all expert tables together
    dense_params: int  # gate (table + MLP), head, colour MLP, appearance, background
    feature_dim: int  # D = levels x features per level

    @property
    def total(self) -> int:
        return self.expert_params + self.dense_params


def model_size(n_experts: int | None = None, n_images: int = 2000) -> ModelSize:
    """Parameter counts of the paper preset with ``n_experts`` experts (default: the
    preset's); the dense part is counted on a field whose expert tables are shrunk."""
    from switchnerf.model import SwitchField

    sets = [] if n_experts is None else [f"model.experts.n_experts={n_experts}"]
    cfg = load_config(PRESET, sets)
    ex = cfg.model.experts
    specs = geometric_expert_specs(ex.n_experts, base_resolution=ex.base_resolution,
                                   finest_resolution=ex.finest_resolution,
                                   coarsest_fraction=ex.coarsest_fraction,
                                   log2_hashmap_size=ex.log2_hashmap_size,
                                   hashmap_size=ex.hashmap_size)
    expert_params = experts_rows(specs, ex.n_levels) * ex.n_features_per_level
    small = load_config(PRESET, sets + ["model.experts.log2_hashmap_size=3",
                                        "model.experts.hashmap_size=null"])
    field = SwitchField(small.model, n_images=n_images)
    dense = sum(p.numel() for p in field.parameters()) - field.experts.params.numel()
    return ModelSize(ex.n_experts, expert_params, dense, ex.n_levels * ex.n_features_per_level)


def ring_all_reduce(params: int, world: int) -> float:
    return 2 * (world - 1) / world * FLOAT * params


def ddp_bytes(m: ModelSize, world: int) -> float:
    return ring_all_reduce(m.total, world)


def expert_parallel_bytes(m: ModelSize, world: int, rays: int, samples: float) -> float:
    """Expert parallel over all W GPUs (E % W == 0), or the hybrid (W % E == 0)."""
    per_gpu = rays * samples / world
    per_sample = PAYLOAD + 2 * FLOAT * m.feature_dim
    dense = ring_all_reduce(m.dense_params, world)
    if m.n_experts % world == 0:
        return per_gpu * (world - 1) / world * per_sample + COUNT * (world - 1) + dense
    group, replicas = m.n_experts, world // m.n_experts
    return (per_gpu * (group - 1) / group * per_sample + COUNT * (group - 1) + dense
            + ring_all_reduce(m.expert_params // m.n_experts, replicas))


def nerfxl_bytes(world: int, rays: int, partials: int) -> float:
    return (world - 1) * rays * partials * FLOAT


def rows(args, rays_per_gpu: bool) -> list[dict]:
    paper = model_size(None, args.images)
    out = []
    for world in args.worlds:
        rays = args.rays * world if rays_per_gpu else args.rays
        models = [(f"paper E={paper.n_experts}", paper)]
        if world > paper.n_experts:
            models.append((f"E=W={world}", model_size(world, args.images)))
        for label, m in models:
            for s in args.samples:
                hybrid = m.n_experts % world != 0
                ep = (expert_parallel_bytes(m, world, rays, s)
                      if not hybrid or world % m.n_experts == 0 else None)
                out.append({"world": world, "rays": rays, "model": label, "params": m.total,
                            "expert_params": m.expert_params, "dense_params": m.dense_params,
                            "samples_per_ray": s, "compute_s": rays * s / world / args.samples_per_s,
                            "ddp": ddp_bytes(m, world), "expert_parallel": ep,
                            "expert_parallel_hybrid": hybrid,
                            "nerfxl": nerfxl_bytes(world, rays, args.partials)})
    return out


def _mb(x: float | None) -> str:
    return "n/a" if x is None else f"{x / 1e6:,.1f}"


def _ms(x: float | None, gbs: float) -> str:
    return "-" if x is None else f"{x / (gbs * 1e9) * 1e3:,.2f}"


def print_table(table: list[dict], gbs: float) -> None:
    print(f"| GPUs | rays/step | model: experts + dense params | samples/ray | compute ms | "
          f"(a) DDP MB | (b) expert parallel MB | (c) NeRF-XL MB | "
          f"ms at {gbs:g} GB/s: (a) / (b) / (c) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in table:
        ep = _mb(r["expert_parallel"]) + (" (hybrid)" if r["expert_parallel_hybrid"] else "")
        times = " / ".join(_ms(r[k], gbs) for k in ("ddp", "expert_parallel", "nerfxl"))
        print(f"| {r['world']} | {r['rays']:,} | {r['model']}: {r['expert_params'] / 1e6:,.1f} M"
              f" + {r['dense_params'] / 1e6:,.2f} M | {r['samples_per_ray']:g} | "
              f"{r['compute_s'] * 1e3:,.2f} | {_mb(r['ddp'])} | {ep} | {_mb(r['nerfxl'])} | "
              f"{times} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rays", type=int, default=8192, help="global rays per step")
    ap.add_argument("--samples", type=float, nargs="+", default=[32, 128],
                    help="samples per ray (after occupancy pruning)")
    ap.add_argument("--worlds", type=int, nargs="+", default=[8, 64], help="GPUs")
    ap.add_argument("--partials", type=int, default=5,
                    help="NeRF-XL floats per ray per tile (transmittance, rgb, depth)")
    ap.add_argument("--images", type=int, default=2000, help="images (appearance embeddings)")
    ap.add_argument("--link-gbs", type=float, default=25.0,
                    help="GB/s per GPU used for the time column (200 Gb/s network)")
    ap.add_argument("--samples-per-s", type=float, default=1e8,
                    help="assumed training samples/s of one GPU (compute column)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    tables = {}
    for per_gpu in (False, True):
        key = "rays_per_gpu" if per_gpu else "global_rays"
        tables[key] = rows(args, per_gpu)
        what = (f"{args.rays} rays per GPU (global batch grows with W)" if per_gpu
                else f"{args.rays} rays per step in all (the paper's global batch)")
        print(f"\n{what}:\n")
        print_table(tables[key], args.link_gbs)
    paper = model_size(None, args.images)
    per_sample = PAYLOAD + 2 * FLOAT * paper.feature_dim
    print(f"\nexpert parallel: {per_sample} B per remote sample; matching "
          f"{args.samples_per_s:.0e} samples/s needs {per_sample * args.samples_per_s / 1e9:.1f} "
          "GB/s per GPU")
    if args.json is not None:
        from switchnerf.io_utils import write_json_atomic

        write_json_atomic(args.json, {"args": {k: (str(v) if isinstance(v, Path) else v)
                                               for k, v in vars(args).items()}, **tables})


if __name__ == "__main__":
    main()
