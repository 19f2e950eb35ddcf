"""Typed configuration: one set of frozen dataclass defaults, YAML presets as small overrides.

A preset (``configs/*.yaml``) and ``--set key.sub=value`` overrides are merged into
:class:`Config`. Unknown keys are an error that names the key and the file. Each component
receives its own sub-config (``cfg.model``, ``cfg.sampler``, ...), never the whole tree.

The defaults are the paper-scale Switch-NeRF++ settings (``configs/switchnerf++.yaml`` adds
nothing to them). Every section is frozen: change a value with ``dataclasses.replace``
(``replace(cfg, train=replace(cfg.train, max_steps=10))``), which checks it again. Each
section checks its own fields when it is built (the checks sit next to the fields): a bad
value raises :class:`ConfigFieldError`, and a preset or ``--set`` names the file and the
dotted key.

>>> cfg = load_config(None, ["train.max_steps=10"])
>>> cfg.train.max_steps, cfg.train.rays_per_step
(10, 8192)
>>> load_config(None, ["train.log_every=0"])
Traceback (most recent call last):
switchnerf.errors.SwitchNerfError: --set: train.log_every: must be >= 1, got 0
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from switchnerf.errors import SwitchNerfError

MAX_HASHMAP_SIZE = (1 << 31) - 1  # level sizes are int32 (switchnerf.ops.hash_levels)


class ConfigFieldError(SwitchNerfError):
    """A bad value of one field: ``key`` (dotted, relative to the section that raised it)
    and ``reason``. Merging a preset or ``--set`` turns it into a SwitchNerfError naming the
    file and the full dotted key."""

    def __init__(self, section: str, key: str, reason: str):
        super().__init__(f"{section}.{key}: {reason}")
        self.key, self.reason = key, reason


# ------------------------------------------------------------------------------ field checks

Check = Callable[[Any], "str | None"]  # value -> reason it is wrong, or None


def at_least(lo) -> Check:
    return lambda v: None if v >= lo else f"must be >= {lo}, got {v}"


def above(lo) -> Check:
    return lambda v: None if v > lo else f"must be > {lo}, got {v}"


def within(lo, hi) -> Check:
    return lambda v: None if lo <= v <= hi else f"must be in [{lo}, {hi}], got {v}"


def one_of(*choices) -> Check:
    names = ", ".join(repr(c) for c in choices)
    return lambda v: None if v in choices else f"expected one of {names}, got {v!r}"


def each(check: Check) -> Check:
    """Apply ``check`` to every item of a tuple value."""
    return lambda v: next((r for r in map(check, v) if r is not None), None)


def setting(default, *checks: Check):
    """A field with a default and the checks its value must pass (``None`` is not checked:
    whether a field may be None is said by its type)."""
    return field(default=default, metadata={"checks": checks})


@functools.cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` as the annotated type (YAML int -> float, list -> tuple), else raise
    ValueError with the reason."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ValueError(f"expected a list of {len(args)}, got {value!r}")
        return tuple(_coerce(v, a) for v, a in zip(value, args))
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, hint):
            raise ValueError(f"expected a {hint.__name__}, got {value!r}")
        return value
    raise TypeError(f"config: no rule for type {hint!r}")


class _Section:
    """Base of every config section: after ``__init__`` (and ``dataclasses.replace``) each
    field is coerced to its annotated type and passes the checks of its ``setting``; then
    ``_check`` runs the checks that involve several fields."""

    def __post_init__(self) -> None:
        name = type(self).__name__
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            try:
                value = _coerce(value, hints[f.name])
            except ValueError as exc:
                raise ConfigFieldError(name, f.name, str(exc)) from None
            object.__setattr__(self, f.name, value)
            if value is None:
                continue
            for check in f.metadata.get("checks", ()):
                reason = check(value)
                if reason is not None:
                    raise ConfigFieldError(name, f.name, reason)
        self._check()

    def _check(self) -> None:
        """Checks across fields; raise ``ConfigFieldError(type(self).__name__, key, reason)``."""


# ------------------------------------------------------------------------------ sections

HASH_FEATURES = one_of(1, 2, 4, 8)  # features per level the hash-encoding kernels take
LOG2_HASHMAP = within(3, 31)


@dataclass(frozen=True)
class GridConfig(_Section):
    """A multiresolution hash grid (tiny-cuda-nn HashGrid keys, max instead of scale)."""

    n_levels: int = setting(8, at_least(1))
    n_features_per_level: int = setting(2, HASH_FEATURES)
    log2_hashmap_size: int = setting(16, LOG2_HASHMAP)
    base_resolution: int = setting(16, at_least(1))
    max_resolution: int = setting(256, at_least(1))


@dataclass(frozen=True)
class ExpertsConfig(_Section):
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

    With ``shared_levels`` S > 0 the coarse levels are not the experts' own: one shared hash
    grid of S levels (``shared_log2_hashmap_size``) from ``base_resolution`` up to one growth
    step below ``split_resolution`` encodes every point, and each expert spends its
    ``n_levels - S`` levels from ``split_resolution`` to its finest resolution
    (``switchnerf.model.grids``). The head sees ``n_levels * n_features_per_level`` features
    either way: the shared grid's, then the gate-scaled expert's.

    ``table_split_power`` p > 0 sizes the experts by detail: the same total of hashed rows
    per level, expert e's share proportional to its finest resolution ** p, so the fine
    experts that the gate gives the dense core get the larger tables
    (``switchnerf.encoding.experts.split_table_rows``).
    """

    n_experts: int = setting(8, at_least(1))
    n_levels: int = setting(16, at_least(1))
    n_features_per_level: int = setting(2, HASH_FEATURES)
    log2_hashmap_size: int = setting(19, LOG2_HASHMAP)
    # rows per hashed level; overrides log2_hashmap_size (null: 2 ** log2_hashmap_size)
    hashmap_size: int | None = setting(None, within(8, MAX_HASHMAP_SIZE))
    base_resolution: int = setting(16, at_least(1))
    finest_resolution: int = setting(8192, at_least(1))
    coarsest_fraction: float = setting(0.125, above(0.0))
    # Shared coarse grid (a shared expert, as in DeepSeek-MoE): every point is also encoded
    # by one hash grid of shared_levels levels, growing geometrically from base_resolution
    # toward split_resolution (one growth step below it), and the experts' levels start at
    # split_resolution. n_levels counts both: each expert has n_levels - shared_levels.
    # 0: no shared grid (split_resolution and shared_log2_hashmap_size are unused).
    shared_levels: int = setting(0, at_least(0))
    split_resolution: int = setting(64, at_least(2))
    shared_log2_hashmap_size: int = setting(19, LOG2_HASHMAP)
    # Detail-weighted capacity: the E * rows of each hashed expert level are shared out in
    # proportion to the experts' finest resolution ** table_split_power (0: equal tables).
    table_split_power: float = setting(0.0, at_least(0.0))

    def _check(self) -> None:
        s = self.shared_levels
        if s == 0:
            return
        if s >= self.n_levels:
            raise ConfigFieldError("ExpertsConfig", "shared_levels",
                                   f"must be < n_levels ({self.n_levels}): every expert keeps "
                                   f"at least one level, got {s}")
        if self.split_resolution <= self.base_resolution:
            raise ConfigFieldError("ExpertsConfig", "split_resolution",
                                   f"must be > base_resolution ({self.base_resolution}) with "
                                   f"shared levels, got {self.split_resolution}")
        coarsest = (self.finest_resolution if self.n_experts == 1 else
                    min(self.finest_resolution,
                        round(self.finest_resolution * self.coarsest_fraction)))
        if self.split_resolution > coarsest:
            raise ConfigFieldError("ExpertsConfig", "split_resolution",
                                   f"must be <= the coarsest expert's finest resolution "
                                   f"({coarsest}), got {self.split_resolution}")


