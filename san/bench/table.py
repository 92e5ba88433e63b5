"""The `san bench` table: one per benchmark, each figure beside its baseline, at 80 columns.

Columns: the figure, its value, the baseline's value and what the baseline is, the ratio
(figure / baseline; for times, lower is better) and what the timed runs did to disk.  Every
cell folds rather than cuts, so at any width from 80 columns up every value is shown.  A
figure with a target (``params["meets_target"]``, the `targets` rows) has its verdict after
its ratio: ✓ met, ✗ missed; the table's caption says so, and names the figures judged in
every round rather than by their median (a ✗ beside a ratio under its target is one of them).
"""
from __future__ import annotations

from rich import box
from rich.table import Table

from ..units import format_size

DISK = {"overwrite": "overwr.", "new space": "new", "no data written": "none",
        "reads only": "reads", "memory only": "memory", "overwrite; the pool takes new space": "ovw+new",
        "as the scenario does": "mixed"}


def value(v: float | None, unit: str) -> str:
    """A value with its unit, three significant digits (e.g. 0.853 GiB/s, 41.2 ms, 118 µs)."""
    if v is None:
        return "-"
    if v == 0:
        return f"0 {unit}"
    text = f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if "e" in text:
        text = f"{v:.2e}"
    return f"{text} {unit}"


def ratio(r: float | None) -> str:
    if r is None:
        return "-"
    return f"{r:.2g}×" if r < 10 else f"{r:.0f}×"


def verdict(f) -> str:
    """What follows a figure's ratio: " ✓" if it meets its target, " ✗" if it misses it, ""
    if it has none."""
    met = f.params.get("meets_target")
    return "" if met is None else " ✓" if met else " ✗"


QUICK_VERDICTS = "at --quick sizes, not the 1 GiB the targets are set for"


def caption(figs, quick: bool = False) -> str | None:
    """What ✓ and ✗ mean, for a table holding figures with a target (`quick`: measured at
    --quick's sizes, which the targets were not set for)."""
    if all(f.params.get("meets_target") is None for f in figs):
        return None
    each = [f.name for f in figs if f.params.get("every_run_meets") is not None]
    return ("✓ target met, ✗ missed (the target is in the figure's name)"
            + (f"; judged in every run, not by the median: {', '.join(each)}" if each else "")
            + (f"; {QUICK_VERDICTS}" if quick else ""))


def header(settings, names) -> str:
    import os
    return (f"san bench{' --quick' if settings.quick else ''}: size {format_size(settings.size)}, "
            f"median of {settings.repeat} alternating runs per figure, {os.cpu_count()} CPUs; "
            f"{', '.join(names)}")


def tables(figures, quick: bool = False) -> list[Table]:
    groups: dict[str, list] = {}
    for f in figures:
        groups.setdefault(f.benchmark, []).append(f)
    out = []
    for bench, figs in groups.items():
        t = Table(title=bench, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  caption=caption(figs, quick), caption_justify="left")
        t.add_column("figure", overflow="fold", max_width=24)
        t.add_column("measured", justify="right", overflow="fold", max_width=11)
        t.add_column("baseline", justify="right", overflow="fold", max_width=11)
        t.add_column("baseline is", overflow="fold", max_width=16)
        t.add_column("ratio", justify="right", no_wrap=True)
        t.add_column("disk", overflow="fold", max_width=7)
        for f in figs:
            t.add_row(f.name, value(f.value, f.unit), value(f.baseline.value, f.unit),
                      f.baseline.name, ratio(f.ratio) + verdict(f), DISK.get(f.space, f.space))
        out.append(t)
    return out


def render(out, figures, quick: bool = False) -> None:
    for t in tables(figures, quick):
        out.print(t)
