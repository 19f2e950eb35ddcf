"""Unit quaternions for smooth camera rotations: conversion, slerp and squad.

Quaternions are float64 numpy arrays [..., 4] in (w, x, y, z) order, unit length, and
represent rotation matrices R [..., 3, 3] acting on column vectors (``R @ v``). For a
camera, R is the c2w rotation (columns: the camera axes in the world frame).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "align_signs",
    "from_matrix",
    "qconj",
    "qexp",
    "qlog",
    "qmul",
    "slerp",
    "squad",
    "squad_controls",
    "to_matrix",
]


def qmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b of [..., 4] quaternions (rotation b first, then a)."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz,
                     aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw], -1)


def qconj(q: np.ndarray) -> np.ndarray:
    """Conjugate (the inverse of a unit quaternion), [..., 4]."""
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def qlog(q: np.ndarray) -> np.ndarray:
    """Logarithm of unit quaternions [..., 4] -> pure quaternions [..., 4] (w = 0)."""
    v = q[..., 1:]
    s = np.linalg.norm(v, axis=-1, keepdims=True)
    angle = np.arctan2(s, q[..., :1])
    scale = np.where(s > 1e-12, angle / np.maximum(s, 1e-300), 1.0)
    return np.concatenate([np.zeros_like(s), v * scale], -1)


def qexp(p: np.ndarray) -> np.ndarray:
    """Exponential of pure quaternions [..., 4] (w ignored) -> unit quaternions [..., 4]."""
    v = p[..., 1:]
    a = np.linalg.norm(v, axis=-1, keepdims=True)
    scale = np.where(a > 1e-12, np.sin(a) / np.maximum(a, 1e-300), 1.0)
    return np.concatenate([np.cos(a), v * scale], -1)


def from_matrix(r: np.ndarray) -> np.ndarray:
    """Rotation matrices [..., 3, 3] -> unit quaternions [..., 4] with w >= 0.

    Uses the largest of the four diagonal combinations for stability. The input is
    orthonormalised first (nearest rotation by SVD), so slightly noisy poses are accepted.

    >>> np.allclose(to_matrix(from_matrix(np.eye(3))), np.eye(3))
    True
    """
    r = np.asarray(r, dtype=np.float64)
    u, _, vt = np.linalg.svd(r)
    det = np.linalg.det(u @ vt)
    u = u.copy()
    u[..., :, -1] *= np.sign(det)[..., None]
    r = u @ vt
    m = r.reshape(-1, 3, 3)
    out = np.empty((m.shape[0], 4))
    for k, a in enumerate(m):
        tr = np.trace(a)
        cands = np.array([tr, a[0, 0], a[1, 1], a[2, 2]])
        i = int(np.argmax(cands))
        if i == 0:
            s = np.sqrt(1.0 + tr) * 2
            q = [0.25 * s, (a[2, 1] - a[1, 2]) / s, (a[0, 2] - a[2, 0]) / s, (a[1, 0] - a[0, 1]) / s]
        elif i == 1:
            s = np.sqrt(1.0 + a[0, 0] - a[1, 1] - a[2, 2]) * 2
            q = [(a[2, 1] - a[1, 2]) / s, 0.25 * s, (a[0, 1] + a[1, 0]) / s, (a[0, 2] + a[2, 0]) / s]
        elif i == 2:
            s = np.sqrt(1.0 - a[0, 0] + a[1, 1] - a[2, 2]) * 2
            q = [(a[0, 2] - a[2, 0]) / s, (a[0, 1] + a[1, 0]) / s, 0.25 * s, (a[1, 2] + a[2, 1]) / s]
        else:
            s = np.sqrt(1.0 - a[0, 0] - a[1, 1] + a[2, 2]) * 2
            q = [(a[1, 0] - a[0, 1]) / s, (a[0, 2] + a[2, 0]) / s, (a[1, 2] + a[2, 1]) / s, 0.25 * s]
        q = np.asarray(q)
        out[k] = q if q[0] >= 0 else -q
    out /= np.linalg.norm(out, axis=-1, keepdims=True)
    return out.reshape(r.shape[:-2] + (4,))


def to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternions [..., 4] -> rotation matrices [..., 3, 3]."""
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def align_signs(qs: np.ndarray) -> np.ndarray:
    """Flip signs along a sequence [K, 4] so neighbours lie in the same hemisphere
    (q and -q are the same rotation; interpolation must take the short way)."""
    out = np.array(qs, dtype=np.float64, copy=True)
    for k in range(1, len(out)):
        if np.dot(out[k - 1], out[k]) < 0:
            out[k] = -out[k]
    return out


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical linear interpolation of unit quaternions [4] at t in [0, 1]
    (``a * exp(t * log(conj(a) * b))``; the caller chooses the hemisphere of b)."""
    return qmul(a, qexp(t * qlog(qmul(qconj(a), b))))


def squad_controls(q_prev: np.ndarray, q: np.ndarray, q_next: np.ndarray) -> np.ndarray:
    """Squad inner control point of keyframe q [4] between its neighbours:
    ``q * exp(-(log(q^-1 q_next) + log(q^-1 q_prev)) / 4)``."""
    inv = qconj(q)
    return qmul(q, qexp(-0.25 * (qlog(qmul(inv, q_next)) + qlog(qmul(inv, q_prev)))))


def squad(q0: np.ndarray, q1: np.ndarray, s0: np.ndarray, s1: np.ndarray, t: float) -> np.ndarray:
    """Spherical quadrangle interpolation between keyframes q0, q1 [4] with controls
    s0, s1 [4]: ``slerp(slerp(q0, q1, t), slerp(s0, s1, t), 2 t (1 - t))``. Equals q0 at
    t = 0 and q1 at t = 1, with a continuous angular velocity across keyframes."""
    return slerp(slerp(q0, q1, t), slerp(s0, s1, t), 2 * t * (1 - t))
