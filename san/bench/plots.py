"""PNG plots of the benchmark curves (`san.bench.core.Curve`, or their JSON dicts).

matplotlib is imported only here, inside the functions, with the Agg canvas (no display, no
pyplot state): `san bench` without `--plot` never loads it.  A curve of kind ``lines`` draws
its series against x (measured series solid, baselines dashed; series with a `panel` go into
side-by-side panels sharing a y axis); a ``scatter`` draws each series' [x, y] points, a
baseline series as a dashed line; ``bars`` draws the first measured series as one bar per x
(labelled by `x_ticks`) and each baseline series as a marker on its bar: a target, pointing up
if its name says "at least" (met when the bar reaches it), down for "at most", or a grey
reference that judges nothing (row 7's floor); a bar is green when it meets every target
drawn on it, red when it misses one, unless the curve carries its own `verdicts` (row 7 is
judged round by round, not by its median: its bar is red if one round missed).  Every plot
has a title, the
curve's note under it, axis labels with units and a legend.
"""
from __future__ import annotations

from dataclasses import asdict, is_dataclass
from pathlib import Path

MARKERS = "os^Dv<>phX*P"
NEUTRAL = "DsphX*P"                # for bars: ^ and v say "at least" and "at most"
GREEN, RED, BLUE = "#2ca02c", "#d62728", "#1f77b4"     # bars: met, missed, no target


def _as_dict(curve) -> dict:
    return asdict(curve) if is_dataclass(curve) else dict(curve)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _titles(fig, c: dict) -> None:
    fig.suptitle(c["title"], fontsize=12, fontweight="bold", y=0.985)
    if c.get("note"):
        fig.text(0.5, 0.925, c["note"], ha="center", va="center", fontsize=8.5, color="#444444",
                 wrap=True)


def _lines(fig, c: dict) -> None:
    panels = []
    for s in c["series"]:
        if s.get("panel", "") not in panels:
            panels.append(s.get("panel", ""))
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    colors: dict[str, str] = {}
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
    x = c["x"]
    for ax, panel in zip(axes, panels):
        for s in [s for s in c["series"] if s.get("panel", "") == panel]:
            color = colors.setdefault(s["name"], palette[len(colors) % len(palette)])
            pts = [(xv, yv) for xv, yv in zip(x, s["y"]) if yv is not None]
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=s["name"], color=color,
                    linestyle="--" if s.get("baseline") else "-",
                    linewidth=1.5 if s.get("baseline") else 2.5,
                    marker="s" if s.get("baseline") else "o", markersize=5 if s.get("baseline") else 7,
                    alpha=0.85 if s.get("baseline") else 1.0)
        if c.get("x_log", True):
            ax.set_xscale("log", base=2 if _powers_of_two(x) else 10)
        if c.get("y_log"):
            ax.set_yscale("log")
            _plain_log_labels(ax.yaxis, *ax.get_ylim())
        if c.get("x_ticks"):
            ax.set_xticks(x)
            ax.set_xticklabels(c["x_ticks"])
            ax.minorticks_off() if not c.get("y_log") else ax.xaxis.set_minor_locator(_null_locator())
        ax.set_xlabel(c["x_label"])
        if panel:
            ax.set_title(panel, fontsize=10)
        ax.grid(True, which="major", alpha=0.35)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best", framealpha=0.85)
    axes[0].set_ylabel(c["y_label"])
    if not c.get("y_log"):
        axes[0].set_ylim(bottom=0, top=_top(c))


def _null_locator():
    from matplotlib.ticker import NullLocator
    return NullLocator()


