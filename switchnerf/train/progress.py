"""Training progress: a rich progress bar on a terminal, periodic plain lines otherwise."""

from __future__ import annotations

import sys
import time


class TrainProgress:
    """Shows step, rays/s, loss, train PSNR and expert load."""

    def __init__(self, total: int, start: int, *, enabled: bool = True, every_s: float = 10.0):
        self.total, self.enabled, self.every_s = total, enabled, every_s
        self._bar = None
        self._task = None
        self._last_print = 0.0
        self._start = start
        self._values = None  # the statistics of the last logged step
        self._interactive = enabled and sys.stderr.isatty()

    def __enter__(self):
        if self._interactive:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                 transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task("train", total=self.total, completed=self._start, info="")
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)

    @staticmethod
    def _info(values, rays_per_s: float) -> str:
        text = f"{rays_per_s / 1000:.1f}k rays/s"
        if values is None:
            return text
        load = " ".join(f"{100 * v:.0f}" for v in values.load) if len(values.load) > 1 else "-"
        return (f"{text}  loss {values.loss:.4f}  psnr {values.psnr:.2f}  "
                f"spr {values.samples_per_ray:.0f}  load% {load}")

    def update(self, step: int, rays_per_s: float, values=None) -> None:
        """Advance to ``step``; ``values`` (the step's ``StepValues``, given on logged steps
        only) refreshes the statistics shown, which otherwise stay those last given."""
        if not self.enabled:
            return
        if values is not None:
            self._values = values
        info = self._info(self._values, rays_per_s)
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
            return
        now = time.monotonic()
        if now - self._last_print >= self.every_s or step == self.total:
            self._last_print = now
            print(f"step {step}/{self.total}  {info}", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            print(text, file=sys.stderr, flush=True)
