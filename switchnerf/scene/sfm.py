"""Camera poses from a folder of photos: COLMAP's SIFT features, matching and incremental
mapping through pycolmap (on the GPU where pycolmap was built with CUDA, else the CPU),
written as a dataset that ``load_scene`` reads as COLMAP.

``run_sfm(images_dir, out_dir, options)`` builds, in a temporary folder beside ``out_dir``
that is renamed onto it at the end (nothing half-written on failure)::

    images/        the photos (hard links where the file system allows, else copies)
    sparse/0/      the largest model, COLMAP binary (cameras, images, points3D, rigs, frames),
                   leveled by ``gravity.level``: z up, the ground at z = 0
    database.db    COLMAP's features and matches (to refine the model with COLMAP itself)
    sfm.json       the report: options, registered and unregistered photos, the up
                   direction and how it was found, the time of every stage

The model's unit is COLMAP's arbitrary one (the reader assumes 1 unit = 1 metre). Photos
that no model registered are listed in the result and in sfm.json. Stages report progress
through ``on_progress(stage, done, total)`` (total None: no count is known).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from switchnerf.errors import input_error
from switchnerf.scene.colmap_model import import_pycolmap, write_reconstruction
from switchnerf.scene.gravity import Gravity, level
from switchnerf.scene.photos import check_photos, photo_names
from switchnerf.scene.poses import CV_TO_GL

MATCHERS = ("exhaustive", "sequential", "spatial")
CAMERA_MODELS = ("SIMPLE_RADIAL", "OPENCV", "PINHOLE")
MIN_REGISTERED = 3
MIN_PAIR_INLIERS = 15  # COLMAP's minimum of verified matches for an image pair to count
REPORT = "sfm.json"
EXTRACT_CHUNKS = 50  # feature extraction runs in about this many calls (progress steps)


@dataclass(frozen=True)
class SfmOptions:
    """matcher: which image pairs are matched (exhaustive: all; sequential: neighbours in
    name order, for video-like captures; spatial: neighbours by EXIF GPS). camera_model:
    COLMAP model fitted per camera. single_camera: one camera shared by every photo.
    max_image_size: photos are downscaled to this longest side for feature extraction.
    num_threads: -1 for all cores. seed: COLMAP's random seed. verbose: show COLMAP's log."""

    matcher: str = "exhaustive"
    camera_model: str = "SIMPLE_RADIAL"
    single_camera: bool = False
    max_image_size: int = 3200
    num_threads: int = -1
    seed: int = 0
    verbose: bool = False

    def __post_init__(self):
        if self.matcher not in MATCHERS:
            raise input_error(None, "matcher", f"{self.matcher!r} is not one of {MATCHERS}")
        if self.camera_model not in CAMERA_MODELS:
            raise input_error(
                None, "camera_model", f"{self.camera_model!r} is not one of {CAMERA_MODELS}"
            )
        if self.max_image_size < 16:
            raise input_error(None, "max_image_size", f"{self.max_image_size} is below 16 pixels")


@dataclass
class SfmResult:
    """What ``run_sfm`` made. ``registered`` and ``unregistered`` partition ``photos``;
    ``other_models``: sizes of the smaller disconnected models that were not kept."""

    dataset_dir: Path
    photos: list[str]
    size: tuple[int, int]
    registered: list[str]
    unregistered: list[str]
    other_models: list[int]
    verified_pairs: int
    points: int
    mean_reprojection_error: float
    gravity: Gravity
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def registration_rate(self) -> float:
        return len(self.registered) / max(len(self.photos), 1)

    def report(self, options: SfmOptions) -> dict:
        g = self.gravity
        return {
            "options": asdict(options),
            "photos": len(self.photos),
            "image_size": list(self.size),
            "registered": self.registered,
            "unregistered": self.unregistered,
            "other_models": self.other_models,
            "verified_pairs": self.verified_pairs,
            "points": self.points,
            "mean_reprojection_error_px": self.mean_reprojection_error,
            # the model is stored leveled: its up is +z (the colmap reader keeps it so)
            "up": [0.0, 0.0, 1.0],
            "gravity": {
                "source": g.source,
                "aerial": g.aerial,
                "ground_points": g.ground_points,
                "ground_tilt_to_camera_up_deg": g.tilt_deg,
                "cameras_above_ground": g.cameras_above,
                "model_to_leveled": g.transform.tolist(),
            },
            "seconds": self.seconds,
        }


@contextlib.contextmanager
def _colmap_log(verbose: bool):
    """COLMAP's log quiet (fatal only) unless verbose; restored afterwards."""
    logging = import_pycolmap().logging
    before = logging.minloglevel
    logging.minloglevel = before if verbose else 3
    try:
        yield
    finally:
        logging.minloglevel = before


