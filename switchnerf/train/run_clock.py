"""A run's training clock: seconds over every resume, pausable, agreed between ranks."""

from __future__ import annotations

import time
from contextlib import contextmanager


class RunClock:
    """Training seconds of a run: ``before`` (earlier sessions, from the checkpoint) plus the
    wall time since :meth:`start`, less any time spent inside :meth:`paused`.

    ``agreed_s`` is the value every rank uses for the learning rate's time share: set by
    the trainer at each stop check (the mean over the ranks when distributed).

    >>> clock = RunClock(10.0)
    >>> clock.elapsed_s, clock.agreed_s
    (10.0, 10.0)
    """

    def __init__(self, before: float = 0.0):
        self.before = self.agreed_s = float(before)
        self._start: float | None = None

    def start(self) -> None:
        """Start counting (a ``train`` call begins)."""
        self._start = time.perf_counter()

    def stop(self) -> None:
        """Stop counting; the seconds so far join ``before`` (a ``train`` call ends)."""
        self.before, self._start = self.elapsed_s, None

    @property
    def elapsed_s(self) -> float:
        """Training seconds of the run so far, over every resume."""
        now = 0.0 if self._start is None else time.perf_counter() - self._start
        return self.before + now

    @contextmanager
    def paused(self):
        """Time spent inside is not training time."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self._start is not None:
                self._start += time.perf_counter() - t0
