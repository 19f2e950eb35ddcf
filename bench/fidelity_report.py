"""The fidelity study's report (bench/fidelity.py): per (scene, method) means and standard
deviations over seeds, the markdown table, and the plot of held-out PSNR against training
time."""

from __future__ import annotations

import math
import statistics
from pathlib import Path


def _mean_sd(values: list) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals or len(vals) < len(values):
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def summarize(runs: list[dict], thresholds: list[float]) -> list[dict]:
    """One row per (scene, method): means (and standard deviations) over seeds."""
    out = []
    keys = list(dict.fromkeys((r["scene"], r["method"]) for r in runs))
    for scene, method in keys:
        rs = [r for r in runs if r["scene"] == scene and r["method"] == method]
        row = {"scene": scene, "method": method, "seeds": [r["seed"] for r in rs],
               "params_total": rs[0]["params_total"],
               "steps": statistics.fmean(r["steps"] for r in rs),
               "train_s": statistics.fmean(r["train_s"] for r in rs)}
        for key in ("heldout_psnr", "heldout_ssim", "psnr_downtown", "psnr_rest"):
            row[key], row[key + "_sd"] = _mean_sd([r[key] for r in rs])
        row["time_to_psnr"] = {}
        for thr in thresholds:
            hits = [r["time_to_psnr"][f"{thr:g}"] for r in rs]
            done = [h["train_s"] for h in hits if h is not None]
            row["time_to_psnr"][f"{thr:g}"] = {
                "reached": len(done), "of": len(rs),
                "mean_train_s": statistics.fmean(done) if len(done) == len(rs) else None}
        loads = [r["routing"].get("max_load") for r in rs]
        row["max_load"] = statistics.fmean(loads) if None not in loads else None
        out.append(row)
    return out


def _pm(mean, sd, digits=2) -> str:
    return "—" if mean is None else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def markdown(summary: list[dict], thresholds: list[float], seconds: float,
             notes: dict[str, str]) -> str:
    """The study's table per scene (notes: a few words per method)."""
    lines = []
    for scene in dict.fromkeys(r["scene"] for r in summary):
        rows = [r for r in summary if r["scene"] == scene]
        n = len(rows[0]["seeds"])
        thr_cols = "".join(f" time to {t:g} dB |" for t in thresholds)
        lines += [f"**{scene}**: {n} seed(s), {seconds:g} s of training each; mean ± sd",
                  "",
                  ("| method | params | steps | held-out PSNR (dB) | SSIM | downtown PSNR | "
                   f"rest PSNR | max expert load |{thr_cols}"),
                  "|---|---|---|---|---|---|---|---|" + "---|" * len(thresholds)]
        for r in rows:
            times = []
            for t in thresholds:
                hit = r["time_to_psnr"][f"{t:g}"]
                times.append(f"{hit['mean_train_s']:.0f} s" if hit["mean_train_s"] is not None
                             else f"— ({hit['reached']}/{hit['of']})")
            load = "—" if r["max_load"] is None else f"{r['max_load']:.2f}"
            lines.append(
                f"| {r['method']} ({notes.get(r['method'], '')}) | "
                f"{r['params_total']:,} | {r['steps']:.0f} in {r['train_s']:.0f} s | "
                f"{_pm(r['heldout_psnr'], r['heldout_psnr_sd'])} | "
                f"{_pm(r['heldout_ssim'], r['heldout_ssim_sd'], 3)} | "
                f"{_pm(r['psnr_downtown'], r['psnr_downtown_sd'])} | "
                f"{_pm(r['psnr_rest'], r['psnr_rest_sd'])} | {load} | " + " | ".join(times) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(runs: list[dict], out: Path) -> Path:
    """PSNR on the periodic evaluation images against training time, a panel per scene."""
    from bench.plot import line_plot

    panels = []
    for scene in dict.fromkeys(r["scene"] for r in runs):
        series = [{"label": r["method"],
                   "points": [(c["train_s"], c["psnr"]) for c in r["eval_curve"]]}
                  for r in runs if r["scene"] == scene]
        panels.append({"title": f"{scene}: held-out PSNR (one line per seed)", "series": series})
    return line_plot(panels, out, x_label="training time (s)", y_label="PSNR (dB)")
