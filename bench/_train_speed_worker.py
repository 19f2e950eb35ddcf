"""One chunk of a training run for bench/train_speed.py, in a subprocess whose PYTHONPATH is
the tree under test (today's commit or the current one): imports nothing from bench/.

    python bench/_train_speed_worker.py JOB.json

JOB: {"config", "sets", "scene", "store", "run", "until", "evaluate", "out"}. Trains the run
(resumed from its checkpoint when it has one) up to step ``until``, saves a checkpoint, and
writes {"steps", "rays", "train_s", "samples_per_ray", "psnr"} to ``out`` (train_s counts
the training steps only; psnr: held-out PSNR on every val image when ``evaluate``).
Works with both Trainer APIs (``Trainer(cfg, scene_path, run_dir, store_dir=)`` of today's
commit and ``Trainer(cfg, prepare_training_data(...), run_dir)``).
"""

import inspect
import json
import os
import sys
import time
from pathlib import Path

NO_SHARED = "model.experts.shared_levels=0"


def _load_config(load_config, path: Path, sets: list[str]):
    """``load_config(path, sets)``; a tree from before the shared coarse grid has none, so
    the override that turns it off is dropped there (any other unknown key still fails)."""
    try:
        return load_config(path, sets)
    except Exception as exc:
        if NO_SHARED in sets and "shared_levels" in str(exc):
            return load_config(path, [s for s in sets if s != NO_SHARED])
        raise


def main() -> int:
    job = json.loads(Path(sys.argv[1]).read_text())
    import torch

    from switchnerf.config import load_config
    from switchnerf.train import trainer as trainer_mod
    from switchnerf.train.checkpoint import latest_checkpoint
    from switchnerf.train.evaluate import evaluate, uses_right_half_protocol

    try:  # build (or load) the tree's native ops before any step is timed
        from switchnerf.ops import load_native
    except ImportError:  # 68ff41e kept them in switchnerf.native
        from switchnerf.native import load_native
    load_native()
    cfg = _load_config(load_config, Path(job["config"]), job["sets"])
    run, store = Path(job["run"]), Path(job["store"])
    resume = run.is_dir() and latest_checkpoint(run) is not None
    params = inspect.signature(trainer_mod.Trainer.__init__).parameters
    if "store_dir" in params:  # today's commit
        trainer = trainer_mod.Trainer(cfg, Path(job["scene"]), run, device="cpu",
                                      resume=resume, store_dir=store, progress=False)
    else:
        from switchnerf.train.data import prepare_training_data

        data = prepare_training_data(cfg, Path(job["scene"]), store, progress=False)
        trainer = trainer_mod.Trainer(cfg, data, run, device="cpu", resume=resume,
                                      progress=False)
    rays, train_s, spr = 0, 0.0, []
    try:
        while trainer.step < job["until"]:
            batch = next(trainer.stream)
            t = time.perf_counter()
            stats = trainer.train_step(batch)
            train_s += time.perf_counter() - t
            rays += len(batch)
            spr.append(stats.samples_per_ray)
        trainer.save()
        psnr = None
        if job["evaluate"]:
            right = uses_right_half_protocol(trainer.scene, cfg)
            if hasattr(trainer, "renderer"):
                res = evaluate(trainer.renderer, trainer.scene, right_half=right)
            else:
                res = evaluate(trainer.field, trainer.grid, trainer.box, cfg, trainer.scene)
            psnr = res["psnr"]
    finally:
        trainer.close()
    out = Path(job["out"])
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps({"steps": trainer.step, "rays": rays, "train_s": train_s,
                               "samples_per_ray": sum(spr) / max(len(spr), 1), "psnr": psnr,
                               "threads": torch.get_num_threads()}))
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
