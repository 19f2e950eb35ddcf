"""Line plots as PNG drawn with PIL (no plotting library needed): one panel per scene,
one coloured line per series, shared legend.

    line_plot(panels, "curves.png", x_label="training time (s)", y_label="PSNR (dB)")

``panels``: list of {"title": str, "series": [{"label": str, "points": [(x, y), ...]}]};
series with the same label get the same colour in every panel. The file is written
atomically.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from switchnerf.io_utils import write_bytes_atomic

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127)]
PANEL_W, PANEL_H = 520, 360
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 64, 16, 32, 44
LEGEND_ROW = 18


def nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round tick values from at or below ``lo`` to at or above ``hi`` (steps of 1, 2 or
    5 x 10^k).

    >>> nice_ticks(0.0, 600.0)
    [0.0, 100.0, 200.0, 300.0, 400.0, 500.0, 600.0]
    >>> nice_ticks(14.2, 16.6)
    [14.0, 14.5, 15.0, 15.5, 16.0, 16.5, 17.0]
    """
    if not hi > lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(float(k * step), 10) for k in range(first, last + 1)]


def _fmt(v: float) -> str:
    return f"{v:g}"


def line_plot(panels: list[dict], out: str | Path, *, x_label: str, y_label: str) -> Path:
    """Draw ``panels`` side by side into the PNG ``out``; returns its path."""
    labels: list[str] = []
    for panel in panels:
        for s in panel["series"]:
            if s["label"] not in labels:
                labels.append(s["label"])
    colour = {lab: COLOURS[k % len(COLOURS)] for k, lab in enumerate(labels)}
    legend_h = LEGEND_ROW * len(labels) + 8
    width, height = PANEL_W * max(len(panels), 1), PANEL_H + legend_h
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for k, panel in enumerate(panels):
        _panel(draw, font, k * PANEL_W, panel, colour, x_label, y_label)
    y = PANEL_H + 4
    for lab in labels:
        draw.line([(MARGIN_L, y + 7), (MARGIN_L + 24, y + 7)], fill=colour[lab], width=3)
        draw.text((MARGIN_L + 32, y), lab, fill="black", font=font)
        y += LEGEND_ROW
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    write_bytes_atomic(out, buf.getvalue())
    return out


def _panel(draw, font, x0: int, panel: dict, colour: dict, x_label: str, y_label: str) -> None:
    pts = [p for s in panel["series"] for p in s["points"]
           if p[1] is not None and math.isfinite(p[1])]
    xs, ys = [p[0] for p in pts] or [0.0, 1.0], [p[1] for p in pts] or [0.0, 1.0]
    xt = nice_ticks(min(0.0, min(xs)), max(xs))
    yt = nice_ticks(min(ys), max(ys))
    left, right = x0 + MARGIN_L, x0 + PANEL_W - MARGIN_R
    top, bottom = MARGIN_T, PANEL_H - MARGIN_B

    def to_px(x: float, y: float) -> tuple[float, float]:
        fx = (x - xt[0]) / max(xt[-1] - xt[0], 1e-12)
        fy = (y - yt[0]) / max(yt[-1] - yt[0], 1e-12)
        return left + fx * (right - left), bottom - fy * (bottom - top)

    for t in xt:
        px, _ = to_px(t, yt[0])
        draw.line([(px, top), (px, bottom)], fill=(230, 230, 230))
        draw.text((px - 3 * len(_fmt(t)), bottom + 4), _fmt(t), fill="black", font=font)
    for t in yt:
        _, py = to_px(xt[0], t)
        draw.line([(left, py), (right, py)], fill=(230, 230, 230))
        draw.text((left - 6 - 6 * len(_fmt(t)), py - 6), _fmt(t), fill="black", font=font)
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text(((left + right) / 2 - 3 * len(panel["title"]), 10), panel["title"], fill="black",
              font=font)
    draw.text(((left + right) / 2 - 3 * len(x_label), bottom + 22), x_label, fill="black",
              font=font)
    draw.text((x0 + 4, 10), y_label, fill="black", font=font)
    for s in panel["series"]:
        line = [to_px(x, y) for x, y in s["points"] if y is not None and math.isfinite(y)]
        if len(line) > 1:
            draw.line(line, fill=colour[s["label"]], width=2)
        for px, py in line:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour[s["label"]])