@dataclass(frozen=True)
class RoutingConfig(_Section):
    """How points reach experts.

    kind: ``gate`` (learned hash-grid gate, Switch-NeRF++), ``fixed`` (expert = partition cell
    of the point's ground position, a hand-crafted decomposition baseline), ``single`` (no
    gate: every point goes to expert 0; with ``n_experts: 1`` this is a plain hash grid).
    capacity_factor: the most points an expert takes per training batch, as a multiple of
    an even share (training only; rendering never drops points).
    """

    kind: str = setting("gate", one_of("gate", "fixed", "single"))
    # coarse and dense: routing smooth in space, far-apart points never tied by a hash
    gate: GridConfig = field(default_factory=lambda: GridConfig(n_levels=4, max_resolution=64))
    gate_hidden: int = setting(64, at_least(1))
    capacity_factor: float | None = setting(None, above(0.0))  # None: no dropping
    balance_weight: float = setting(1e-3, at_least(0.0))
    # rows x cols of cells for kind=fixed (= n_experts)
    fixed_grid: tuple[int, int] = setting((2, 4), each(at_least(1)))
    # How the gate value g scales the expert features: "product" (g * features) or
    # "straight_through" (forward value 1, the gate still gets the gradient of g).
    gate_scale: str = setting("product", one_of("product", "straight_through"))
    # every gate level dense (collision-free); ignores gate.log2_hashmap_size
    gate_dense: bool = True
    # Gate start: "random", or "partition" (routes by the nearest of a grid of ground
    # centroids, finest experts nearest the centre; moe/partition_init.py).
    gate_init: str = setting("partition", one_of("random", "partition"))
    # "partition" start: logit lead at a cell centre
    gate_init_sharpness: float = setting(4.0, above(0.0))
    # gate learning rates relative to optim.lr_tables / lr_mlps
    gate_lr_factor: float = setting(0.1, above(0.0))
    # Adam eps of the gate's parameters (None: optim.eps)
    gate_eps: float | None = setting(None, above(0.0))
    # Share of the schedule (the larger of the steps' and the time budget's share, as for
    # the learning-rate decay) after which the gate stops learning: its table and MLP get
    # no more gradients, so the routing is fixed and the balance loss no longer acts
    # (None: the gate learns to the end).
    gate_freeze_after: float | None = setting(None, within(0.0, 1.0))


