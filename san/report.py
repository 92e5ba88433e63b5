"""The run report: the table of steps printed on the terminal and the JSON file (`--json`)."""
from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from .units import format_size


def totals(reports) -> dict:
    return {"wall_s": round(sum(r.wall_s for r in reports), 4),
            "modeled_s": round(sum(r.modeled_s for r in reports), 6),
            "bytes": sum(r.bytes for r in reports)}


def build(scenario, reports, catalog: dict) -> dict:
    return {"scenario": scenario.name, "topology": scenario.topology.name,
            "ok": all(r.ok for r in reports),
            "steps": [r.to_dict() for r in reports],
            "catalog": catalog,
            "totals": totals(reports)}


def write_json(report: dict, path: Path) -> None:
    Path(path).write_text(json.dumps(report, indent=2) + "\n")


def _rows(reports, prefix=""):
    for r in reports:
        yield prefix, r
        yield from _rows(r.children, prefix + f"{r.index}.")


def table(scenario, reports) -> Table:
    t = Table(title=f"scenario {scenario.name} on {scenario.topology.name}", title_justify="left")
    for name, justify in (("#", "right"), ("step", "left"), ("ok", "center"),
                          ("outcome", "left"), ("modeled s", "right"), ("wall s", "right"),
                          ("bytes", "right"), ("busiest link", "left")):
        t.add_column(name, justify=justify)
    for prefix, r in _rows(reports):
        label = r.title or r.op
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
        t.add_row(f"{prefix}{r.index}", label, "[green]✓[/green]" if r.ok else "[red]✗[/red]",
                  outcome, f"{r.modeled_s:.4f}", f"{r.wall_s:.2f}",
                  format_size(r.bytes) if r.bytes else "-", r.busiest_link or "-")
    return t
