"""Learning-rate schedule: linear warmup, then exponential decay to a final factor."""

from __future__ import annotations

import math


def lr_factor(step: int, *, warmup_steps: int, max_steps: int, final_factor: float,
              time_fraction: float = 0.0) -> float:
    """Multiplier of the base learning rate at ``step``.

    Linear from 0.01 to 1 over ``warmup_steps``, then ``final_factor ** (progress)`` where
    progress goes from 0 (end of warmup) to 1 (``max_steps``), or is ``time_fraction`` (the
    share of a time budget spent) when that is larger: a run that the budget will stop
    before ``max_steps`` still ends at the final rate.

    >>> lr_factor(0, warmup_steps=0, max_steps=100, final_factor=0.1)
    1.0
    >>> round(lr_factor(100, warmup_steps=0, max_steps=100, final_factor=0.1), 6)
    0.1
    >>> round(lr_factor(10, warmup_steps=0, max_steps=100, final_factor=0.1,
    ...                 time_fraction=0.5), 6)  # half the budget spent, a tenth of the steps
    0.316228
    """
    if warmup_steps > 0 and step < warmup_steps:
        return 0.01 + 0.99 * step / warmup_steps
    progress = schedule_progress(step, warmup_steps=warmup_steps, max_steps=max_steps,
                                 time_fraction=time_fraction)
    return math.exp(progress * math.log(final_factor))


def schedule_progress(step: int, *, warmup_steps: int, max_steps: int,
                      time_fraction: float = 0.0) -> float:
    """How far the schedule has come, in [0, 1]: the share of the steps after warmup
    (``max_steps`` ends it), or ``time_fraction`` when that is larger.

    >>> schedule_progress(60, warmup_steps=10, max_steps=110)
    0.5
    >>> schedule_progress(5, warmup_steps=10, max_steps=110, time_fraction=0.25)
    0.25
    """
    span = max(max_steps - warmup_steps, 1)
    return min(max(max(step - warmup_steps, 0) / span, time_fraction), 1.0)
