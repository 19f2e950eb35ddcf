"""Sharing one compute device between the training loop and viewer renders.

The gate is a lock around the model. Renders hold it for one chunk at a time. While
training, the training thread holds it except inside the trainer's ``on_step`` callback,
where it lends the model to pending renders for ``render_share / (1 - render_share)``
times the duration of the step just taken (so renders get about ``render_share`` of the
wall clock while someone is waiting for an image, and none when nobody is), and where a
paused training waits with the lock released.

Whoever gives the lock up also gives up its OpenMP thread pool (``release_thread_pool``):
the GNU OpenMP runtime spins its workers only while the process's pooled threads do not
outnumber the cores, so one idle pool per thread that ever computed (main, each client's
session, training) would make every parallel region of the thread holding the model sleep
and wake through the kernel: renders ran 25-30 % slower on 2 cores.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
import time
from contextlib import contextmanager

__all__ = ["ComputeGate", "GateClosed", "release_thread_pool"]


class GateClosed(RuntimeError):
    """The viewer stopped: renders may no longer take the model."""


@functools.cache
def _openmp_runtime():
    """The GNU OpenMP runtime already loaded in this process (torch's), or None."""
    no_load = getattr(os, "RTLD_NOLOAD", None)
    if no_load is None:
        return None  # no way to look it up without loading a second copy
    try:
        lib = ctypes.CDLL("libgomp.so.1", mode=no_load | os.RTLD_LAZY)
        pause = lib.omp_pause_resource_all
    except (OSError, AttributeError):
        return None
    pause.argtypes, pause.restype = [ctypes.c_int], ctypes.c_int
    return pause


def release_thread_pool() -> bool:
    """Stop the calling thread's idle OpenMP worker threads (``omp_pause_resource_all
    (omp_pause_soft)``); its next parallel region starts fresh ones (tens of microseconds).
    Returns whether a runtime was found and agreed; a no-op elsewhere."""
    pause = _openmp_runtime()
    return pause is not None and pause(1) == 0


class ComputeGate:
    """The model lock and the render / train time split.

    Args:
        training: whether a training loop shares the model (it must call
            :meth:`begin_training` before its first step and :meth:`yield_to_renders`
            from its ``on_step`` callback).
        render_share: initial share of time for renders in [0, 0.95].
    """

    def __init__(self, *, training: bool = False, render_share: float = 0.5) -> None:
        self.training = training
        self._training_active = False  # between begin_training and end_training
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._pending = 0
        self._closed = False
        self._paused = False
        self.render_share = render_share

    # ---------------------------------------------------------------------- settings
    @property
    def render_share(self) -> float:
        return self._share

    @render_share.setter
    def render_share(self, value: float) -> None:
        self._share = min(max(float(value), 0.0), 0.95)

    @property
    def paused(self) -> bool:
        return self._paused

    def set_paused(self, paused: bool) -> None:
        with self._cond:
            self._paused = bool(paused)
            self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiter; renders stop taking the lock (``chunk`` raises)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def contended(self) -> bool:
        """Whether someone besides one render wants the model (training that is not
        paused, or several renders): renders then take it in small chunks."""
        return (self._training_active and not self._paused) or self._pending > 1

    # ---------------------------------------------------------------------- renders
    @contextmanager
    def wanting(self):
        """Mark a render as pending for the duration of the block (training lends time
        only while some render is pending)."""
        with self._cond:
            self._pending += 1
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._pending -= 1
                self._cond.notify_all()

    @contextmanager
    def chunk(self):
        """Hold the model for one render chunk. Raises :class:`GateClosed` once closed."""
        while not self._lock.acquire(timeout=0.05):
            if self._closed:
                raise GateClosed("viewer closed")
        try:
            yield
        finally:
            release_thread_pool()
            self._lock.release()

    @contextmanager
    def use(self):
        """``wanting`` and ``chunk`` together: one-off model work (overlays, video frames)
        that training makes room for."""
        with self.wanting(), self.chunk():
            yield

    # ---------------------------------------------------------------------- training
    def begin_training(self) -> None:
        """Called by the training thread before its first step: it now holds the model."""
        self._lock.acquire()
        self._training_active = True

    def end_training(self) -> None:
        """Called by the training thread when training ended: renders run freely."""
        self._training_active = False
        release_thread_pool()
        if self._lock.locked():
            self._lock.release()

    def yield_to_renders(self, step_seconds: float, *, should_stop=lambda: False) -> float:
        """From the training thread, between steps: lend the model to pending renders for
        ``step_seconds * share / (1 - share)`` seconds (returning early when none is
        pending), and keep it lent while paused (until resumed, closed or ``should_stop()``).

        Returns the seconds spent away from training.
        """
        t0 = time.perf_counter()
        share = self._share
        budget = step_seconds * share / (1.0 - share) if share > 0 else 0.0
        if not self._paused and (budget <= 0 or self._pending == 0):
            return 0.0
        release_thread_pool()
        self._lock.release()
        try:
            deadline = t0 + budget
            with self._cond:
                while not self._closed:
                    if self._paused and not should_stop():
                        self._cond.wait(0.1)
                        continue
                    left = deadline - time.perf_counter()
                    if left <= 0 or self._pending == 0:
                        break
                    self._cond.wait(min(left, 0.05))
        finally:
            self._lock.acquire()
        return time.perf_counter() - t0
