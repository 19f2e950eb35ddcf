"""Similarity alignment of two point sets (Umeyama 1991): how far recovered camera centres
are from the true ones once scale, rotation and translation are factored out.
"""

from __future__ import annotations

import numpy as np


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The similarity ``dst ~ s R src + t`` minimising the summed squared error.

    src, dst: [N, 3] corresponding points (N >= 3, not all collinear). Returns (s, R [3, 3]
    with det +1, t [3]). Closed form: with the cross-covariance ``C = (dst - mu_d)^T (src -
    mu_s) / N = U S V^T``, ``R = U D V^T`` (D = diag(1, 1, sign det(U V^T))), ``s = tr(S D) /
    var(src)``, ``t = mu_d - s R mu_s``.

    >>> p = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    >>> s, r, t = umeyama(p, 2 * p + 1)
    >>> round(s, 6), np.allclose(r, np.eye(3)), t.round(6).tolist()
    (2.0, True, [1.0, 1.0, 1.0])
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or len(src) < 3:
        raise ValueError(f"umeyama needs two [N >= 3, 3] arrays, got {src.shape}, {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    var = float((xs**2).sum()) / len(src)
    if var <= 0:
        raise ValueError("umeyama: the source points all coincide")
    u, sig, vt = np.linalg.svd(xd.T @ xs / len(src))
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float(sig @ d) / var
    return scale, rot, mu_d - scale * rot @ mu_s


def aligned_errors(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Distances [N] between ``dst`` and ``src`` mapped by ``umeyama(src, dst)`` (dst units)."""
    s, r, t = umeyama(src, dst)
    return np.linalg.norm(s * np.asarray(src, dtype=np.float64) @ r.T + t - dst, axis=1)
