"""A run directory and the one function every consumer uses to load it.

Layout of RUN/:
    config.yaml        the resolved config (all keys)
    scene.json         which scene: {"path": descriptor or dataset folder, "fingerprint":
                       its content (``scene.store.scene_fingerprint``; absent in old runs)}
    checkpoints/       step_XXXXXXXX.pt (last K) and best.pt
    metrics.jsonl      one JSON object per logged step / eval
    eval/              metrics.json and side-by-side images from `switchnerf eval`
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from switchnerf.config import Config, config_from_dict
from switchnerf.errors import SwitchNerfError
from switchnerf.io_utils import write_bytes_atomic, write_json_atomic
from switchnerf.render.renderer import Renderer
from switchnerf.train.checkpoint import (
    checkpoint_step,
    latest_checkpoint,
    load_checkpoint,
    newest_readable_checkpoint,
    restore_module,
)

HEADER = ("config.yaml", "scene.json")
"""The files every run has from its start (``write_run_header``)."""

RESUME_MAY_CHANGE = ("train.max_steps", "train.time_budget_s", "train.max_skipped_steps",
                     "distributed.expert_parallel",
                     "distributed.timeout_s", "distributed.wait_timeout_s")
"""Config keys a resumed run may change: when to stop and how many processes share the
work, not what is trained."""


def write_run_header(run_dir: Path, cfg: Config, scene_path: Path,
                     fingerprint: str | None = None) -> None:
    """Snapshot the resolved config and the scene reference (its path and, when known,
    its content ``fingerprint``) into a new run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_config(run_dir, cfg)
    record = {"path": str(Path(scene_path).resolve())}
    if fingerprint is not None:
        record["fingerprint"] = fingerprint
    write_json_atomic(run_dir / "scene.json", record)


def read_scene_record(run_dir: Path) -> dict:
    """RUN/scene.json: {"path": str, "fingerprint": str or None}."""
    path = Path(run_dir) / "scene.json"
    if not path.is_file():
        raise SwitchNerfError(f"{run_dir}: not a switchnerf run (no scene.json)")
    try:
        record = json.loads(path.read_text())
        return {"path": str(record["path"]), "fingerprint": record.get("fingerprint")}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise SwitchNerfError(f"{path}: path: missing or unreadable") from None


def check_resume_scene(run_dir: Path, scene_path: Path, fingerprint: str) -> None:
    """Refuse to resume a run on another scene: a ``scene_path`` other than the run's
    whose content (``fingerprint``) differs from the one scene.json recorded. The same
    content at another path (the dataset moved or was copied) passes, and so does any
    scene of a run that recorded no fingerprint. Raises a one-line SwitchNerfError naming
    both paths."""
    record = read_scene_record(run_dir)
    given = str(Path(scene_path).resolve())
    if given == record["path"] or record["fingerprint"] in (None, fingerprint):
        return
    raise SwitchNerfError(f"--scene: {given}: not the scene this run was trained on "
                          f"({record['path']}): other images or cameras; resume with that "
                          "scene, or train a new run")


def record_run_scene(run_dir: Path, scene_path: Path, fingerprint: str) -> str | None:
    """Make RUN/scene.json name ``scene_path`` and its ``fingerprint``, rewriting it
    (atomically) only when either differs. Returns a one-line note when the path changed
    (a resumed run whose dataset moved), else None."""
    record = read_scene_record(run_dir)
    new = {"path": str(Path(scene_path).resolve()), "fingerprint": fingerprint}
    if record == new:
        return None
    write_json_atomic(Path(run_dir) / "scene.json", new)
    if record["path"] == new["path"]:
        return None
    return (f"{Path(run_dir) / 'scene.json'}: path: now {new['path']} "
            f"(was {record['path']})")


def write_run_config(run_dir: Path, cfg: Config) -> None:
    """(Re)write RUN/config.yaml atomically: the resolved config, every key."""
    write_bytes_atomic(Path(run_dir) / "config.yaml",
                       yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())


def is_run_dir(path: Path) -> bool:
    """True when ``path`` is a folder holding a run's header (config.yaml and scene.json)."""
    return Path(path).is_dir() and all((Path(path) / name).is_file() for name in HEADER)



def prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool,
                    check_only: bool = False) -> None:
    """Refuse to clobber an existing run unless asked to resume or overwrite; ``overwrite``
    deletes only a switchnerf run (a folder with config.yaml and scene.json), never any
    other folder. Call it after every other check of the command: it may delete.
    ``check_only``: raise what it would raise, delete nothing (to fail early)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise SwitchNerfError(f"{run_dir}: run folder: is a file, not a folder")
    if run_dir.exists() and any(run_dir.iterdir()):
        if resume:
            return
        if overwrite:
            if not is_run_dir(run_dir):
                raise SwitchNerfError(f"{run_dir}: not a switchnerf run (no config.yaml and "
                                      "scene.json); --overwrite deletes only runs")
            if not check_only:
                shutil.rmtree(run_dir)
            return
        raise SwitchNerfError(f"{run_dir}: run folder exists; pass --resume to continue it "
                              "or --overwrite to start again")
    if resume:
        raise SwitchNerfError(f"{run_dir}: nothing to resume (no run there)")

def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts (``Config.to_dict()``),
    leaving out ``RESUME_MAY_CHANGE``.

    >>> config_differences({"train": {"max_steps": 2, "seed": 0}},
    ...                    {"train": {"max_steps": 4, "seed": 1}})
    ['train.seed']
    """
    out = []
    for key in sorted(set(saved) | set(current)):
        where, a, b = f"{prefix}{key}", saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, where + ".")
        elif a != b and where not in RESUME_MAY_CHANGE:
            out.append(where)
    return out


def resolved_config_dict(saved: dict) -> dict:
    """A saved config dict (a checkpoint's) with the sections and keys it lacks filled with
    today's defaults (a run from before the ``distributed`` section resumes); returned as
    it is when it no longer reads as a config."""
    try:
        return config_from_dict(saved, "checkpoint").to_dict()
    except SwitchNerfError:
        return saved


def resume_state(run_dir: Path, cfg: Config, ctx, device) -> dict:
    """The training state to resume ``run_dir`` from: its newest readable checkpoint (rank 0
    chooses, setting unreadable newer ones aside with a warning; every rank of ``ctx``, a
    ``DistributedContext``, loads the same one onto ``device``), after checking that its
    config equals ``cfg`` but for ``RESUME_MAY_CHANGE``. A SwitchNerfError names the run or
    checkpoint otherwise."""
    found = None
    if ctx.is_main:
        found = newest_readable_checkpoint(run_dir, map_location=device, on_skip=_warn_unreadable)
    ckpt = ctx.broadcast_object(None if found is None else str(found[0]))  # one choice
    if ckpt is None:
        raise SwitchNerfError(f"{run_dir}: --resume given but no readable checkpoint to "
                              "resume from")
    ckpt = Path(ckpt)
    state = found[1] if found is not None else load_checkpoint(ckpt, map_location=device)
    saved = state.get("config")
    changed = (["(none saved)"] if not isinstance(saved, dict)
               else config_differences(resolved_config_dict(saved), cfg.to_dict()))
    if changed:
        raise SwitchNerfError(f"{ckpt}: config: {', '.join(changed[:3])} differ from the "
                              "run's config.yaml; resume with the same config (only "
                              f"{', '.join(RESUME_MAY_CHANGE)} may change)")
    return state


def _warn_unreadable(path: Path, exc: Exception) -> None:
    warnings.warn(f"{path}: unreadable, set aside as {path.name}.unreadable; resuming from "
                  f"the previous checkpoint ({exc})", stacklevel=2)


def read_run_config(run_dir: Path) -> Config:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise SwitchNerfError(f"{run_dir}: not a switchnerf run (no config.yaml)")
    return config_from_dict(yaml.safe_load(path.read_text()) or {}, str(path))


def read_scene_path(run_dir: Path) -> Path:
    return Path(read_scene_record(run_dir)["path"])


@dataclass
class LoadedRun:
    """A trained run, loaded: its config, scene and camera table, and a Renderer of the
    checkpoint's field and occupancy grid (field in eval mode)."""

    run_dir: Path
    cfg: Config
    scene: object
    renderer: Renderer
    camera_table: object
    step: int
    checkpoint: Path


def load_run(run_dir: str | Path, *, device: str | torch.device = "cpu",
             which: str = "latest") -> LoadedRun:
    """Load a trained run for eval, viewer, render and export.

    which: ``latest`` (newest step checkpoint), ``best`` (best eval PSNR) or a path.
    """
    from switchnerf.train.builder import build_renderer, scene_and_cameras

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    scene, cams = scene_and_cameras(read_scene_path(run_dir))
    if which == "latest":
        ckpt = latest_checkpoint(run_dir)
    elif which == "best":
        ckpt = run_dir / "checkpoints" / "best.pt"
    else:
        ckpt = Path(which)
    if ckpt is None or not Path(ckpt).is_file():
        raise SwitchNerfError(f"{run_dir}: no checkpoint found ({which})")
    state = load_checkpoint(ckpt, map_location=device)
    with torch.random.fork_rng(devices=[]):  # the initial values are overwritten next
        renderer = build_renderer(cfg, scene, len(cams), device=device)
    restore_module(renderer.field, state, "field", ckpt)
    restore_module(renderer.grid, state, "grid", ckpt)
    renderer.eval()
    return LoadedRun(run_dir, cfg, scene, renderer, cams, checkpoint_step(state, ckpt),
                     Path(ckpt))
