"""Build the model pieces of a run from its config and scene (shared by train and load_run)."""

from __future__ import annotations

from pathlib import Path

import torch

from switchnerf.config import Config
from switchnerf.model import SwitchField
from switchnerf.render.box import BoxFrame
from switchnerf.render.occupancy import OccupancyGrid
from switchnerf.render.renderer import Renderer


def scene_and_cameras(scene_path: str | Path):
    """Load a scene (descriptor or dataset folder) and its camera table (train, then val)."""
    from switchnerf.scene.cameras import CameraTable
    from switchnerf.scene.load import load_scene

    scene = load_scene(scene_path)
    return scene, CameraTable.from_scene(scene)


def build_renderer(cfg: Config, scene, n_images: int, *, device="cpu") -> Renderer:
    """A freshly initialised SwitchField (drawn from the global CPU RNG), an empty occupancy
    grid and the scene's box frame, on ``device``, as one Renderer."""
    field = SwitchField(cfg.model, n_images=n_images).to(device)
    grid = OccupancyGrid(resolution=cfg.sampler.grid_resolution).to(device)
    box = BoxFrame.from_bbox(scene.bbox, device=device)
    return Renderer(field, grid, box, cfg.sampler)


def _native_tables(tables: list[torch.Tensor]) -> bool:
    """Whether the hash tables can take a native Adam step (dense or lazy: CPU float32)."""
    if not all(p.device.type == "cpu" and p.dtype == torch.float32 and p.is_contiguous()
               for p in tables):
        return False
    from switchnerf.ops import native_available

    return native_available()


def build_optimizer(cfg: Config, field: SwitchField, *, lazy_tables: bool = False
                    ) -> torch.optim.Optimizer:
    """Adam with one learning rate for hash tables and another (with weight decay) for MLPs.

    Groups 0 (tables) and 1 (MLPs) carry the scheduled rates. When the gate has its own
    settings (``model.routing.gate_lr_factor`` != 1 or ``gate_eps`` set), its table and
    MLP are groups 2 and 3, with their own Adam eps, and their learning rate follows groups
    0 and 1 times the factor at every step (a step pre-hook), whatever the schedule sets.

    On the CPU with the native ops, the hash tables of group 0 step through
    ``NativeTableAdam``'s native dense op (torch's fused Adam bit for bit), which zeroes
    their gradients as it reads them and recycles the tensors for the next backward.

    lazy_tables: on the CPU with the native ops, step the hash tables of group 0 lazily
    (``LazyTableAdam``: only rows with a gradient, each catching up on its skipped steps;
    the field's ``state_dict`` flushes the optimiser first, so checkpoints hold dense
    Adam's values; whoever renders between steps calls ``flush()``). Off by default: on
    the cpu-demo workload about 15 % of the table rows have a gradient at each step and
    the replay of the skipped steps costs more than fused dense Adam (bench/RESULTS.md).
    """
    o, rt = cfg.optim, cfg.model.routing
    gate_table, gate_mlp = field.gate_parameters()
    own = bool(gate_table) and (rt.gate_lr_factor != 1.0 or rt.gate_eps is not None)
    skip = {id(p) for p in gate_table + gate_mlp} if own else set()
    tables = [p for p in field.table_parameters() if id(p) not in skip]
    groups = [
        {"params": tables, "lr": o.lr_tables, "weight_decay": 0.0},
        {"params": [p for p in field.mlp_parameters() if id(p) not in skip],
         "lr": o.lr_mlps, "weight_decay": o.weight_decay_mlps},
    ]
    if own:
        eps = o.eps if rt.gate_eps is None else rt.gate_eps
        for leader, params, decay in ((0, gate_table, 0.0), (1, gate_mlp, o.weight_decay_mlps)):
            groups.append({"params": params, "lr": groups[leader]["lr"] * rt.gate_lr_factor,
                           "weight_decay": decay, "eps": eps, "lr_follows": leader,
                           "lr_ratio": rt.gate_lr_factor})
    kwargs = {"betas": (0.9, 0.99), "eps": o.eps}
    native = _native_tables(tables)
    if lazy_tables and native:
        from switchnerf.train.optim import LazyTableAdam, attach_flush

        groups[0].update(lazy=True, row_size=cfg.model.experts.n_features_per_level)
        if any(p.numel() % groups[0]["row_size"] for p in tables):
            groups[0]["row_size"] = 1
        opt = LazyTableAdam(groups, fused=True, **kwargs)
        attach_flush(field, opt)
    elif native:
        from switchnerf.train.optim import NativeTableAdam

        groups[0]["native"] = True
        opt = NativeTableAdam(groups, fused=True, **kwargs)
    else:
        try:
            opt = torch.optim.Adam(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError):
            opt = torch.optim.Adam(groups, foreach=True, **kwargs)

    def follow(optimizer, _args, _kwargs) -> None:
        for g in optimizer.param_groups:
            if "lr_follows" in g:
                g["lr"] = optimizer.param_groups[g["lr_follows"]]["lr"] * g["lr_ratio"]

    if own:
        opt.register_step_pre_hook(follow)
    return opt
