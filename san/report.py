"""The run report: the table of steps printed on the terminal and the JSON file (`--json`).

Besides the steps, the totals say where the time went: per link direction (``host1/hba0:tx``,
an ISL's ``:rx``, ``array1/copy``, ``lib1/drive0``) the bytes it carried, the modeled seconds
it was busy and that as a fraction of the run's modeled time (`utilization`); the busiest
link of the run (highest utilization) is its bottleneck, and the table's caption names it.
"""
from __future__ import annotations

import json
from pathlib import Path

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .units import format_size


def totals(reports, links: dict | None = None) -> dict:
    """The run's totals; `links` is `Runner.links(modeled_s)` (per link direction)."""
    links = links or {}
    return {"wall_s": round(sum(r.wall_s for r in reports), 4),
            "modeled_s": round(sum(r.modeled_s for r in reports), 6),
            "bytes": sum(r.bytes for r in reports),
            "links": links,
            "busiest_link": busiest_link(links)}


def busiest_link(links: dict) -> str | None:
    """The link direction with the highest utilization (ties: the first name), or None."""
    if not links:
        return None
    return min(links, key=lambda name: (-links[name]["utilization"], name))


def build(scenario, reports, catalog: dict, runner=None) -> dict:
    """The JSON report; with the `runner` that ran the steps, the totals list the links."""
    modeled = round(sum(r.modeled_s for r in reports), 6)
    links = runner.links(modeled) if runner is not None else None
    return {"scenario": scenario.name, "topology": scenario.topology.name,
            "ok": all(r.ok for r in reports),
            "steps": [r.to_dict() for r in reports],
            "catalog": catalog,
            "totals": totals(reports, links)}


def write_json(report: dict, path: Path) -> None:
    Path(path).write_text(json.dumps(report, indent=2) + "\n")


def _rows(reports, prefix=""):
    for r in reports:
        yield prefix, r
        yield from _rows(r.children, prefix + f"{r.index}.")


def table(scenario, reports, report: dict | None = None) -> Table:
    """The steps as a table; with the JSON `report`, its caption names the run's busiest link.

    Every cell folds (wraps, breaking long words) rather than cutting, so at any width from 80
    columns up every value is shown in full."""
    t = Table(title=Text(f"scenario {scenario.name} on {scenario.topology.name}"), title_justify="left",
              caption_justify="left")
    for name, justify in (("#", "right"), ("step", "left"), ("ok", "center"),
                          ("outcome", "left"), ("modeled s", "right"), ("wall s", "right"),
                          ("bytes", "right"), ("busiest link", "left")):
        t.add_column(name, justify=justify, overflow="fold")
    busiest = report["totals"]["busiest_link"] if report else None
    if busiest:
        use = report["totals"]["links"][busiest]
        t.caption = (f"busiest link of the run: {busiest}, busy {use['busy_s']:.4f} s of "
                     f"{report['totals']['modeled_s']:.4f} s modeled ({use['utilization']:.0%}), "
                     f"{format_size(use['bytes'])} carried")
    for prefix, r in _rows(reports):
        # user text (a title, a path quoted in an error) shows as written, never as markup
        label = escape(r.title or r.op)
        if r.title:
            label += f" [dim]({r.op})[/dim]"
        if prefix:
            label = "  " * prefix.count(".") + label
        if r.error is None:
            outcome = "done"
        else:
            outcome = r.error.code if r.ok else f"{r.error.code}: {r.error.message}"
            if r.ok:
                outcome += " (expected)"
        if r.error is None and r.expected:
            outcome = f"succeeded, expected {r.expected}"
        elif r.error is None and not r.ok:      # a concurrent step whose inner step was not ok
            outcome = "an inner step did not go as expected"
        t.add_row(f"{prefix}{r.index}", label, "[green]✓[/green]" if r.ok else "[red]✗[/red]",
                  Text(outcome), f"{r.modeled_s:.4f}", f"{r.wall_s:.2f}",
                  format_size(r.bytes) if r.bytes else "-", Text(r.busiest_link or "-"))
    return t
