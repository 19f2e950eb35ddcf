"""``load_scene``: one entry point for dataset folders and ``scenes/*.yaml`` descriptors.

Format detection for a folder (first match): ``coordinates.pt`` -> mega-nerf;
``transforms.json`` / ``transforms_train.json`` (or a ``*.json`` file given directly) ->
transforms; ``cameras.{bin,txt}`` in the folder, ``sparse/0`` or ``sparse`` -> colmap.
A dataset folder may carry its own ``scene.yaml`` (the synthetic scenes do); its
altitude range, box and partition grid are used unless the outer descriptor gives them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from switchnerf.errors import input_error
from switchnerf.scene.descriptor import SceneDescriptor, read_descriptor
from switchnerf.scene.types import Scene

DEFAULT_PARTITION_GRID = (2, 2)
INNER_DESCRIPTOR = "scene.yaml"


def detect_format(path: Path) -> str:
    """'mega-nerf' | 'transforms' | 'colmap' for a dataset path, else SwitchNerfError."""
    from switchnerf.scene.colmap import find_model_dir
    from switchnerf.scene.transforms import find_transforms

    if not path.exists():
        raise input_error(path, "path", "does not exist")
    if path.is_file():
        if path.suffix == ".json":
            return "transforms"
        raise input_error(
            path, "format", f"cannot read a scene from a {path.suffix or 'plain'} file"
        )
    if (path / "coordinates.pt").is_file():
        return "mega-nerf"
    if find_transforms(path):
        return "transforms"
    if find_model_dir(path) is not None:
        return "colmap"
    raise input_error(
        path,
        "format",
        "unknown: no coordinates.pt (Mega-NeRF), transforms.json, "
        "or COLMAP model (cameras.bin/.txt, sparse/0, sparse)",
    )


def _merge_inner(d: SceneDescriptor) -> SceneDescriptor:
    """Fill the unset fields of ``d`` from ``<dataset>/scene.yaml`` when there is one."""
    inner_path = d.path / INNER_DESCRIPTOR
    if not d.path.is_dir() or not inner_path.is_file() or d.source == inner_path.resolve():
        return d
    inner = read_descriptor(inner_path)
    return replace(
        d,
        name=d.name if d.source is not None else inner.name,
        format=d.format if d.format != "auto" else inner.format,
        altitude_range_m=d.altitude_range_m or inner.altitude_range_m,
        bbox=d.bbox or inner.bbox,
        partition_grid=d.partition_grid or inner.partition_grid,
    )


def scene_from_descriptor(d: SceneDescriptor) -> Scene:
    """Read the dataset a descriptor points at and apply the descriptor's settings."""
    if not d.path.exists():
        hint = (
            f" (a synthetic scene: run `switchnerf scene synth {d.source or d.name}`)"
            if d.synth is not None
            else ""
        )
        raise input_error(d.source or d.path, "path", f"{d.path} does not exist{hint}")
    d = _merge_inner(d)
    fmt = detect_format(d.path) if d.format == "auto" else d.format
    kwargs = {"altitude_range_m": d.altitude_range_m, "bbox": d.bbox, "name": d.name}
    if fmt == "mega-nerf":
        from switchnerf.scene.meganerf import read_meganerf

        scene = read_meganerf(d.path, **kwargs)
    elif fmt == "colmap":
        from switchnerf.scene.colmap import read_colmap

        scene = read_colmap(d.path, **kwargs)
    elif fmt == "transforms":
        from switchnerf.scene.transforms import read_transforms

        scene = read_transforms(d.path, **kwargs)
    else:  # parse_descriptor already rejects these; kept for hand-built descriptors
        raise input_error(d.source or d.path, "format", f"{fmt!r} is not a known format")
    scene.descriptor = d.source
    scene.partition_grid = d.partition_grid or DEFAULT_PARTITION_GRID
    return scene


def load_scene(path: str | Path) -> Scene:
    """Load a scene from a dataset folder (format auto-detected), a transforms json file,
    or a ``scenes/*.yaml`` descriptor. Bad input raises SwitchNerfError naming the file,
    the field and the value."""
    path = Path(path).expanduser()
    if path.suffix in (".yaml", ".yml"):
        return scene_from_descriptor(read_descriptor(path))
    if not path.exists():
        raise input_error(path, "path", "does not exist")
    return scene_from_descriptor(
        SceneDescriptor(
            name=path.resolve().name if path.is_dir() else path.resolve().parent.name,
            path=path.resolve(),
        )
    )


def ensure_synth_scene(descriptor: str | Path | SceneDescriptor, progress: bool = True) -> Path:
    """Generate the descriptor's built-in synthetic scene at its ``path`` if it is absent.

    Returns the dataset folder. Only explicit callers (the demo, ``scene synth``) use it:
    ``load_scene`` never generates data.
    """
    d = descriptor if isinstance(descriptor, SceneDescriptor) else read_descriptor(descriptor)
    if d.synth is None:
        raise input_error(d.source or d.path, "synth", "missing: not a synthetic scene")
    if not d.path.exists():
        from switchnerf.scene.synth import synthesize

        synthesize(d.synth.preset, d.path, seed=d.synth.seed, progress=progress)
    return d.path
