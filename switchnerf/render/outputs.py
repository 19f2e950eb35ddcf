"""Typed outputs of the renderer: per ray (:class:`RenderOutput`) and per kept sample
(:class:`SampleOutput`).

Per-ray tensors share the leading dimension N (rays, row-major pixels for an image); per-
sample tensors share M (the samples the compositor used, in packed order: sorted by ray,
then by t). Depth is the ray parameter t in world units (directions are unit length in
the world frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

__all__ = ["RenderOutput", "SampleOutput", "weighted_mean"]


def weighted_mean(total: Tensor, opacity: Tensor, *, min_opacity: float = 0.0,
                  fill: float = 0.0) -> Tensor:
    """A per-ray weighted sum over the ray's accumulated weight: ``total / opacity`` where
    ``opacity > min_opacity``, else ``fill``. total, opacity: float [N] -> [N].

    The one implementation of depth normalisation (``total`` = ``sum w * t``) and of the
    gate confidence (``total`` = ``sum w * gate_value``).

    >>> weighted_mean(torch.tensor([1.0, 0.0, 0.3]), torch.tensor([0.5, 0.0, 0.005]),
    ...               min_opacity=0.01, fill=float("nan"))
    tensor([2., nan, nan])
    """
    covered = opacity > min_opacity
    safe = torch.where(covered, opacity, torch.ones_like(opacity))
    return torch.where(covered, total / safe, torch.full_like(total, fill))


def _check(name: str, value: Tensor, shape: tuple, dtype: torch.dtype | None = None) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected a tensor, got {type(value).__name__}")
    if tuple(value.shape) != shape:
        raise ValueError(f"{name}: shape {tuple(value.shape)}, expected {shape}")
    if dtype is not None and value.dtype != dtype:
        raise ValueError(f"{name}: dtype {value.dtype}, expected {dtype}")


@dataclass(frozen=True)
class SampleOutput:
    """Per kept sample (M of them, packed order), what training and diagnostics read.

    ray_indices: int64 [M], the ray of each sample (sorted).
    expert_id: int64 [M], the expert that encoded the sample.
    gate_value: float [M], the gate's probability of that expert.
    kept: bool [M], False where the capacity limit dropped the sample.
    weights: float [M], the compositing weights ``T * alpha``.
    probs: float [M, E], gate probabilities (for the balance loss), or None (rendered
        without gradients).
    """

    ray_indices: Tensor
    expert_id: Tensor
    gate_value: Tensor
    kept: Tensor
    weights: Tensor
    probs: Tensor | None = None

    def __post_init__(self) -> None:
        m = self.ray_indices.shape[0] if isinstance(self.ray_indices, Tensor) else -1
        _check("ray_indices", self.ray_indices, (m,), torch.int64)
        _check("expert_id", self.expert_id, (m,), torch.int64)
        _check("gate_value", self.gate_value, (m,))
        _check("kept", self.kept, (m,), torch.bool)
        _check("weights", self.weights, (m,))
        if self.probs is not None:
            if not isinstance(self.probs, Tensor) or self.probs.dim() != 2:
                raise ValueError(f"probs: expected [M, E], got "
                                 f"{getattr(self.probs, 'shape', type(self.probs).__name__)}")
            _check("probs", self.probs, (m, self.probs.shape[1]))

    def __len__(self) -> int:
        return self.ray_indices.shape[0]


@dataclass(frozen=True)
class RenderOutput:
    """Per ray (N of them), what the renderer produced.

    rgb: float [N, 3], composited colour (background included).
    depth: float [N], ``sum w * t`` in world units, *not* normalised (tends to 0 where the
        ray is transparent); see :attr:`depth_normalised` and :meth:`expected_depth`.
    opacity: float [N], ``sum w``.
    expert_map: int64 [N], the expert of the ray's highest-weight sample (first on ties);
        -1 where the ray has no sample of positive weight.
    n_samples: int64 [N], kept samples per ray.
    gate_confidence: float [N], weight-averaged gate value of the ray's samples
        (``sum w * gate_value / opacity``), 0 where the opacity is 0.
    samples: per-sample outputs, or None (chunked renders keep only per-ray outputs).
    image_size: (H, W) when the rays are the row-major pixels of an image (N = H * W).
    """

    rgb: Tensor
    depth: Tensor
    opacity: Tensor
    expert_map: Tensor
    n_samples: Tensor
    gate_confidence: Tensor
    samples: SampleOutput | None = None
    image_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        n = self.rgb.shape[0] if isinstance(self.rgb, Tensor) else -1
        _check("rgb", self.rgb, (n, 3))
        _check("depth", self.depth, (n,))
        _check("opacity", self.opacity, (n,))
        _check("expert_map", self.expert_map, (n,), torch.int64)
        _check("n_samples", self.n_samples, (n,), torch.int64)
        _check("gate_confidence", self.gate_confidence, (n,))
        if self.samples is not None and not isinstance(self.samples, SampleOutput):
            raise TypeError(f"samples: expected SampleOutput or None, got "
                            f"{type(self.samples).__name__}")
        if self.image_size is not None:
            h, w = self.image_size
            if h < 1 or w < 1 or h * w != n:
                raise ValueError(f"image_size: {h}x{w} does not hold {n} rays")

    def __len__(self) -> int:
        return self.rgb.shape[0]

    @property
    def depth_normalised(self) -> Tensor:
        """Expected depth float [N]: ``depth / opacity`` where opacity > 0, else 0."""
        return weighted_mean(self.depth, self.opacity)

    def expected_depth(self, min_opacity: float = 0.01) -> Tensor:
        """Expected depth float [N]: ``depth / opacity`` where opacity > ``min_opacity``,
        NaN elsewhere (what depth maps, point clouds and meshes use)."""
        return weighted_mean(self.depth, self.opacity, min_opacity=min_opacity,
                             fill=float("nan"))

    def image(self, name: str) -> Tensor:
        """A per-ray field viewed as an image, [H, W] or [H, W, 3]; needs ``image_size``."""
        if self.image_size is None:
            raise ValueError("this output has no image_size (not the pixels of one image)")
        value = getattr(self, name)
        return value.view(*self.image_size, *value.shape[1:])

    def with_image_size(self, height: int, width: int) -> RenderOutput:
        """This output with ``image_size = (height, width)`` (checked against N)."""
        return replace(self, image_size=(int(height), int(width)))

    def to(self, device) -> RenderOutput:
        """Per-ray (and per-sample) tensors moved to ``device``."""
        samples = None
        if self.samples is not None:
            samples = SampleOutput(*(None if v is None else v.to(device)
                                     for v in (getattr(self.samples, f.name)
                                               for f in fields(SampleOutput))))
        return RenderOutput(*(getattr(self, k).to(device) for k in _PER_RAY), samples=samples,
                            image_size=self.image_size)

    @staticmethod
    def empty(device="cpu") -> RenderOutput:
        """The output of zero rays."""
        z = torch.zeros(0, device=device)
        zi = torch.zeros(0, dtype=torch.int64, device=device)
        return RenderOutput(z.view(0, 3), z, z, zi, zi, z)

    @staticmethod
    def cat(parts: Sequence[RenderOutput], *,
            image_size: tuple[int, int] | None = None) -> RenderOutput:
        """Per-ray outputs of consecutive ray chunks joined, in order (``samples`` dropped).

        ``parts`` must be non-empty; image_size: (H, W) of the joined rays, or None.
        """
        if not parts:
            raise ValueError("cat needs at least one RenderOutput")
        if len(parts) == 1:
            joined = {k: getattr(parts[0], k) for k in _PER_RAY}
        else:
            joined = {k: torch.cat([getattr(p, k) for p in parts]) for k in _PER_RAY}
        return RenderOutput(**joined, samples=None, image_size=image_size)


_PER_RAY = ("rgb", "depth", "opacity", "expert_map", "n_samples", "gate_confidence")
