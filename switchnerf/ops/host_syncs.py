"""Count the operations that make the host wait for a CUDA device, on any device.

On a GPU the host queues kernels and runs ahead; an operation whose result the host must
read (a scalar, an output whose size depends on the data) drains the queue first. A training
step with twenty such waits is bound by launch latency however fast its kernels are. The
same operations run on the CPU, so they can be found and counted there, in tests:

    with HostSyncCounter() as syncs:
        trainer.train_step(batch)
    assert syncs.count <= 1, syncs.report()

Counted (aten level, whatever Python called them): reading a scalar (``item``, ``bool``,
``int``, ``float`` of a tensor), ``nonzero`` (also ``torch.where(cond)``, boolean-mask
indexing and assignment), ``masked_select``, ``unique`` in every form, ``repeat_interleave``
without ``output_size``, ``bincount``, and copies to host memory (``tolist``, ``numpy``,
``cpu`` of a device tensor; on the CPU, ``tolist`` and ``numpy`` only). Host-to-device copies
of pageable memory are not counted (they cost a staging copy, not a drain of the queue).
"""

from __future__ import annotations

import traceback
from collections import Counter
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

_TORCH_DIR = str(Path(torch.__file__).parent)
_aten = torch.ops.aten
SYNCING_ATEN_OPS = {
    _aten._local_scalar_dense.default: "scalar read",
    _aten.nonzero.default: "nonzero",
    _aten.masked_select.default: "masked_select",
    _aten._unique2.default: "unique",
    _aten.unique_dim.default: "unique",
    _aten.unique_consecutive.default: "unique",
    _aten.bincount.default: "bincount",
}
"""aten overloads whose CUDA kernels wait for the device; value: the name reported."""


def _is_boolean_index(args) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in indices or ())


class _DispatchCounter(TorchDispatchMode):
    def __init__(self, owner: HostSyncCounter):
        super().__init__()
        self.owner = owner

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = SYNCING_ATEN_OPS.get(func)
        if name is None and func in (_aten.index.Tensor, _aten.index_put.default,
                                     _aten.index_put_.default, _aten._index_put_impl_.default):
            # boolean indices become nonzero() inside the CUDA kernel (not a separate op)
            name = "boolean-mask index" if _is_boolean_index(args) else None
        if name is None and func is _aten.repeat_interleave.Tensor:
            name = None if kwargs.get("output_size") is not None else "repeat_interleave"
        if name is not None:  # the mode is off inside func: nested ops are not seen twice
            self.owner._record(name)
        return func(*args, **kwargs)


class _FunctionCounter(TorchFunctionMode):
    def __init__(self, owner: HostSyncCounter):
        super().__init__()
        self.owner = owner

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in ("tolist", "numpy") or (name == "cpu" and args and args[0].device.type
                                           != "cpu"):
            self.owner._record(f"copy to host ({name})")
        return func(*args, **(kwargs or {}))


class HostSyncCounter:
    """Context manager: ``count`` of host-device syncs inside, ``by_kind`` and ``where``
    (the innermost caller outside torch of each, ``folder/file.py:line``) for a report."""

    def __init__(self):
        self.count = 0
        self.by_kind: Counter[str] = Counter()
        self.where: Counter[str] = Counter()
        self._modes = (_FunctionCounter(self), _DispatchCounter(self))

    def _record(self, kind: str) -> None:
        self.count += 1
        self.by_kind[kind] += 1
        frames = [f for f in traceback.extract_stack()
                  if not f.filename.startswith(_TORCH_DIR) and f.filename != __file__]
        site = "/".join(Path(frames[-1].filename).parts[-2:]) + f":{frames[-1].lineno}" \
            if frames else "unknown"
        self.where[f"{kind} at {site}"] += 1

    def __enter__(self) -> HostSyncCounter:  # noqa: PYI034 - typing.Self needs 3.11
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)

    def report(self) -> str:
        """One line per site: ``count  kind at file:line``, most frequent first."""
        return "\n".join(f"{n:5d}  {site}" for site, n in self.where.most_common())
