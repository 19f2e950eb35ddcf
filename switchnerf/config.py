"""Typed configuration: one set of dataclass defaults, YAML presets as small overrides.

A preset (``configs/*.yaml``) and ``--set key.sub=value`` overrides are merged into
:class:`Config`. Unknown keys are an error that names the key and the file. Each component
receives its own sub-config (``cfg.model``, ``cfg.sampler``, ...), never the whole tree.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from switchnerf.errors import SwitchNerfError

MAX_HASHMAP_SIZE = (1 << 31) - 1  # level sizes are int32 (switchnerf.ops.hash_levels)


@dataclass
class GridConfig:
    """A multiresolution hash grid (tiny-cuda-nn HashGrid keys, max instead of scale)."""

    n_levels: int = 8
    n_features_per_level: int = 2
    log2_hashmap_size: int = 16
    base_resolution: int = 16
    max_resolution: int = 256


@dataclass
class ExpertsConfig:
    """E heterogeneous hash-grid experts sharing levels x features (the output width).

    Expert e's finest resolution is spread geometrically from
    ``finest_resolution * coarsest_fraction`` (expert 0) to ``finest_resolution`` (expert E-1).

    Each hashed level of each expert holds ``2 ** log2_hashmap_size`` rows, or exactly
    ``hashmap_size`` rows when that is set (it then overrides ``log2_hashmap_size``). Coarse
    levels whose vertices fit in fewer rows are dense and smaller, so grids of different
    shapes rarely have equal parameter counts at powers of two; an explicit ``hashmap_size``
    (any integer in [8, 2**31 - 1]; the hash is then reduced modulo the size) lets the
    baselines in configs/ match switchnerf++ (values solved with
    ``switchnerf.ops.hash_levels.solve_hashmap_size``, checked by tests/test_presets_params.py).
    """

    n_experts: int = 8
    n_levels: int = 16
    n_features_per_level: int = 2
    log2_hashmap_size: int = 19
    hashmap_size: int | None = None  # rows per hashed level; overrides log2_hashmap_size
    base_resolution: int = 16
    finest_resolution: int = 4096
    coarsest_fraction: float = 0.125


@dataclass
class RoutingConfig:
    """How points reach experts.

    kind: ``gate`` (learned hash-grid gate, Switch-NeRF++), ``fixed`` (expert = partition cell
    of the point's ground position, a hand-crafted decomposition baseline), ``single`` (no
    gate: every point goes to expert 0; with ``n_experts: 1`` this is a plain hash grid).
    """

    kind: str = "gate"
    gate: GridConfig = field(default_factory=GridConfig)
    gate_hidden: int = 64
    capacity_factor: float | None = None  # None: no dropping
    balance_weight: float = 1e-3
    fixed_grid: tuple[int, int] = (2, 4)  # rows x cols of cells for kind=fixed (= n_experts)
    # How the gate value g scales the expert features: "product" (g * features) or
    # "straight_through" (forward value 1, the gate still gets the gradient of g).
    gate_scale: str = "product"
    gate_dense: bool = False  # every gate level dense (collision-free); ignores gate.log2_hashmap_size
    # Gate start: "random", or "partition" (routes by the nearest of a grid of ground
    # centroids, finest experts nearest the centre; moe/partition_init.py).
    gate_init: str = "random"
    gate_init_sharpness: float = 4.0  # "partition" start: logit lead at a cell centre
    gate_lr_factor: float = 1.0  # gate learning rates relative to optim.lr_tables / lr_mlps
    gate_eps: float | None = None  # Adam eps of the gate's parameters (None: optim.eps)


@dataclass
class HeadConfig:
    """Shared head after the experts, and the colour network."""

    hidden: int = 64
    geo_features: int = 15
    density_activation: str = "trunc_exp"  # or "softplus"
    color_hidden: int = 64
    color_layers: int = 2
    sh_degree: int = 4
    appearance_dim: int = 16  # 0 disables the per-image appearance embedding


@dataclass
class BackgroundConfig:
    """Far field: a direction-conditioned sky/background colour outside the foreground box."""

    enabled: bool = True
    sh_degree: int = 4
    hidden: int = 32


@dataclass
class ModelConfig:
    experts: ExpertsConfig = field(default_factory=ExpertsConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    background: BackgroundConfig = field(default_factory=BackgroundConfig)


@dataclass
class SamplerConfig:
    """Occupancy-grid ray marching."""

    grid_resolution: int = 128
    steps_per_diagonal: int = 1024  # march step = box diagonal / this
    alpha_thre: float = 1e-3
    early_stop_eps: float = 1e-4
    occupancy_threshold: float = 0.01
    update_every: int = 16
    warmup_steps: int = 256
    ema_decay: float = 0.95
    max_samples_per_ray: int = 1024
    # Evaluate density once more before training passes to drop invisible samples (nerfacc's
    # sigma_fn). In aerial scenes few samples lie behind surfaces, so this mostly costs time;
    # rendering always prunes.
    prune_in_training: bool = False


@dataclass
class OptimConfig:
    """Adam with separate learning rates for hash tables and MLPs; exponential decay."""

    lr_tables: float = 1e-2
    lr_mlps: float = 1e-3
    eps: float = 1e-15
    weight_decay_mlps: float = 1e-6
    warmup_steps: int = 100
    final_lr_factor: float = 0.1  # lr at max_steps relative to the start


@dataclass
class TrainConfig:
    rays_per_step: int = 8192
    max_steps: int = 50000
    time_budget_s: float | None = None  # stop early when exceeded (wall clock of training)
    eval_every: int = 5000
    eval_images: int = 4  # val images rendered at periodic eval (all at `switchnerf eval`)
    checkpoint_every: int = 2000
    keep_last: int = 3
    log_every: int = 50
    seed: int = 0
    mixed_precision: bool = True  # bf16 autocast on CUDA only
    val_left_halves: bool = True  # Mega-NeRF protocol: left halves of val images train
    shard_rays: int = 1 << 20


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))


def _to_plain(obj):
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------ merging


def _check_value(value: Any, hint: Any, where: str, source: str) -> Any:
    """Coerce a YAML value to the annotated type, or raise naming the key."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_value(value, inner[0], where, source)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise SwitchNerfError(f"{source}: {where}: expected a list of {len(args)}, got {value!r}")
        return tuple(_check_value(v, a, where, source) for v, a in zip(value, args))
    if hint is bool:
        if not isinstance(value, bool):
            raise SwitchNerfError(f"{source}: {where}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SwitchNerfError(f"{source}: {where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SwitchNerfError(f"{source}: {where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise SwitchNerfError(f"{source}: {where}: expected a string, got {value!r}")
        return value
    return value


def merge(obj: Any, overrides: dict[str, Any], source: str, prefix: str = "") -> Any:
    """Return a copy of dataclass ``obj`` with ``overrides`` (nested dict) applied."""
    if not isinstance(overrides, dict):
        raise SwitchNerfError(f"{source}: {prefix or 'top level'}: expected a mapping, got {overrides!r}")
    obj = copy.deepcopy(obj)
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in overrides.items():
        where = f"{prefix}{key}"
        if key not in names:
            close = ", ".join(sorted(names))
            raise SwitchNerfError(f"{source}: unknown key {where!r} (known here: {close})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            setattr(obj, key, merge(current, value, source, where + "."))
        else:
            setattr(obj, key, _check_value(value, hints[key], where, source))
    return obj


def parse_set(assignments: list[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into a nested dict with YAML-parsed values."""
    out: dict[str, Any] = {}
    for item in assignments:
        if "=" not in item:
            raise SwitchNerfError(f"--set: expected key=value, got {item!r}")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, sets: list[str] | None = None) -> Config:
    """Defaults, then the preset YAML at ``path`` (if any), then ``--set`` assignments."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SwitchNerfError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SwitchNerfError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
        cfg = merge(cfg, data, str(path))
    if sets:
        cfg = merge(cfg, parse_set(sets), "--set")
    validate(cfg)
    return cfg


def config_from_dict(data: dict[str, Any], source: str = "config") -> Config:
    cfg = merge(Config(), data, source)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks with messages naming the key."""
    r, e = cfg.model.routing, cfg.model.experts
    if r.kind not in ("gate", "fixed", "single"):
        raise SwitchNerfError(
            f"config: model.routing.kind: expected 'gate', 'fixed' or 'single', got {r.kind!r}")
    if r.kind == "single" and e.n_experts != 1:
        raise SwitchNerfError(
            f"config: model.experts.n_experts: routing kind 'single' needs 1 expert, got {e.n_experts}")
    if e.n_experts < 1:
        raise SwitchNerfError(f"config: model.experts.n_experts: must be >= 1, got {e.n_experts}")
    if r.kind == "fixed" and r.fixed_grid[0] * r.fixed_grid[1] != e.n_experts:
        raise SwitchNerfError(
            f"config: model.routing.fixed_grid: {list(r.fixed_grid)} has "
            f"{r.fixed_grid[0] * r.fixed_grid[1]} cells but model.experts.n_experts is {e.n_experts}")
    if e.n_features_per_level not in (1, 2, 4, 8):
        raise SwitchNerfError(
            f"config: model.experts.n_features_per_level: must be 1, 2, 4 or 8, got {e.n_features_per_level}")
    if not 3 <= e.log2_hashmap_size <= 31:
        raise SwitchNerfError(
            f"config: model.experts.log2_hashmap_size: must be in [3, 31], got {e.log2_hashmap_size}")
    if e.hashmap_size is not None and not 8 <= e.hashmap_size <= MAX_HASHMAP_SIZE:
        raise SwitchNerfError(
            f"config: model.experts.hashmap_size: rows per hashed level must be in "
            f"[8, 2**31 - 1] (or null for 2**log2_hashmap_size), got {e.hashmap_size}")
    if cfg.model.head.density_activation not in ("trunc_exp", "softplus"):
        raise SwitchNerfError(
            f"config: model.head.density_activation: expected trunc_exp or softplus, "
            f"got {cfg.model.head.density_activation!r}")
    if r.capacity_factor is not None and r.capacity_factor <= 0:
        raise SwitchNerfError(f"config: model.routing.capacity_factor: must be > 0, got {r.capacity_factor}")
    if cfg.train.rays_per_step < 1:
        raise SwitchNerfError(f"config: train.rays_per_step: must be >= 1, got {cfg.train.rays_per_step}")