@dataclass(frozen=True)
class HeadConfig(_Section):
    """Shared head after the experts, and the colour network."""

    hidden: int = setting(64, at_least(1))
    geo_features: int = setting(15, at_least(0))
    density_activation: str = setting("trunc_exp", one_of("trunc_exp", "softplus"))
    color_hidden: int = setting(64, at_least(1))
    color_layers: int = setting(2, at_least(0))
    sh_degree: int = setting(4, within(1, 4))
    appearance_dim: int = setting(16, at_least(0))  # 0 disables the per-image embedding


@dataclass(frozen=True)
class BackgroundConfig(_Section):
    """Far field: a direction-conditioned sky/background colour outside the foreground box."""

    enabled: bool = True
    sh_degree: int = setting(4, within(1, 4))
    hidden: int = setting(32, at_least(1))


@dataclass(frozen=True)
class ModelConfig(_Section):
    experts: ExpertsConfig = field(default_factory=ExpertsConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    background: BackgroundConfig = field(default_factory=BackgroundConfig)

    def _check(self) -> None:
        r, n = self.routing, self.experts.n_experts
        if r.kind == "single" and n != 1:
            raise ConfigFieldError("ModelConfig", "experts.n_experts",
                                   f"routing kind 'single' needs 1 expert, got {n}")
        cells = r.fixed_grid[0] * r.fixed_grid[1]
        if r.kind == "fixed" and cells != n:
            raise ConfigFieldError("ModelConfig", "routing.fixed_grid",
                                   f"{list(r.fixed_grid)} has {cells} cells but "
                                   f"model.experts.n_experts is {n}")


@dataclass(frozen=True)
class SamplerConfig(_Section):
    """Occupancy-grid ray marching."""

    grid_resolution: int = setting(128, at_least(1))
    steps_per_diagonal: int = setting(1024, at_least(1))  # march step = box diagonal / this
    alpha_thre: float = setting(1e-3, within(0.0, 1.0))
    early_stop_eps: float = setting(1e-4, within(0.0, 1.0))
    occupancy_threshold: float = setting(0.01, at_least(0.0))
    update_every: int = setting(16, at_least(1))
    warmup_steps: int = setting(256, at_least(0))
    ema_decay: float = setting(0.95, within(0.0, 1.0))
    max_samples_per_ray: int = setting(1024, at_least(1))
    # Evaluate density once more before training passes to drop invisible samples (nerfacc's
    # sigma_fn). In aerial scenes few samples lie behind surfaces, so this mostly costs time;
    # rendering always prunes.
    prune_in_training: bool = False


@dataclass(frozen=True)
class OptimConfig(_Section):
    """Adam with separate learning rates for hash tables and MLPs; exponential decay."""

    lr_tables: float = setting(1e-2, above(0.0))
    lr_mlps: float = setting(1e-3, above(0.0))
    eps: float = setting(1e-15, above(0.0))
    weight_decay_mlps: float = setting(1e-6, at_least(0.0))
    warmup_steps: int = setting(100, at_least(0))
    final_lr_factor: float = setting(0.1, above(0.0))  # lr at max_steps relative to the start
    # with train.time_budget_s: the decay's progress is the larger of the steps' and the
    # budget's share spent, so a run the budget stops still ends at the final rate (and a
    # run is no longer bit-reproducible once the clock leads)
    decay_with_time: bool = False


@dataclass(frozen=True)
class TrainConfig(_Section):
    """The training loop, and the ray store it reads (``shard_rays``, ``seed`` and
    ``val_left_halves`` also define the store: ``switchnerf.train.ray_store``)."""

    rays_per_step: int = setting(8192, at_least(1))
    max_steps: int = setting(50000, at_least(1))
    # stop early when exceeded (wall clock of training); null: no budget
    time_budget_s: float | None = setting(None, above(0.0))
    eval_every: int = setting(5000, at_least(0))  # 0: no periodic eval
    eval_images: int = setting(4, at_least(0))  # val images rendered at periodic eval
    checkpoint_every: int = setting(2000, at_least(1))
    keep_last: int = setting(3, at_least(1))
    log_every: int = setting(50, at_least(1))
    # stop with an error after this many skipped (non-finite) steps in a row
    max_skipped_steps: int = setting(20, at_least(1))
    seed: int = setting(0, at_least(0))
    mixed_precision: bool = True  # bf16 autocast on CUDA only
    val_left_halves: bool = True  # Mega-NeRF protocol: left halves of val images train
    shard_rays: int = setting(1 << 20, at_least(1))


@dataclass(frozen=True)
class DistributedConfig(_Section):
    """Training on several processes (``torchrun``); ignored by a single process.

    expert_parallel: with more than one rank and expert, each rank holds E / W experts and
    samples travel to their owner; false: plain data parallelism, every rank holds every
    expert. timeout_s: a collective that waits longer for a peer fails (a dead or hung
    rank ends the run). wait_timeout_s: how long the other ranks wait for rank 0's own
    work (ray store build, periodic eval, checkpoint write). A run's snapshot without this
    section resumes with these defaults; all three may change on resume.
    """

    expert_parallel: bool = True
    timeout_s: float = setting(30.0, above(0.0))
    wait_timeout_s: float = setting(1800.0, above(0.0))


@dataclass(frozen=True)
class Config(_Section):
    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))


