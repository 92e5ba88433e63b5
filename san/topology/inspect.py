"""`san inspect`: a topology as rich tables, with allowed and denied paths.

`path_status` is the static path-permission logic (zoning, fabric route, LUN existence,
LUN masking), shared with whoever needs to explain a path without running the SAN.
"""
from __future__ import annotations

from collections import deque

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from san.topology.models import Array, Host, Topology
from san.units import format_size, format_speed

DENIED_NO_PORT = "denied: no such port"
DENIED_NOT_ZONED = "denied: not zoned"
DENIED_NO_ROUTE = "denied: no route"
DENIED_NO_LUN = "denied: no such LUN"
DENIED_MASKED = "denied: LUN masked"


def initiator_ports(topology: Topology, initiator: str) -> list[tuple[str, str]]:
    """(PORT_REF, switch) of the FC ports an initiator (host or array) sends from, in order."""
    element = topology.element(initiator)
    if isinstance(element, Host):
        return [(f"{initiator}/{h.name}", h.switch) for h in element.hbas]
    if isinstance(element, Array):
        return [(f"{initiator}/{p.name}", p.switch) for p in element.ports]
    return []


def zoned(topology: Topology, a: str, b: str) -> bool:
    """True if ports `a` and `b` share a zone."""
    return any(a in z.members and b in z.members for z in topology.fabric.zones)


def connected(topology: Topology, sw1: str, sw2: str) -> bool:
    """True if the fabric joins switches `sw1` and `sw2` (through ISLs)."""
    if sw1 == sw2:
        return True
    seen, todo = {sw1}, deque([sw1])
    while todo:
        here = todo.popleft()
        for isl in topology.fabric.isls:
            for x, y in ((isl.a, isl.b), (isl.b, isl.a)):
                if x == here and y not in seen:
                    if y == sw2:
                        return True
                    seen.add(y)
                    todo.append(y)
    return False


def path_status(topology: Topology, initiator_name: str, port_ref: str, lun: int) -> str | None:
    """None if `initiator_name` may reach LUN `lun` at array port `port_ref`, else why not.

    The reasons, checked in the run-time order: 'denied: no such port', 'denied: not zoned'
    (no port of the initiator shares a zone with the target port), 'denied: no route' (zoned,
    but no ISL path), 'denied: no such LUN', 'denied: LUN masked' (the initiator is not in
    the volume's `hosts`).
    """
    target = topology.port(port_ref)
    owner = port_ref.split("/")[0] if isinstance(port_ref, str) else None
    array = topology.array(owner) if owner else None
    if target is None or array is None:
        return DENIED_NO_PORT
    candidates = [(ref, sw) for ref, sw in initiator_ports(topology, initiator_name)
                  if zoned(topology, ref, port_ref)]
    if not candidates:
        return DENIED_NOT_ZONED
    if not any(connected(topology, sw, target.switch) for _, sw in candidates):
        return DENIED_NO_ROUTE
    volume = array.volume_at(target.name, lun)
    if volume is None:
        return DENIED_NO_LUN
    if initiator_name not in volume.hosts:
        return DENIED_MASKED
    return None


def _status_cell(status: str | None) -> Text:
    if status is None:
        return Text("allowed", style="green")
    return Text("DENIED" + status[len("denied"):], style="red")


def _speed(rate, kind: str = "fc") -> str:
    return format_speed(rate, kind) if rate is not None else "-"


class _Table(Table):
    """A table whose string cells show exactly what they hold: user text (a label, a device
    ID, a media list) is never read as rich markup, where "[daily]" would vanish and "[/x]"
    would raise.  Markup meant as such comes as `Text` (`_status_cell`)."""

    def add_column(self, *args, **options) -> None:
        # a value too wide for the terminal folds onto a second line: cut with an ellipsis,
        # a WWPN or a device ID (what a user copies from here) was lost at 80 columns
        options.setdefault("overflow", "fold")
        super().add_column(*args, **options)

    def add_row(self, *cells, **options) -> None:
        super().add_row(*(Text(c) if isinstance(c, str) else c for c in cells), **options)


