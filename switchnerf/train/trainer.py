"""The training loop: stream rays, march, render, photometric + balance loss, Adam.

Reliability: checkpoints are atomic; Ctrl-C (SIGINT/SIGTERM) saves a checkpoint and exits
cleanly; resume restores model, grid, optimiser, schedule, the trainer's RNG and the ray
stream position, so N straight steps equal N/2 + resume + N/2; a non-finite loss skips
the step.

No global side effects: the trainer draws every random number of training (model
initialisation, stratified sample offsets, occupancy-grid updates) from its own seeded
generator and leaves the global RNG untouched; it never builds a ray store (see
``switchnerf.train.data``).
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from switchnerf.config import Config
from switchnerf.errors import SwitchNerfError
from switchnerf.moe.routing import balance_loss, expert_load
from switchnerf.train.builder import build_optimizer, build_renderer
from switchnerf.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from switchnerf.train.data import TrainingData
from switchnerf.train.evaluate import evaluate, uses_right_half_protocol
from switchnerf.train.progress import TrainProgress
from switchnerf.train.run import (
    RESUME_MAY_CHANGE,
    config_differences,
    is_run_dir,
    write_run_config,
    write_run_header,
)
from switchnerf.train.schedule import lr_factor


@dataclass(frozen=True)
class StepValues:
    """One step's statistics on the host (what the metrics log and the progress bar show)."""

    loss: float
    psnr: float
    balance: float
    samples_per_ray: float
    load: list[float]
    dropped: int  # samples over an expert's capacity (zero expert features)
    skipped: bool


@dataclass(frozen=True)
class StepStats:
    """What one optimisation step measured, left on the training device.

    Building it costs no host sync; :meth:`values` copies it to the host (once), which the
    loop does only for logged steps. loss, mse, balance: float []; expert_id: int64 [M],
    the expert of each kept sample; kept: bool [M] (False: dropped by the capacity limit);
    samples_per_ray: kept samples per ray (a host number); skipped: the loss was not finite.
    """

    loss: torch.Tensor
    mse: torch.Tensor
    balance: torch.Tensor
    expert_id: torch.Tensor
    kept: torch.Tensor
    n_experts: int
    samples_per_ray: float
    skipped: bool = False

    def values(self) -> StepValues:
        """The statistics as Python numbers (one device-to-host copy)."""
        load = expert_load(self.expert_id, self.n_experts)  # [E]
        dropped = (~self.kept).sum()
        head = torch.stack([self.loss.detach().double(), self.mse.detach().double(),
                            self.balance.detach().double(), dropped.double()])
        host = torch.cat([head, load.double()]).tolist()
        loss, mse, bal, drop = host[:4]
        return StepValues(loss=loss, psnr=-10 * math.log10(max(mse, 1e-10)), balance=bal,
                          samples_per_ray=self.samples_per_ray, load=host[4:],
                          dropped=int(drop), skipped=self.skipped)


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


