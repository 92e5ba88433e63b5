"""What a picture of the SAN shows, as plain data: boxes, links and zones of a topology.

`san_graph(topology)` is read by both outputs (the matplotlib drawing and the Graphviz text),
so a PNG, an SVG and a DOT file of one topology tell the same facts: the same elements with
the same detail lines, the same links with the same speeds, the same zones.  Nothing here
imports matplotlib or Ray.
"""
from __future__ import annotations

from dataclasses import dataclass

from san.links import TX, capacities, resource
from san.topology.inspect import path_status
from san.topology.models import Topology
from san.units import format_size, format_speed, plural

# the order of the layers, left to right in a picture: initiators, fabric, targets; the LAN
# row (backup servers, tape libraries) has no FC port, so it sits apart, below
KINDS = ("host", "switch", "array", "backup_server", "tape_library")
KIND_TITLES = {"host": "host", "switch": "FC switch", "array": "disk array",
               "backup_server": "backup server", "tape_library": "tape library"}
# (fill, outline) of each kind's box, the same in a picture and in the DOT text
KIND_COLORS = {"host": ("#e3eefa", "#3b6ea8"), "switch": ("#eeeeee", "#555555"),
               "array": ("#e4f4e4", "#3d8a3d"), "backup_server": ("#f1e8f8", "#7a4a9c"),
               "tape_library": ("#fcefdc", "#b0701e")}
PLACEMENT_COLOR = "#8e24aa"
ISL_COLOR = "#333333"
LAN_COLOR = "#777777"
UNZONED_COLOR = "#b0b0b0"
# one color per zone (Tableau 10, readable on white and told apart by most color-blind
# readers); a topology with more zones reuses them, and the legend still names each zone
ZONE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#17becf", "#bcbd22", "#7f7f7f")


@dataclass(frozen=True)
class Node:
    """One element's box: its name, kind, detail lines, and where it is placed (or None)."""
    name: str
    kind: str
    details: tuple[str, ...]
    placement: str | None


@dataclass(frozen=True)
class Link:
    """A link between an element (`a`) and a switch (`b`), or an ISL between two switches.

    `kind` is "fc" (an HBA or an array port to its switch), "isl", or "lan" (an element's
    NIC to the management LAN).  `port` is the port's ARRAY/PORT or HOST/HBA reference (FC
    links), `label` the port's or the ISL's own name, `speed` the rate the link runs at in
    bytes/s, `zones` the zones its port is a member of, in file order."""
    a: str
    b: str
    kind: str
    label: str
    speed: float
    port: str | None = None
    zones: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """The link's label: 'hba0 · 8GFC', 'isl1 · 16GFC', 'LAN · 1GbE'."""
        return f"{self.label} · {speed_text(self.speed, lan=self.kind == 'lan')}"


@dataclass(frozen=True)
class SanGraph:
    name: str
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]
    zones: tuple[tuple[str, tuple[str, ...]], ...]     # (zone, members) in file order
    lan_speed: float

    def of_kind(self, kind: str) -> list[Node]:
        return [n for n in self.nodes if n.kind == kind]

    def node(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name == name), None)

    def zone_color(self, zone: str) -> str:
        index = next(i for i, (name, _) in enumerate(self.zones) if name == zone)
        return ZONE_COLORS[index % len(ZONE_COLORS)]


# the LAN's own node in the DOT text: parentheses are never in an element's name
LAN = "(LAN)"


def speed_text(rate: float, lan: bool = False) -> str:
    """'8GFC' for an FC rate, '1GbE' for a LAN rate with a name, else 'N MB/s'."""
    return format_speed(rate, "lan" if lan else "fc")


def placement_text(placement) -> str | None:
    """'@site_a' for {site_a: 1}; other amounts are shown ('@site_a=0.01'); None if absent."""
    if placement is None or not placement.resources:
        return None
    return " ".join(f"@{k}" if v == 1 else f"@{k}={v:g}" for k, v in placement.resources.items())


DENIED_MARK = "✗"     # after a mount whose path zoning, routing or LUN masking denies


