"""The lazy Adam step of a hash table: the native CPU op and its pure-torch twin.

Dense Adam (no weight decay, no amsgrad) moves every row of a table at every step t,
including rows whose gradient is zero (their moments decay, m is not zero)::

    m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
    p <- p - step_size[t] * m / (sqrt(v) / bc2_sqrt[t] + eps)
    step_size[t] = lr_t / (1 - b1^t),   bc2_sqrt[t] = sqrt(1 - b2^t)

The lazy step visits only rows with a non-zero gradient. ``last`` [R] holds the step each
row is up to date with; a row visited at step t first replays its skipped steps
``last + 1 .. t - 1`` with g = 0 (each with that step's step_size and bc2_sqrt, from the
history arrays), then takes step t. ``grad=None`` flushes: every row is brought up to step
t the same way (no step t). Exact to float32 rounding, except that only the first
``max_replay`` skipped steps of a row replay their parameter update (the moments of all
skipped steps decay exactly): the dropped updates sum to at most ``r^K / (1 - r)`` times
the largest single-step update, r = b1 / sqrt(b2), K = max_replay; :func:`replay_limit`
picks K so that this is below float32 resolution.

History arrays: ``step_size`` and ``bc2_sqrt`` float64 [K], entry i for step base + 1 + i.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from switchnerf.ops import load_native

__all__ = ["adam_sparse_step", "adam_sparse_step_torch", "replay_limit"]


def replay_limit(beta1: float, beta2: float, tol: float = 2.0 ** -24) -> int:
    """Smallest K with ``r^K / (1 - r) <= tol`` for r = beta1 / sqrt(beta2) (the dropped
    updates of a long-skipped row below ``tol`` times one step's update); 1 << 20 when
    r >= 1 (no bound: replay everything a run can skip).

    >>> replay_limit(0.9, 0.99)
    190
    """
    r = beta1 / math.sqrt(beta2)
    if r >= 1.0:
        return 1 << 20
    if r <= 0.0:
        return 1
    return max(1, math.ceil(math.log(tol * (1.0 - r)) / math.log(r)))


def adam_sparse_step(param: Tensor, grad: Tensor | None, exp_avg: Tensor, exp_avg_sq: Tensor,
                     last: Tensor, step_size: Tensor, bc2_sqrt: Tensor, *, base: int, step: int,
                     beta1: float, beta2: float, eps: float, max_replay: int) -> int:
    """The native lazy Adam step (in place on param, exp_avg, exp_avg_sq, last).

    param, grad, exp_avg, exp_avg_sq: float32 [R, F] CPU, contiguous (grad None: flush);
    last: int64 [R]; step_size, bc2_sqrt: float64 [K] for steps base + 1 .. base + K;
    step: the current step t (base < t <= base + K). Returns the number of rows updated.
    """
    return int(load_native().adam_sparse_step(
        param, grad, exp_avg, exp_avg_sq, last, step_size, bc2_sqrt, int(base), int(step),
        float(beta1), float(beta2), float(eps), int(max_replay)))


def adam_sparse_step_torch(param: Tensor, grad: Tensor | None, exp_avg: Tensor,
                           exp_avg_sq: Tensor, last: Tensor, step_size: Tensor,
                           bc2_sqrt: Tensor, *, base: int, step: int, beta1: float,
                           beta2: float, eps: float, max_replay: int) -> int:
    """Pure-torch twin of :func:`adam_sparse_step` (same arguments, same result to float32
    rounding; the test oracle). Any device."""
    if grad is None:
        rows = torch.nonzero(last < step).flatten()
        upto = step
    else:
        rows = torch.nonzero((grad != 0).any(dim=1)).flatten()
        upto = step - 1
    if rows.numel() == 0:
        return 0
    if int(last[rows].min()) < base:
        raise ValueError(f"adam_sparse_step: a row was last updated before the history "
                         f"starts (step {base + 1})")
    p, m, v = param[rows], exp_avg[rows], exp_avg_sq[rows]  # [U, F]
    k = upto - last[rows]  # [U] skipped steps
    moving = (m != 0).any(dim=1)
    n = torch.where(moving, k.clamp(max=max_replay), torch.zeros_like(k)).clamp(min=0)
    start = last[rows] + 1
    for j in range(int(n.max()) if n.numel() else 0):
        act = (j < n)[:, None]  # [U, 1]
        s = (start + j).clamp(max=base + step_size.numel()) - base - 1
        ss = step_size[s].to(p.dtype)[:, None]
        bc = bc2_sqrt[s].to(p.dtype)[:, None]
        m_new = beta1 * m
        v_new = beta2 * v
        p_new = p - ss * (m_new / (v_new.sqrt() / bc + eps))
        m, v, p = torch.where(act, m_new, m), torch.where(act, v_new, v), torch.where(act, p_new, p)
    rest = (k - n).clamp(min=0).to(torch.float64)[:, None]
    m = m * torch.pow(torch.tensor(beta1, dtype=torch.float64), rest).to(m.dtype)
    v = v * torch.pow(torch.tensor(beta2, dtype=torch.float64), rest).to(v.dtype)
    if grad is not None:
        g = grad[rows]
        i = step - base - 1
        ss, bc = float(step_size[i]), float(bc2_sqrt[i])
        m = beta1 * m + (1.0 - beta1) * g
        v = beta2 * v + (1.0 - beta2) * (g * g)
        p = p - ss * (m / (v.sqrt() / bc + eps))
    param[rows], exp_avg[rows], exp_avg_sq[rows] = p, m, v
    last[rows] = step
    return int(rows.numel())
