"""Where a training step and a render go: per phase, ms per step (or frame) and share.

    python bench/profile_step.py [--warmup 300] [--steps 40] [--renders 3]
                                 [--set KEY=VALUE ...] [--scene scenes/minicity.yaml]
                                 [--out bench/results/profile_step.json]

Trains the cpu-demo preset (configs/cpu-demo.yaml, minicity) for ``--warmup`` steps so the
occupancy grid and the samples per ray are those of a real run, then profiles ``--steps``
steps of the real ``Trainer.train_step`` and ``--renders`` 256x192 renders of a val view
(the viewer's still frame) through ``Renderer.render_camera``.

How it measures (CPU ops run synchronously, so wall-clock timers are exact):

* forward phases: the functions a step calls are wrapped with timers (ray batch, occupancy
  update, march, gate, encode, MLPs, composite, loss, optimiser); a phase called inside
  another is reported under both names (``march/encode``: the encoding of the no-grad
  pruning pass inside the march); every figure is exclusive of the phases nested in it;
* backward: every autograd node gets a pre- and post-hook, and each node is charged to the
  forward phase that created it (``encode bwd``, ``mlp bwd``, ``composite bwd``, ...);
  ``backward engine`` is the rest of ``loss.backward()``;
* optimiser: Adam's step is timed per parameter group (hash tables, MLPs, and the gate's
  table and MLP when it has its own rate) by stepping one group at a time (same result as
  one step: Adam's state is per parameter);
* ``other: points, SH, loss, stats, host sync`` is what ``train_step`` spends outside every
  named phase (sample points, view encoding, activations, the loss, the step statistics).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

CPU_BASE = ROOT / "configs" / "cpu-demo.yaml"


class PhaseTimer:
    """Exclusive wall-clock time per phase path (``outer/inner``), and which forward phase
    created each autograd node (for the backward split)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.stack: list[list] = []  # [name, start, time of nested phases]
        self.enabled = False
        self.node_phase: dict = {}

    @contextlib.contextmanager
    def phase(self, name: str):
        if not self.enabled:
            yield
            return
        path = f"{self.stack[-1][0]}/{name}" if self.stack else name
        entry = [path, time.perf_counter(), 0.0]
        self.stack.append(entry)
        try:
            yield
        finally:
            self.stack.pop()
            dt = time.perf_counter() - entry[1]
            self.totals[path] += dt - entry[2]
            if self.stack:
                self.stack[-1][2] += dt

    def claim(self, phase: str, outputs) -> None:
        """Charge the autograd nodes reachable from ``outputs`` that no earlier phase
        claimed to ``phase``."""
        todo = []
        for t in _tensors(outputs):
            if t.grad_fn is not None:
                todo.append(t.grad_fn)
        while todo:
            node = todo.pop()
            if node is None or node in self.node_phase:
                continue
            self.node_phase[node] = phase
            todo.extend(n for n, _ in node.next_functions)

    def wrap(self, owner, attr: str, name: str, *, claim: bool = True) -> None:
        """Time every call of ``owner.attr`` as phase ``name``."""
        fn = getattr(owner, attr)
        timer = self

        def timed(*args, **kwargs):
            with timer.phase(name):
                out = fn(*args, **kwargs)
            if claim and timer.enabled and torch.is_grad_enabled():
                timer.claim(name, out)
            return out

        setattr(owner, attr, timed)


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)
    elif hasattr(obj, "__dataclass_fields__"):
        for k in obj.__dataclass_fields__:
            yield from _tensors(getattr(obj, k, None))


