"""``synthesize``: render a preset city and write it as a Mega-NeRF dataset, atomically.

Output (built in a temporary sibling folder, renamed onto ``out_dir`` at the end)::

    coordinates.pt                  {'origin_drb': float64 [3], 'pose_scale_factor': float}
    {train,val}/metadata/NNNNNN.pt  {'H', 'W', 'c2w' float32 [3, 4] normalised DRB,
                                     'intrinsics' float32 [fx, fy, cx, cy], 'distortion' zeros [4]}
    {train,val}/rgbs/NNNNNN.png
    val/regions/NNNNNN.png          presets with region_labels: 255 downtown, 0 elsewhere
    scene.yaml                      descriptor: format, altitude_range_m, bbox, partition_grid
    synth_info.json                 preset, seed, counts, the city's size in metres

Frames: the city is built in metres in a z-up frame; its DRB coordinates are
``DRB_TO_WORLD^T @ p`` (x down = -z). As Mega-NeRF does, ``origin_drb`` is the mean camera
position and ``pose_scale_factor`` the largest camera distance from it (metres per unit).
Images are rendered and written one at a time (memory does not grow with the count).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from switchnerf.errors import input_error
from switchnerf.scene.poses import DRB_TO_WORLD
from switchnerf.scene.synth.presets import CityPreset, get_preset

GROUND_MARGIN_M = 1.0  # altitude slab reaches this far below the ground
TOP_MARGIN_M = 5.0  # and this far above the tallest structure


def _progress(enabled: bool, total: int, label: str):
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    prog = Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=False
    )
    return prog


def synthesize(
    preset: str | CityPreset,
    out_dir: str | Path,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Render the built-in synthetic ``preset`` (a name in ``presets.PRESETS``, or a
    CityPreset such as a reduced variant of one) into ``out_dir``.

    Deterministic in (preset, seed). Refuses an existing non-empty ``out_dir`` unless
    ``overwrite``. Returns ``out_dir``.
    """
    import torch
    from PIL import Image

    from switchnerf.scene.descriptor import SceneDescriptor, descriptor_yaml
    from switchnerf.scene.synth.city import build_city
    from switchnerf.scene.synth.drone import drone_cameras, intrinsics, val_mask
    from switchnerf.scene.synth.regions import REGIONS_DIR, RegionRenderer
    from switchnerf.scene.synth.render import CityRenderer

    p = preset if isinstance(preset, CityPreset) else get_preset(preset)
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise input_error(out_dir, "out", "exists and is not empty (remove it or pass overwrite)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        city = build_city(p, seed)
        renderer = CityRenderer(city)
        labeller = RegionRenderer(city) if p.region_labels else None
        c2ws = drone_cameras(p, seed)  # [V, 4, 4] metres, z-up
        is_val = val_mask(p)
        fx, fy, cx, cy = intrinsics(p)
        w, h = p.image_size

        to_drb = DRB_TO_WORLD.T
        cams_drb = c2ws[:, :3, 3] @ to_drb.T  # [V, 3] metres
        origin = cams_drb.mean(0)
        scale = float(np.linalg.norm(cams_drb - origin, axis=1).max())
        torch.save(
            {"origin_drb": torch.tensor(origin, dtype=torch.float64), "pose_scale_factor": scale},
            tmp / "coordinates.pt",
        )
        counts = {"train": 0, "val": 0}
        with _progress(progress, len(c2ws), f"synth {p.name}") as bar:
            task = bar.add_task("render", total=len(c2ws)) if bar is not None else None
            for k, c2w in enumerate(c2ws):
                split = "val" if is_val[k] else "train"
                counts[split] += 1
                rgb = renderer.render(c2w, fx, fy, cx, cy, w, h, ss=p.supersample)
                c2w_drb = np.zeros((3, 4))
                c2w_drb[:, :3] = to_drb @ c2w[:3, :3]
                c2w_drb[:, 3] = (to_drb @ c2w[:3, 3] - origin) / scale
                for sub in ("metadata", "rgbs"):
                    (tmp / split / sub).mkdir(parents=True, exist_ok=True)
                Image.fromarray(rgb).save(tmp / split / "rgbs" / f"{k:06d}.png", compress_level=3)
                if labeller is not None and split == "val":
                    label = labeller.label(c2w, fx, fy, cx, cy, w, h, ss=p.supersample)
                    (tmp / split / REGIONS_DIR).mkdir(exist_ok=True)
                    Image.fromarray(label).save(tmp / split / REGIONS_DIR / f"{k:06d}.png")
                torch.save(
                    {
                        "H": h,
                        "W": w,
                        "c2w": torch.tensor(c2w_drb, dtype=torch.float32),
                        "intrinsics": torch.tensor([fx, fy, cx, cy], dtype=torch.float32),
                        "distortion": torch.zeros(4),
                    },
                    tmp / split / "metadata" / f"{k:06d}.pt",
                )
                if bar is not None:
                    bar.advance(task)

        top_m = -(city.max_height + TOP_MARGIN_M)  # DRB x (down), metres
        ground_m = GROUND_MARGIN_M
        lo_m = np.array([-p.half_extent, -p.half_extent, -GROUND_MARGIN_M])
        hi_m = np.array([p.half_extent, p.half_extent, city.max_height + TOP_MARGIN_M])
        shift = DRB_TO_WORLD @ origin  # world (normalised) = (p_metres - shift) / scale
        bbox = ((lo_m - shift) / scale, (hi_m - shift) / scale)
        desc = SceneDescriptor(
            name=p.name,
            path=tmp,
            format="mega-nerf",
            altitude_range_m=(top_m, ground_m),
            bbox=(tuple(bbox[0].tolist()), tuple(bbox[1].tolist())),
            partition_grid=p.partition_grid,
        )
        (tmp / "scene.yaml").write_text(
            "# Written by switchnerf's synthetic city generator.\n" + descriptor_yaml(desc, ".")
        )
        info = {
            "preset": p.name,
            "seed": seed,
            "views": len(c2ws),
            **counts,
            "image_size": [w, h],
            "half_extent_m": p.half_extent,
            "max_height_m": city.max_height,
            "triangles": len(city.triangles),
            "ray_altitude_range": [top_m, ground_m],
        }
        if p.region_labels:
            info["region_labels"] = {"dir": f"val/{REGIONS_DIR}", "downtown": 255, "else": 0}
        (tmp / "synth_info.json").write_text(json.dumps(info, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
