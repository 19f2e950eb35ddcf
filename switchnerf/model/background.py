"""Far field: the colour seen along a ray after it leaves the foreground box."""

from __future__ import annotations

import torch
from torch import nn

from switchnerf.config import BackgroundConfig
from switchnerf.encoding import SHEncoding


class SkyBackground(nn.Module):
    """A direction-conditioned background colour: ``sigmoid(MLP(SH(d)))``.

    Everything beyond the foreground box (sky, and distant ground at the horizon in
    aerial views) is treated as infinitely far and depends only on the unit view
    direction d [N, 3] (world frame, z up). Returns rgb [N, 3] in [0, 1].
    """

    def __init__(self, cfg: BackgroundConfig):
        super().__init__()
        self.encoding = SHEncoding(cfg.sh_degree)
        self.mlp = nn.Sequential(nn.Linear(self.encoding.output_dim, cfg.hidden), nn.ReLU(inplace=True),
                                 nn.Linear(cfg.hidden, 3))

    def forward(self, directions: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(self.encoding(directions)).float())
