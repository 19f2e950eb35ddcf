"""The foreground box: the map from the world frame to the field's unit cube."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["BoxFrame"]


@dataclass
class BoxFrame:
    """The foreground box: world point p maps to the unit cube as (p - lo) / (hi - lo).

    lo, hi: float32 [3] world units. Ray parameters t stay in world units under this map
    (directions are scaled, not renormalised).
    """

    lo: torch.Tensor
    hi: torch.Tensor

    @property
    def extent(self) -> torch.Tensor:
        return self.hi - self.lo

    @property
    def diagonal(self) -> float:
        return float(torch.linalg.norm(self.extent))

    def to(self, device) -> BoxFrame:
        return BoxFrame(self.lo.to(device), self.hi.to(device))

    @classmethod
    def from_bbox(cls, bbox, device="cpu") -> BoxFrame:
        b = torch.as_tensor(bbox, dtype=torch.float32, device=device)
        return cls(b[0].clone(), b[1].clone())
