"""Routing diagnostics of a run: logged with the training metrics, summarised by eval.

The statistics are those of :class:`switchnerf.moe.diagnostics.RoutingProbe` (mean gate
value, churn, neighbour disagreement, per-expert load, resolution per region) on a fixed
probe set of occupied points. In ``metrics.jsonl`` each logged step carries them under
``"routing"``, with ``churn`` counted since the previous logged step (``churn_steps``
steps before; after a resume the probe set is drawn anew, so the first churn is null).
"""

from __future__ import annotations

from pathlib import Path

from switchnerf.moe.diagnostics import RoutingProbe
from switchnerf.train.metrics_log import read_log

__all__ = ["EXPERT_MAP_FILE", "RoutingLog", "routing_history", "summarise_routing"]

EXPERT_MAP_FILE = "experts_topdown.png"
"""The top-down expert map ``switchnerf eval`` writes beside eval/metrics.json."""


class RoutingLog:
    """Measures the routing of a renderer's field at logged steps (a mixture only)."""

    def __init__(self, n_points: int = 4096, seed: int = 0) -> None:
        self.probe = RoutingProbe(n_points, seed=seed)

    def measure(self, renderer, step: int) -> dict | None:
        """The probe's statistics at ``step`` (JSON-ready; ``churn_steps``: the steps the
        churn spans), or None for a single grid."""
        if renderer.field.n_experts < 2:
            return None
        return self.probe.measure(renderer.field, renderer.grid, step)


def routing_history(metrics_path: str | Path) -> list[dict]:
    """The ``routing`` entries of a run's metrics.jsonl, with their step, in order (a line
    cut by a kill is left out: the rest of the log still counts)."""
    return [{"step": row["step"], **row["routing"]} for row in read_log(Path(metrics_path))
            if isinstance(row.get("routing"), dict)]


def summarise_routing(renderer, metrics_path: str | Path, *, n_points: int = 8192) -> dict | None:
    """eval's ``routing`` section: the statistics of the loaded field on a fresh probe set,
    plus the churn of training's last logged interval scaled to 100 steps
    (``churn_per_100_steps``, null without a log). None for a single grid."""
    now = RoutingLog(n_points).measure(renderer, 0)
    if now is None:
        return None
    now.pop("churn"), now.pop("churn_steps")
    logged = [r for r in routing_history(metrics_path) if r.get("churn") is not None
              and r.get("churn_steps")]
    last = logged[-1] if logged else None
    now["churn_per_100_steps"] = (None if last is None
                                  else float(last["churn"]) * 100.0 / float(last["churn_steps"]))
    now["churn_logged_at_step"] = None if last is None else last["step"]
    return now
