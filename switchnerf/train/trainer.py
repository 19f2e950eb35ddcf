"""The training loop: stream rays, march, render, photometric + balance loss, Adam.

Reliability: checkpoints are atomic; Ctrl-C (SIGINT/SIGTERM) saves a checkpoint and exits
cleanly; resume restores model, grid, optimiser, schedule, the trainer's RNG and the ray
stream position, the training time so far and the log (``metrics.jsonl`` is cut back to
the checkpoint's step), so N straight steps equal N/2 + resume + N/2 and the log has each
step once; a newer checkpoint that does not load is set aside and the previous one used.

Non-finite steps: a step whose loss or dense-parameter gradients are not finite is skipped
(the weights stay as they were); ``train.max_skipped_steps`` such steps in a row stop the
run with an error, and a checkpoint is never written from non-finite weights.

Many processes (torchrun): the trainer takes a
:class:`~switchnerf.train.distributed.DistributedContext`. Every rank reads the same global
batch of ``train.rays_per_step`` rays and trains on its ``rank_slice``; losses are each
rank's share of the global loss and dense gradients are summed, so a step equals one
process's step on the global batch. Expert tables are sliced over the ranks when the field
is expert parallel. Rank 0 alone writes the run folder; checkpoints are single-process
shaped (gathered on rank 0), so any world size resumes them and every command reads them.

No global side effects: the trainer draws every random number of training (model
initialisation, stratified sample offsets, occupancy-grid updates) from its own seeded
generator and leaves the global RNG untouched; it never builds a ray store (see
``switchnerf.train.data``).
"""

from __future__ import annotations

import math
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from switchnerf.config import Config
from switchnerf.errors import SwitchNerfError
from switchnerf.moe.expert_parallel import dense_parameters
from switchnerf.moe.routing import balance_loss
from switchnerf.ops import zeroed_grads
from switchnerf.train.builder import build_optimizer, build_renderer
from switchnerf.train.checkpoint import latest_checkpoint, save_checkpoint, sweep_temporary_files
from switchnerf.train.data import TrainingData
from switchnerf.train.dist_state import (
    gather_training_state,
    gathered_renderer,
    slice_training_state,
)
from switchnerf.train.distributed import (
    DistributedContext,
    global_balance,
    global_mse,
    rank_slice,
    write_world_record,
)
from switchnerf.train.evaluate import eval_indices, evaluate, uses_right_half_protocol
from switchnerf.train.metrics_log import LOG_FILE, MetricsLog, truncate_log
from switchnerf.train.progress import TrainProgress
from switchnerf.train.routing_log import RoutingLog
from switchnerf.train.run import resume_state, write_run_config, write_run_header
from switchnerf.train.run_clock import RunClock
from switchnerf.train.schedule import lr_factor, schedule_progress
from switchnerf.train.step_stats import StepStats, StepValues
from switchnerf.train.traffic import ExchangeTraffic