class Trainer:
    """Owns the renderer (model), optimiser, RNG, ray stream and run folder of one run.

    Args:
        cfg: the run's config.
        data: the scene, camera table and opened ray store (``prepare_training_data``).
        run_dir: the run folder (``prepare_run_dir`` decides whether it may be used).
        device: where the model trains.
        resume: continue from the run's newest checkpoint.
        progress: show a progress bar.
    """

    def __init__(self, cfg: Config, data: TrainingData, run_dir: Path, *, device="cpu",
                 resume: bool = False, progress: bool = True):
        self.cfg, self.run_dir, self.device = cfg, Path(run_dir), torch.device(device)
        self.scene_path, self.scene, self.cams = Path(data.scene_path), data.scene, data.cameras
        # The model is initialised from the run's seed without touching the global RNG; the
        # trainer's generator then continues that stream (on CPU), so a run draws exactly
        # the numbers it drew when training seeded the global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(cfg.train.seed)
            self.renderer = build_renderer(cfg, self.scene, len(self.cams), device=self.device)
            after_init = torch.get_rng_state()
        self.generator = torch.Generator(device=self.device)
        if self.generator.device.type == "cpu":
            self.generator.set_state(after_init)
        else:
            self.generator.manual_seed(cfg.train.seed)
        self.optimizer = build_optimizer(cfg, self.renderer.field)
        self.step = 0
        self.best_psnr = -math.inf
        self.skipped_steps = 0
        self._stop_requested = False
        self.progress_enabled = progress
        self.stream = self._open_stream(data.store)
        if resume:
            self._restore()
        else:
            write_run_header(self.run_dir, cfg, self.scene_path)

    # ------------------------------------------------------------------ setup
    def _open_stream(self, store):
        from switchnerf.scene.store_reader import RayStream

        return RayStream(store, self.cams, batch_size=self.cfg.train.rays_per_step,
                         seed=self.cfg.train.seed)

    def state_dict(self) -> dict:
        r = self.renderer
        return {"step": self.step, "field": r.field.state_dict(), "grid": r.grid.state_dict(),
                "optimizer": self.optimizer.state_dict(), "rng": self.generator.get_state(),
                "rng_device": self.generator.device.type,
                "stream": self.stream.state_dict(), "best_psnr": self.best_psnr,
                "skipped_steps": self.skipped_steps, "config": self.cfg.to_dict()}

    def _restore_generator(self, state: dict) -> None:
        """The trainer's generator from a checkpoint (one written on another device type
        keeps the seeded generator)."""
        rng = state.get("rng")
        if rng is not None and state.get("rng_device", "cpu") == self.generator.device.type:
            self.generator.set_state(rng.cpu())

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
        self.renderer.field.load_state_dict(state["field"])
        self.renderer.grid.load_state_dict(state["grid"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._restore_generator(state)
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
        s, r = self.cfg.sampler, self.renderer
        if self.step % s.update_every != 0:
            return
        with torch.no_grad():
            r.grid.update(r.field.density, step=self.step, step_size=r.step_size,
                          decay=s.ema_decay, threshold=s.occupancy_threshold,
                          warmup_steps=s.warmup_steps, generator=self.generator)

    def train_step(self, batch) -> StepStats:
        """One optimisation step on a RayBatch; returns its statistics (on the device).

        One host sync: whether the loss is finite (a non-finite step is skipped).
        """
        cfg, renderer = self.cfg, self.renderer
        renderer.train()
        self._update_grid()
        self._set_lr()
        batch = batch.to(self.device)
        autocast = self.device.type == "cuda" and cfg.train.mixed_precision
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=autocast):
            out = renderer.render_rays(batch, stratified=True,
                                       prune=cfg.sampler.prune_in_training,
                                       generator=self.generator)
        samples = out.samples
        mse = torch.mean((out.rgb.float() - batch.rgb) ** 2)
        n_exp = renderer.n_experts
        use_balance = cfg.model.routing.kind == "gate" and n_exp > 1
        bal = (balance_loss(samples.probs, samples.expert_id) if use_balance
               else mse.new_zeros(()))
        loss = mse + cfg.model.routing.balance_weight * bal
        self.optimizer.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(loss))  # the step's one host sync
        stats = StepStats(loss=loss.detach(), mse=mse.detach(), balance=bal.detach(),
                          expert_id=samples.expert_id, kept=samples.kept, n_experts=n_exp,
                          samples_per_ray=samples.expert_id.shape[0] / max(len(batch), 1),
                          skipped=not finite)
        if finite:
            loss.backward()
            self.optimizer.step()
        else:
            self.skipped_steps += 1
        self.step += 1
        return stats

    # ------------------------------------------------------------------ the loop
    def request_stop(self, *_args) -> None:
        """Ask the loop to stop after the current step (it saves a checkpoint first). Also
        the SIGINT/SIGTERM handler while :meth:`train` runs."""
        self._stop_requested = True

    @property
    def stop_requested(self) -> bool:
        """Whether :meth:`request_stop` was called (or a stop signal arrived)."""
        return self._stop_requested

    def train(self, max_steps: int | None = None, *, on_step=None) -> dict:
        """Train until ``max_steps`` (or the config's), the time budget, or a stop request.

        on_step(trainer, stats): optional callback after every step (viewer, tests); it may
        call :meth:`request_stop`. Statistics reach the host only on logged steps (every
        ``log_every`` and skipped ones). Returns a summary dict.
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
                    logged = self.step % cfg.log_every == 0 or last.skipped
                    values = last.values() if logged else None
                    bar.update(self.step, rays_per_s, values)
                    if values is not None:
                        log.write(json.dumps({"step": self.step, "time_s": time.perf_counter() - start,
                                              "loss": values.loss, "psnr": values.psnr,
                                              "balance": values.balance, "rays_per_s": rays_per_s,
                                              "samples_per_ray": values.samples_per_ray,
                                              "load": values.load, "dropped": values.dropped,
                                              "skipped": values.skipped}) + "\n")
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
                "last_train_psnr": None if last is None else last.values().psnr}

    def _periodic_eval(self, log, bar) -> None:
        n = len(self.scene.images("val"))
        if n == 0:
            self.save()
            return
        count = min(self.cfg.train.eval_images, n)
        picks = sorted({round(k * (n - 1) / max(count - 1, 1)) for k in range(count)})
        result = evaluate(self.renderer, self.scene, indices=picks,
                          right_half=uses_right_half_protocol(self.scene, self.cfg))
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
