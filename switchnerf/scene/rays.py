"""Rays through the pixels of a pinhole camera: the one definition, in torch, and its twins.

Conventions (ARCHITECTURE.md, Scene): world frame right-handed, z up; ``c2w`` [4, 4]
world-from-camera with OpenGL camera axes (x right, y up, looking down -z); intrinsics fx,
fy, cx, cy in pixels; image coordinates (u, v) = (column, row) with the centre of pixel
(i, j) at (i + 0.5, j + 0.5). The ray through image point (u, v) starts at ``c2w[:3, 3]``
and has the direction

    d = normalise(c2w[:3, :3] @ ((u - cx) / fx, -(v - cy) / fy, -1)).

:func:`image_to_camera` and :func:`camera_to_world` hold this map as elementwise
arithmetic, so the same expressions run on Python floats, numpy arrays and torch tensors:
:func:`pixel_rays` (torch, the implementation) and :func:`pixel_rays_numpy` (its numpy
twin) both call them and give the same bits. :func:`pack_cameras` turns the map into
per-image affine coefficients of integer column and row (:func:`pixel_affine`) for the
training rays of the ray store, which :func:`packed_rays` (torch) and
``store_shards.RayTable`` (numpy) evaluate in float32.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["PACKED_WIDTH", "camera_to_world", "image_to_camera", "pack_cameras", "packed_rays",
           "pixel_affine", "pixel_rays", "pixel_rays_numpy", "subpixel_offsets"]


def image_to_camera(u, v, fx, fy, cx, cy):
    """x, y of the camera-frame direction ``(x, y, -1)`` through image point (u, v).

    ``x = (u - cx) / fx``, ``y = -(v - cy) / fy`` (y up, image rows down). Elementwise, for
    floats, numpy arrays or torch tensors of equal shapes.

    >>> image_to_camera(0.5, 0.5, 2.0, 2.0, 1.0, 1.0)
    (-0.25, 0.25)
    """
    return (u - cx) / fx, -(v - cy) / fy


def camera_to_world(x, y, rot) -> list:
    """World-frame components [d0, d1, d2] of the camera-frame direction ``(x, y, -1)``.

    rot: the 3x3 rotation ``c2w[:3, :3]`` as nested Python floats; ``d_k = x rot[k][0] +
    y rot[k][1] - rot[k][2]`` (not normalised). Elementwise, like :func:`image_to_camera`.
    """
    return [x * r[0] + y * r[1] - r[2] for r in rot]


def pixel_affine(fx, fy, cx, cy):
    """:func:`image_to_camera` at pixel centres as affine maps of integer column and row.

    Returns (ax, bx, ay, by) with ``x = col * ax + bx`` and ``y = row * ay + by`` for the
    centre of pixel (col, row): ``ax = 1 / fx``, ``ay = -1 / fy`` and (bx, by) the
    direction through the centre of pixel (0, 0). Floats, arrays or tensors.

    >>> pixel_affine(2.0, 4.0, 1.0, 1.0)
    (0.5, -0.25, -0.25, 0.125)
    """
    bx, by = image_to_camera(0.5, 0.5, fx, fy, cx, cy)
    return 1.0 / fx, bx, -1.0 / fy, by


def subpixel_offsets(subsamples: int) -> list[float]:
    """Offsets within a pixel of an ``s x s`` grid of samples, ``(k + 0.5) / s`` for k < s
    ([0.5] for s = 1: the pixel centre)."""
    s = int(subsamples)
    if s < 1:
        raise ValueError(f"subsamples must be >= 1, got {subsamples}")
    return [(k + 0.5) / s for k in range(s)]


def _camera(c2w, fx, fy, cx, cy) -> tuple[list, list[float], tuple[float, ...]]:
    """c2w [4, 4] (array or tensor) -> rotation rows and centre as Python floats."""
    if isinstance(c2w, torch.Tensor):
        c2w = c2w.detach().cpu().to(torch.float64).numpy()
    m = np.asarray(c2w, dtype=np.float64).reshape(4, 4)
    return m[:3, :3].tolist(), m[:3, 3].tolist(), (float(fx), float(fy), float(cx), float(cy))


def pixel_rays(c2w, fx: float, fy: float, cx: float, cy: float, width: int, height: int, *,
               subsamples: int = 1, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through every pixel centre (or ``subsamples``^2 points per pixel), row-major.

    c2w: [4, 4] numpy array or tensor, world-from-camera (module docstring). With s =
    ``subsamples`` the image points are ``(i + (a + 0.5) / s, j + (b + 0.5) / s)`` for
    a, b < s, ordered row-major over the (height s) x (width s) grid (s = 1: the pixel
    centres, ray ``j * width + i`` through pixel (i, j)). Computed in float64 on ``device``
    (default CPU). Returns origins, directions: float32 [height s * width s, 3], world
    frame, directions unit length.

    >>> o, d = pixel_rays(np.eye(4), 2.0, 2.0, 1.0, 1.0, 2, 2)
    >>> (d[0] * 18 ** 0.5).round(decimals=4)  # pixel (0, 0): (-0.25, 0.25, -1) normalised
    tensor([-1.,  1., -4.])
    """
    rot, centre, (fx, fy, cx, cy) = _camera(c2w, fx, fy, cx, cy)
    dev = torch.device("cpu") if device is None else torch.device(device)
    sub = torch.tensor(subpixel_offsets(subsamples), dtype=torch.float64, device=dev)

    def coords(n: int) -> torch.Tensor:  # [n * s] image coordinates along one axis
        return (torch.arange(n, dtype=torch.float64, device=dev)[:, None] + sub[None]).reshape(-1)

    vv, uu = torch.meshgrid(coords(height), coords(width), indexing="ij")  # [H s, W s]
    x, y = image_to_camera(uu.reshape(-1), vv.reshape(-1), fx, fy, cx, cy)  # [R] each
    d = camera_to_world(x, y, rot)
    norm = torch.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])  # [R]
    dirs = torch.stack([c / norm for c in d], -1).to(torch.float32)  # [R, 3]
    origins = torch.tensor(centre, dtype=torch.float32, device=dev).expand_as(dirs)
    return origins.contiguous(), dirs


