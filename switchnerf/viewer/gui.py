"""The viewer's control panel: output selector with legends, render sizes, stats, training.

Every handle is server-wide (all browsers share the settings); callbacks only change the
shared ``RenderSettings`` / ``ComputeGate`` and ask the viewer to refresh. Every value a
browser sends is clamped on the server (``switchnerf.viewer.limits``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from switchnerf.render.colorize import OUTPUTS
from switchnerf.render.palette import EXPERT_PALETTE
from switchnerf.viewer import limits
from switchnerf.viewer.compute import ComputeGate
from switchnerf.viewer.session import RenderSettings

__all__ = ["LiveStats", "ViewerGui", "expert_legend_html"]


def _hex(e: int) -> str:
    r, g, b = (round(float(v) * 255) for v in EXPERT_PALETTE[e % EXPERT_PALETTE.shape[0]])
    return f"#{r:02x}{g:02x}{b:02x}"


def _rgb(e: int) -> tuple[int, int, int]:
    r, g, b = (round(float(v) * 255) for v in EXPERT_PALETTE[e % EXPERT_PALETTE.shape[0]])
    return r, g, b


def expert_legend_html(n_experts: int, share: list[float] | None = None) -> str:
    """One coloured swatch per expert (the palette of the expert map), with its share."""
    items = []
    for e in range(n_experts):
        pct = "" if share is None or e >= len(share) else f" {100 * share[e]:.0f}%"
        items.append(f'<span style="white-space:nowrap;margin-right:8px">'
                     f'<span style="display:inline-block;width:12px;height:12px;'
                     f'background:{_hex(e)};margin-right:3px;vertical-align:middle"></span>'
                     f'E{e}{pct}</span>')
    return '<div style="font-size:0.85em;line-height:1.6">' + "".join(items) + "</div>"


@dataclass
class LiveStats:
    """What the stats panel shows (written by the training callback and the renderers)."""

    step: int = 0
    train_rays_per_s: float | None = None
    render_rays_per_s: float | None = None
    psnr: float | None = None
    load: list[float] | None = None  # per-expert share of the last step's samples
    training: bool = False
    paused: bool = False


class ViewerGui:
    """Builds the panel on ``server.gui``.

    Args:
        server: the viser server.
        settings: shared render settings (changed here).
        gate: the compute gate (render share, pause).
        n_experts: for the legend and the load bars.
        training: show the training controls.
        refresh: called after any setting that changes the image.
    """

    def __init__(self, server, *, settings: RenderSettings, gate: ComputeGate, n_experts: int,
                 training: bool, refresh: Callable[[], None]) -> None:
        gui = server.gui
        self.settings, self.gate, self.n_experts, self._refresh = settings, gate, n_experts, refresh
        self.tabs = gui.add_tab_group()
        with self.tabs.add_tab("View"):
            self.output = gui.add_dropdown("Output", OUTPUTS, initial_value=settings.output)
            self.legend = gui.add_html("")
            lo = limits.MIN_SIDE
            settings.max_side = limits.clamp_number(settings.max_side, lo, limits.MAX_RENDER_SIDE,
                                                    default=256, integer=True)
            settings.preview_side = limits.clamp_number(
                settings.preview_side, lo, limits.MAX_PREVIEW_SIDE, default=64, integer=True)
            self.max_side = gui.add_slider("Resolution", lo, limits.MAX_RENDER_SIDE, 16,
                                           settings.max_side,
                                           hint="longer side of the still image, pixels")
            self.preview_side = gui.add_slider("Moving res.", lo, limits.MAX_PREVIEW_SIDE, 16,
                                               settings.preview_side,
                                               hint="longer side while the camera moves")
            self.fix_depth = gui.add_checkbox("Fix depth range", False,
                                              hint="keep the current near/far")
        with self.tabs.add_tab("Stats"):
            self.stats_md = gui.add_markdown("")
            gui.add_markdown("Expert load")
            self.load_legend = gui.add_html(expert_legend_html(n_experts))
            self.load_bars = [gui.add_progress_bar(0.0, color=_rgb(e)) for e in range(n_experts)]
            if training:
                self.share = gui.add_slider("Render share", 0.0, 0.95, 0.05, gate.render_share,
                                            hint="share of time renders get while waited for")
                share = limits.guard_number(self.share, 0.0, 0.95)
                self.pause = gui.add_button("Pause training")
                self.share.on_update(lambda _: setattr(gate, "render_share", share()))
                self.pause.on_click(lambda _: self._toggle_pause())
        output = limits.guard_choice(self.output, OUTPUTS)
        max_side = limits.guard_number(self.max_side, lo, limits.MAX_RENDER_SIDE, integer=True)
        preview_side = limits.guard_number(self.preview_side, lo, limits.MAX_PREVIEW_SIDE,
                                           integer=True)
        self.output.on_update(lambda _: self._set("output", output()))
        self.max_side.on_update(lambda _: self._set("max_side", max_side()))
        self.preview_side.on_update(lambda _: self._set("preview_side", preview_side()))
        self.fix_depth.on_update(lambda _: self._fix_depth())
        self._last_info: dict = {}
        self.show_info({})

    # ------------------------------------------------------------------ callbacks
    def _set(self, name: str, value) -> None:
        setattr(self.settings, name, value)
        self.show_info(self._last_info)
        self._refresh()

    def _fix_depth(self) -> None:
        info = self._last_info
        if self.fix_depth.value and "near" in info:
            self.settings.depth_range = (info["near"], info["far"])
        else:
            self.settings.depth_range = None
        self._refresh()

    def _toggle_pause(self) -> None:
        self.gate.set_paused(not self.gate.paused)
        self.pause.label = "Resume training" if self.gate.paused else "Pause training"

    # ------------------------------------------------------------------ displays
    def show_info(self, info: dict) -> None:
        """Legend of the current output (from ``colorize``'s info of the last frame)."""
        self._last_info = info
        out = self.settings.output
        if out == "depth":
            if "near" in info:
                text = (f"<b>depth</b> (turbo): near {info['near']:.3g} (blue) &ndash; "
                        f"far {info['far']:.3g} (red) world units")
            else:
                text = "<b>depth</b> (turbo): near blue, far red"
        elif out == "experts":
            text = expert_legend_html(self.n_experts, info.get("share"))
        elif out == "gate_confidence":
            text = (f"<b>gate confidence</b> (viridis): 1/{self.n_experts} (purple) &ndash; "
                    "1 (yellow); black: empty")
        elif out == "opacity":
            text = "<b>opacity</b>: black 0 &ndash; white 1"
        else:
            text = "<b>rgb</b>"
        html = f'<div style="font-size:0.85em">{text}</div>'
        if self.legend.content != html:
            self.legend.content = html

    def show_stats(self, s: LiveStats) -> None:
        def fmt(v, spec):
            return "&ndash;" if v is None else format(v, spec)

        lines = [f"**step** {s.step}"]
        if s.training:
            lines.append(f"**training** {'paused' if s.paused else 'running'}, "
                         f"{fmt(s.train_rays_per_s, ',.0f')} rays/s, "
                         f"PSNR {fmt(s.psnr, '.2f')} dB")
        lines.append(f"**render** {fmt(s.render_rays_per_s, ',.0f')} rays/s")
        md = "  \n".join(lines)
        if self.stats_md.content != md:
            self.stats_md.content = md
        if s.load is not None:
            for bar, v in zip(self.load_bars, s.load):
                value = float(min(max(100.0 * v, 0.0), 100.0))
                if abs(bar.value - value) > 0.5:
                    bar.value = value
