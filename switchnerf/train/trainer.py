"""The training loop: stream rays, march, render, photometric + balance loss, Adam.

Reliability: checkpoints are atomic; Ctrl-C (SIGINT/SIGTERM) saves a checkpoint and exits
cleanly; resume restores model, grid, optimiser, schedule, RNG and the ray stream
position, so N straight steps equal N/2 + resume + N/2; a non-finite loss skips the step.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import time
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path

import torch

from switchnerf.config import Config
from switchnerf.errors import SwitchNerfError
from switchnerf.moe.routing import balance_loss, expert_load
from switchnerf.render.volume import render_rays, step_size
from switchnerf.train.builder import build_model, build_optimizer, scene_and_cameras
from switchnerf.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from switchnerf.train.evaluate import evaluate
from switchnerf.train.progress import TrainProgress
from switchnerf.train.run import (
    RESUME_MAY_CHANGE,
    config_differences,
    is_run_dir,
    write_run_config,
    write_run_header,
)
from switchnerf.train.schedule import lr_factor


@dataclass
class StepStats:
    """What one optimisation step measured."""

    loss: float
    psnr: float
    balance: float
    samples_per_ray: float
    load: list[float] = dc_field(default_factory=list)
    dropped: int = 0  # samples over an expert's capacity (zero expert features)
    skipped: bool = False


def prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber an existing run unless asked to resume or overwrite; ``overwrite``
    deletes only a switchnerf run (a folder with config.yaml and scene.json), never any
    other folder. Call it after every other check of the command: it may delete."""
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
            shutil.rmtree(run_dir)
            return
        raise SwitchNerfError(f"{run_dir}: run folder exists; pass --resume to continue it "
                              "or --overwrite to start again")
    if resume:
        raise SwitchNerfError(f"{run_dir}: nothing to resume (no run there)")