def timed_backward(timer: PhaseTimer, loss: torch.Tensor) -> None:
    """``loss.backward()`` with every node's own time charged to ``<phase> bwd``."""
    timer.claim("loss", loss)
    starts: dict = {}
    handles = []
    for node, phase in list(timer.node_phase.items()):
        def pre(_g, node=node):
            starts[node] = time.perf_counter()

        def post(_gi, _go, node=node, phase=phase):
            timer.totals[f"backward/{phase} bwd"] += time.perf_counter() - starts.pop(node)

        try:
            handles.append(node.register_prehook(pre))
            handles.append(node.register_hook(post))
        except (RuntimeError, AttributeError):
            continue
    t0 = time.perf_counter()
    inner_before = sum(v for k, v in timer.totals.items() if k.startswith("backward/"))
    try:
        _original_backward(loss)
    finally:
        for h in handles:
            h.remove()
    total = time.perf_counter() - t0
    inner = sum(v for k, v in timer.totals.items() if k.startswith("backward/")) - inner_before
    timer.totals["backward/backward engine"] += total - inner
    if timer.stack:
        timer.stack[-1][2] += total
    timer.node_phase.clear()


_original_backward = torch.Tensor.backward


def instrument_render(field, timer: PhaseTimer) -> None:
    """Wrap the functions a render call (and the forward of a training step) goes through
    with phase timers: gate, encodings, MLPs, march, compositing, front-to-back rounds."""
    import switchnerf.model.field as field_mod
    import switchnerf.moe.gate as gate_mod
    import switchnerf.render.renderer as renderer_mod

    timer.wrap(field, "route", "gate")
    timer.wrap(field.experts, "encode", "encode")
    if field.shared is not None:
        timer.wrap(field.shared, "forward", "encode (shared grid)")
    timer.wrap(field_mod, "apply_mlp", "mlp")
    timer.wrap(field_mod.GroupedMLP, "__call__", "mlp", claim=False)
    timer.wrap(gate_mod, "apply_mlp", "mlp")
    timer.wrap(renderer_mod, "march_rays", "march")
    timer.wrap(renderer_mod, "render_packed", "composite")
    timer.wrap(renderer_mod, "composite_rays", "composite")
    timer.wrap(renderer_mod, "_assemble", "composite")
    timer.wrap(renderer_mod, "evaluate_front_to_back", "front-to-back rounds")


def instrument(trainer, timer: PhaseTimer) -> None:
    """Wrap the functions a training step and a render call with phase timers."""
    import switchnerf.train.trainer as trainer_mod

    instrument_render(trainer.renderer.field, timer)
    timer.wrap(trainer_mod, "balance_loss", "loss")
    timer.wrap(trainer, "_update_grid", "occupancy update")
    timer.wrap(trainer, "_set_lr", "lr schedule")
    opt = trainer.optimizer

    group_names = ("tables", "mlps", "gate table", "gate mlp")  # build_optimizer's order

    def step_by_group():
        groups = opt.param_groups
        for gi in range(len(groups)):
            name = f"optimizer: {group_names[gi] if gi < len(group_names) else gi}"
            hidden = {}
            for gj, g in enumerate(groups):
                if gj != gi:
                    for p in g["params"]:
                        hidden[p] = p.grad
                        p.grad = None
            try:
                with timer.phase(name):
                    _step()
            finally:
                for p, g in hidden.items():
                    p.grad = g

    _step = opt.step
    opt.step = step_by_group
    timer.wrap(opt, "zero_grad", "zero_grad")


