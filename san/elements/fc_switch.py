"""The FC switch: name server, zoning database and routing for the whole fabric.

Every switch actor holds the same fabric-wide view (as real switches share the zoning
database and the fabric's topology), and an initiator asks the switch its port is plugged
into for a path to a target port.  The switch *grants* a `Route`: which links the data
crosses, so the initiator can charge modeled time.  It never sees payload: the data object
goes from initiator to target directly.

Checks run in the contract's path order, and the first failure is raised:
``ELEMENT_DOWN`` (the target's element or a switch at either end is down), ``LINK_DOWN``
(an end link is down, or no live chain of ISLs joins the two switches), ``ZONING_DENIED``.
Routes take the fewest ISL hops; ties go to the lexicographically smallest list of ISL names.

When an element, a port or an ISL goes down or comes up, the SAN tells every switch and, as
a fabric's RSCN does, the hosts whose paths it can touch (`rscn_hosts`), so a host moves a
transfer under way to another path (`san.flows.client_host`).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..errors import SanError
from ..links import RX, TX, resource


@dataclass(frozen=True)
class Route:
    """A granted path from an initiator port to a target port (both `ELEMENT/PORT`)."""
    initiator: str
    target: str
    isls: tuple[tuple[str, str], ...] = ()  # (isl name, direction of travel initiator->target)

    def resources(self, toward_target: bool = True) -> tuple[str, ...]:
        """The resources data crosses: toward the target (a write) or back (a read)."""
        if toward_target:
            return ((resource(self.initiator, TX),)
                    + tuple(resource(name, d) for name, d in self.isls)
                    + (resource(self.target, RX),))
        flip = {TX: RX, RX: TX}
        return ((resource(self.target, TX),)
                + tuple(resource(name, flip[d]) for name, d in reversed(self.isls))
                + (resource(self.initiator, RX),))

    @property
    def hops(self) -> int:
        return len(self.isls)


class Fabric:
    """The fabric view shared by every switch: attachments, ISLs, zones, what is down."""

    def __init__(self, topology):
        self.attach: dict[str, str] = {}
        for array in topology.arrays:
            for port in array.ports:
                self.attach[f"{array.name}/{port.name}"] = port.switch
        for host in topology.hosts:
            for hba in host.hbas:
                self.attach[f"{host.name}/{hba.name}"] = hba.switch
        self.switches = sorted(s.name for s in topology.fabric.switches)
        self.isls = {isl.name: (isl.a, isl.b) for isl in topology.fabric.isls}
        self.zones = [(z.name, frozenset(z.members)) for z in topology.fabric.zones]
        self.down: set[str] = set()

    def set_up(self, name: str, up: bool) -> None:
        """Mark an element, a port (`array1/fc0`) or an ISL up or down."""
        (self.down.discard if up else self.down.add)(name)

    def zoned(self, a: str, b: str) -> bool:
        return any(a in members and b in members for _, members in self.zones)

    def route(self, initiator: str, target: str) -> Route:
        """A route from `initiator` to `target`, or the first failure in path order."""
        for port in (initiator, target):
            if port not in self.attach:
                raise SanError("NO_SUCH_PORT", f"{port} is not a port of this fabric")
        src, dst = self.attach[initiator], self.attach[target]
        zoned = self.zoned(initiator, target)

        def fail(code: str, message: str) -> SanError:
            # whether the pair is zoned rides along: an initiator with several ports reports
            # the failure of one that could be a path (`client_host.first_granted`)
            exc = SanError(code, message)
            exc.zoned = zoned
            return exc
        target_element = target.split("/")[0]
        if target_element in self.down:
            raise fail("ELEMENT_DOWN", f"{target_element} is down (target of {initiator})")
        for switch in (src, dst):
            if switch in self.down:
                raise fail("ELEMENT_DOWN", f"switch {switch} is down (path {initiator} -> {target})")
        for port in (initiator, target):
            if port in self.down:
                raise fail("LINK_DOWN", f"link {port} is down (path {initiator} -> {target})")
        isls = self._shortest(src, dst)
        if isls is None:
            raise fail("LINK_DOWN", f"no live path from {src} to {dst} "
                                    f"(path {initiator} -> {target})")
        if not zoned:
            raise fail("ZONING_DENIED", f"{initiator} is not zoned with {target}")
        return Route(initiator, target, isls)

    def _shortest(self, src: str, dst: str):
        """Fewest live ISL hops from src to dst, ties by ISL names; None if unreachable."""
        live = [(name, a, b) for name, (a, b) in sorted(self.isls.items())
                if name not in self.down and a not in self.down and b not in self.down]
        neighbours: dict[str, list[tuple[str, str, str]]] = {}
        for name, a, b in live:
            neighbours.setdefault(a, []).append((name, b, TX))
            neighbours.setdefault(b, []).append((name, a, RX))
        dist = {dst: 0}  # hops to dst, by breadth-first search backwards
        queue = deque([dst])
        while queue:
            here = queue.popleft()
            for _, there, _ in neighbours.get(here, []):
                if there not in dist:
                    dist[there] = dist[here] + 1
                    queue.append(there)
        if src not in dist:
            return None
        path, here = [], src
        while here != dst:
            name, there, direction = min(
                (n, t, d) for n, t, d in neighbours[here] if dist.get(t) == dist[here] - 1)
            path.append((name, direction))
            here = there
        return tuple(path)


class FcSwitch:
    """One switch of the fabric (the element an actor wraps)."""

    def __init__(self, name: str, topology):
        self.name = name
        self.fabric = Fabric(topology)

    def grant(self, initiator: str, target: str) -> Route:
        if self.fabric.attach.get(initiator) != self.name:
            raise SanError("NO_SUCH_PORT", f"{initiator} is not plugged into switch {self.name}")
        return self.fabric.route(initiator, target)

    def set_up(self, name: str, up: bool) -> None:
        self.fabric.set_up(name, up)


def rscn_arrays(name: str, kinds: dict[str, str]) -> list[str]:
    """The arrays to tell that `name` went down or came up: they are initiators too (copies
    over FC).  Every array for a switch, an array, an array port or an ISL; none for a host,
    an HBA, a backup server or a tape library (no array's path goes through them)."""
    kind = kinds.get(name.split("/")[0])
    if kind in ("host", "backup_server", "tape_library"):
        return []
    return [a for a, k in kinds.items() if k == "array"]


def rscn_hosts(name: str, kinds: dict[str, str]) -> list[str]:
    """The hosts to tell that `name` (an element, a port ``ELEMENT/PORT`` or an ISL) went down
    or came up, given each element's kind: an HBA's own host; every host for a switch, an
    array, an array port or an ISL; none for a host, a backup server or a tape library."""
    owner = name.split("/")[0]
    kind = kinds.get(owner)
    if kind == "host":
        return [owner] if "/" in name else []
    if kind in ("backup_server", "tape_library"):
        return []
    return [h for h, k in kinds.items() if k == "host"]
