"""Names and capacities of the links that modeled time charges.

Every transfer is charged on the resources it crosses (docs/files.md and docs/report.md, modeled time).  A full-duplex
link is two resources, one per direction, so a read and a write on one cable do not share
bandwidth:

- an FC endpoint link is named after its endpoint, ``host1/hba0`` or ``array1/fc0``; ``:tx``
  is data leaving the endpoint into the fabric, ``:rx`` data arriving at it;
- an ISL is named after itself; ``:tx`` runs from its ``a`` switch to ``b``, ``:rx`` back;
- each element's NIC on the management LAN is ``NAME/lan`` (``:tx`` / ``:rx``);
- an array's internal copy engine is ``ARRAY/copy`` (one resource, at its ``copy_speed``).

A link runs at the lower of its two ends' speeds.  Resource names are plain strings so the
time model (`san.timemodel`) stays independent of the topology.
"""
from __future__ import annotations

from .kinds import KINDS, specs

TX, RX = "tx", "rx"


def resource(link: str, direction: str | None = None) -> str:
    return link if direction is None else f"{link}:{direction}"


def link_of(res: str) -> str:
    """The link a resource belongs to (what the report's `busiest_link` names)."""
    return res.rsplit(":", 1)[0] if res.endswith((":tx", ":rx")) else res


def capacities(topology) -> dict[str, float]:
    """Bytes per second of every resource of the topology, by resource name."""
    switches = {s.name: s for s in topology.fabric.switches}
    cap: dict[str, float] = {}

    def both(link: str, speed: float) -> None:
        cap[resource(link, TX)] = speed
        cap[resource(link, RX)] = speed

    for array in topology.arrays:
        for port in array.ports:
            both(f"{array.name}/{port.name}", min(port.speed, switches[port.switch].speed))
        cap[resource(f"{array.name}/copy")] = array.copy_speed
    for host in topology.hosts:
        for hba in host.hbas:
            both(f"{host.name}/{hba.name}", min(hba.speed, switches[hba.switch].speed))
    for isl in topology.fabric.isls:
        both(isl.name, min(isl.speed, switches[isl.a].speed, switches[isl.b].speed))
    for name in element_names(topology):
        both(f"{name}/lan", topology.lan.speed)
    for lib in topology.tape_libraries:
        for drive in range(lib.drives):
            cap[resource(f"{lib.name}/drive{drive}")] = lib.drive_speed
    return cap


def element_names(topology) -> list[str]:
    """Every element (each has a NIC on the LAN), kind by kind in the registry's order."""
    return [spec.name for kind in KINDS for spec in specs(topology, kind)]