def table(totals: dict[str, float], per: int, title: str, top: str) -> tuple[str, list[dict]]:
    totals = {k.removeprefix(top + "/"): v for k, v in totals.items()}
    whole = sum(totals.values())
    if per < 1 or whole <= 0:
        return "(none measured)", []
    rows = sorted(({"phase": k, "ms": 1e3 * v / per, "share": v / whole} for k, v in totals.items()),
                  key=lambda r: -r["ms"])
    lines = [f"| {title} | ms | share |", "|---|---|---|"]
    lines += [f"| {r['phase']} | {r['ms']:.2f} | {100 * r['share']:.1f}% |" for r in rows]
    lines.append(f"| **total** | **{1e3 * whole / per:.2f}** | 100% |")
    return "\n".join(lines), rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warmup", type=int, default=300, help="training steps before profiling")
    ap.add_argument("--steps", type=int, default=40, help="profiled training steps")
    ap.add_argument("--renders", type=int, default=3, help="profiled 256x192 renders")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--run", type=Path, default=None,
                    help="keep the warmed-up run here: resumed when it has a checkpoint, "
                         "else trained for --warmup steps and saved (reuse across profiles)")
    ap.add_argument("--scene", type=Path, default=ROOT / "scenes" / "minicity.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "profile_step.json")
    args = ap.parse_args()

    import tempfile

    from switchnerf.config import load_config
    from switchnerf.ops import backend_name
    from switchnerf.scene.load import ensure_synth_scene
    from switchnerf.train.data import prepare_training_data
    from switchnerf.train.trainer import Trainer

    ensure_synth_scene(args.scene, progress=False)
    backend = backend_name()
    cfg = load_config(CPU_BASE, ["train.checkpoint_every=1000000", *args.set])
    timer = PhaseTimer()
    with tempfile.TemporaryDirectory() as tmp:
        from switchnerf.train.checkpoint import latest_checkpoint

        run = args.run or Path(tmp) / "run"
        resume = run.is_dir() and latest_checkpoint(run) is not None
        data = prepare_training_data(cfg, args.scene, progress=False)
        trainer = Trainer(cfg, data, run, device="cpu", progress=False, resume=resume)
        try:
            t0 = time.perf_counter()
            while trainer.step < args.warmup:
                trainer.train_step(next(trainer.stream))
            warm_s = time.perf_counter() - t0
            if args.run is not None and not resume:
                trainer.save()
            print(f"ops: {backend}; at step {trainer.step} ({warm_s:.1f} s of warm-up)", flush=True)
            instrument(trainer, timer)
            torch.Tensor.backward = lambda self, *a, **k: timed_backward(timer, self)
            stream = trainer.stream
            spr = []
            timer.enabled = True
            try:
                for _ in range(args.steps):
                    with timer.phase("train_step"):
                        with timer.phase("ray batch"):
                            batch = next(stream)
                        stats = trainer.train_step(batch)
                    spr.append(stats.samples_per_ray)
            finally:
                torch.Tensor.backward = _original_backward
            train_totals = dict(timer.totals)
            train_totals["other: points, SH, loss, stats, host sync"] = train_totals.pop("train_step")
            timer.totals.clear()
            val = trainer.scene.images("val")[0]
            s = 256 / val.width
            cam = SimpleNamespace(c2w=val.c2w, fx=val.fx * s, fy=val.fy * s, cx=val.cx * s,
                                  cy=val.cy * s, width=256, height=192, near=val.near,
                                  far=val.far)
            trainer.renderer.eval()
            trainer.renderer.render_camera(cam)  # warm
            for _ in range(args.renders):
                with timer.phase("render"):
                    trainer.renderer.render_camera(cam)
            render_totals = dict(timer.totals)
            if "render" in render_totals:  # none with --renders 0
                render_totals["rays, assembly"] = render_totals.pop("render")
        finally:
            trainer.close()
    train_md, train_rows = table(train_totals, args.steps, "training step phase", "train_step")
    render_md, render_rows = table(render_totals, args.renders, "256x192 render phase", "render")
    mean_spr = sum(spr) / max(len(spr), 1)
    print(f"\ntraining step ({cfg.train.rays_per_step} rays, {mean_spr:.1f} samples/ray, "
          f"after {args.warmup} steps), mean of {args.steps} steps:\n")
    print(train_md)
    print(f"\nrender of a val view at 256x192, mean of {args.renders}:\n")
    print(render_md)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps({
        "date": datetime.date.today().isoformat(), "config": "configs/cpu-demo.yaml",
        "sets": args.set, "warmup_steps": args.warmup, "steps": args.steps,
        "renders": args.renders, "rays_per_step": cfg.train.rays_per_step,
        "samples_per_ray": mean_spr,
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "ops": backend, "torch": torch.__version__,
                    "python": platform.python_version()},
        "train_step_ms": train_rows, "render_ms": render_rows}, indent=2))
    os.replace(tmp_out, args.out)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
