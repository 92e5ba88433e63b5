"""The Graphviz (DOT) text of a SAN graph: `dot -Tsvg two-arrays.dot` draws it where Graphviz
is installed; san itself never needs it.

Layers as in the pictures (rankdir=LR): hosts, switches, arrays; backup servers and tape
libraries hang on a LAN box.  An FC link is colored by its port's zone (one parallel line per
zone when the port is in several; gray and dashed in none), and a `zones` note lists each
zone's members.  Placement is a line `@site_a` in the element's label.
"""
from __future__ import annotations

from san.graph.model import (
    ISL_COLOR, KIND_COLORS, KIND_TITLES, LAN, LAN_COLOR, PLACEMENT_COLOR, UNZONED_COLOR,
    SanGraph, speed_text,
)


def _q(text: str) -> str:
    """A DOT double-quoted string (names are plain, but mount points and ids may not be)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _attrs(**attrs) -> str:
    return "[" + ", ".join(f"{k}={v}" for k, v in attrs.items()) + "]"


def _esc(text: str) -> str:
    """Text inside an HTML-like label (a mount point or a device id may hold < > &)."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def _label(lines: list[str], placement: str | None) -> str:
    """An HTML-like label: the name bold, the kind and details, the placement colored."""
    name, *rest = lines
    body = [f"<B>{_esc(name)}</B>"] + [_esc(line) for line in rest]
    if placement:
        body.append(f'<FONT COLOR="{PLACEMENT_COLOR}">{_esc(placement)}</FONT>')
    return "<" + "<BR/>".join(body) + ">"


def dot_text(graph: SanGraph) -> str:
    title = _q(f"{graph.name} — SAN topology")
    out = [f"// the SAN of topology {graph.name}, written by `san graph`",
           f"graph {_q(graph.name)} {{",
           "  graph " + _attrs(rankdir="LR", ranksep="1.4", nodesep="0.5", fontname="Helvetica",
                               labelloc="t", label=title) + ";",
           "  node " + _attrs(shape="box", style=_q("rounded,filled"), fontname="Helvetica",
                              fontsize="10") + ";",
           "  edge " + _attrs(fontname="Helvetica", fontsize="9") + ";"]
    plural = {"switch": "FC switches", "tape_library": "tape libraries"}
    for kind in ("host", "switch", "array", "backup_server", "tape_library"):
        nodes = graph.of_kind(kind)
        if not nodes:
            continue
        fill, line = KIND_COLORS[kind]
        out.append(f"  // {plural.get(kind, KIND_TITLES[kind] + 's')}")
        for node in nodes:
            label = _label([node.name, KIND_TITLES[kind], *node.details], node.placement)
            attrs = _attrs(label=label, fillcolor=_q(fill), color=_q(line))
            out.append(f"  {_q(node.name)} {attrs};")
        if kind in ("host", "switch", "array"):     # one layer each, left to right
            out.append("  { rank=same; " + " ".join(_q(n.name) + ";" for n in nodes) + " }")
    if any(link.kind == "lan" for link in graph.links):
        label = _q(f"LAN · {speed_text(graph.lan_speed, lan=True)}")
        attrs = _attrs(label=label, shape="box", style="dashed", color=_q(LAN_COLOR))
        out.append(f"  {_q(LAN)} {attrs};")

    out.append("  // links: FC (port · speed at the lower of port and switch), ISLs, LAN")
    for link in graph.links:
        if link.kind == "fc":
            colors = [graph.zone_color(z) for z in link.zones] or [UNZONED_COLOR]
            # a port that is a host's HBA starts its link, an array's port ends it: the
            # ranks then read hosts -> switches -> arrays
            ends = (link.a, link.b) if graph.node(link.a).kind == "host" else (link.b, link.a)
            attrs = dict(label=_q(link.text), color=_q(":".join(colors)),
                         tooltip=_q(f"{link.port}: {', '.join(link.zones) or 'in no zone'}"))
            if not link.zones:
                attrs["style"] = "dashed"
        elif link.kind == "isl":
            ends = (link.a, link.b)
            attrs = dict(label=_q(link.text), color=_q(ISL_COLOR), penwidth="3")
        else:           # from the LAN, so what hangs on it ranks right of it, with arrays
            ends = (link.b, link.a)
            attrs = dict(style="dashed", color=_q(LAN_COLOR))
        out.append(f"  {_q(ends[0])} -- {_q(ends[1])} {_attrs(**attrs)};")

    if graph.zones:
        rows = "".join(
            f'<TR><TD ALIGN="LEFT"><FONT COLOR="{graph.zone_color(name)}">■</FONT> '
            f'{_esc(name)}: {_esc(", ".join(members))}</TD></TR>' for name, members in graph.zones)
        table = f'<<TABLE BORDER="0"><TR><TD ALIGN="LEFT"><B>zones</B></TD></TR>{rows}</TABLE>>'
        attrs = _attrs(shape="note", style="filled", fillcolor=_q("#ffffff"), label=table)
        out.append(f"  {_q('(zones)')} {attrs};")     # not a name an element may have
    out.append("}")
    return "\n".join(out) + "\n"