class Trainer:
    """Owns the renderer (model), optimiser, RNG, ray stream and run folder of one run.

    Args:
        cfg: the run's config.
        data: the scene, camera table and opened ray store (``prepare_training_data``).
        run_dir: the run folder (``run.prepare_run_dir`` decides whether it may be used).
        device: where the model trains.
        resume: continue from the run's newest checkpoint.
        progress: show a progress bar (rank 0 only).
        ctx: this process's place among the ranks (None: one process on ``device``; else
            ``ctx.device`` is used).
    """

    def __init__(self, cfg: Config, data: TrainingData, run_dir: Path, *, device="cpu",
                 resume: bool = False, progress: bool = True,
                 ctx: DistributedContext | None = None):
        self.ctx = DistributedContext.single(device) if ctx is None else ctx
        device = self.ctx.device
        self.cfg, self.run_dir, self.device = cfg, Path(run_dir), torch.device(device)
        self.scene_path, self.scene, self.cams = Path(data.scene_path), data.scene, data.cameras
        # The model is initialised from the run's seed without touching the global RNG; the
        # trainer's generator then continues that stream (on CPU), so a run draws exactly
        # the numbers it drew when training seeded the global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(cfg.train.seed)
            self.renderer = build_renderer(cfg, self.scene, len(self.cams), device=self.device)
            after_init = torch.get_rng_state()
        # every rank built the same full field from the seed; keep this rank's experts
        self.expert_parallel = (self.ctx.world_size > 1 and cfg.distributed.expert_parallel
                                and self.renderer.n_experts > 1)
        if self.expert_parallel:
            self.renderer.field.use_expert_parallel(rank=self.ctx.rank,
                                                    world_size=self.ctx.world_size,
                                                    group=self.ctx.group)
        self.generator = torch.Generator(device=self.device)
        if self.generator.device.type == "cpu":
            self.generator.set_state(after_init)
        else:
            self.generator.manual_seed(cfg.train.seed)
        self.optimizer = build_optimizer(cfg, self.renderer.field)
        self.step = 0
        self.best_psnr = -math.inf
        self.skipped_steps = 0
        self.consecutive_skips = 0
        # training seconds over every resume (wall clock while ``train`` runs, eval and
        # checkpoints included); ``clock.paused()`` keeps a caller's own evaluation out
        self.clock = RunClock()
        tables = {id(p) for p in self.renderer.field.table_parameters()}
        self._checked_params = [p for p in self.renderer.field.parameters()
                                if id(p) not in tables]
        self.routing_log = RoutingLog(seed=cfg.train.seed)
        self._stop_requested = False
        self.progress_enabled = progress and self.ctx.is_main
        self.stream = self._open_stream(data.store)
        if self.ctx.is_main:
            sweep_temporary_files(self.run_dir)  # left by writes a kill interrupted
        if resume:
            self._restore()
        elif self.ctx.is_main:
            write_run_header(self.run_dir, cfg, self.scene_path,
                             fingerprint=getattr(data, "fingerprint", None))
        if self.ctx.is_distributed:
            if self.ctx.is_main:
                write_world_record(self.run_dir, self.ctx.world_size,
                                   expert_parallel=self.expert_parallel)
            self._wait_for_main()

    def _wait_for_main(self) -> None:
        """Every rank waits here until rank 0 is done with work of its own (writing the
        run folder, eval), up to ``distributed.wait_timeout_s``."""
        self.ctx.barrier(timeout_s=self.cfg.distributed.wait_timeout_s)

    # ------------------------------------------------------------------ setup
    def _open_stream(self, store):
        """The run's ray stream; every rank reads the whole global batch (the store's
        rank views are shards, not slices of a batch) and trains on its slice."""
        from switchnerf.scene.store_reader import RayStream

        return RayStream(store, self.cams, batch_size=self.cfg.train.rays_per_step,
                         seed=self.cfg.train.seed)

    def state_dict(self) -> dict | None:
        """The trainer state one process would hold. Distributed with expert parallelism,
        a collective that returns it on rank 0 and None elsewhere."""
        return gather_training_state(self.renderer.field, self._local_state())

    def _local_state(self) -> dict:
        r = self.renderer
        return {"step": self.step, "field": r.field.state_dict(), "grid": r.grid.state_dict(),
                "optimizer": self.optimizer.state_dict(), "rng": self.generator.get_state(),
                "rng_device": self.generator.device.type,
                "stream": self.stream.state_dict(), "best_psnr": self.best_psnr,
                "skipped_steps": self.skipped_steps, "elapsed_s": self.clock.elapsed_s,
                "config": self.cfg.to_dict()}

    def _restore_generator(self, state: dict) -> None:
        """The trainer's generator from a checkpoint (one written on another device type
        keeps the seeded generator)."""
        rng = state.get("rng")
        if rng is not None and state.get("rng_device", "cpu") == self.generator.device.type:
            self.generator.set_state(rng.cpu())

    def _restore(self) -> None:
        state = resume_state(self.run_dir, self.cfg, self.ctx, self.device)
        state = slice_training_state(self.renderer.field, state)
        self.renderer.field.load_state_dict(state["field"])
        self.renderer.grid.load_state_dict(state["grid"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._restore_generator(state)
        self.stream.load_state_dict(state["stream"])
        self.step = int(state["step"])
        self.best_psnr = float(state["best_psnr"])
        self.skipped_steps = int(state["skipped_steps"])
        self.clock = RunClock(state.get("elapsed_s", 0.0))
        if self.ctx.is_main:
            write_run_config(self.run_dir, self.cfg)  # a new max_steps or time budget
            truncate_log(self.run_dir / LOG_FILE, self.step)  # these steps are trained again

    # ------------------------------------------------------------------ one step
    def _set_lr(self) -> None:
        o, t = self.cfg.optim, self.cfg.train
        spent = (self.clock.agreed_s / t.time_budget_s
                 if o.decay_with_time and t.time_budget_s is not None else 0.0)
        f = lr_factor(self.step, warmup_steps=o.warmup_steps, max_steps=t.max_steps,
                      final_factor=o.final_lr_factor, time_fraction=spent)
        self.optimizer.param_groups[0]["lr"] = o.lr_tables * f
        self.optimizer.param_groups[1]["lr"] = o.lr_mlps * f
        freeze_after = self.cfg.model.routing.gate_freeze_after
        if freeze_after is not None:
            progress = schedule_progress(self.step, warmup_steps=o.warmup_steps,
                                         max_steps=t.max_steps, time_fraction=spent)
            self.renderer.field.set_gate_learning(progress < freeze_after)

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

        One host sync: whether the loss and the gradients of the dense parameters (MLPs,
        encodings other than the hash tables) are finite; if not, the step is skipped. A
        non-finite table gradient reaches the table through the first layer of an MLP,
        whose gradient is then non-finite too, so the tables need no pass of their own.
        Distributed: ``batch`` is the global batch; this rank trains on its ``rank_slice``
        with the stratified offsets one process would draw for those rays, its loss is its
        share of the global loss and the dense gradients are summed over the ranks. The
        global loss decides a skip on every rank alike.
        """
        cfg, renderer, ctx = self.cfg, self.renderer, self.ctx
        renderer.train()
        self._update_grid()
        self._set_lr()
        n_global = len(batch)
        if ctx.is_distributed:
            batch = batch[rank_slice(n_global, ctx.rank, ctx.world_size)]
        batch = batch.to(self.device)
        autocast = self.device.type == "cuda" and cfg.train.mixed_precision
        with (torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                             enabled=autocast),
              self._offsets_of_this_slice(n_global)):
            out = renderer.render_rays(batch, stratified=True,
                                       prune=cfg.sampler.prune_in_training,
                                       generator=self.generator)
        samples = out.samples
        n_exp = renderer.n_experts
        use_balance = cfg.model.routing.kind == "gate" and n_exp > 1
        if ctx.is_distributed:
            mse, bal, loss, objective = self._global_loss(out.rgb, batch.rgb, samples,
                                                          use_balance)
        else:
            mse = torch.mean((out.rgb.float() - batch.rgb) ** 2)
            bal = (balance_loss(samples.probs, samples.expert_id) if use_balance
                   else mse.new_zeros(()))
            loss = objective = mse + cfg.model.routing.balance_weight * bal
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()  # with expert parallelism a collective: every rank runs it
        if ctx.is_distributed:
            ctx.all_reduce_gradients(dense_parameters(renderer.field), op="sum")
        finite = self._finite(loss)  # the step's one host sync (global: all agree)
        stats = StepStats(loss=loss.detach(), mse=mse.detach(), balance=bal.detach(),
                          expert_id=samples.expert_id, kept=samples.kept, n_experts=n_exp,
                          samples_per_ray=samples.expert_id.shape[0] / max(len(batch), 1),
                          skipped=not finite, ctx=ctx, n_rays=len(batch))
        if finite:
            self.optimizer.step()
            self.consecutive_skips = 0
        else:
            self.skipped_steps += 1
            self.consecutive_skips += 1
        self.step += 1
        return stats

    def _finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss and the dense parameters' gradients are all finite (the step's
        one host sync; distributed, a non-finite value on any rank skips the step on all)."""
        grads = [p.grad for p in self._checked_params if p.grad is not None]
        return self._all_finite([loss.detach(), *grads])

    def _all_finite(self, tensors: list[torch.Tensor]) -> bool:
        """Whether every value of ``tensors`` is finite on every rank (one fused norm per
        tensor list; NaN or inf anywhere makes its norm non-finite; one host sync)."""
        ok = torch.isfinite(torch.stack(torch._foreach_norm(tensors))).all()
        if self.ctx.is_distributed:
            return bool(self.ctx.all_reduce_sum((~ok).float().reshape(1)).item() == 0)
        return bool(ok)

    def _global_loss(self, rgb, target, samples, use_balance: bool):
        """Global-batch mse, balance and loss values (no gradient), and this rank's share
        of the loss (with gradient; the shares sum over ranks to the loss)."""
        terms = global_mse(self.ctx, rgb, target)
        if use_balance:
            b = global_balance(self.ctx, samples.probs, samples.expert_id)
            bal, bal_share = b.value, b.share
        else:
            bal = bal_share = terms.value.new_zeros(())
        w = self.cfg.model.routing.balance_weight
        return terms.value, bal, terms.value + w * bal, terms.share + w * bal_share

    @contextmanager
    def _offsets_of_this_slice(self, n_global: int):
        """Distributed: the stratified offsets drawn inside are those one process draws for
        this rank's rays (on the CPU generator, draws are sequential: skip the earlier
        ranks' rays), and afterwards the generator stands where one process's would after
        ``n_global`` offsets, identical on every rank (the occupancy updates match)."""
        ctx, g = self.ctx, self.generator
        if not ctx.is_distributed:
            yield
            return
        start = g.get_state()
        skip = rank_slice(n_global, ctx.rank, ctx.world_size).start
        torch.rand(skip, generator=g, device=g.device)
        try:
            yield
        finally:
            g.set_state(start)
            torch.rand(n_global, generator=g, device=g.device)

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
        ``log_every``, skipped ones and the last). Returns a summary dict (``elapsed_s``:
        this call's seconds; ``total_elapsed_s``: the run's, over every resume). The time
        budget counts the run's training time over every resume. Distributed: the ranks
        agree every step on whether to stop (a signal or the time budget on any rank
        stops all of them after the same step).

        Raises SwitchNerfError after ``train.max_skipped_steps`` non-finite steps in a row
        (the newest checkpoint holds the last good weights).
        """
        cfg = self.cfg.train
        max_steps = cfg.max_steps if max_steps is None else max_steps
        old_handlers = {s: signal.signal(s, self.request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        log = MetricsLog(self.run_dir / LOG_FILE if self.ctx.is_main else None)
        self.clock.start()
        start = time.perf_counter()
        rays_done, last, values = 0, None, None
        traffic = ExchangeTraffic(self)
        try:
            with TrainProgress(max_steps, self.step, enabled=self.progress_enabled) as bar:
                while self.step < max_steps and not self._should_stop():
                    batch = next(self.stream)
                    last = self.train_step(batch)
                    traffic.step_done()
                    rays_done += len(batch)
                    rays_per_s = rays_done / max(time.perf_counter() - start, 1e-9)
                    values = None
                    if self.step % cfg.log_every == 0 or last.skipped:
                        values = self._log_step(log, last, rays_per_s, traffic)
                    bar.update(self.step, rays_per_s, values)
                    if last.skipped:
                        bar.note(f"step {self.step}: non-finite loss or gradient, step skipped")
                        self._check_skips()
                    if on_step is not None:
                        on_step(self, last)
                    if cfg.eval_every > 0 and self.step % cfg.eval_every == 0:
                        self._periodic_eval(log, bar)
                    elif self.step % cfg.checkpoint_every == 0:
                        self.save()
                if last is not None and values is None:  # the last step is logged too
                    values = self._log_step(log, last,
                                            rays_done / max(time.perf_counter() - start, 1e-9),
                                            traffic)
            self.save()
        finally:
            log.close()
            self.clock.stop()
            for s, h in old_handlers.items():
                signal.signal(s, h)
        elapsed = time.perf_counter() - start
        return {"step": self.step, "elapsed_s": elapsed, "total_elapsed_s": self.clock.before,
                "rays_per_s": rays_done / max(elapsed, 1e-9),
                "interrupted": self._stop_requested, "skipped_steps": self.skipped_steps,
                "last_train_psnr": None if values is None else values.psnr}

    def _log_step(self, log: MetricsLog, last: StepStats, rays_per_s: float, traffic
                  ) -> StepValues:
        """A training record of the step just taken (the statistics' host copy: a
        collective when distributed, so every rank calls it for the same steps)."""
        values = last.values()
        extra = traffic.per_step()
        if log.enabled:
            extra["routing"] = self.routing_log.measure(self.renderer, self.step)
        log.write({"step": self.step, "time_s": self.clock.elapsed_s, "loss": values.loss,
                   "psnr": values.psnr, "balance": values.balance, "rays_per_s": rays_per_s,
                   "samples_per_ray": values.samples_per_ray, "load": values.load,
                   "dropped": values.dropped, "skipped": values.skipped, **extra})
        return values

    def _check_skips(self) -> None:
        """Stop the run once ``train.max_skipped_steps`` steps in a row were skipped."""
        limit = self.cfg.train.max_skipped_steps
        if self.consecutive_skips < limit:
            return
        good = latest_checkpoint(self.run_dir)
        where = f"the last good weights are in {good}" if good else "no checkpoint was written"
        raise SwitchNerfError(
            f"{self.run_dir}: train.max_skipped_steps: {limit} steps in a row (up to step "
            f"{self.step}) had a non-finite loss or gradient; {where}. Lower the learning "
            "rates (optim.lr_tables, optim.lr_mlps) or check the dataset for bad poses or "
            "pixels")

    def _should_stop(self) -> bool:
        """A stop request or the time budget (the run's training time over every resume);
        distributed, any rank's (one all-reduce)."""
        budget = self.cfg.train.time_budget_s
        elapsed = self.clock.elapsed_s
        over = budget is not None and elapsed > budget
        if not self.ctx.is_distributed:
            self.clock.agreed_s = elapsed
            return self._stop_requested or over
        flags = self.ctx.all_reduce_sum(torch.tensor(
            [float(self._stop_requested), float(over), elapsed], dtype=torch.float64,
            device=self.device))
        asked, over, elapsed_sum = flags.tolist()
        self.clock.agreed_s = elapsed_sum / self.ctx.world_size  # one value on every rank
        if asked > 0:
            self._stop_requested = True
        return asked > 0 or over > 0

    def _periodic_eval(self, log, bar) -> None:
        n = len(self.scene.images("val"))
        if n == 0:
            self.save()
            return
        picks = eval_indices(n, self.cfg.train.eval_images)
        renderer = self._full_renderer()
        psnr = None
        if self.ctx.is_main:
            result = evaluate(renderer, self.scene, indices=picks,
                              right_half=uses_right_half_protocol(self.scene, self.cfg))
            log.write({"step": self.step, "eval_psnr": result["psnr"],
                       "eval_ssim": result["ssim"], "images": picks})
            bar.note(f"step {self.step}: eval PSNR {result['psnr']:.2f} dB on {len(picks)} "
                     "val images")
            psnr = result["psnr"]
        if self.ctx.is_distributed:
            self._wait_for_main()  # the others wait for rank 0's eval
            psnr = self.ctx.broadcast_object(psnr)
        is_best = psnr is not None and psnr > self.best_psnr
        if is_best:
            self.best_psnr = psnr
        self.save(is_best=is_best)

    def _full_renderer(self):
        """A renderer of the whole field for rank 0 alone (eval): the trainer's own, or with
        expert parallelism one built from the gathered tables (a collective; None on the
        other ranks)."""
        if not self.expert_parallel:
            return self.renderer if self.ctx.is_main else None
        return gathered_renderer(self.renderer, lambda: build_renderer(
            self.cfg, self.scene, len(self.cams), device=self.device))

    def save(self, *, is_best: bool = False) -> Path | None:
        """Write a checkpoint (rank 0; a collective when distributed). Returns its path on
        rank 0, None elsewhere. Non-finite weights are never saved (a SwitchNerfError: the
        previous checkpoints stay the last good ones)."""
        self._check_weights_finite()
        state = self.state_dict()
        path = None
        if self.ctx.is_main:
            path = save_checkpoint(self.run_dir, self.step, state,
                                   keep_last=self.cfg.train.keep_last, is_best=is_best)
        if self.ctx.is_distributed:
            self._wait_for_main()
        return path

    def _check_weights_finite(self) -> None:
        """Raise unless every weight of the field (on every rank) is finite."""
        if not self._all_finite([p.detach() for p in self.renderer.field.parameters()]):
            raise SwitchNerfError(f"{self.run_dir}: the weights became non-finite by step "
                                  f"{self.step}; no checkpoint written (the previous ones "
                                  "hold the last good weights)")

    def close(self) -> None:
        """Stop the ray stream and free the recycled table gradients (the next run's
        first backward allocates its own)."""
        self.stream.close()
        zeroed_grads.clear()
