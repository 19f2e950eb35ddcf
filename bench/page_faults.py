"""Minor page faults and time per CPU training step (cpu-demo on minicity).

    python bench/page_faults.py [--steps 100] [--warmup 100]

Trains ``--warmup`` steps, then counts the process's minor page faults
(``getrusage``) and the wall time over ``--steps`` more; prints both per step. Run it with
and without ``switchnerf.train.allocator``'s thresholds (e.g. on the commit before it) to
see what the freed-buffer reuse saves.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=100)
    args = ap.parse_args()
    from switchnerf.config import load_config
    from switchnerf.scene.load import ensure_synth_scene
    from switchnerf.train.data import prepare_training_data
    from switchnerf.train.trainer import Trainer

    scene = ROOT / "scenes" / "minicity.yaml"
    ensure_synth_scene(scene, progress=False)
    cfg = load_config(ROOT / "configs" / "cpu-demo.yaml", ["train.checkpoint_every=1000000"])
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare_training_data(cfg, scene, progress=False)
        trainer = Trainer(cfg, data, Path(tmp) / "run", device="cpu", progress=False)
        try:
            for _ in range(args.warmup):
                trainer.train_step(next(trainer.stream))
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            for _ in range(args.steps):
                trainer.train_step(next(trainer.stream))
            r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        finally:
            trainer.close()
    print(f"minor faults per step {(r1.ru_minflt - r0.ru_minflt) / args.steps:.0f}, "
          f"{1e3 * (t1 - t0) / args.steps:.1f} ms per step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