def pixel_rays_numpy(c2w, fx: float, fy: float, cx: float, cy: float, width: int,
                     height: int, *, subsamples: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pixel_rays` in numpy (same arguments, same order, same bits), for numpy
    callers such as the synthetic-city renderer. Returns float32 [R, 3] arrays."""
    rot, centre, (fx, fy, cx, cy) = _camera(c2w, fx, fy, cx, cy)
    sub = np.asarray(subpixel_offsets(subsamples), dtype=np.float64)

    def coords(n: int) -> np.ndarray:
        return (np.arange(n, dtype=np.float64)[:, None] + sub[None]).reshape(-1)

    vv, uu = np.meshgrid(coords(height), coords(width), indexing="ij")
    x, y = image_to_camera(uu.reshape(-1), vv.reshape(-1), fx, fy, cx, cy)
    d = camera_to_world(x, y, rot)
    norm = np.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
    dirs = np.stack([c / norm for c in d], -1).astype(np.float32)
    origins = np.ascontiguousarray(np.broadcast_to(np.asarray(centre, np.float32), dirs.shape))
    return origins, dirs


# Packed per-image table of the ray store's training rays (one gather per batch): camera x
# axis (R[:, 0]), camera y axis (R[:, 1]), minus camera z axis (-R[:, 2]), centre, and the
# coefficients (ax, bx, ay, by) of ``pixel_affine``.
RX, RY, RZN, T = slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 12)
AX, BX, AY, BY = 12, 13, 14, 15
PACKED_WIDTH = 16


def pack_cameras(c2w: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, cx: torch.Tensor,
                 cy: torch.Tensor) -> torch.Tensor:
    """Per-image constants of :func:`packed_rays`: float32 [K, 16] (columns above),
    computed in float64 from c2w [K, 4, 4] and fx, fy, cx, cy [K]."""
    k = c2w.shape[0]
    packed = torch.zeros(k, PACKED_WIDTH, dtype=torch.float64, device=c2w.device)
    rot = c2w[:, :3, :3].to(torch.float64)
    packed[:, RX], packed[:, RY], packed[:, RZN] = rot[:, :, 0], rot[:, :, 1], -rot[:, :, 2]
    packed[:, T] = c2w[:, :3, 3].to(torch.float64)
    ax, bx, ay, by = pixel_affine(*(t.to(torch.float64) for t in (fx, fy, cx, cy)))
    packed[:, AX], packed[:, BX], packed[:, AY], packed[:, BY] = ax, bx, ay, by
    return packed.to(torch.float32)


def packed_rays(packed: torch.Tensor, width: torch.Tensor, image_index: torch.Tensor,
                pixel_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays of pixels given by image index and row-major pixel index, in float32.

    packed: float32 [K, 16] from :func:`pack_cameras`; width: int64 [K]; image_index,
    pixel_index: integer [N] (``pixel_index = row * width + col``). Returns origins and unit
    directions, float32 [N, 3]: :func:`pixel_rays` of those pixels up to float32 rounding.
    """
    img = image_index.to(torch.int64)
    pix = pixel_index.to(torch.int64)
    cam = packed.index_select(0, img)  # [N, 16]
    w = width.index_select(0, img)  # [N]
    row = torch.div(pix, w, rounding_mode="floor")
    col = (pix - row * w).to(torch.float32)
    x = torch.addcmul(cam[:, BX], col, cam[:, AX])[:, None]  # [N, 1] camera-frame x
    y = torch.addcmul(cam[:, BY], row.to(torch.float32), cam[:, AY])[:, None]
    dirs = torch.addcmul(cam[:, RZN], cam[:, RX], x).addcmul_(cam[:, RY], y)  # [N, 3]
    dirs = dirs.mul_(torch.rsqrt((dirs * dirs).sum(-1, keepdim=True)))
    origins = cam[:, T].contiguous()  # [N, 3]
    return origins, dirs
