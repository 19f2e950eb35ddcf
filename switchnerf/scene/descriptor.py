"""Scene descriptors: ``scenes/*.yaml``, one per scene, as a typed dataclass.

Schema (every key but ``path`` optional; any other key is an error naming it)::

    name: minicity                    # defaults to the file's stem
    path: ../data/minicity            # dataset folder, relative to this file; ~, ${ENV}
    format: auto                      # auto | mega-nerf | colmap | transforms
    altitude_range_m: [top, ground]   # metres, Mega-NeRF's DRB "down" coordinate
    bbox: [[x, y, z], [x, y, z]]      # foreground box in world units
    partition_grid: [rows, cols]
    synth: {preset: minicity, seed: 0}  # built-in synthetic scene (see ensure_synth_scene)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

from switchnerf.errors import input_error

FORMATS = ("auto", "mega-nerf", "colmap", "transforms")


@dataclass(frozen=True)
class SynthSpec:
    """A built-in synthetic scene: a preset name of ``switchnerf.scene.synth`` and a seed."""

    preset: str
    seed: int = 0


@dataclass(frozen=True)
class SceneDescriptor:
    """A parsed scene YAML. ``path`` is resolved (absolute); ``source`` is the YAML file."""

    name: str
    path: Path
    source: Path | None = None
    format: str = "auto"
    altitude_range_m: tuple[float, float] | None = None  # (top, ground), metres, DRB down
    bbox: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    partition_grid: tuple[int, int] | None = None
    synth: SynthSpec | None = None


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand_path(raw: str, base: Path, source: Path | str) -> Path:
    """Expand ``${VAR}`` / ``$VAR`` (unset: an error) and ``~``; relative to ``base``."""

    def sub(m: re.Match) -> str:
        var = m.group(1) or m.group(2)
        if var not in os.environ:
            raise input_error(source, "path", f"{raw!r} uses ${{{var}}}, which is not set")
        return os.environ[var]

    p = Path(os.path.expanduser(_ENV.sub(sub, raw)))
    return (p if p.is_absolute() else base / p).resolve()


def _floats(source, key, value, n) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise input_error(source, key, f"{value!r} is not a list of {n} numbers")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise input_error(source, key, f"{value!r} is not a list of {n} numbers")
        out.append(float(v))
    return tuple(out)


def parse_descriptor(data: dict, source: Path, base: Path | None = None) -> SceneDescriptor:
    """Validate a descriptor mapping; ``base`` (default: the file's folder) anchors ``path``."""
    base = source.parent if base is None else base
    if not isinstance(data, dict):
        raise input_error(source, None, f"expected a mapping of keys, got {type(data).__name__}")
    known = {f.name for f in fields(SceneDescriptor)} - {"source"}
    for key in data:
        if key not in known:
            raise input_error(source, str(key), f"unknown key (known: {', '.join(sorted(known))})")
    if "path" not in data or not isinstance(data["path"], str) or not data["path"]:
        raise input_error(source, "path", f"required string, got {data.get('path')!r}")
    fmt = data.get("format", "auto")
    if fmt not in FORMATS:
        raise input_error(source, "format", f"{fmt!r} is not one of {', '.join(FORMATS)}")
    alt = data.get("altitude_range_m")
    if alt is not None:
        alt = _floats(source, "altitude_range_m", alt, 2)
        if not alt[0] < alt[1]:
            raise input_error(
                source,
                "altitude_range_m",
                f"{list(alt)}: top must be less than ground (DRB x points down)",
            )
    bbox = data.get("bbox")
    if bbox is not None:
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 2:
            raise input_error(source, "bbox", f"{bbox!r} is not [[x, y, z], [x, y, z]]")
        bbox = (_floats(source, "bbox", bbox[0], 3), _floats(source, "bbox", bbox[1], 3))
        if not all(a < b for a, b in zip(*bbox)):
            raise input_error(source, "bbox", f"{bbox!r}: min corner must be below max corner")
    grid = data.get("partition_grid")
    if grid is not None:
        if (
            not isinstance(grid, (list, tuple))
            or len(grid) != 2
            or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in grid)
        ):
            raise input_error(
                source, "partition_grid", f"{grid!r} is not [rows, cols] of positive ints"
            )
        grid = (int(grid[0]), int(grid[1]))
    synth = data.get("synth")
    if synth is not None:
        if not isinstance(synth, dict):
            raise input_error(source, "synth", f"{synth!r} is not a mapping {{preset, seed}}")
        for key in synth:
            if key not in ("preset", "seed"):
                raise input_error(source, f"synth.{key}", "unknown key (known: preset, seed)")
        seed = synth.get("seed", 0)
        if not isinstance(synth.get("preset"), str) or not isinstance(seed, int):
            raise input_error(source, "synth", f"{synth!r}: needs preset (string), seed (int)")
        synth = SynthSpec(synth["preset"], seed)
    name = data.get("name", source.stem if source.suffix in (".yaml", ".yml") else base.name)
    if not isinstance(name, str) or not name:
        raise input_error(source, "name", f"{name!r} is not a non-empty string")
    return SceneDescriptor(
        name=name,
        path=expand_path(data["path"], base, source),
        source=source,
        format=fmt,
        altitude_range_m=alt,
        bbox=bbox,
        partition_grid=grid,
        synth=synth,
    )


def read_descriptor(path: str | Path) -> SceneDescriptor:
    """Read and validate a scene YAML file."""
    import yaml

    path = Path(path).resolve()
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise input_error(path, None, "file not found") from None
    except yaml.YAMLError as e:
        raise input_error(path, None, f"is not valid YAML ({str(e).splitlines()[0]})") from None
    return parse_descriptor(data if data is not None else {}, path)


def descriptor_yaml(d: SceneDescriptor, path_text: str) -> str:
    """YAML text for a descriptor (``path`` written as ``path_text``)."""
    import yaml

    data = {"name": d.name, "path": path_text, "format": d.format}
    if d.altitude_range_m is not None:
        data["altitude_range_m"] = [float(v) for v in d.altitude_range_m]
    if d.bbox is not None:
        data["bbox"] = [[float(v) for v in c] for c in d.bbox]
    if d.partition_grid is not None:
        data["partition_grid"] = list(d.partition_grid)
    if d.synth is not None:
        data["synth"] = {"preset": d.synth.preset, "seed": d.synth.seed}
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