def _to_plain(obj):
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------ merging


def merge(obj: Any, overrides: dict[str, Any], source: str, prefix: str = "") -> Any:
    """A new dataclass ``obj`` with ``overrides`` (nested dict) applied and checked; errors
    name ``source`` and the dotted key (``prefix`` + key)."""
    if not isinstance(overrides, dict):
        raise SwitchNerfError(f"{source}: {prefix.rstrip('.') or 'top level'}: expected a "
                              f"mapping, got {overrides!r}")
    names = [f.name for f in dataclasses.fields(obj)]
    changes = {}
    for key, value in overrides.items():
        where = f"{prefix}{key}"
        if key not in names:
            raise SwitchNerfError(f"{source}: unknown key {where!r} "
                                  f"(known here: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        changes[key] = (merge(current, value, source, where + ".")
                        if dataclasses.is_dataclass(current) else value)
    try:
        return dataclasses.replace(obj, **changes)
    except ConfigFieldError as exc:
        raise SwitchNerfError(f"{source}: {prefix}{exc.key}: {exc.reason}") from None


def parse_set(assignments: list[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into a nested dict with YAML-parsed values.

    A key given twice keeps the last value; a key that is both a value and a parent of
    another key (``a=1`` and ``a.b=2``) is an error.
    """
    out: dict[str, Any] = {}
    for item in assignments:
        if "=" not in item:
            raise SwitchNerfError(f"--set: expected key=value, got {item!r}")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise SwitchNerfError(f"--set: {key.strip()!r} is not a dotted key (e.g. train.seed)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise SwitchNerfError(f"--set: {key.strip()}: value {raw!r} is not valid YAML "
                                  f"({exc.__class__.__name__})") from None
        node = out
        for depth, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                parent = ".".join(parts[:depth + 1])
                raise SwitchNerfError(f"--set: {key.strip()}: {parent} was set to a value "
                                      f"({node!r}) by an earlier --set, so it has no keys")
        if isinstance(node.get(parts[-1]), dict):
            raise SwitchNerfError(f"--set: {key.strip()}: has keys set by an earlier --set; "
                                  f"it cannot also be set to {value!r}")
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
    return cfg


def config_from_dict(data: dict[str, Any], source: str = "config") -> Config:
    """A Config from a nested dict (a run's config.yaml); errors name ``source``."""
    return merge(Config(), data, source)
