"""Structure from motion on the synthetic city: registration rate, camera-centre error after
a similarity alignment, time per stage; optionally the held-out PSNR of short cpu-demo
trainings on the recovered poses and on the true ones. Prints a table and writes JSON.

    python bench/sfm.py [--preset minicity] [--views drone] [--size 320x240] [--detail 0.3]
                        [--matcher exhaustive] [--train-seconds 0] [--workdir DIR]
                        [--out bench/results/sfm.json]

The photos are the preset's drone capture (lawnmower passes and an orbit) rendered with
surface detail (``switchnerf.scene.synth.photos``); ``scene from-images`` runs on the
images alone (one shared camera). The recovered camera centres are aligned to the true ones
by the Umeyama similarity; errors are in metres and relative to the true cameras' extent
(the diagonal of their bounding box). Orientation error: the angle between each true
camera rotation and the recovered one mapped by the same similarity.

With ``--train-seconds S`` the cpu-demo preset trains for S seconds on each of two COLMAP
datasets of the registered photos: the recovered one, and one with the true poses and
intrinsics (its sparse points are the recovered ones mapped by the similarity, so both get
their bounds the same way); the PSNR is measured on the same held-out photos (every 8th by
name, whole images). The recovered set's images are undistorted by its estimated lens.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from switchnerf.scene import load_scene
from switchnerf.scene.align import umeyama
from switchnerf.scene.colmap_model import (
    ColmapCamera,
    ColmapImage,
    ColmapModel,
    read_model,
    rotmat_to_qvec,
    write_model,
)
from switchnerf.scene.poses import CV_TO_GL
from switchnerf.scene.sfm import SfmOptions, run_sfm
from switchnerf.scene.synth.photos import DEFAULT_DETAIL, render_photos


def _size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def _line(label: str):
    """A progress printer: ``(done, total)`` or ``(stage, done, total)``, every 5 s or at
    the end."""
    last = [0.0]

    def report(*args):
        *stage, done, total = args
        now = time.perf_counter()
        if now - last[0] < 5.0 and not (total and done == total):
            return
        last[0] = now
        print(f"  {label}: {' '.join(stage)} {done}/{total if total else '?'}", flush=True)

    return report


def alignment(scene, photos) -> dict:
    """Similarity-aligned errors of the registered cameras of ``scene`` against the truth."""
    recs = sorted((r for s in ("train", "val") for r in scene.images(s)),
                  key=lambda r: Path(r.undistort.source_path if r.undistort else r.image_path).name)
    names = [Path(r.undistort.source_path if r.undistort else r.image_path).name for r in recs]
    idx = [photos.names.index(n) for n in names]
    est = np.stack([r.c2w[:3, 3] for r in recs])
    true = photos.c2ws[idx, :3, 3]
    s, rot, t = umeyama(est, true)
    err = np.linalg.norm(s * est @ rot.T + t - true, axis=1)
    ang = []
    for r, k in zip(recs, idx):
        cos = (np.trace(photos.c2ws[k][:3, :3].T @ rot @ r.c2w[:3, :3]) - 1) / 2
        ang.append(float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))))
    extent = float(np.linalg.norm(np.ptp(photos.c2ws[:, :3, 3], axis=0)))
    return {
        "cameras": len(recs), "extent_m": extent, "scale": s, "rotation": rot.tolist(),
        "translation": t.tolist(), "names": names,
        "centre_err_m": {"mean": float(err.mean()), "median": float(np.median(err)),
                         "max": float(err.max())},
        "centre_err_rel": {"mean": float(err.mean()) / extent, "max": float(err.max()) / extent},
        "rotation_err_deg": {"median": float(np.median(ang)), "max": float(max(ang))},
        "up_err_deg": float(np.degrees(np.arccos(np.clip(rot[2, 2], -1.0, 1.0)))),
    }


def write_true_dataset(folder: Path, photos, photo_dir: Path, names: list[str],
                       points: np.ndarray) -> Path:
    """A COLMAP dataset of ``names`` with their true poses and PINHOLE intrinsics."""
    (folder / "images").mkdir(parents=True)
    cam = ColmapCamera(1, "PINHOLE", photos.width, photos.height,
                       (photos.fx, photos.fy, photos.cx, photos.cy))
    images = {}
    for k, name in enumerate(names):
        c2w = photos.c2ws[photos.names.index(name)]
        rot = (c2w[:3, :3] @ CV_TO_GL).T
        images[k + 1] = ColmapImage(k + 1, tuple(rotmat_to_qvec(rot)),
                                    tuple(-rot @ c2w[:3, 3]), 1, name)
        os.link(photo_dir / name, folder / "images" / name)
    colors = np.full((len(points), 3), 128, np.uint8)
    write_model(ColmapModel({1: cam}, images, points, colors), folder / "sparse" / "0", True)
    return folder


def train_and_eval(dataset: Path, work: Path, seconds: float) -> dict:
    from switchnerf.config import load_config
    from switchnerf.train.data import prepare_training_data
    from switchnerf.train.evaluate import evaluate, uses_right_half_protocol
    from switchnerf.train.trainer import Trainer

    cfg = load_config(ROOT / "configs" / "cpu-demo.yaml",
                      [f"train.time_budget_s={seconds}", "train.checkpoint_every=1000000"])
    data = prepare_training_data(cfg, dataset, work / "store", progress=False)
    trainer = Trainer(cfg, data, work / "run", progress=False)
    try:
        summary = trainer.train()
        result = evaluate(trainer.renderer, trainer.scene,
                          right_half=uses_right_half_protocol(trainer.scene, cfg))
    finally:
        trainer.close()
    return {"steps": summary["step"], "train_s": summary["elapsed_s"], "psnr": result["psnr"],
            "ssim": result["ssim"], "val_images": len(result["images"]),
            "protocol": result["protocol"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="minicity")
    ap.add_argument("--views", default="drone", choices=["drone", "arc"])
    ap.add_argument("--size", type=_size, default=(320, 240), help="WxH of the photos")
    ap.add_argument("--detail", type=float, default=DEFAULT_DETAIL)
    ap.add_argument("--matcher", default="exhaustive")
    ap.add_argument("--train-seconds", type=float, default=0.0,
                    help="train cpu-demo this long on recovered and true poses (0: skip)")
    ap.add_argument("--workdir", type=Path, help="keep the photos and datasets here")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sfm.json")
    args = ap.parse_args()

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="sfm-bench.")
        work = Path(tmp.name)
    else:
        work = args.workdir.resolve()
        work.mkdir(parents=True, exist_ok=True)
    seconds = {}
    print(f"rendering {args.preset} ({args.views}) at {args.size[0]}x{args.size[1]}", flush=True)
    t = time.perf_counter()
    photos = render_photos(args.preset, work / "photos", views=args.views, image_size=args.size,
                           detail=args.detail, on_image=_line("render"))
    seconds["render"] = time.perf_counter() - t
    print(f"structure from motion on {len(photos.names)} photos", flush=True)
    t = time.perf_counter()
    result = run_sfm(work / "photos", work / "recovered",
                     SfmOptions(matcher=args.matcher, single_camera=True),
                     on_progress=_line("sfm"))
    seconds["sfm_total"] = time.perf_counter() - t
    seconds.update({f"sfm_{k}": v for k, v in result.seconds.items()})
    scene = load_scene(work / "recovered")
    align = alignment(scene, photos)

    training = None
    if args.train_seconds > 0:
        s, rot, tr = align["scale"], np.array(align["rotation"]), np.array(align["translation"])
        pts = read_model(work / "recovered" / "sparse" / "0").points
        true_dir = write_true_dataset(work / "true", photos, work / "photos", align["names"],
                                      s * pts @ rot.T + tr)
        training = {}
        for label, path in (("recovered", work / "recovered"), ("true", true_dir)):
            print(f"training cpu-demo for {args.train_seconds:.0f} s on the {label} poses",
                  flush=True)
            training[label] = train_and_eval(path, work / f"train_{label}", args.train_seconds)

    out = {
        "date": datetime.date.today().isoformat(),
        "host": platform.node(), "cpus": os.cpu_count(),
        "preset": args.preset, "views": args.views, "size": list(args.size),
        "detail": args.detail, "matcher": args.matcher,
        "photos": len(result.photos), "registered": len(result.registered),
        "registration_rate": result.registration_rate, "unregistered": result.unregistered,
        "verified_pairs": result.verified_pairs, "points": result.points,
        "mean_reprojection_error_px": result.mean_reprojection_error,
        "gravity": {"source": result.gravity.source, "tilt_deg": result.gravity.tilt_deg},
        "alignment": {k: v for k, v in align.items() if k not in ("names", "rotation")},
        "seconds": seconds, "training": training,
    }
    rows = [
        ("registered", (f"{len(result.registered)} / {len(result.photos)} "
                       f"({100 * result.registration_rate:.0f}%)")),
        ("camera centre error (m)",
         "mean {mean:.3f}, median {median:.3f}, max {max:.3f}".format(**align["centre_err_m"])),
        ("relative to the camera extent",
         (f"mean {100 * align['centre_err_rel']['mean']:.3f}%, "
         f"max {100 * align['centre_err_rel']['max']:.3f}% of {align['extent_m']:.0f} m")),
        ("rotation error (deg)",
         "median {median:.3f}, max {max:.3f}".format(**align["rotation_err_deg"])),
        ("up error (deg)", f"{align['up_err_deg']:.3f} ({result.gravity.source})"),
        ("mean reprojection error", f"{result.mean_reprojection_error:.3f} px"),
        ("time per stage (s)", ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())),
    ]
    if training:
        for label, tr in training.items():
            rows.append((f"PSNR, {label} poses",
                         (f"{tr['psnr']:.2f} dB, SSIM {tr['ssim']:.3f} ({tr['steps']} steps in "
                         f"{tr['train_s']:.0f} s, {tr['val_images']} val photos)")))
    print("\n| measure | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    from switchnerf.io_utils import write_json_atomic

    write_json_atomic(args.out, out)
    print(f"\nwrote {args.out}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