def printable(text: str) -> str:
    r"""`text` with each character that does not print written as an escape ('\n', '\x01'):
    a mount point may hold any character, and a control character made an SVG that is not
    XML, a newline two lines in a one-line slot.

    >>> printable("/a\x01b"), printable("/x\ny"), printable("/données")
    ('/a\\x01b', '/x\\ny', '/données')
    """
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _mount_line(topology: Topology, host, mount) -> str:
    line = f"{printable(mount.mount_point)} → {mount.port} LUN {mount.lun}"
    status = path_status(topology, host.name, mount.port, mount.lun)
    # a denied path is a topology's way to try access control: say so, as `san inspect` does
    return line if status is None else f"{line} {DENIED_MARK} {status.removeprefix('denied: ')}"


def _size(nbytes: int) -> str:
    """A size as a YAML file likely wrote it: '800 GB' when decimal, else '4 GiB'."""
    for unit, factor in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6)):
        if nbytes >= factor and nbytes % factor == 0:
            return f"{nbytes // factor} {unit}"
    return format_size(nbytes)


def _host_details(topology: Topology, host) -> tuple[str, ...]:
    lines = [_mount_line(topology, host, m) for m in host.mounts[:3]]
    if len(host.mounts) > 3:        # a box stays readable; `san inspect` lists them all
        lines.append(f"+{len(host.mounts) - 3} more mounts")
    return tuple(lines) or ("no mounts",)


def _switch_details(switch, used: int) -> tuple[str, ...]:
    return (f"{format_speed(switch.speed)} · {used}/{switch.ports} ports",)


def _array_details(array) -> tuple[str, ...]:
    mapped = sum(v.port is not None for v in array.volumes)
    return (array.device_id,
            f"{plural(len(array.volumes), 'volume')}, {mapped} mapped")


def _library_details(lib) -> tuple[str, ...]:
    return (f"{plural(lib.drives, 'drive')} · {format_speed(lib.drive_speed, 'plain')}",
            f"{plural(len(lib.media), 'medium', 'media')} × {_size(lib.media_capacity)}")


def _server_details(server) -> tuple[str, ...]:
    lines = [plural(len(server.definitions), "definition")]
    if server.tape_library:
        lines.append(f"tapes: {server.tape_library}")
    return tuple(lines)


def san_graph(topology: Topology) -> SanGraph:
    """The boxes, links and zones of a loaded topology (its speeds already resolved)."""
    zones = tuple((z.name, tuple(z.members)) for z in topology.fabric.zones)

    def zones_of(port_ref: str) -> tuple[str, ...]:
        return tuple(name for name, members in zones if port_ref in members)

    # each link at the speed modeled time runs it (the lower of its ends': `san.links`)
    speed = capacities(topology)
    used: dict[str, int] = {}
    links: list[Link] = []

    def fc(owner: str, port) -> None:
        ref = f"{owner}/{port.name}"
        links.append(Link(owner, port.switch, "fc", port.name, speed[resource(ref, TX)], ref,
                          zones_of(ref)))
        used[port.switch] = used.get(port.switch, 0) + 1

    for host in topology.hosts:
        for hba in host.hbas:
            fc(host.name, hba)
    for array in topology.arrays:
        for port in array.ports:
            fc(array.name, port)
    for isl in topology.fabric.isls:
        links.append(Link(isl.a, isl.b, "isl", isl.name, speed[resource(isl.name, TX)]))
        for end in (isl.a, isl.b):
            used[end] = used.get(end, 0) + 1
    # every element has a NIC on the LAN, but only the elements that work over it alone
    # (backup servers, tape libraries) are drawn on it: a line from every box would hide the
    # fabric
    for element in (*topology.backup_servers, *topology.tape_libraries):
        links.append(Link(element.name, LAN, "lan", "LAN", topology.lan.speed))

    nodes = [Node(h.name, "host", _host_details(topology, h), placement_text(h.placement))
             for h in topology.hosts]
    nodes += [Node(s.name, "switch", _switch_details(s, used.get(s.name, 0)),
                   placement_text(s.placement)) for s in topology.fabric.switches]
    nodes += [Node(a.name, "array", _array_details(a), placement_text(a.placement))
              for a in topology.arrays]
    nodes += [Node(s.name, "backup_server", _server_details(s), placement_text(s.placement))
              for s in topology.backup_servers]
    nodes += [Node(t.name, "tape_library", _library_details(t), placement_text(t.placement))
              for t in topology.tape_libraries]
    return SanGraph(topology.name, tuple(nodes), tuple(links), zones, topology.lan.speed)
