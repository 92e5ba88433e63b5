"""A laid-out scene drawn with matplotlib (Agg, no display) into PNG or SVG bytes.

Imported only when a picture is asked for: matplotlib takes a second to import, and
`san validate` / `san inspect` must not pay for it.  No pyplot: a bare Figure with its own
canvas keeps no global state and never looks for a display.
"""
from __future__ import annotations

import io

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import FancyBboxPatch
from matplotlib.textpath import TextToPath

from san.graph.layout import Scene

PNG_DPI = 110
_TEXT_TO_PATH = TextToPath()
_DASHES = {"solid": "-", "dashed": (0, (4, 2.5)), "dotted": ":"}


def _font(size: float, bold: bool = False, italic: bool = False) -> FontProperties:
    return FontProperties(family="DejaVu Sans", size=size, weight="bold" if bold else "normal",
                          style="italic" if italic else "normal")


def measure(text: str, size: float, bold: bool) -> tuple[float, float]:
    """The width and height in inches of one line of text, as the drawing will set it."""
    w, h, _ = _TEXT_TO_PATH.get_text_width_height_descent(text, _font(size, bold), ismath=False)
    # the line's full height, not the ink's: a label of 'aaa' is as tall as one of 'Ég'
    _, full, _ = _TEXT_TO_PATH.get_text_width_height_descent("Ég", _font(size, bold), ismath=False)
    return w / 72, max(h, full) / 72


def render(scene: Scene, fmt: str) -> bytes:
    """The scene as PNG or SVG bytes; one unit of the scene is one inch."""
    with matplotlib.rc_context({
        "svg.fonttype": "none",     # SVG text stays text: searchable, and the names testable
        "svg.hashsalt": "san",      # the same topology gives the same SVG bytes
        "font.family": "DejaVu Sans",
    }):
        fig = Figure(figsize=(scene.width, scene.height))
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_xlim(0, scene.width)
        ax.set_ylim(scene.height, 0)        # y grows downwards, as the layout's does
        ax.set_axis_off()
        for r in scene.rects:
            ax.add_patch(FancyBboxPatch((r.x, r.y), r.w, r.h, boxstyle="round,pad=0,rounding_size=0.07",
                                        facecolor=r.fill, edgecolor=r.edge, linewidth=1.2,
                                        linestyle=_DASHES[r.style], zorder=2,
                                        gid=r.name or None))   # <g id="host1"> in an SVG
        for line in scene.lines:
            xs, ys = zip(*line.points)
            ax.plot(xs, ys, color=line.color, linewidth=line.width,
                    linestyle=_DASHES[line.style], solid_capstyle="butt",
                    solid_joinstyle="round", zorder=1)
        for t in scene.texts:
            ax.text(t.x, t.y, t.text, fontproperties=_font(t.size, t.bold, t.italic),
                    color=t.color, ha=t.ha, va=t.va, zorder=3, parse_math=False,
                    bbox=dict(facecolor="white", edgecolor="none", pad=1.0) if t.halo else None)
        buf = io.BytesIO()
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        fig.savefig(buf, format=fmt, dpi=PNG_DPI, metadata=metadata, facecolor="white")
        return buf.getvalue()
