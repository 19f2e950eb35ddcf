"""Single-process-shaped training state from expert-parallel ranks, and back.

With expert parallelism each rank holds a slice of the flat expert table (its experts) and
the Adam moments of that slice; everything else is replicated. A checkpoint is always the
state one process would hold: :func:`gather_training_state` assembles it on rank 0, and
:func:`slice_training_state` turns any such state into what this rank loads, whatever the
world size it was written with (2 -> 1, 1 -> 2, ...).

The expert table is the first parameter of the optimiser's first group
(``SwitchField.table_parameters``), so its Adam state is entry ``EXPERT_PARAM_INDEX`` of
the optimiser state dict in every layout.
"""

from __future__ import annotations

from typing import Any

import torch

from switchnerf.moe.expert_parallel import (
    ExpertParallelEncoder,
    gather_expert_state_dict,
    slice_expert_state_dict,
)

EXPERT_PARAM_INDEX = 0
"""Index of the flat expert table in the optimiser state dict."""

_MOMENTS = ("exp_avg", "exp_avg_sq")


def _encoder(field) -> ExpertParallelEncoder | None:
    experts = getattr(field, "experts", None)
    return experts if isinstance(experts, ExpertParallelEncoder) else None


def gather_training_state(field, state: dict[str, Any]) -> dict[str, Any] | None:
    """``state`` (a trainer state with ``field`` and ``optimizer`` entries, this rank's
    shapes) as one process would hold it: on rank 0 the full expert table [P] and its Adam
    moments [P]; None on the other ranks. Collective when ``field`` is expert parallel
    (every rank calls it); otherwise ``state`` itself."""
    enc = _encoder(field)
    if enc is None:
        return state
    field_state = gather_expert_state_dict(state["field"], enc, prefix="experts.")
    opt = state["optimizer"]
    moments = opt["state"].get(EXPERT_PARAM_INDEX, {})
    full_moments = {k: enc.gather_table(moments[k]) for k in _MOMENTS if k in moments}
    if field_state is None:
        return None
    entry = dict(moments, **full_moments)
    opt_state = dict(opt["state"])
    if moments:
        opt_state[EXPERT_PARAM_INDEX] = entry
    return dict(state, field=field_state, optimizer=dict(opt, state=opt_state))


def gathered_renderer(renderer, build):
    """A renderer of the whole field on rank 0 from an expert-parallel ``renderer`` (a
    collective: every rank calls it; None on the other ranks): ``build()`` makes a fresh
    renderer of the run's config, which takes the gathered field and the occupancy grid."""
    field = renderer.field
    state = gather_expert_state_dict(field.state_dict(), field.experts, prefix="experts.")
    if state is None:
        return None
    with torch.random.fork_rng(devices=[]):  # the initial values are overwritten next
        full = build()
    full.field.load_state_dict(state)
    full.grid.load_state_dict(renderer.grid.state_dict())
    return full


def slice_training_state(field, state: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`gather_training_state` for this rank: a single-process
    ``state`` (full expert table) turned into the one this rank's field and optimiser
    load. ``state`` itself when ``field`` is not expert parallel."""
    enc = _encoder(field)
    if enc is None:
        return state
    field_state = slice_expert_state_dict(state["field"], enc, prefix="experts.")
    opt = state["optimizer"]
    moments = opt["state"].get(EXPERT_PARAM_INDEX, {})
    opt_state = dict(opt["state"])
    if moments:
        opt_state[EXPERT_PARAM_INDEX] = dict(
            moments, **{k: enc.slice_table(moments[k]) for k in _MOMENTS if k in moments})
    return dict(state, field=field_state, optimizer=dict(opt, state=opt_state))
