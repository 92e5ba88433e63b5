"""Where everything of a SAN picture goes: a layered layout in inches, as plain shapes.

Hosts on the left, switches in the middle (joined by ISLs, top to bottom), arrays on the
right; backup servers and tape libraries below, on a dashed LAN bus; the legend (zones and
the line key) at the bottom, the title at the top.  Coordinates are inches with y growing
downwards, so the drawing maps one unit to one inch and text sizes in points stay what they
say whatever the topology's size.

Each FC link leaves its element's box horizontally, carrying its label (`hba0 · 8GFC`) on
that straight stub, then runs straight to its switch: the labels of one box stack at the
port pitch and never meet a slanted line.  Ports are ordered on each box by the height of
what they lead to, so links between two columns do not cross.

The layout measures text with a function given to it (`Measure`), so it can be checked for
overlaps in tests with the same metrics the drawing uses; it imports nothing to draw with.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from san.graph.model import (
    DENIED_MARK, ISL_COLOR, KIND_COLORS, KIND_TITLES, LAN_COLOR, PLACEMENT_COLOR, UNZONED_COLOR, Link,
    Node, SanGraph, speed_text,
)

# (text, size in points, bold) -> (width, height) in inches
Measure = Callable[[str, float, bool], tuple[float, float]]

NAME_PT, TEXT_PT, LINK_PT, TITLE_PT = 10.0, 8.0, 8.0, 13.0
PAD_X, PAD_Y = 0.14, 0.09           # inside a box
PORT_PITCH = 0.30                   # between two ports' links on one side of a box
ROW_GAP = 0.40                      # between two boxes of a column
STUB_PAD = 0.10                     # before and after a link label on its stub
SWITCH_STUB = 0.18                  # the straight end of a link at its switch
MIN_SLANT = 0.9                     # the least room for a link's slanted part
ZONE_OFFSET = 0.035                 # between the parallel lines of a port in several zones
LAN_DROP = 0.55                     # from the fabric's bottom down to the LAN bus
LEGEND_GAP = 0.55


def estimate(text: str, size: float, bold: bool) -> tuple[float, float]:
    """A rough Measure (DejaVu Sans averages), for when no font is at hand."""
    return len(text) * size * (0.64 if bold else 0.58) / 72, size * 1.2 / 72


@dataclass
class Rect:
    x: float
    y: float
    w: float
    h: float
    fill: str
    edge: str
    name: str = ""          # the element it is the box of ("" for the legend's swatches)
    style: str = "solid"


@dataclass
class Line:
    points: list[tuple[float, float]]
    color: str
    width: float            # points
    style: str = "solid"    # solid | dashed | dotted


@dataclass
class Text:
    x: float
    y: float
    text: str
    size: float
    w: float                # measured extent, inches
    h: float
    color: str = "#000000"
    bold: bool = False
    italic: bool = False
    ha: str = "left"        # left | center | right
    va: str = "top"         # top | center | bottom
    halo: bool = False      # drawn on white, over whatever it crosses
    owner: str = ""         # the box it sits in, if any

    @property
    def extent(self) -> tuple[float, float, float, float]:
        x0 = {"left": self.x, "center": self.x - self.w / 2, "right": self.x - self.w}[self.ha]
        y0 = {"top": self.y, "center": self.y - self.h / 2, "bottom": self.y - self.h}[self.va]
        return x0, y0, x0 + self.w, y0 + self.h


@dataclass
class Scene:
    width: float = 0.0
    height: float = 0.0
    rects: list[Rect] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    texts: list[Text] = field(default_factory=list)

    def box(self, name: str) -> Rect | None:
        return next((r for r in self.rects if r.name == name), None)


class _Layout:
    def __init__(self, graph: SanGraph, measure: Measure):
        self.g, self.m, self.scene = graph, measure, Scene()

    def text(self, x, y, text, size=TEXT_PT, **kw) -> Text:
        w, h = self.m(text, size, kw.get("bold", False))
        item = Text(x, y, text, size, w, h, **kw)
        self.scene.texts.append(item)
        return item

    # ------------------------------------------------------------------ boxes

    def box_lines(self, node: Node) -> list[tuple[str, float, dict]]:
        lines = [(node.name, NAME_PT, dict(bold=True)),
                 (KIND_TITLES[node.kind], TEXT_PT, dict(color="#555555", italic=True))]
        lines += [(d, TEXT_PT, {}) for d in node.details]
        if node.placement:
            lines.append((node.placement, TEXT_PT, dict(color=PLACEMENT_COLOR, bold=True)))
        return lines

    def text_size(self, node: Node) -> tuple[float, float]:
        sizes = [self.m(t, s, kw.get("bold", False)) for t, s, kw in self.box_lines(node)]
        return (max(w for w, _ in sizes) + 2 * PAD_X,
                sum(s * 1.3 / 72 for _, s, _ in self.box_lines(node)) + 2 * PAD_Y)

    def place_box(self, node: Node, x: float, y: float, w: float, h: float) -> Rect:
        fill, edge = KIND_COLORS[node.kind]
        rect = Rect(x, y, w, h, fill, edge, node.name)
        self.scene.rects.append(rect)
        lines = self.box_lines(node)
        block = sum(s * 1.3 / 72 for _, s, _ in lines)
        ty = y + (h - block) / 2         # the text block centered in a box made taller by ports
        for text, size, kw in lines:
            self.text(x + w / 2, ty + size * 0.15 / 72, text, size, ha="center", owner=node.name,
                      **kw)
            ty += size * 1.3 / 72
        return rect

    # ------------------------------------------------------------------ the fabric

    def switch_order(self) -> list[Node]:
        """Switches in file order, except that one joined by an ISL follows its neighbour:
        a chain of ISLs stays a chain of adjacent boxes, each ISL a short vertical line."""
        switches = self.g.of_kind("switch")
        names = [s.name for s in switches]
        near: dict[str, list[str]] = {n: [] for n in names}
        for link in self.g.links:
            if link.kind == "isl" and link.a in near and link.b in near:
                near[link.a].append(link.b)
                near[link.b].append(link.a)
        order: list[str] = []
        for start in names:
            if start in order:
                continue
            todo = deque([start])
            while todo:
                here = todo.popleft()
                if here in order:
                    continue
                order.append(here)
                todo.extend(n for n in near[here] if n not in order)
        return [self.g.node(n) for n in order]

    def layout(self) -> Scene:
        g = self.g
        fc = [link for link in g.links if link.kind == "fc"]
        isls = [link for link in g.links if link.kind == "isl"]
        hosts, arrays = g.of_kind("host"), g.of_kind("array")
        switches = self.switch_order()
        links_of = {n.name: [link for link in fc if link.a == n.name] for n in g.nodes}

        # the stubs: long enough for the longest label on that side, and its zone lines
        def stub(side_links: list[Link]) -> float:
            widths = [self.m(link.text, LINK_PT, False)[0] for link in side_links]
            return max(widths, default=0.0) + 2 * STUB_PAD

        host_links = [link for link in fc if g.node(link.a).kind == "host"]
        array_links = [link for link in fc if g.node(link.a).kind == "array"]
        host_stub, array_stub = stub(host_links), stub(array_links)

        def column_width(nodes):
            return max((self.text_size(n)[0] for n in nodes), default=0.0)

        host_w, switch_w, array_w = column_width(hosts), column_width(switches), column_width(arrays)
        host_w = max(host_w, 1.2) if hosts else 0.0
        switch_w = max(switch_w, 1.2)
        array_w = max(array_w, 1.2) if arrays else 0.0
        x_host = 0.0
        x_switch = x_host + (host_w + host_stub + MIN_SLANT + SWITCH_STUB if hosts else 0.0)
        x_array = x_switch + switch_w + SWITCH_STUB + MIN_SLANT + array_stub

        # switches, top to bottom; the gap under one holds the labels of the ISLs that
        # leave it downwards (to the next switch, or around it to one further down)
        isl_label_h = self.m("isl", LINK_PT, False)[1] + 0.06
        index = {s.name: i for i, s in enumerate(switches)}
        down_from: dict[str, list[Link]] = {}
        for link in isls:
            upper = min((link.a, link.b), key=lambda n: index[n])
            down_from.setdefault(upper, []).append(link)
        switch_box: dict[str, Rect] = {}
        y = 0.0
        for s in switches:
            n_left = sum(1 for link in host_links if link.b == s.name)
            n_right = sum(1 for link in array_links if link.b == s.name)
            h = max(self.text_size(s)[1], max(n_left, n_right) * PORT_PITCH + 0.1)
            switch_box[s.name] = self.place_box(s, x_switch, y, switch_w, h)
            below = down_from.get(s.name, [])
            y += h + (max(ROW_GAP, len(below) * isl_label_h + 0.45) if below else ROW_GAP)
        center = {n: r.y + r.h / 2 for n, r in switch_box.items()}

        # hosts and arrays beside the switches they plug into, in that order
        def place_column(nodes: list[Node], x: float, w: float) -> dict[str, Rect]:
            def want(n: Node) -> float | None:
                ys = [center[link.b] for link in links_of[n.name] if link.b in center]
                return sum(ys) / len(ys) if ys else None
            wanted = {n.name: want(n) for n in nodes}
            last = max(center.values(), default=0.0)

            def key(n: Node):
                # by the mean height of its switches; on a tie, the one reaching higher
                # first, so its upper link does not cross the other's
                ys = [center[link.b] for link in links_of[n.name] if link.b in center]
                return (wanted[n.name] is None, round(wanted[n.name] or 0.0, 3), min(ys, default=0.0))
            order = sorted(nodes, key=key)
            heights = {n.name: max(self.text_size(n)[1],
                                   len(links_of[n.name]) * PORT_PITCH + 0.1) for n in order}
            tops, bottom, shifts = {}, None, []
            for n in order:
                desired = (wanted[n.name] if wanted[n.name] is not None else last) - heights[n.name] / 2
                top = desired if bottom is None else max(desired, bottom + ROW_GAP)
                tops[n.name], bottom = top, top + heights[n.name]
                if wanted[n.name] is not None:
                    shifts.append(top - desired)
            # pushed down one after another, the column drifts below its switches: lift it
            # back by the mean drift, so two hosts on one switch sit either side of it
            lift = sum(shifts) / len(shifts) if shifts else 0.0
            return {n.name: self.place_box(n, x, tops[n.name] - lift, w, heights[n.name])
                    for n in order}

        host_box = place_column(hosts, x_host, host_w)
        array_box = place_column(arrays, x_array, array_w)

        # port anchors: on the side facing the switches, ordered by the switch's height
        def anchors(boxes: dict[str, Rect], side: str) -> dict[str, tuple[float, float]]:
            out = {}
            for name, r in boxes.items():
                links = sorted(links_of[name], key=lambda link: center.get(link.b, 0.0))
                x = r.x + r.w if side == "left" else r.x
                for i, link in enumerate(links):
                    out[link.port] = (x, r.y + r.h * (i + 0.5) / len(links))
            return out
        element_end = {**anchors(host_box, "left"), **anchors(array_box, "right")}

        # switch anchors: each side ordered by the height of the element end
        switch_end: dict[str, tuple[float, float]] = {}
        for name, r in switch_box.items():
            for links, x in ((host_links, r.x), (array_links, r.x + r.w)):
                mine = sorted((link for link in links if link.b == name),
                              key=lambda link: element_end[link.port][1])
                for i, link in enumerate(mine):
                    switch_end[link.port] = (x, r.y + r.h * (i + 0.5) / len(mine))

        for link in fc:
            self.fc_link(link, element_end[link.port], switch_end[link.port],
                         host_stub if g.node(link.a).kind == "host" else array_stub)
        self.isl_links(down_from, index, switch_box, isl_label_h)
        fabric_bottom = max((r.y + r.h for r in self.scene.rects), default=0.0)
        bottom = self.lan_row(fabric_bottom, x_switch, x_array)
        self.legend(bottom + LEGEND_GAP)
        self.title()
        self.fit()
        return self.scene

    def fc_link(self, link: Link, start, end, stub: float) -> None:
        (x0, y0), (x3, y3) = start, end
        direction = 1 if x3 > x0 else -1             # hosts send right, arrays left
        x1, x2 = x0 + direction * stub, x3 - direction * SWITCH_STUB
        colors = [self.g.zone_color(z) for z in link.zones] or [UNZONED_COLOR]
        style = "solid" if link.zones else "dashed"
        for i, color in enumerate(colors):
            dy = (i - (len(colors) - 1) / 2) * ZONE_OFFSET
            self.scene.lines.append(Line([(x0, y0 + dy), (x1, y0 + dy), (x2, y3 + dy),
                                          (x3, y3 + dy)], color, 1.6, style))
        top = y0 - (len(colors) - 1) / 2 * ZONE_OFFSET - 0.025
        self.text(x0 + direction * STUB_PAD, top, link.text, LINK_PT, va="bottom",
                  ha="left" if direction > 0 else "right", color="#222222")

    def isl_links(self, down_from, index, switch_box, label_h) -> None:
        """ISLs between adjacent switches as vertical lines through the gap between them;
        one to a switch further down leaves from the right of the box and runs on a lane
        right of the column, around the switches between (so it touches none of them).
        Every ISL's label sits in the gap below its upper switch, right of the lines."""
        lanes = []                                   # (link, upper box, lower box)
        label_right = max((r.x + r.w for r in switch_box.values()), default=0.0)
        for upper, links in down_from.items():
            ra = switch_box[upper]
            adjacent = [link for link in links if abs(index[link.a] - index[link.b]) == 1]
            around = [link for link in links if link not in adjacent]
            center = ra.x + ra.w / 2
            xs = [center + (i - (len(adjacent) - 1) / 2) * 0.12 for i in range(len(adjacent))]
            for x, link in zip(xs, adjacent):
                rb = switch_box[link.b if link.a == upper else link.a]
                self.scene.lines.append(Line([(x, ra.y + ra.h), (x, rb.y)], ISL_COLOR, 3.0))
            for link in around:
                lanes.append((link, ra, switch_box[link.b if link.a == upper else link.a]))
            x_label = (max(xs) if xs else center) + 0.14
            bottom = min(r.y for r in switch_box.values() if r.y > ra.y)    # the next box
            top = ra.y + ra.h + (bottom - ra.y - ra.h - len(links) * label_h) / 2
            for i, link in enumerate(adjacent + around):
                label = self.text(x_label, top + i * label_h, link.text, LINK_PT, halo=True,
                                  color="#222222")
                label_right = max(label_right, label.extent[2])
        for j, (link, ra, rb) in enumerate(lanes):
            lane = label_right + 0.12 + 0.1 * j      # right of every ISL label
            x = ra.x + ra.w - 0.12 - 0.1 * j
            drop, rise = ra.y + ra.h + 0.1, rb.y - 0.1
            self.scene.lines.append(Line([(x, ra.y + ra.h), (x, drop), (lane, drop),
                                          (lane, rise), (x, rise), (x, rb.y)], ISL_COLOR, 3.0))

    # ------------------------------------------------------------------ the LAN

    def lan_row(self, fabric_bottom: float, x_switch: float, x_array: float) -> float:
        servers, libraries = self.g.of_kind("backup_server"), self.g.of_kind("tape_library")
        if not servers and not libraries:
            return fabric_bottom
        bus_y = fabric_bottom + LAN_DROP
        top = bus_y + 0.35

        def row(nodes: list[Node], x: float) -> list[Rect]:
            rects = []
            for n in nodes:
                w, h = self.text_size(n)
                w = max(w, 1.2)
                rects.append(self.place_box(n, x, top, w, h))
                x += w + ROW_GAP
            return rects
        placed = row(servers, x_switch)
        x_lib = max(x_array, max((r.x + r.w + ROW_GAP for r in placed), default=x_array))
        placed += row(libraries, x_lib)
        left = min((r.x for r in self.scene.rects), default=0.0)
        right = max(r.x + r.w for r in self.scene.rects)
        lan_text = f"LAN · {speed_text(self.g.lan_speed, lan=True)}"
        nic_text = "every element has a NIC on it"
        label = max(self.m(lan_text, LINK_PT, True)[0], self.m(nic_text, LINK_PT - 1, False)[0])
        # the bus starts left of everything hanging on it, so its labels never meet a stub
        left = min(left, min(r.x + r.w / 2 for r in placed) - label - 0.3)
        self.scene.lines.append(Line([(left, bus_y), (right, bus_y)], LAN_COLOR, 1.6, "dashed"))
        for r in placed:
            self.scene.lines.append(Line([(r.x + r.w / 2, bus_y), (r.x + r.w / 2, r.y)],
                                         LAN_COLOR, 1.2, "dashed"))
        self.text(left, bus_y - 0.04, lan_text, LINK_PT, va="bottom", bold=True, color="#444444")
        self.text(left, bus_y + 0.05, nic_text, LINK_PT - 1, color="#666666", italic=True)
        return max(r.y + r.h for r in placed)

    # ------------------------------------------------------------------ legend, title

    def legend(self, top: float) -> None:
        left = min([r.x for r in self.scene.rects] +
                   [x for line in self.scene.lines for x, _ in line.points], default=0.0)
        line_h = TEXT_PT * 1.55 / 72
        swatch = 0.32
        self.text(left, top, "zones", TEXT_PT + 1, bold=True)
        y = top + line_h * 1.2
        if not self.g.zones:
            self.text(left, y, "none: every path is denied", TEXT_PT, italic=True)
            y += line_h
        for name, members in self.g.zones:
            color = self.g.zone_color(name)
            self.scene.lines.append(Line([(left, y + line_h * 0.4), (left + swatch, y + line_h * 0.4)],
                                         color, 2.4))
            self.text(left + swatch + 0.1, y, f"{name}: {', '.join(members)}", TEXT_PT)
            y += line_h
        zones_right = max(t.extent[2] for t in self.scene.texts if t.y >= top)

        # the key: what each kind of line means
        kx = zones_right + 0.6
        ky = top + line_h * 1.2
        # only the kinds of line this picture has
        kinds = {link.kind for link in self.g.links}
        fc = [link for link in self.g.links if link.kind == "fc"]
        key = []
        if fc:
            key.append((["#555555"], "solid", 1.6,
                        "FC link, colored by zone: port · speed (lower of port and switch)"))
        if any(len(link.zones) > 1 for link in fc):
            key.append((["#555555", "#aaaaaa"], "solid", 1.6,
                        "FC link of a port in several zones (one line each)"))
        if any(not link.zones for link in fc):
            key.append(([UNZONED_COLOR], "dashed", 1.6, "FC link of a port in no zone"))
        if "isl" in kinds:
            key.append(([ISL_COLOR], "solid", 3.0, "ISL: link between switches"))
        if "lan" in kinds:
            key.append(([LAN_COLOR], "dashed", 1.6, "LAN"))
        denied = any(DENIED_MARK in d for n in self.g.nodes for d in n.details)
        placed = any(n.placement for n in self.g.nodes)
        if key or denied or placed:
            self.text(kx, top, "key", TEXT_PT + 1, bold=True)
        for colors, style, width, what in key:
            for i, color in enumerate(colors):
                dy = (i - (len(colors) - 1) / 2) * ZONE_OFFSET
                self.scene.lines.append(Line([(kx, ky + line_h * 0.4 + dy),
                                              (kx + swatch, ky + line_h * 0.4 + dy)],
                                             color, width, style))
            self.text(kx + swatch + 0.1, ky, what, TEXT_PT)
            ky += line_h
        if denied:
            self.text(kx + swatch / 2, ky, DENIED_MARK, TEXT_PT, bold=True, ha="center")
            self.text(kx + swatch + 0.1, ky, "a mount whose path is denied, and why", TEXT_PT)
            ky += line_h
        if placed:
            mark = self.text(kx, ky, "@resource", TEXT_PT, bold=True, color=PLACEMENT_COLOR)
            self.text(max(kx + swatch, mark.extent[2]) + 0.1, ky,
                      "placement: runs on the Ray nodes offering it", TEXT_PT)

    def title(self) -> None:
        top = min((t.extent[1] for t in self.scene.texts), default=0.0)
        top = min([top] + [r.y for r in self.scene.rects])
        left = min([t.extent[0] for t in self.scene.texts] + [r.x for r in self.scene.rects])
        self.text(left, top - 0.3, f"{self.g.name} — SAN topology", TITLE_PT, bold=True,
                  va="bottom")

    def fit(self, margin: float = 0.25) -> None:
        """Move everything so the top-left is at (margin, margin); size the scene to it."""
        s = self.scene
        xs = [t.extent[0] for t in s.texts] + [r.x for r in s.rects] + \
            [p[0] for line in s.lines for p in line.points]
        ys = [t.extent[1] for t in s.texts] + [r.y for r in s.rects] + \
            [p[1] for line in s.lines for p in line.points]
        x2 = [t.extent[2] for t in s.texts] + [r.x + r.w for r in s.rects] + xs
        y2 = [t.extent[3] for t in s.texts] + [r.y + r.h for r in s.rects] + ys
        dx, dy = margin - min(xs), margin - min(ys)
        for r in s.rects:
            r.x, r.y = r.x + dx, r.y + dy
        for t in s.texts:
            t.x, t.y = t.x + dx, t.y + dy
        for line in s.lines:
            line.points = [(x + dx, y + dy) for x, y in line.points]
        s.width = max(x2) + dx + margin
        s.height = max(y2) + dy + margin


def layout(graph: SanGraph, measure: Measure = estimate) -> Scene:
    """The scene of a SAN graph: boxes, lines and texts, in inches from the top-left."""
    return _Layout(graph, measure).layout()