def _notify(on_progress, stage: str, done: int, total: int | None) -> None:
    if on_progress is not None:
        on_progress(stage, done, total)


def _extract(pycolmap, db: Path, images_dir: Path, names: list[str], opts: SfmOptions, cb):
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = opts.camera_model
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.max_image_size = opts.max_image_size
    extraction.num_threads = opts.num_threads
    mode = pycolmap.CameraMode.SINGLE if opts.single_camera else pycolmap.CameraMode.AUTO
    step = max(1, math.ceil(len(names) / EXTRACT_CHUNKS))
    for start in range(0, len(names), step):
        pycolmap.extract_features(
            db,
            images_dir,
            image_names=names[start : start + step],
            camera_mode=mode,
            reader_options=reader,
            extraction_options=extraction,
            device=pycolmap.Device.auto,
        )
        if opts.single_camera and start == 0:  # later chunks share the first camera
            database = pycolmap.Database.open(db)
            try:
                reader.existing_camera_id = database.read_all_cameras()[0].camera_id
            finally:
                database.close()
        _notify(cb, "features", min(start + step, len(names)), len(names))


def _match(pycolmap, db: Path, images_dir: Path, opts: SfmOptions, cb) -> int:
    """Match and verify image pairs; returns how many pairs have >= MIN_PAIR_INLIERS."""
    database = pycolmap.Database.open(db)
    try:
        if opts.matcher == "spatial" and database.num_pose_priors() == 0:
            raise input_error(
                images_dir,
                "matcher",
                "spatial matching needs GPS positions in the photos' EXIF and none has one "
                "(use exhaustive or sequential)",
            )
    finally:
        database.close()
    _notify(cb, "matching", 0, None)
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = opts.num_threads
    fn = getattr(pycolmap, f"match_{opts.matcher}")
    fn(db, matching_options=matching, device=pycolmap.Device.auto)
    database = pycolmap.Database.open(db)
    try:
        _, inliers = database.read_two_view_geometry_num_inliers()
    finally:
        database.close()
    good = int(np.count_nonzero(np.asarray(inliers) >= MIN_PAIR_INLIERS))
    _notify(cb, "matching", good, None)
    return good


def _map(pycolmap, db: Path, images_dir: Path, work: Path, n: int, opts: SfmOptions, cb):
    """Incremental mapping; returns the reconstructions, largest first."""
    options = pycolmap.IncrementalPipelineOptions()
    options.min_model_size = MIN_REGISTERED
    options.num_threads = opts.num_threads
    options.random_seed = opts.seed
    count = [0]

    def registered(k=1):
        count[0] += k
        _notify(cb, "mapping", min(count[0], n), n)

    _notify(cb, "mapping", 0, n)
    recs = pycolmap.incremental_mapping(
        db,
        images_dir,
        work,
        options=options,
        initial_image_pair_callback=lambda: registered(2),
        next_image_callback=registered,
    )
    return sorted(recs.values(), key=lambda r: -r.num_reg_images())


def _c2ws(rec) -> tuple[np.ndarray, list[str]]:
    """c2w [N, 4, 4] (OpenGL axes) and names of the registered images, by name."""
    images = sorted((rec.images[i] for i in rec.reg_image_ids()), key=lambda im: im.name)
    out = np.zeros((len(images), 4, 4))
    for k, im in enumerate(images):
        m = np.asarray(im.cam_from_world().matrix())  # [3, 4] world -> camera (OpenCV)
        out[k, :3, :3] = m[:, :3].T @ CV_TO_GL
        out[k, :3, 3] = -m[:, :3].T @ m[:, 3]
        out[k, 3, 3] = 1.0
    return out, [im.name for im in images]


