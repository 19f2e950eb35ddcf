"""The field's small MLPs: one builder, and one forward that uses the native fused op for
CPU inference.

Every MLP of the field (gate, density head, colour head) is ``Linear -> ReLU -> ... ->
Linear``. Training runs them as torch layers (autograd). Without gradients on the CPU, a
one-hidden-layer MLP runs through the native ``mlp_forward`` op instead: one pass over the
rows, no hidden tensor in memory, the per-row input scale folded in. Same function, float32
rounding apart (tests compare the two).

Where the trailing input columns are shared by groups of rows (the view-direction encoding
and appearance embedding are the same for every sample of a ray), ``apply_mlp_shared``
(and ``GroupedMLP`` over many calls) takes them once per group: their product with the first
layer becomes a per-group hidden bias, and each row only multiplies its own columns. Leading
unscaled columns (``apply_mlp``'s ``prefix``: the shared grid's features before the
gate-scaled expert features) are read in place, without a concatenated copy.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GroupedMLP", "apply_mlp", "apply_mlp_shared", "make_mlp"]


def make_mlp(n_in: int, hidden: int, n_out: int, layers: int, *, bias_out: bool = True
             ) -> nn.Sequential:
    """``layers`` hidden layers of width ``hidden`` (Linear + ReLU), then Linear to ``n_out``."""
    mods: list[nn.Module] = []
    width = n_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
        width = hidden
    mods.append(nn.Linear(width, n_out, bias=bias_out))
    return nn.Sequential(*mods)


def _fusable(mlp: nn.Sequential, x: torch.Tensor) -> bool:
    if torch.is_grad_enabled() or x.device.type != "cpu" or x.dtype != torch.float32:
        return False
    if len(mlp) != 3 or not isinstance(mlp[1], nn.ReLU):
        return False
    first, last = mlp[0], mlp[2]
    if not (isinstance(first, nn.Linear) and isinstance(last, nn.Linear)):
        return False
    if first.weight.dtype != torch.float32 or last.weight.dtype != torch.float32:
        return False
    from switchnerf.ops import native_available

    return native_available()


def _fused_forward(mlp: nn.Sequential, x: torch.Tensor, w1: torch.Tensor,
                   row_scale: torch.Tensor | None = None, hidden_bias: torch.Tensor | None = None,
                   index: torch.Tensor | None = None, prefix: torch.Tensor | None = None,
                   rows: torch.Tensor | None = None) -> torch.Tensor:
    """The native ``mlp_forward`` with ``mlp``'s biases and second layer, first-layer weight
    ``w1`` [H, I] (all of ``mlp[0]``'s, or the columns that multiply ``prefix`` and ``x``);
    rows: the rows of ``x`` to take (int64), read in place (``x`` may be a column slice)."""
    from switchnerf.ops import load_native

    first, last = mlp[0], mlp[2]
    if x.dim() != 2 or (x.shape[1] > 1 and x.stride(1) != 1):
        x = x.contiguous()
    return load_native().mlp_forward(
        x, row_scale, w1.contiguous(),
        None if first.bias is None else first.bias.detach().contiguous(),
        last.weight.detach().contiguous(),
        None if last.bias is None else last.bias.detach().contiguous(),
        hidden_bias, index, None if prefix is None else prefix.contiguous(),
        None if rows is None else rows.to(torch.long).contiguous())


def apply_mlp(mlp: nn.Sequential, x: torch.Tensor, row_scale: torch.Tensor | None = None, *,
              prefix: torch.Tensor | None = None) -> torch.Tensor:
    """``mlp(cat([prefix, x * row_scale[:, None]], -1))`` for x [M, I], an optional row_scale
    [M] and optional unscaled leading columns prefix [M, P] (same dtype as x).

    Uses the native fused op when no gradient is recorded, x is a float32 CPU tensor, the
    MLP has one hidden layer and the native ops are available (neither the scaled copy nor
    the concatenation is then formed); else the torch layers.
    """
    if _fusable(mlp, x) and (prefix is None or (prefix.device == x.device
                                                and prefix.dtype == x.dtype)):
        scale = None if row_scale is None else row_scale.to(torch.float32).contiguous()
        return _fused_forward(mlp, x, mlp[0].weight.detach(), row_scale=scale, prefix=prefix)
    if row_scale is not None:
        x = x * row_scale.unsqueeze(-1).to(x.dtype)
    if prefix is not None:
        x = torch.cat([prefix.to(x.dtype), x], dim=-1)
    return mlp(x)


class GroupedMLP:
    """``mlp(cat([x, shared[index]], -1))`` for many calls with the same ``shared`` [R, S]
    (rows of x [M, I] belong to groups ``index`` int64 [M]; the view encoding and appearance
    of a ray are the same for all its samples).

    With the native op (same conditions as :func:`apply_mlp`) the first layer's product
    with ``shared`` is computed once, here ([R, H]), and added to each row's hidden layer
    in every call; the result equals the concatenated form to float32 rounding. Otherwise
    each call concatenates.
    """

    def __init__(self, mlp: nn.Sequential, shared: torch.Tensor, n_own: int) -> None:
        self.mlp = mlp
        self.shared = shared
        self.n_own = int(n_own)
        self.hidden_bias: torch.Tensor | None = None
        if _fusable(mlp, shared):
            w = mlp[0].weight.detach()
            self.w_own = w[:, :self.n_own].contiguous()
            self.hidden_bias = (shared @ w[:, self.n_own:].t()).contiguous()  # [R, H]

    def __call__(self, x: torch.Tensor, index: torch.Tensor, rows: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """Rows ``x[rows]`` (all of x when None) [M, I] of groups ``index`` [M] -> [M, O];
        the native op reads the rows in place (no gathered copy of x)."""
        if x.shape[1] != self.n_own:
            raise ValueError(f"GroupedMLP: x has {x.shape[1]} columns, expected {self.n_own}")
        if self.hidden_bias is not None and _fusable(self.mlp, x):
            return _fused_forward(self.mlp, x, self.w_own, hidden_bias=self.hidden_bias,
                                  index=index.to(torch.long).contiguous(), rows=rows)
        if rows is not None:
            x = x.index_select(0, rows)
        return self.mlp(torch.cat([x, self.shared[index].to(x.dtype)], dim=-1))


def apply_mlp_shared(mlp: nn.Sequential, x: torch.Tensor, shared: torch.Tensor,
                     index: torch.Tensor) -> torch.Tensor:
    """``mlp(cat([x, shared[index]], -1))`` for x [M, I], shared [R, S], index int64 [M]
    (one call of :class:`GroupedMLP`)."""
    if shared.device == x.device:
        shared = shared.to(x.dtype)
    return GroupedMLP(mlp, shared, x.shape[1])(x, index)