def _plain_log_labels(axis, lo: float = 1.0, hi: float = 10.0) -> None:
    """Log-axis ticks labelled as plain numbers (0.05, 1, 20): at 1, 2, 5 x 10^k over a short
    range, at each power of ten over more than three decades."""
    import math
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    wide = lo > 0 and hi > 0 and math.log10(hi / lo) > 3
    axis.set_major_locator(LogLocator(base=10, subs=(1.0,) if wide else (1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _top(c: dict) -> float:
    ys = [y for s in c["series"] for y in s["y"] if y is not None]
    return max(ys) * 1.25 if ys else 1.0


def _powers_of_two(x) -> bool:
    import math
    return bool(x) and all(v > 0 and abs(math.log2(v) - round(math.log2(v))) < 1e-9 for v in x)


def _scatter(fig, c: dict) -> None:
    ax = fig.subplots(1, 1)
    import matplotlib
    cmap = matplotlib.colormaps["tab10"]
    measured = [s for s in c["series"] if not s.get("baseline")]
    for i, s in enumerate(measured):
        pts = s["y"]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=s["name"], s=30,
                   color=cmap(i % 10), marker=MARKERS[i % len(MARKERS)], edgecolors="black",
                   linewidths=0.4, alpha=0.9, zorder=3)
    for s in c["series"]:
        if s.get("baseline") and s["y"]:
            ax.plot([p[0] for p in s["y"]], [p[1] for p in s["y"]], "--", color="black",
                    linewidth=1.2, label=f"{s['name']} (baseline)", zorder=2)
    xs = [p[0] for s in measured for p in s["y"] if p[0] and p[0] > 0]
    ys = [p[1] for s in measured for p in s["y"] if p[1] and p[1] > 0]
    if xs and ys:               # each axis spans its own points; the diagonal is clipped to them
        ax.set_xlim(min(xs) / 1.4, max(xs) * 1.4)
        ax.set_ylim(min(ys) / 1.4, max(ys) * 1.4)
    if c.get("x_log", True):
        ax.set_xscale("log")
        _plain_log_labels(ax.xaxis, *ax.get_xlim())
    if c.get("y_log", True):
        ax.set_yscale("log")
        _plain_log_labels(ax.yaxis, *ax.get_ylim())
    ax.set_xlabel(c["x_label"])
    ax.set_ylabel(c["y_label"])
    ax.grid(True, which="major", alpha=0.35)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _bound(name: str) -> str | None:
    """Whether a target series bounds from below ("at least") or above ("at most")."""
    name = name.lower()
    if "at least" in name or "≥" in name:
        return "min"
    if "at most" in name or "≤" in name:
        return "max"
    return None


def bar_colors(values: list, targets: list[tuple[str | None, list]],
               verdicts: list | None = None) -> list[str]:
    """Per bar: green if it meets every target on it, red if it misses one, blue if none;
    where `verdicts` says True or False, green or red as it says."""
    colors = []
    for i, v in enumerate(values):
        given = verdicts[i] if verdicts is not None and i < len(verdicts) else None
        if given is not None:
            colors.append(GREEN if given else RED)
            continue
        verdicts_here = []
        for bound, ys in targets:
            t = ys[i] if i < len(ys) else None
            if v is None or t is None or bound is None:
                continue
            verdicts_here.append(v >= t if bound == "min" else v <= t)
        colors.append(BLUE if not verdicts_here else GREEN if all(verdicts_here) else RED)
    return colors


def bar_label(v: float) -> str:
    """The number written over a bar: three significant digits, so that a ratio just past
    its target (1.218 against 1.2) does not read as the target itself."""
    return f"{v:.3g}" if v < 10 else f"{v:,.0f}"


def _bars(fig, c: dict) -> None:
    ax = fig.subplots(1, 1)
    measured = [s for s in c["series"] if not s.get("baseline")]
    targets = [s for s in c["series"] if s.get("baseline")]
    x = list(range(len(c["x"])))
    values = measured[0]["y"] if measured else [None] * len(x)
    shown = [(i, v) for i, v in enumerate(values) if v is not None and (v > 0 or not c.get("y_log"))]
    everything = [v for _, v in shown] + [t for s in targets for t in s["y"] if t is not None]
    if c.get("y_log"):
        ax.set_yscale("log")
    bottom = min(everything) / 2 if c.get("y_log") and everything else 0
    colors = bar_colors(values, [(_bound(s["name"]), s["y"]) for s in targets], c.get("verdicts"))
    if shown:
        ax.bar([i for i, _ in shown], [v - bottom for _, v in shown], bottom=bottom, width=0.6,
               color=[colors[i] for i, _ in shown], edgecolor="black", linewidth=0.5,
               label=measured[0]["name"], zorder=2)
        for i, v in shown:
            ax.annotate(bar_label(v), (i, v), textcoords="offset points",
                        xytext=(0, 3), ha="center", fontsize=7.5)
    for k, s in enumerate(targets):      # a line across the bar, its marker just beside it
        bound = _bound(s["name"])       # none: a reference (e.g. a floor), grey, not a verdict
        pts = [(i, t) for i, t in zip(x, s["y"]) if t is not None]
        if pts:
            color = "black" if bound else "dimgrey"
            ax.hlines([p[1] for p in pts], [p[0] - 0.36 for p in pts], [p[0] + 0.36 for p in pts],
                      colors=color, linestyles="--" if bound else ":", linewidth=1.2, zorder=3)
            ax.scatter([p[0] + 0.36 for p in pts], [p[1] for p in pts], s=60, color=color,
                       zorder=3, label=s["name"],
                       marker="^" if bound == "min" else "v" if bound == "max" else NEUTRAL[k % len(NEUTRAL)])
    if c.get("y_log") and everything:
        ax.set_ylim(bottom, max(everything) * 2.5)
        _plain_log_labels(ax.yaxis, bottom, max(everything) * 2.5)
    elif everything:
        ax.set_ylim(0, max(everything) * 1.25)
    ax.set_xticks(x)
    ax.set_xticklabels(c.get("x_ticks") or [str(v) for v in c["x"]], rotation=35, ha="right",
                       fontsize=8)
    ax.set_xlabel(c["x_label"])
    ax.set_ylabel(c["y_label"])
    ax.grid(True, axis="y", which="major", alpha=0.35)
    if ax.get_legend_handles_labels()[0]:   # beside the bars: inside, "best" still hid some
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def plot_curve(curve, path) -> Path:
    """Draw one curve into the PNG at `path`; returns the path."""
    c = _as_dict(curve)
    path = Path(path)
    panels = {s.get("panel", "") for s in c["series"]} if c.get("kind", "lines") == "lines" else {""}
    scatter = c.get("kind") == "scatter"
    width = 11.0 if len(panels) > 1 else 9.0 if scatter else 12.0 if c.get("kind") == "bars" else 8.5
    fig = _figure(width, 6.6 if scatter else 5.6)
    if c.get("kind") == "scatter":
        _scatter(fig, c)
    elif c.get("kind") == "bars":
        _bars(fig, c)
    else:
        _lines(fig, c)
    _titles(fig, c)
    fig.tight_layout(rect=(0, 0, 1, 0.915))
    fig.savefig(path, format="png")
    return path


def plot_all(curves, folder) -> list[Path]:
    """One PNG per curve in `folder` (created if missing), named after the curve's key."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [plot_curve(c, folder / f"{_as_dict(c)['key']}.png") for c in curves]