class Trainer:
    """Owns the model, optimiser, ray stream and run folder of one training run."""

    def __init__(self, cfg: Config, scene_path: Path, run_dir: Path, *, device="cpu",
                 resume: bool = False, store_dir: Path | None = None, progress: bool = True):
        self.cfg, self.run_dir, self.device = cfg, Path(run_dir), torch.device(device)
        self.scene_path = Path(scene_path)
        torch.manual_seed(cfg.train.seed)
        self.scene, self.cams = scene_and_cameras(scene_path)
        self.field, self.grid, self.box = build_model(cfg, self.scene, len(self.cams), device=self.device)
        self.optimizer = build_optimizer(cfg, self.field)
        self.step = 0
        self.best_psnr = -math.inf
        self.skipped_steps = 0
        self._stop_requested = False
        self.progress_enabled = progress
        self.stream = self._open_stream(store_dir)
        if resume:
            self._restore()
        else:
            write_run_header(self.run_dir, cfg, self.scene_path)

    # ------------------------------------------------------------------ setup
    def _open_stream(self, store_dir: Path | None):
        from switchnerf.scene.store import default_store_dir, ensure_store
        from switchnerf.scene.store_reader import RayStream
        from switchnerf.train.ray_store import training_store_options

        store_dir = store_dir or default_store_dir(self.scene)
        store = ensure_store(self.scene, store_dir, training_store_options(self.cfg, self.scene),
                             progress=self.progress_enabled)
        return RayStream(store, self.cams, batch_size=self.cfg.train.rays_per_step,
                         seed=self.cfg.train.seed)

    def state_dict(self) -> dict:
        return {"step": self.step, "field": self.field.state_dict(), "grid": self.grid.state_dict(),
                "optimizer": self.optimizer.state_dict(), "rng": torch.get_rng_state(),
                "stream": self.stream.state_dict(), "best_psnr": self.best_psnr,
                "skipped_steps": self.skipped_steps, "config": self.cfg.to_dict()}

    def _restore(self) -> None:
        ckpt = latest_checkpoint(self.run_dir)
        if ckpt is None:
            raise SwitchNerfError(f"{self.run_dir}: --resume given but no checkpoint to resume from")
        state = load_checkpoint(ckpt, map_location=self.device)
        saved = state.get("config")
        changed = (["(none saved)"] if not isinstance(saved, dict)
                   else config_differences(saved, self.cfg.to_dict()))
        if changed:
            raise SwitchNerfError(f"{ckpt}: config: {', '.join(changed[:3])} differ from the "
                                  "run's config.yaml; resume with the same config (only "
                                  f"{' and '.join(RESUME_MAY_CHANGE)} may change)")
        self.field.load_state_dict(state["field"])
        self.grid.load_state_dict(state["grid"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        self.stream.load_state_dict(state["stream"])
        self.step = int(state["step"])
        self.best_psnr = float(state["best_psnr"])
        self.skipped_steps = int(state["skipped_steps"])
        write_run_config(self.run_dir, self.cfg)  # a new max_steps or time budget

    # ------------------------------------------------------------------ one step
    def _set_lr(self) -> None:
        o, t = self.cfg.optim, self.cfg.train
        f = lr_factor(self.step, warmup_steps=o.warmup_steps, max_steps=t.max_steps,
                      final_factor=o.final_lr_factor)
        self.optimizer.param_groups[0]["lr"] = o.lr_tables * f
        self.optimizer.param_groups[1]["lr"] = o.lr_mlps * f

    def _update_grid(self) -> None:
        s = self.cfg.sampler
        if self.step % s.update_every != 0:
            return
        with torch.no_grad():
            self.grid.update(self.field.density, step=self.step, step_size=step_size(self.box, s),
                             decay=s.ema_decay, threshold=s.occupancy_threshold,
                             warmup_steps=s.warmup_steps)

    def train_step(self, batch) -> StepStats:
        """One optimisation step on a RayBatch; returns its statistics."""
        cfg = self.cfg
        self.field.train()
        self._update_grid()
        self._set_lr()
        batch = batch.to(self.device)
        autocast = self.device.type == "cuda" and cfg.train.mixed_precision
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=autocast):
            out = render_rays(self.field, self.grid, batch, self.box, cfg.sampler, stratified=True,
                              prune=cfg.sampler.prune_in_training)
        mse = torch.mean((out["rgb"].float() - batch.rgb) ** 2)
        n_exp = self.field.n_experts
        use_balance = cfg.model.routing.kind == "gate" and n_exp > 1
        bal = balance_loss(out["probs"], out["expert_id"]) if use_balance else mse.new_zeros(())
        loss = mse + cfg.model.routing.balance_weight * bal
        self.optimizer.zero_grad(set_to_none=True)
        stats = StepStats(loss=loss.item(), psnr=-10 * math.log10(max(mse.item(), 1e-10)),
                          balance=bal.item(),
                          samples_per_ray=out["expert_id"].shape[0] / max(len(batch), 1),
                          load=expert_load(out["expert_id"], n_exp).tolist(),
                          dropped=int((~out["kept"]).sum()))
        if not torch.isfinite(loss):
            self.skipped_steps += 1
            stats.skipped = True
        else:
            loss.backward()
            self.optimizer.step()
        self.step += 1
        return stats

    # ------------------------------------------------------------------ the loop
    def request_stop(self, *_args) -> None:
        self._stop_requested = True

    def train(self, max_steps: int | None = None, *, on_step=None) -> dict:
        """Train until ``max_steps`` (or the config's), the time budget, or a stop request.

        on_step(trainer, stats): optional callback after every step (viewer, tests).
        Returns a summary dict.
        """
        cfg = self.cfg.train
        max_steps = cfg.max_steps if max_steps is None else max_steps
        old_handlers = {s: signal.signal(s, self.request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        log = open(self.run_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115 - closed in finally
        start, rays_done = time.perf_counter(), 0
        last = None
        try:
            with TrainProgress(max_steps, self.step, enabled=self.progress_enabled) as bar:
                while self.step < max_steps and not self._stop_requested:
                    if cfg.time_budget_s is not None and time.perf_counter() - start > cfg.time_budget_s:
                        break
                    batch = next(self.stream)
                    last = self.train_step(batch)
                    rays_done += len(batch)
                    rays_per_s = rays_done / max(time.perf_counter() - start, 1e-9)
                    bar.update(self.step, last, rays_per_s)
                    if self.step % cfg.log_every == 0 or last.skipped:
                        log.write(json.dumps({"step": self.step, "time_s": time.perf_counter() - start,
                                              "loss": last.loss, "psnr": last.psnr,
                                              "balance": last.balance, "rays_per_s": rays_per_s,
                                              "samples_per_ray": last.samples_per_ray,
                                              "load": last.load, "dropped": last.dropped,
                                              "skipped": last.skipped}) + "\n")
                    if last.skipped:
                        bar.note(f"step {self.step}: non-finite loss, step skipped")
                    if on_step is not None:
                        on_step(self, last)
                    if cfg.eval_every > 0 and self.step % cfg.eval_every == 0:
                        self._periodic_eval(log, bar)
                    elif self.step % cfg.checkpoint_every == 0:
                        self.save()
            self.save()
        finally:
            log.close()
            for s, h in old_handlers.items():
                signal.signal(s, h)
        elapsed = time.perf_counter() - start
        return {"step": self.step, "elapsed_s": elapsed, "rays_per_s": rays_done / max(elapsed, 1e-9),
                "interrupted": self._stop_requested, "skipped_steps": self.skipped_steps,
                "last_train_psnr": None if last is None else last.psnr}

    def _periodic_eval(self, log, bar) -> None:
        n = len(self.scene.images("val"))
        if n == 0:
            self.save()
            return
        count = min(self.cfg.train.eval_images, n)
        picks = sorted({round(k * (n - 1) / max(count - 1, 1)) for k in range(count)})
        result = evaluate(self.field, self.grid, self.box, self.cfg, self.scene, indices=picks,
                          device=self.device)
        log.write(json.dumps({"step": self.step, "eval_psnr": result["psnr"],
                              "eval_ssim": result["ssim"], "images": picks}) + "\n")
        bar.note(f"step {self.step}: eval PSNR {result['psnr']:.2f} dB on {len(picks)} val images")
        is_best = result["psnr"] is not None and result["psnr"] > self.best_psnr
        if is_best:
            self.best_psnr = result["psnr"]
        self.save(is_best=is_best)

    def save(self, *, is_best: bool = False) -> Path:
        return save_checkpoint(self.run_dir, self.step, self.state_dict(),
                               keep_last=self.cfg.train.keep_last, is_best=is_best)

    def close(self) -> None:
        self.stream.close()