def render_inspect(topology: Topology, console: Console | None = None) -> None:
    """Print the topology as tables on `console` (a new rich Console by default)."""
    console = console or Console()
    console.print(f"[bold]Topology {escape(topology.name)}[/bold]  start {topology.start:%Y-%m-%dT%H:%M:%SZ}"
                  f"  LAN {_speed(topology.lan.speed, 'lan')}")

    t = _Table(title="Switches")
    for c in ("switch", "ports used", "speed", "placement"):
        t.add_column(c)
    used: dict[str, int] = {}
    for a in topology.arrays:
        for p in a.ports:
            used[p.switch] = used.get(p.switch, 0) + 1
    for h in topology.hosts:
        for b in h.hbas:
            used[b.switch] = used.get(b.switch, 0) + 1
    for isl in topology.fabric.isls:
        for end in (isl.a, isl.b):
            used[end] = used.get(end, 0) + 1
    for s in topology.fabric.switches:
        t.add_row(s.name, f"{used.get(s.name, 0)}/{s.ports}", _speed(s.speed),
                  _placement(s.placement))
    console.print(t)

    if topology.fabric.isls:
        t = _Table(title="ISLs")
        for c in ("isl", "a", "b", "speed"):
            t.add_column(c)
        for isl in topology.fabric.isls:
            t.add_row(isl.name, isl.a, isl.b, _speed(isl.speed))
        console.print(t)

    t = _Table(title="Zones")
    t.add_column("zone")
    t.add_column("members")
    for z in topology.fabric.zones:
        t.add_row(z.name, ", ".join(z.members))
    console.print(t)

    t = _Table(title="Arrays")
    for c in ("array", "device_id", "port", "number", "wwpn", "switch", "speed", "managers",
              "snapshot pool", "copy speed"):
        t.add_column(c)
    for a in topology.arrays:
        for i, p in enumerate(a.ports or [None]):
            first = i == 0
            t.add_row(a.name if first else "", a.device_id if first else "",
                      p.name if p else "-", str(p.number) if p else "",
                      p.wwpn if p else "", p.switch if p else "", _speed(p.speed) if p else "",
                      ", ".join(a.managers) if first else "",
                      ((format_size(a.snapshot_pool) if a.snapshot_pool is not None else "no cap")
                       + f", {a.snapshot_mode}") if first else "",
                      _speed(a.copy_speed, "plain") if first else "")
    console.print(t)

    t = _Table(title="Volumes / LUN map")
    for c in ("array", "volume", "size", "port", "lun", "hosts", "copy destinations"):
        t.add_column(c)
    for a in topology.arrays:
        for v in a.volumes:
            t.add_row(a.name, str(v.number), format_size(v.size), v.port or "-",
                      "-" if v.lun is None else str(v.lun), ", ".join(v.hosts) or "-",
                      ", ".join(str(d) for d in v.copy_destinations) or "-")
    console.print(t)

    for h in topology.hosts:
        t = _Table(title=f"Host {h.name}: HBAs")
        for c in ("hba", "wwpn", "switch", "speed"):
            t.add_column(c)
        for b in h.hbas:
            t.add_row(b.name, b.wwpn, b.switch, _speed(b.speed))
        console.print(t)
        t = _Table(title=f"Host {h.name}: port table")
        for c in ("mount point", "device", "port", "lun", "filesystem", "path"):
            t.add_column(c)
        for m in h.mounts:
            t.add_row(m.mount_point, m.device or "-", m.port, str(m.lun), m.filesystem,
                      _status_cell(path_status(topology, h.name, m.port, m.lun)))
        console.print(t)
        if h.restore_ports:
            t = _Table(title=f"Host {h.name}: restore port table")
            for c in ("port", "lun", "zoning"):
                t.add_column(c)
            for rp in h.restore_ports:
                status = path_status(topology, h.name, rp.port, rp.lun)
                # a restore LUN is attached only during a file restore
                if status in (DENIED_NO_LUN, DENIED_MASKED):
                    status = None
                t.add_row(rp.port, str(rp.lun), _status_cell(status))
            console.print(t)

    t = _Table(title="Backup definitions")
    for c in ("server", "definition", "host", "mount point", "type", "method", "destination",
              "pre", "post", "label", "schedule"):
        t.add_column(c)
    for s in topology.backup_servers:
        for d in s.definitions:
            dest = d.destination
            if d.type == "tape":
                where = f"tape {dest.media}"
            elif dest.volume is not None:
                where = f"{dest.array} volume {dest.volume}"
            else:
                where = f"{dest.array}"
            t.add_row(s.name, d.name, d.host, d.mount_point, d.type, d.method or "-", where,
                      ", ".join(d.pre) or "-", ", ".join(d.post) or "-", d.label,
                      d.schedule.text if d.schedule else "-")
    console.print(t)

    t = _Table(title="Backup servers and tape libraries")
    for c in ("name", "kind", "tape library / drives", "drive speed", "media", "capacity"):
        t.add_column(c)
    for s in topology.backup_servers:
        t.add_row(s.name, "backup server", s.tape_library or "-", "", "", "")
    for lib in topology.tape_libraries:
        t.add_row(lib.name, "tape library", str(lib.drives), _speed(lib.drive_speed, "plain"),
                  ", ".join(lib.media), format_size(lib.media_capacity))
    console.print(t)


def _placement(placement) -> str:
    if placement is None or not placement.resources:
        return "-"
    return ", ".join(f"{k}={v:g}" for k, v in placement.resources.items())