def _place_photos(src: Path, names: list[str], dst: Path) -> None:
    dst.mkdir(parents=True)
    for name in names:
        try:
            os.link(src / name, dst / name)
        except OSError:
            shutil.copy2(src / name, dst / name)


def _check_out(images_dir: Path, out_dir: Path, overwrite: bool) -> None:
    if images_dir == out_dir or out_dir in images_dir.parents:
        raise input_error(out_dir, "out", f"holds the photos ({images_dir}); choose a new folder")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise input_error(out_dir, "out", "exists and is not empty (remove it or overwrite)")


def run_sfm(
    images_dir: str | Path,
    out_dir: str | Path,
    options: SfmOptions | None = None,
    *,
    overwrite: bool = False,
    on_progress=None,
) -> SfmResult:
    """Pose the photos directly in ``images_dir`` and write the dataset ``out_dir`` (see
    the module docstring). Raises SwitchNerfError naming the folder or file for an empty
    folder, an unreadable photo, photos of mixed sizes, too few matches, or fewer than
    ``MIN_REGISTERED`` registered photos."""
    opts = options or SfmOptions()
    images_dir = Path(images_dir).expanduser().resolve()
    out_dir = Path(out_dir).expanduser().resolve()
    names = photo_names(images_dir)
    _check_out(images_dir, out_dir, overwrite)
    pycolmap = import_pycolmap()
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    size = check_photos(images_dir, names, lambda k, n: _notify(on_progress, "check", k, n))
    seconds["check"] = time.perf_counter() - t
    pycolmap.set_random_seed(opts.seed)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        db = tmp / "database.db"
        with _colmap_log(opts.verbose):
            t = time.perf_counter()
            _extract(pycolmap, db, images_dir, names, opts, on_progress)
            seconds["features"] = time.perf_counter() - t
            t = time.perf_counter()
            pairs = _match(pycolmap, db, images_dir, opts, on_progress)
            seconds["matching"] = time.perf_counter() - t
            if pairs == 0:
                raise input_error(
                    images_dir,
                    "matches",
                    f"no two of the {len(names)} photos share {MIN_PAIR_INLIERS} verified "
                    "feature matches: too few matches (the photos need more overlap or texture)",
                )
            t = time.perf_counter()
            models = _map(pycolmap, db, images_dir, tmp / "mapping", len(names), opts, on_progress)
            seconds["mapping"] = time.perf_counter() - t
        best = models[0] if models else None
        n_reg = best.num_reg_images() if best is not None else 0
        if n_reg < MIN_REGISTERED:
            raise input_error(
                images_dir,
                "registered",
                f"{n_reg} of {len(names)} photos could be posed, at least {MIN_REGISTERED} "
                f"are needed (too few matches between them: more overlap or texture helps)",
            )
        t = time.perf_counter()
        _notify(on_progress, "writing", 0, None)
        c2ws, registered = _c2ws(best)
        points = np.array([p.xyz for p in best.points3D.values()]).reshape(-1, 3)
        gravity = level(c2ws, points if len(points) else None, seed=opts.seed)
        g = gravity.transform
        best.transform(
            pycolmap.Sim3d(1.0, pycolmap.Rotation3d(g[:3, :3]), np.ascontiguousarray(g[:3, 3]))
        )
        write_reconstruction(best, tmp / "sparse" / "0", binary=True)
        shutil.rmtree(tmp / "mapping", ignore_errors=True)
        _place_photos(images_dir, names, tmp / "images")
        reg = set(registered)
        result = SfmResult(
            dataset_dir=out_dir,
            photos=names,
            size=size,
            registered=registered,
            unregistered=[n for n in names if n not in reg],
            other_models=[m.num_reg_images() for m in models[1:]],
            verified_pairs=pairs,
            points=int(best.num_points3D()),
            mean_reprojection_error=float(best.compute_mean_reprojection_error()),
            gravity=gravity,
            seconds=seconds,
        )
        seconds["writing"] = time.perf_counter() - t
        from switchnerf.io_utils import write_json_atomic

        write_json_atomic(tmp / REPORT, result.report(opts))
        if out_dir.exists():
            shutil.rmtree(out_dir) if out_dir.is_dir() else out_dir.unlink()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result
