"""Fidelity at equal parameters and equal training time (issue 14): switchnerf++ against a
learned homogeneous mixture, a fixed-grid mixture with homogeneous experts and a single hash
grid, on minicity and midcity, over seeds. Prints a markdown table, writes JSON and a PNG of
held-out PSNR against training time.

    python bench/fidelity.py [--seconds 660] [--seeds 0,1,2] [--scenes minicity,midcity]
                             [--methods switchnerf++,moe-homogeneous,...] [--eval-every 60]
                             [--eval-images 8] [--thresholds 26,28,30] [--set KEY=VALUE ...]
                             [--out bench/results/fidelity.json] [--runs DIR]
    python bench/fidelity.py --smoke   # tinymidcity, seconds per method: the pipeline only

Methods (``METHODS``): configs/cpu-demo.yaml (switchnerf++ as the demo trains it) plus only
the overrides that make the method, and the table size ``model.experts.hashmap_size``
solved when the bench starts so that the method's trainable parameter count (tables, MLPs,
gate, shared grid, appearance, background) equals switchnerf++'s to within half a table row
per hashed level (as tests/test_presets_params.py checks for bench/train.py's methods).
``--set`` applies to every method first, the method's own overrides after it; a shared
coarse grid (``--set model.experts.shared_levels=S``) is switchnerf++'s alone: the baselines
keep their architecture (``NO_SHARED``) and are sized to its parameter count.

Protocol: runs go one after another in this process: for each scene, for each seed, every
method, so that a change of machine load touches the methods alike. A run trains with
``Trainer.train`` for ``--seconds`` of training time. Evaluation does not count: the
bench's step callback keeps the clock, evaluates every ``--eval-every`` seconds of
training on ``--eval-images`` val images, and asks the trainer to stop once the time is
spent (``train.time_budget_s`` is ``--seconds`` too, and the trainer's clock is paused
while the bench evaluates, so the learning rate's time share, where the preset decays
with time, follows the same training time). The config's ``train.max_steps`` ends a run
first if reached: cpu-demo's schedule (28000 steps, the learning rate decaying to a tenth
by the larger of the steps' and the time's share) is kept, and the curves and
time-to-PSNR compare the methods at equal time (``--set train.max_steps=N`` for another
schedule). Checkpoints are written only at the
end, outside the clock. Every evaluation is appended to the run's metrics.jsonl as a row
with ``train_s`` and ``eval_psnr``; the curve and time-to-PSNR are read back from there.
The held-out figures come from a final evaluation on every val image.

Metrics: held-out PSNR and SSIM by the Mega-NeRF protocol (right halves of the val images,
each with its own appearance embedding; switchnerf/train/evaluate.py), per-image values
averaged. On scenes with region labels (midcity: ``val/regions/<stem>.png``, 255 =
downtown) also the PSNR of the downtown pixels and of the rest of the measured halves,
each from the squared error pooled over all such pixels of all val images. Routing: the
mean per-expert load over the last tenth of the logged steps, and any further routing
diagnostics the trainer logs in metrics.jsonl (``switchnerf.moe.diagnostics``, if the
installed switchnerf has it).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
import torch

from bench.common import matched_hashmap_size, parameter_counts, time_to_psnr
from bench.fidelity_report import markdown, plot, summarize
from switchnerf.config import Config, load_config
from switchnerf.io_utils import write_json_atomic
from switchnerf.train.evaluate import eval_indices

CPU_BASE = ROOT / "configs" / "cpu-demo.yaml"

NO_SHARED = "model.experts.shared_levels=0"
"""The baselines never have switchnerf++'s shared coarse grid (``model.experts.shared_levels``):
their architecture stays as it is whatever switchnerf++ uses; they get its parameter count."""

METHODS: dict[str, list[str]] = {
    "switchnerf++": [],
    "moe-homogeneous": ["model.experts.coarsest_fraction=1.0", NO_SHARED],
    "fixed-grid-homogeneous": ["model.routing.kind=fixed", "model.routing.fixed_grid=[2, 4]",
                               "model.experts.coarsest_fraction=1.0", NO_SHARED],
    "single-grid": ["model.experts.n_experts=1", "model.experts.coarsest_fraction=1.0",
                    "model.routing.kind=single", NO_SHARED],
}
"""--set overrides of configs/cpu-demo.yaml that make each method (before its table size),
applied after the bench's and the command line's ``--set``: what makes a method wins."""

METHOD_NOTES = {
    "switchnerf++": "learned hash gate, 8 heterogeneous experts",
    "moe-homogeneous": "learned hash gate, 8 experts of equal resolution",
    "fixed-grid-homogeneous": "2x4 ground partition, 8 experts of equal resolution",
    "single-grid": "one hash grid",
}

SCENES = {"minicity": ROOT / "scenes" / "minicity.yaml",
          "midcity": ROOT / "scenes" / "midcity.yaml"}

BENCH_SETS = ["train.eval_every=0", "train.checkpoint_every=1000000000", "train.keep_last=1"]
"""Every run: the bench evaluates (outside the trainer's clock); one checkpoint, at the end;
``train.time_budget_s`` is set to ``--seconds`` (the learning rate's time share follows it
where the preset decays with time)."""

SMOKE_SCENE = "tinymidcity"
SMOKE = {"seconds": 2.0, "eval_every": 0.75, "eval_images": 2, "thresholds": "10,12",
         "seeds": "0", "sets": ["train.rays_per_step=128", "train.log_every=1",
                                "sampler.grid_resolution=32", "sampler.steps_per_diagonal=128"]}
"""--smoke: every method on tinymidcity (synthesized into the work folder) for seconds."""

LOG_KEYS = {"step", "time_s", "loss", "psnr", "balance", "rays_per_s", "samples_per_ray",
            "load", "dropped", "skipped"}
"""Keys of the trainer's per-step log rows today; any other key is a routing diagnostic."""


# ---------------------------------------------------------------------------- methods

def method_config(method: str, sets: Sequence[str]) -> tuple[Config, list[str]]:
    """The config of ``method`` at switchnerf++'s parameter count, and the overrides of
    configs/cpu-demo.yaml that make it: ``load_config(CPU_BASE, sets + overrides)``
    (``sets`` apply to every method, switchnerf++ included; then the method's structure
    and its solved table size)."""
    reference = load_config(CPU_BASE, list(sets))
    structure = METHODS[method]
    if not structure:
        return reference, []
    size = matched_hashmap_size(reference, load_config(CPU_BASE, list(sets) + structure))
    overrides = structure + [f"model.experts.hashmap_size={size}"]
    return load_config(CPU_BASE, list(sets) + overrides), overrides


# ---------------------------------------------------------------------------- evaluation

def render_heldout(trainer, indices: Sequence[int]) -> Iterator[tuple[object, torch.Tensor]]:
    """(view, prediction float32 [H, Wm, 3] in [0, 1]) of each val image in ``indices``,
    rendered without gradients by the protocol of switchnerf/train/evaluate.py (Mega-NeRF:
    right halves, the image's own appearance embedding). ``view`` is evaluate.py's
    EvalView (target [H, Wm, 3], col0, index).

    The bench's one call into the evaluation API: adapt it here when that API changes.
    """
    from switchnerf.train.evaluate import eval_view, uses_right_half_protocol

    renderer = trainer.renderer
    right_half = uses_right_half_protocol(trainer.scene, trainer.cfg)
    n_train = len(trainer.scene.images("train"))
    was_training = renderer.field.training
    renderer.eval()
    try:
        for i in indices:
            view = eval_view(trainer.scene, n_train, i, right_half)
            out = renderer.render_chunked(view.rays.to(renderer.device),
                                          use_appearance_index=view.appearance)
            yield view, out.rgb.cpu().clamp(0, 1).view(view.height, view.width, 3)
    finally:
        renderer.field.train(was_training)


def _region_mask(scene, i: int, view) -> np.ndarray | None:
    """bool [H, Wm]: downtown pixels of the measured columns of val image i, or None."""
    from switchnerf.errors import input_error
    from switchnerf.scene.synth.regions import load_region_mask, region_label_path

    path = scene.images("val")[i].image_path
    mask = load_region_mask(path)
    if mask is None:
        return None
    if mask.shape != (view.height, view.col0 + view.width):
        raise input_error(region_label_path(path), None,
                          f"label is {mask.shape[1]}x{mask.shape[0]}, its image "
                          f"{view.col0 + view.width}x{view.height}")
    return mask[:, view.col0:]


def _pooled_psnr(se: float, n: int) -> float | None:
    return None if n == 0 else (math.inf if se == 0 else -10.0 * math.log10(se / n))


def heldout_metrics(trainer, indices: Sequence[int]) -> dict:
    """PSNR/SSIM (per-image means) of the val images ``indices``, and on scenes whose every
    one of them has a region label, the pooled PSNR of downtown pixels and of the rest
    (None where a region has no pixel). Returns {"psnr", "ssim", "psnr_downtown",
    "psnr_rest", "images": [{"index", "psnr", "ssim", "downtown_pixels"}]}."""
    from switchnerf.train.metrics import psnr, ssim

    per_image, sums = [], {"down": [0.0, 0], "rest": [0.0, 0]}
    labelled = True
    for view, pred in render_heldout(trainer, indices):
        row = {"index": view.index, "psnr": psnr(pred, view.target),
               "ssim": ssim(pred, view.target), "downtown_pixels": None}
        mask = _region_mask(trainer.scene, view.index, view)
        if mask is None:
            labelled = False
        else:
            se = ((pred.double() - view.target.double()) ** 2).sum(-1).numpy()  # [H, Wm]
            row["downtown_pixels"] = int(mask.sum())
            for key, m in (("down", mask), ("rest", ~mask)):
                sums[key][0] += float(se[m].sum())
                sums[key][1] += 3 * int(m.sum())
        per_image.append(row)
    return {"psnr": float(np.mean([r["psnr"] for r in per_image])),
            "ssim": float(np.mean([r["ssim"] for r in per_image])),
            "psnr_downtown": _pooled_psnr(*sums["down"]) if labelled else None,
            "psnr_rest": _pooled_psnr(*sums["rest"]) if labelled else None,
            "images": per_image}


# ---------------------------------------------------------------------------- one run

class TrainClock:
    """``Trainer.train``'s on_step callback: adds up training time (wall time between its
    own calls, so its evaluations are not counted), calls ``evaluate(train_s)`` every
    ``eval_every`` seconds of it (0: never) and stops the trainer after ``seconds``.
    ``clock``: seconds, monotonic."""

    def __init__(self, seconds: float, eval_every: float, evaluate: Callable[[float], None],
                 clock: Callable[[], float] = time.perf_counter):
        self.seconds, self.eval_every, self.evaluate = seconds, eval_every, evaluate
        self.clock = clock
        self.train_s = 0.0
        self.next_eval = eval_every if eval_every > 0 else math.inf
        self.stopped = False
        self._mark = clock()

    def restart(self) -> None:
        self._mark = self.clock()

    def __call__(self, trainer, _stats) -> None:
        self.train_s += self.clock() - self._mark
        if self.train_s >= self.seconds:
            self.stopped = True
            trainer.request_stop()
        elif self.train_s >= self.next_eval:
            with trainer.clock.paused():  # the trainer's clock (time budget, schedule) too
                self.evaluate(self.train_s)
            while self.next_eval <= self.train_s:
                self.next_eval += self.eval_every
        self._mark = self.clock()


def _append_jsonl(path: Path, row: dict) -> None:
    with open(path, "a") as f:  # O_APPEND: whole lines beside the trainer's own
        f.write(json.dumps(row) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def routing_summary(rows: list[dict]) -> dict:
    """From a run's metrics.jsonl rows: the mean per-expert load over the last tenth of the
    logged steps, and the routing diagnostics of the last logged step (its keys beyond
    ``LOG_KEYS``, written when switchnerf.moe.diagnostics exists)."""
    logs = [r for r in rows if "loss" in r and "load" in r]
    out: dict = {"diagnostics_module":
                 importlib.util.find_spec("switchnerf.moe.diagnostics") is not None}
    if not logs:
        return out
    tail = logs[-max(1, len(logs) // 10):]
    load = np.mean([r["load"] for r in tail], axis=0)
    out["load"] = [round(float(v), 4) for v in load]
    out["max_load"] = round(float(load.max()), 4)
    out.update({k: v for k, v in logs[-1].items() if k not in LOG_KEYS})
    return out


def run_one(scene_path: Path, scene_name: str, method: str, seed: int, cfg: Config,
            run_dir: Path, *, seconds: float, eval_every: float, eval_images: int,
            thresholds: list[float]) -> dict:
    """Train one (scene, method, seed) for ``seconds`` of training time and measure it."""
    from switchnerf.train.data import prepare_training_data
    from switchnerf.train.trainer import Trainer

    data = prepare_training_data(cfg, scene_path, progress=False)
    trainer = Trainer(cfg, data, run_dir, device="cpu", progress=False)
    log_path = run_dir / "metrics.jsonl"
    n_val = len(trainer.scene.images("val"))
    picks = eval_indices(n_val, eval_images)
    tag = f"{scene_name} seed {seed} {method}"
    try:
        params = parameter_counts(trainer.renderer.field)

        def periodic(train_s: float) -> None:
            t = time.perf_counter()
            m = heldout_metrics(trainer, picks)
            _append_jsonl(log_path, {"step": trainer.step, "train_s": train_s,
                                     "eval_psnr": m["psnr"], "eval_ssim": m["ssim"],
                                     "eval_psnr_downtown": m["psnr_downtown"],
                                     "eval_psnr_rest": m["psnr_rest"], "images": picks})
            print(f"  {tag}: step {trainer.step}, {train_s:.0f} s: PSNR {m['psnr']:.2f} dB "
                  f"({time.perf_counter() - t:.1f} s to evaluate)", flush=True)

        clock = TrainClock(seconds, eval_every, periodic)
        clock.restart()
        summary = trainer.train(on_step=clock)
        if summary["interrupted"] and not clock.stopped:
            raise KeyboardInterrupt
        final = heldout_metrics(trainer, range(n_val))
        on_picks = [r for r in final["images"] if r["index"] in picks]
        _append_jsonl(log_path, {"step": trainer.step, "train_s": clock.train_s,
                                 "eval_psnr": float(np.mean([r["psnr"] for r in on_picks])),
                                 "eval_ssim": float(np.mean([r["ssim"] for r in on_picks])),
                                 "images": picks, "final": True})
    finally:
        trainer.close()
    rows = read_jsonl(log_path)
    curve = [{"train_s": r["train_s"], "step": r["step"], "psnr": r["eval_psnr"]}
             for r in rows if "train_s" in r and "eval_psnr" in r]
    return {"scene": scene_name, "method": method, "seed": seed,
            "params_total": params["total"], "params_tables": params["tables"],
            "steps": trainer.step, "train_s": clock.train_s,
            "ended_by": "time" if clock.stopped else "max_steps",
            "heldout_psnr": final["psnr"], "heldout_ssim": final["ssim"],
            "psnr_downtown": final["psnr_downtown"], "psnr_rest": final["psnr_rest"],
            "time_to_psnr": time_to_psnr(curve, thresholds), "eval_curve": curve,
            "eval_images": picks, "routing": routing_summary(rows), "per_image": final["images"]}


# ---------------------------------------------------------------------------- reporting

# ---------------------------------------------------------------------------- main

def _scene_paths(names: list[str], workdir: Path, smoke: bool) -> dict[str, Path]:
    from switchnerf.scene.load import ensure_synth_scene

    if smoke:
        from switchnerf.scene.synth import synthesize

        return {SMOKE_SCENE: synthesize(SMOKE_SCENE, workdir / SMOKE_SCENE, progress=False)}
    paths = {}
    for name in names:
        if name in SCENES:
            ensure_synth_scene(SCENES[name])
            paths[name] = SCENES[name]
        else:  # a descriptor or dataset folder, used as it is
            paths[Path(name).stem] = Path(name)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=660.0, help="training time per run")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--scenes", default=",".join(SCENES),
                    help=f"names ({', '.join(SCENES)}) or scenes/*.yaml with synth:")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--eval-every", type=float, default=60.0,
                    help="seconds of training between evaluations (0: only at the end)")
    ap.add_argument("--eval-images", type=int, default=8,
                    help="val images per periodic evaluation, spread evenly (0: all)")
    ap.add_argument("--thresholds", default="26,28,30", help="PSNR thresholds (dB)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra override for every method (before the method's own), "
                         "e.g. --set train.max_steps=20000")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON (default bench/results/fidelity.json; the PNG beside it)")
    ap.add_argument("--runs", type=Path, default=None,
                    help="keep the run folders here (default: a temporary folder)")
    ap.add_argument("--smoke", action="store_true",
                    help="tinymidcity, one seed, seconds per run: checks the pipeline only")
    args = ap.parse_args(argv)
    if args.smoke:
        for key in ("seconds", "eval_every", "eval_images", "thresholds", "seeds"):
            setattr(args, key, SMOKE[key])
        args.set = SMOKE["sets"] + args.set
    name = "fidelity-smoke" if args.smoke else "fidelity"
    out = args.out or ROOT / "bench" / "results" / f"{name}.json"
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        ap.error(f"--methods: unknown {unknown} (known: {', '.join(METHODS)})")
    seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    thresholds = [float(t) for t in str(args.thresholds).split(",") if t.strip()]
    sets = BENCH_SETS + [f"train.time_budget_s={args.seconds}"] + list(args.set)
    configs = {m: method_config(m, sets) for m in methods}

    from switchnerf.ops import backend_name

    backend = backend_name()  # builds the native ops now if needed, not inside a timed run
    print(f"ops: {backend}, {torch.get_num_threads()} torch threads", flush=True)
    for m, (cfg, overrides) in configs.items():
        print(f"{m}: {' '.join(overrides) or '(configs/cpu-demo.yaml)'}", flush=True)
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="fidelity.")) if args.runs is None else args.runs
    runs = []
    try:
        scenes = _scene_paths([s.strip() for s in args.scenes.split(",") if s.strip()],
                              workdir, args.smoke)
        for scene_name, scene_path in scenes.items():
            for seed in seeds:
                for m in methods:
                    cfg = load_config(CPU_BASE, sets + configs[m][1] + [f"train.seed={seed}"])
                    run_dir = workdir / scene_name / f"seed{seed}" / m
                    if run_dir.exists():
                        shutil.rmtree(run_dir)
                    print(f"{scene_name} seed {seed} {m}: training {args.seconds:g} s "
                          f"({time.perf_counter() - started:.0f} s into the bench)", flush=True)
                    r = run_one(scene_path, scene_name, m, seed, cfg, run_dir,
                                seconds=args.seconds, eval_every=args.eval_every,
                                eval_images=args.eval_images, thresholds=thresholds)
                    r["overrides"] = configs[m][1]
                    runs.append(r)
                    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
                    print(f"{scene_name} seed {seed} {m}: {r['params_total']:,} params, "
                          f"{r['steps']} steps, held-out PSNR {r['heldout_psnr']:.2f} dB",
                          flush=True)
    finally:
        if args.runs is None:
            shutil.rmtree(workdir, ignore_errors=True)
    ref = {r["scene"]: r["params_total"] for r in runs if r["method"] == "switchnerf++"}
    for r in runs:
        if r["scene"] in ref and abs(r["params_total"] - ref[r["scene"]]) > 1e-3 * ref[r["scene"]]:
            print(f"WARNING: {r['method']} has {r['params_total']:,} parameters, switchnerf++ "
                  f"{ref[r['scene']]:,}: not an equal-parameter comparison", flush=True)
    summary = summarize(runs, thresholds)
    table = markdown(summary, thresholds, args.seconds, METHOD_NOTES)
    print()
    print(table)
    png = plot(runs, out.with_suffix(".png"))
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    write_json_atomic(out, {
        "date": datetime.date.today().isoformat(), "smoke": args.smoke,
        "seconds": args.seconds, "eval_every_s": args.eval_every,
        "eval_images": args.eval_images, "thresholds_db": thresholds, "seeds": seeds,
        "base_config": "configs/cpu-demo.yaml", "bench_sets": BENCH_SETS, "extra_sets": args.set,
        "methods": {m: {"overrides": configs[m][1], "note": METHOD_NOTES[m]} for m in methods},
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "ops": backend, "torch": torch.__version__,
                    "python": platform.python_version(), "load_average_1min_at_end": load},
        "wall_s": time.perf_counter() - started,
        "summary": summary, "runs": runs, "markdown": table})
    shown = [p.relative_to(ROOT) if p.is_relative_to(ROOT) else p for p in (out, png)]
    print(f"wrote {shown[0]} and {shown[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
