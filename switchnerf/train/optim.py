"""Adam with hash-table groups of its own: :class:`NativeTableAdam` (dense, the default on
the CPU) and :class:`LazyTableAdam` (only rows with a gradient; an option).

``NativeTableAdam``: the tables' groups step through the native dense op
(``switchnerf.ops.adam_dense``: torch's fused Adam bit for bit), which zeroes each gradient
in the pass that reads it; the zeroed tensor goes back to the hash encoding's next backward
(``switchnerf.ops.zeroed_grads``) instead of a fresh zeroed allocation every step.

``LazyTableAdam``: only rows with a non-zero gradient are visited, each catching up on the
steps it skipped (``switchnerf.ops.adam_sparse``).

Same results as ``torch.optim.Adam`` (to float32 rounding and the replay bound documented
in :mod:`switchnerf.ops.adam_sparse`) whenever the table parameters are read after
:meth:`LazyTableAdam.flush`: ``state_dict`` flushes, and :func:`attach_flush` makes a
module's ``state_dict`` flush first (checkpoints); code that renders a model in training
between steps calls ``flush()`` itself. Between flushes, rows untouched since their last
update lag behind dense Adam by the updates of their skipped steps.

Groups with ``lazy=True`` (contiguous float32 CPU parameters, no weight decay) take the
lazy step, in rows of the group's ``row_size`` consecutive values (default 2: a hash
table's features of one entry; any row size gives the same result, it only sets the
granularity of the skipping); every other group is plain ``torch.optim.Adam`` (fused where
it can be). The state of a lazy parameter is Adam's (``step``, ``exp_avg``,
``exp_avg_sq``) plus ``last_step`` int64 [numel / row_size]; a state saved by
``torch.optim.Adam`` loads as one whose rows are all up to date.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from switchnerf.ops import zeroed_grads
from switchnerf.ops.adam_dense import adam_dense_step, adam_dense_step_torch
from switchnerf.ops.adam_sparse import adam_sparse_step, adam_sparse_step_torch, replay_limit

__all__ = ["TORCH_ADAM_VECTOR", "LazyTableAdam", "NativeTableAdam", "attach_flush"]

TORCH_ADAM_VECTOR = 16
"""Values per vector of torch's fused CPU Adam (AVX-512; a multiple of AVX2's 8): its parallel
chunks are whole vectors, so only the last ``numel % 16`` values take its scalar loop."""


def _check_table_group(owner: str, kind: str, group: dict) -> None:
    """Raise ValueError unless ``group`` (a table group of ``owner``) takes no weight decay,
    amsgrad or maximize and holds contiguous float32 CPU tensors only."""
    if group["weight_decay"] != 0 or group["amsgrad"] or group["maximize"]:
        raise ValueError(f"{owner}: a {kind} group takes no weight decay, amsgrad or maximize")
    for p in group["params"]:
        if p.dtype != torch.float32 or p.device.type != "cpu" or not p.is_contiguous():
            raise ValueError(f"{owner}: a {kind} parameter must be a contiguous float32 CPU "
                             f"tensor, got {p.dtype} {tuple(p.shape)} on {p.device}")


def _closure_loss(closure):
    """What ``closure`` returns, evaluated with gradients on (None without a closure), as in
    torch's optimisers' ``step``."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class NativeTableAdam(torch.optim.Adam):
    """``torch.optim.Adam`` whose groups with ``native=True`` (hash tables) step through the
    native dense op, which zeroes each gradient as it reads it.

    The result equals ``torch.optim.Adam(..., fused=True)`` bit for bit: the native op is
    torch's vector loop, and the last ``numel % 16`` values of a tensor, which torch's kernel
    steps in a scalar loop that rounds ``v`` differently, go through torch's own op. The
    state is Adam's (``step`` a float32 scalar tensor, ``exp_avg``, ``exp_avg_sq``):
    checkpoints load either way. The one difference: after :meth:`step` a native group's
    parameters have no gradient (``p.grad is None``, as after
    ``zero_grad(set_to_none=True)``); their zeroed gradient tensors went back to
    :mod:`switchnerf.ops.zeroed_grads` for the next backward.
    As with ``zero_grad(set_to_none=False)``, a reference to such a gradient kept across
    :meth:`step` sees it zeroed, and later filled by the next backward.

    Args:
        params: parameter groups as for ``torch.optim.Adam``; a group with ``native`` set
            must hold contiguous float32 CPU tensors and take no weight decay, amsgrad or
            maximize.
        native: use the native op (else its pure-torch twin; same numbers).
        **kwargs: ``lr``, ``betas``, ``eps``, ``weight_decay``, ``fused``, ``foreach``.
    """

    def __init__(self, params, *, native: bool = True, **kwargs):
        super().__init__(params, **kwargs)
        self._step_fn = adam_dense_step if native else adam_dense_step_torch
        self._torch_tail = native and hasattr(torch, "_fused_adam_")
        for g in self.param_groups:
            if g.setdefault("native", False):
                _check_table_group("NativeTableAdam", "native", g)

    def _native_step(self, group: dict, p: torch.Tensor) -> torch.Tensor | None:
        """Step ``p`` and zero its gradient; returns the gradient tensor when it is now all
        zeros (None when it was not contiguous: a contiguous copy was read instead)."""
        st = self.state[p]
        if "exp_avg" not in st:  # torch.optim.Adam's lazy state, as the fused path makes it
            st["step"] = torch.zeros((), dtype=torch.float32)
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        st["step"] += 1
        grad = p.grad if p.grad.is_contiguous() else p.grad.contiguous()
        beta1, beta2 = group["betas"]
        lr = group["lr"].item() if torch.is_tensor(group["lr"]) else group["lr"]
        flat = [t.view(-1) for t in (p.data, grad, st["exp_avg"], st["exp_avg_sq"])]
        n = flat[0].numel()
        head = n - n % TORCH_ADAM_VECTOR if self._torch_tail else n
        self._step_fn(*(t[:head] for t in flat), step=int(st["step"]), lr=lr, beta1=beta1,
                      beta2=beta2, eps=group["eps"], zero_grad=True)
        if head < n:  # the last values: torch's own scalar remainder, as fused Adam does
            torch._fused_adam_([flat[0][head:]], [flat[1][head:]], [flat[2][head:]],
                               [flat[3][head:]], [], [st["step"]], lr=lr, beta1=beta1,
                               beta2=beta2, weight_decay=0.0, eps=group["eps"],
                               amsgrad=False, maximize=False)
            flat[1][head:].zero_()
        return grad if grad is p.grad else None

    @torch.no_grad()
    def step(self, closure=None):
        loss = _closure_loss(closure)
        zeroed = []
        for g in self.param_groups:
            if not g["native"]:
                continue
            for p in g["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("NativeTableAdam: sparse gradients are not supported")
                done = self._native_step(g, p)
                if done is not None:
                    zeroed.append(done)
                p.grad = None  # also hides it from the plain groups' step below
        try:
            super().step()
        finally:
            while zeroed:  # a gradient held elsewhere too (a view, an alias) is not taken
                zeroed_grads.give(zeroed.pop())
        return loss

    def load_state_dict(self, state_dict) -> None:
        """Load a state saved by this class or by ``torch.optim.Adam`` (the groups keep
        this optimiser's ``native`` flag: how to step is not part of the state)."""
        native = [g["native"] for g in self.param_groups]
        super().load_state_dict(state_dict)
        for g, flag in zip(self.param_groups, native, strict=True):
            g["native"] = flag


class LazyTableAdam(torch.optim.Adam):
    """``torch.optim.Adam`` with lazy hash-table groups (``{"params": [...], "lazy": True}``).

    Args:
        params: parameter groups as for ``torch.optim.Adam``; a group with ``lazy`` set
            must hold contiguous float32 CPU tensors and have ``weight_decay`` 0.
        native: use the native op (else its pure-torch twin).
        **kwargs: ``lr``, ``betas``, ``eps``, ``weight_decay``, ``fused``, ``foreach``.
    """

    def __init__(self, params, *, native: bool = True, **kwargs):
        super().__init__(params, **kwargs)
        self._native = native
        self._history: dict[torch.Tensor, dict] = {}  # per lazy parameter
        self._max_replay: dict[torch.Tensor, int] = {}
        for g in self.param_groups:
            g.setdefault("lazy", False)
            if g["lazy"]:
                _check_table_group("LazyTableAdam", "lazy", g)
                g.setdefault("row_size", 2)
                for p in g["params"]:
                    self._max_replay[p] = replay_limit(*g["betas"])
                    if p.numel() % g["row_size"] != 0:
                        raise ValueError(f"LazyTableAdam: a lazy parameter must hold whole rows "
                                         f"of {g['row_size']} values, got {tuple(p.shape)}")

    # ------------------------------------------------------------------ lazy state
    def _lazy_groups(self):
        return [g for g in self.param_groups if g.get("lazy")]

    def _row_size(self, p: torch.Tensor) -> int:
        return next(g["row_size"] for g in self.param_groups if any(q is p for q in g["params"]))

    def _state_of(self, p: torch.Tensor, step: int) -> dict:
        st = self.state[p]
        if "exp_avg" not in st:
            st["step"] = torch.tensor(float(step))
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if "last_step" not in st:  # fresh, or saved by torch.optim.Adam: all rows up to date
            st["last_step"] = torch.full((p.numel() // self._row_size(p),), int(st["step"]),
                                         dtype=torch.int64)
        return st

    def _history_tensors(self, p: torch.Tensor, step: int, group: dict
                         ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(step_size, bc2_sqrt, base): float64 views covering steps base + 1 .. step of
        ``p`` (the learning rate of a new step is the group's now)."""
        h = self._history.get(p)
        if h is None:
            h = self._history[p] = {"base": step - 1, "n": 0,
                                    "buf": torch.empty(2, 64, dtype=torch.float64)}
        beta1, beta2 = group["betas"]
        while h["base"] + h["n"] < step:
            if h["n"] == h["buf"].shape[1]:
                grown = torch.empty(2, 2 * h["n"], dtype=torch.float64)
                grown[:, :h["n"]] = h["buf"]
                h["buf"] = grown
            t = h["base"] + h["n"] + 1
            h["buf"][0, h["n"]] = group["lr"] / (1.0 - beta1 ** t)
            h["buf"][1, h["n"]] = math.sqrt(1.0 - beta2 ** t)
            h["n"] += 1
        return h["buf"][0, :h["n"]], h["buf"][1, :h["n"]], h["base"]

    def _lazy_step(self, group: dict, p: torch.Tensor, grad: torch.Tensor | None) -> None:
        st = self._state_of(p, 0)
        step = int(st["step"]) + (0 if grad is None else 1)
        if grad is None and step == 0:
            return
        step_size, bc2_sqrt, base = self._history_tensors(p, step, group)
        fn = adam_sparse_step if self._native else adam_sparse_step_torch
        beta1, beta2 = group["betas"]
        f = group["row_size"]
        fn(p.data.view(-1, f), None if grad is None else grad.contiguous().view(-1, f),
           st["exp_avg"].view(-1, f), st["exp_avg_sq"].view(-1, f), st["last_step"], step_size, bc2_sqrt, base=base, step=step,
           beta1=beta1, beta2=beta2, eps=group["eps"], max_replay=self._max_replay[p])
        if grad is not None:
            st["step"] += 1

    @torch.no_grad()
    def flush(self) -> None:
        """Bring every row of every lazy parameter up to the current step (what dense Adam
        would hold now), and drop the learning-rate history."""
        for g in self._lazy_groups():
            for p in g["params"]:
                if p in self.state and "exp_avg" in self.state[p]:
                    self._lazy_step(g, p, None)
                    self._history.pop(p, None)

    # ------------------------------------------------------------------ optimizer API
    @torch.no_grad()
    def step(self, closure=None):
        loss = _closure_loss(closure)
        hidden = []
        for g in self._lazy_groups():
            # the learning rate of this step enters the history before the step
            for p in g["params"]:
                if p.grad is None:
                    continue
                self._lazy_step(g, p, p.grad)
                hidden.append((p, p.grad))
                p.grad = None
        try:
            super().step()
        finally:
            for p, grad in hidden:
                p.grad = grad
        return loss

    def state_dict(self):
        self.flush()
        return super().state_dict()

    def load_state_dict(self, state_dict) -> None:
        """Load a state saved by this class or by ``torch.optim.Adam`` (the groups keep
        this optimiser's ``lazy`` and ``row_size``: how to step is not part of the state)."""
        layout = [(g["lazy"], g.get("row_size")) for g in self.param_groups]
        super().load_state_dict(state_dict)
        self._history.clear()
        for g, (lazy, row_size) in zip(self.param_groups, layout, strict=True):
            g["lazy"] = lazy
            if lazy:
                g["row_size"] = row_size
                for p in g["params"]:
                    st = self.state.get(p)
                    if st and "exp_avg" in st:
                        st["last_step"] = torch.full((p.numel() // g["row_size"],),
                                                     int(st["step"]), dtype=torch.int64)


def attach_flush(module: nn.Module, optimizer: LazyTableAdam) -> None:
    """Make ``module.state_dict()`` flush ``optimizer`` first, so a saved model holds the
    parameters dense Adam would hold."""
    module.register_state_dict_pre_hook(lambda *_args, **_kw: optimizer.flush())
