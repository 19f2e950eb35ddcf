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

    def to_unit(self, points: torch.Tensor) -> torch.Tensor:
        """World points [..., 3] -> unit-cube points ``(p - lo) / (hi - lo)``, computed in
        the points' dtype (float64 points stay float64).

        >>> BoxFrame.from_bbox([[0, 0, 0], [2, 4, 8]]).to_unit(torch.tensor([[1.0, 1.0, 2.0]]))
        tensor([[0.5000, 0.2500, 0.2500]])
        """
        lo, ext = self.lo.to(points), self.extent.to(points)
        return (points - lo) / ext

    def to_unit_directions(self, directions: torch.Tensor) -> torch.Tensor:
        """World directions [..., 3] -> ``d / (hi - lo)``: with :meth:`to_unit` origins, the
        ray parameter t keeps its world units (not renormalised)."""
        return directions / self.extent.to(directions)

    def to(self, device) -> BoxFrame:
        return BoxFrame(self.lo.to(device), self.hi.to(device))

    @classmethod
    def from_bbox(cls, bbox, device="cpu") -> BoxFrame:
        b = torch.as_tensor(bbox, dtype=torch.float32, device=device)
        return cls(b[0].clone(), b[1].clone())
