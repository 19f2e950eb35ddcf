"""Evaluation on held-out images, with the Mega-NeRF protocol where it applies.

Mega-NeRF protocol: the left half (columns [0, W//2)) of every val image joins training,
and metrics are measured on the right half (columns [W//2, W)), rendered with that image's
own appearance embedding. Without the protocol, whole val images are measured with the
mean appearance embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from switchnerf.render.colorize import colorize, to_uint8
from switchnerf.render.renderer import Renderer, camera_rays
from switchnerf.scene.types import RayBatch
from switchnerf.train.metrics import LpipsMetric, psnr, ssim


def eval_indices(n_val: int, count: int) -> list[int]:
    """``count`` val images spread evenly over ``n_val`` (all when count <= 0).

    >>> eval_indices(10, 3)
    [0, 4, 9]
    """
    if count <= 0 or count >= n_val:
        return list(range(n_val))
    return sorted({round(k * (n_val - 1) / max(count - 1, 1)) for k in range(count)})


def uses_right_half_protocol(scene, cfg) -> bool:
    """True when val left halves are trained on and right halves measured."""
    return bool(cfg.train.val_left_halves) and scene.format == "mega-nerf"


@dataclass
class EvalView:
    """One val image prepared for evaluation: rays of the measured columns and ground truth.

    rays: RayBatch of H*Wm rays (row-major over the measured columns); target float32
    [H, Wm, 3]; col0: first measured column.
    """

    index: int
    rays: RayBatch
    target: torch.Tensor
    height: int
    width: int
    col0: int
    appearance: bool


def eval_view(scene, n_train: int, i: int, right_half: bool) -> EvalView:
    """Val image ``i``: the rays of its measured columns (camera-table row ``n_train + i``
    for the appearance) and its ground truth."""
    rec = scene.images("val")[i]
    h, w = rec.height, rec.width
    col0 = w // 2 if right_half else 0
    keep = (torch.arange(h * w) % w) >= col0
    rays = camera_rays(rec, image_index=n_train + i)[keep]
    image = torch.from_numpy(np.array(scene.load_image("val", i))).float() / 255.0
    target = image[:, col0:, :].contiguous()
    return EvalView(i, rays, target, h, w - col0, col0, appearance=right_half)


def evaluate(renderer: Renderer, scene, *, right_half: bool, indices=None,
             out_dir: Path | None = None, lpips: LpipsMetric | None = None) -> dict:
    """Render val images, measure PSNR/SSIM(/LPIPS), optionally write side-by-sides
    (ground truth | render | experts, ``out_dir/val_XXXX.png``).

    right_half: the Mega-NeRF protocol (``uses_right_half_protocol``): measure right halves
    with each image's own appearance embedding; else whole images with the mean one.
    Returns {"psnr", "ssim", "lpips", "protocol", "images": [per-image dicts]}.
    """
    import imageio.v3 as iio

    from switchnerf.io_utils import atomic_path, readable_image

    n_train = len(scene.images("train"))
    val = scene.images("val")
    indices = list(range(len(val))) if indices is None else list(indices)
    per_image = []
    was_training = renderer.training
    renderer.eval()
    for i in indices:
        view = eval_view(scene, n_train, i, right_half)
        out = renderer.render_chunked(view.rays.to(renderer.device),
                                      use_appearance_index=view.appearance,
                                      image_size=(view.height, view.width))
        pred = out.rgb.cpu().clamp(0, 1).view(view.height, view.width, 3)
        row = {"index": i, "image": Path(val[i].image_path).name,
               "psnr": psnr(pred, view.target), "ssim": ssim(pred, view.target),
               "lpips": lpips(pred, view.target) if lpips is not None else None}
        per_image.append(row)
        if out_dir is not None:
            panel = np.concatenate([to_uint8(view.target), colorize(out, "rgb"),
                                    colorize(out, "experts")], axis=1)
            with atomic_path(out_dir / f"val_{i:04d}.png", verify=readable_image) as tmp:
                iio.imwrite(tmp, panel, extension=".png")
    renderer.train(was_training)

    def mean(key):
        vals = [r[key] for r in per_image if r[key] is not None]
        return float(np.mean(vals)) if vals and len(vals) == len(per_image) else None

    return {"psnr": mean("psnr"), "ssim": mean("ssim"), "lpips": mean("lpips"),
            "protocol": "mega-nerf right half" if right_half else "full image",
            "images": per_image}
