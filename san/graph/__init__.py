"""`san graph`: a picture of the SAN a topology describes, for people rather than for the
simulator.

It shows what `san inspect` tabulates, at a glance: hosts, FC switches (with their ISLs) and
disk arrays in three layers left to right, backup servers and tape libraries on the LAN
below; every FC link labelled with its port and the speed it runs at (the lower of the
port's and its switch's, as modeled time uses it), ISLs with theirs; each zone a color of the
links of its member ports, listed with its members in the legend; an element's `placement`
as a line `@site_a` in its box.

Three formats, chosen by the output's extension (`FORMATS`): `.png` and `.svg` drawn with
matplotlib (imported only here, only then), `.dot` as Graphviz text, written without Graphviz.
The rooms: `model` (what is shown, from a topology), `layout` (where, in inches), `draw`
(matplotlib) and `dot` (the text).  Nothing here imports Ray.

>>> from san.topology import load_topology
>>> text = graph_bytes(load_topology("topologies/two-switches.yaml"), ".dot").decode()
>>> "isl1 · 16GFC" in text and text.startswith("// the SAN of topology two-switches")
True
"""
from __future__ import annotations

from pathlib import Path

from san.graph.model import SanGraph, san_graph
from san.topology.models import Topology

__all__ = ["FORMATS", "graph_bytes", "san_graph", "SanGraph"]

FORMATS = (".png", ".svg", ".dot")


def graph_bytes(topology: Topology, suffix: str) -> bytes:
    """The picture of `topology` in the format of `suffix` (one of FORMATS, any case)."""
    suffix = suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"unknown picture format {suffix!r} (expected one of: {', '.join(FORMATS)})")
    graph = san_graph(topology)
    if suffix == ".dot":
        from san.graph.dot import dot_text
        return dot_text(graph).encode("utf-8")
    from san.graph.draw import measure, render      # matplotlib: only for a picture
    from san.graph.layout import layout
    return render(layout(graph, measure), suffix[1:])


def suffix_of(out: str) -> str:
    """The extension that picks the format: '.png' of 'a/b.PNG', '' of 'a/b'."""
    return Path(out).suffix.lower()
