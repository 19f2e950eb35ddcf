"""Warm start of the gate: route by a compact ground partition from the first step.

A gate that starts from random weights scatters neighbouring points over the experts, so
every expert has to learn every region before the routing settles (bench/RESULTS.md). The
"partition" start writes the gate MLP so that, before any training, it routes each point
to the nearest of E ground centroids (a rows x cols grid over x-y of the unit cube,
:func:`partition_grid`): compact cells, like the fixed-grid baseline, which the gate then
keeps learning (boundaries move under the photometric and balance losses).

How heterogeneity follows the detail (the rule):

- expert resolution ranges are geometric from ``finest * coarsest_fraction`` (expert 0)
  to ``finest`` (expert E-1) (``switchnerf.encoding.experts.geometric_expert_specs``);
- the finer an expert, the nearer the centre of the box its starting cell: captures
  centre on their subject, so the dense core gets the fine experts and the outskirts
  (fields, flat ground) the coarse ones (:func:`assign_cells`);
- the balance loss pulls every expert towards an equal share of the samples, and samples
  crowd where there is surface to see (tall, detailed blocks are sampled more per unit
  of ground than flat ground), so the cells shrink where the detail is and each expert's
  capacity per unit of ground grows with the detail it holds. A light pull
  (``balance_weight`` ~1e-3) is enough: the photometric loss moves the boundaries too,
  and a strong pull keeps moving points between experts (churn).

The logits are exact: with ``u = 2x - 1`` (the gate's position input),
``-beta * |u_xy - c_e|^2`` ranks experts as ``beta * (2 u_xy . c_e - |c_e|^2)``, which is
linear in ``u`` and is written with five hidden units ``relu(u_x), relu(-u_x),
relu(u_y), relu(-u_y)`` and ``relu(1)`` (a unit with bias 1). The other hidden units keep
their random first layer and start with zero output weights, so they add nothing until
they learn; the hash features start at ~1e-4 and add nothing either.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["PARTITION_UNITS", "assign_cells", "init_partition_gate", "partition_centroids",
           "partition_grid"]

PARTITION_UNITS = 5
"""Hidden units the partition start uses (the gate needs at least this many)."""


def partition_grid(n_experts: int) -> tuple[int, int]:
    """rows x cols (rows over y, cols over x, rows <= cols) with rows * cols = E and rows
    as large as possible: the most compact grid of E cells.

    >>> partition_grid(8), partition_grid(9), partition_grid(7)
    ((2, 4), (3, 3), (1, 7))
    """
    if n_experts < 1:
        raise ValueError(f"partition_grid: n_experts must be >= 1, got {n_experts}")
    rows = max(r for r in range(1, math.isqrt(n_experts) + 1) if n_experts % r == 0)
    return rows, n_experts // rows


def assign_cells(finest_resolutions: list[float], grid: tuple[int, int]) -> list[int]:
    """Cell of each expert: the finer the expert, the nearer the centre its cell.

    Cells are numbered ``row * cols + col``; experts are ranked by finest resolution
    (descending, the higher id first on a tie) and cells by the distance of their centre
    to the centre of the square (ascending, the lower number first on a tie). Returns
    cell [E].

    >>> assign_cells([128, 256, 512, 1024], (2, 2))  # four cells equally central
    [3, 2, 1, 0]
    >>> assign_cells([16, 32, 64], (1, 3))  # the finest in the middle
    [2, 0, 1]
    """
    rows, cols = grid
    if rows * cols != len(finest_resolutions):
        raise ValueError(f"assign_cells: {rows} x {cols} cells for {len(finest_resolutions)} experts")
    centres = partition_centroids(grid)
    dist = centres.norm(dim=-1).tolist()
    cells = sorted(range(rows * cols), key=lambda c: (round(dist[c], 9), c))
    experts = sorted(range(len(finest_resolutions)), key=lambda e: (-finest_resolutions[e], -e))
    out = [0] * len(experts)
    for e, c in zip(experts, cells):
        out[e] = c
    return out


def partition_centroids(grid: tuple[int, int]) -> Tensor:
    """Cell centres float32 [rows * cols, 2] (x, y) in the gate's ``u = 2x - 1`` frame
    ([-1, 1]^2), cell ``row * cols + col``.

    >>> partition_centroids((1, 2)).tolist()
    [[-0.5, 0.0], [0.5, 0.0]]
    """
    rows, cols = grid
    cpu = torch.device("cpu")  # also under a meta default device (parameter counting)
    xs = (torch.arange(cols, dtype=torch.float64, device=cpu) + 0.5) / cols * 2 - 1
    ys = (torch.arange(rows, dtype=torch.float64, device=cpu) + 0.5) / rows * 2 - 1
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], -1).to(torch.float32)


@torch.no_grad()
def init_partition_gate(mlp: nn.Sequential, centroids: Tensor, margin: float) -> None:
    """Write ``mlp`` (Linear(I, H) -> ReLU -> Linear(H, E, no bias), whose last three
    inputs are ``u = 2x - 1``) so that its logits are
    ``beta * (2 u_xy . c_e - |c_e|^2)`` for the centroids ``c`` [E, 2], i.e. it routes
    each point to its nearest centroid in x-y.

    ``beta = margin / d_min^2`` with ``d_min`` the smallest distance between two
    centroids: at a cell centre, the cell's logit exceeds its nearest neighbour's by
    ``margin``. With one expert nothing is written.
    """
    first, last = mlp[0], mlp[-1]
    n_exp, hidden = last.weight.shape
    if centroids.shape != (n_exp, 2):
        raise ValueError(f"init_partition_gate: centroids {tuple(centroids.shape)} for {n_exp} experts")
    if hidden < PARTITION_UNITS:
        raise ValueError(f"init_partition_gate: the gate needs >= {PARTITION_UNITS} hidden units, "
                         f"has {hidden}")
    if last.bias is not None:
        raise ValueError("init_partition_gate: the gate's output layer must have no bias")
    if n_exp < 2:
        return
    cpu = torch.device("cpu")  # also under a meta default device (parameter counting)
    c = centroids.to(device=cpu, dtype=torch.float64)
    d2 = torch.cdist(c, c).pow(2) + torch.eye(n_exp, dtype=torch.float64, device=cpu) * 1e30
    beta = margin / float(d2.min())
    n_in = first.weight.shape[1]
    u = [n_in - 3, n_in - 2]  # the x and y columns of u
    w1 = torch.zeros(PARTITION_UNITS, n_in, dtype=torch.float64, device=cpu)
    w1[0, u[0]], w1[1, u[0]], w1[2, u[1]], w1[3, u[1]] = 1.0, -1.0, 1.0, -1.0
    b1 = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0], dtype=torch.float64, device=cpu)
    w2 = torch.zeros(n_exp, hidden, dtype=torch.float64, device=cpu)
    w2[:, 0], w2[:, 1] = 2 * beta * c[:, 0], -2 * beta * c[:, 0]
    w2[:, 2], w2[:, 3] = 2 * beta * c[:, 1], -2 * beta * c[:, 1]
    w2[:, 4] = -beta * c.pow(2).sum(-1)
    dev = first.weight.device
    first.weight[:PARTITION_UNITS].copy_(w1.to(device=dev, dtype=first.weight.dtype))
    first.bias[:PARTITION_UNITS].copy_(b1.to(device=dev, dtype=first.bias.dtype))
    last.weight.copy_(w2.to(device=dev, dtype=last.weight.dtype))
