"""Cross-reference checks of a topology, on the plain data, tolerantly; and their tools.

The models (`models`) check each value's shape; these checks look at how values refer to
each other: names exist, names and numbers are unique, counts fit.  They run on the raw
data even when part of it has type errors (entries that are not mappings, or values of the
wrong type, are skipped: the model validation reports those), so that one run reports
every problem of a file.  `check_topology` returns the `Index` of the names it found, which
the checks of a scenario's steps (`step_checks`) use with the same `Reporter` and helpers.
Names are looked up in dicts made once, and `one_of` reads only the names it shows, so the
checks of a file with many names and many bad references take time in proportion to its size.
"""
from __future__ import annotations

from typing import Any

from san.kinds import KINDS
from san.topology.fields import METHODS, NAME_RE, as_text, one_of
from san.topology.problems import message
from san.units import parse_size


class Reporter:
    """Reports problems at paths relative to `prefix` in a loader `Source`."""

    def __init__(self, src, prefix: tuple = ()):
        self.src = src
        self.prefix = tuple(prefix)

    def __call__(self, path, what: str, expected: str | None = None, **kw) -> None:
        self.src.report(self.prefix + tuple(path), what, expected=expected, **kw)

    def missing(self, path, expected: str | None = None) -> None:
        """A missing key: located at the enclosing mapping."""
        full = self.prefix + tuple(path)
        line, col = self.src.mark(full[:-1])
        self.src.add(line, col, full, message("missing required key", None,
                                              expected or f"a '{full[-1]}' key here"))

    def line(self, path) -> int:
        return self.src.mark(self.prefix + tuple(path))[0]


# ---------------------------------------------------------------------------- helpers

def dict_of(value) -> dict:
    return value if isinstance(value, dict) else {}


def entries_of(data, key) -> list[tuple[int, dict]]:
    """(index, entry) of the mapping entries of the list data[key]."""
    seq = dict_of(data).get(key)
    if not isinstance(seq, list):
        return []
    return [(i, item) for i, item in enumerate(seq) if isinstance(item, dict)]


def list_of(data, key) -> list[tuple[int, Any]]:
    seq = dict_of(data).get(key)
    return list(enumerate(seq)) if isinstance(seq, list) else []


def str_of(value) -> str | None:
    return value if isinstance(value, str) else None


def text_of(value) -> str | None:
    text = as_text(value)
    return text if text else None


def int_of(value) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def is_port_ref(value) -> bool:
    """True if `value` has the ARRAY/PORT form (else the models report its syntax)."""
    parts = value.split("/") if isinstance(value, str) else []
    return len(parts) == 2 and all(NAME_RE.fullmatch(p) for p in parts)


def size_of(value) -> int | None:
    try:
        return parse_size(value)
    except (ValueError, TypeError):
        return None


class _Unique:
    """Reports the second and later uses of a value that must be unique."""

    def __init__(self, r: Reporter, what: str):
        self.r, self.what, self.seen = r, what, {}

    def add(self, value, path) -> None:
        if value is None:
            return
        try:
            hash(value)
        except TypeError:
            return
        if value in self.seen:
            self.r(path, f"duplicate {self.what}",
                   expected=f"a unique {self.what}, this one is first used at line "
                            f"{self.r.line(self.seen[value])}")
        else:
            self.seen[value] = path


# ---------------------------------------------------------------------------- topology

class Index:
    """The names a topology defines (whatever their other problems)."""

    def __init__(self):
        self.elements: dict[str, str] = {}                  # name -> kind
        self.switches: dict[str, dict] = {}
        self.isls: dict[str, dict] = {}
        self.arrays: dict[str, dict] = {}                   # name -> {'ports', 'volumes'}
        self.hosts: dict[str, dict] = {}                    # name -> {'hbas', 'mounts'}
        self.servers: dict[str, dict] = {}
        self.libraries: dict[str, list] = {}
        self.definitions: dict[str, dict] = {}              # name -> the raw definition
        self.snapshot_arrays: set[str] = set()

    def array_ports(self) -> list[str]:
        return [f"{a}/{p}" for a, info in self.arrays.items() for p in info["ports"]]

    def host_hbas(self) -> list[str]:
        return [f"{h}/{b}" for h, info in self.hosts.items() for b in info["hbas"]]

    def initiators(self) -> list[str]:
        return [n for n, k in self.elements.items() if k in ("host", "array", "backup_server")]

    def volumes(self, array: str) -> dict:
        return self.arrays.get(array, {}).get("volumes", {})


def check_topology(data: Any, r: Reporter) -> Index:
    """Reports the cross-reference problems of topology `data`; returns its names."""
    index = Index()
    if not isinstance(data, dict):
        return index
    fabric = dict_of(data.get("fabric"))
    tables = {"switch": index.switches, "isl": index.isls, "backup_server": index.servers}
    groups = []
    for kind in KINDS:     # every element kind, and the ISLs: one namespace of names
        *parents, key = kind.collection
        holder = data
        for parent in parents:
            holder = dict_of(holder.get(parent))
        groups.append((kind.name, kind.collection, entries_of(holder, key), tables.get(kind.name)))
        if kind.name == "switch":
            groups.append(("isl", ("fabric", "isls"), entries_of(fabric, "isls"), index.isls))
    names = _Unique(r, "element name")
    for kind, base, entries, table in groups:
        for i, entry in entries:
            name = str_of(entry.get("name"))
            names.add(name, base + (i, "name"))
            if name is None or name in index.elements:
                continue
            index.elements[name] = kind
            if table is not None:
                table[name] = entry
            if kind == "array":
                index.arrays[name] = {
                    "ports": {p: e for _, e in entries_of(entry, "ports")
                              if (p := str_of(e.get("name"))) is not None},
                    "volumes": {n: size_of(v.get("size")) for _, v in entries_of(entry, "volumes")
                                if (n := int_of(v.get("number"))) is not None},
                }
            elif kind == "host":
                index.hosts[name] = {
                    "hbas": {b: e for _, e in entries_of(entry, "hbas")
                             if (b := str_of(e.get("name"))) is not None},
                    "mounts": {m: None for _, e in entries_of(entry, "mounts")
                               if (m := text_of(e.get("mount_point"))) is not None},
                }
            elif kind == "tape_library":
                index.libraries[name] = [m for _, v in list_of(entry, "media")
                                         if (m := text_of(v)) is not None]

    _check_fabric(data, fabric, r, index)
    _check_arrays(data, r, index)
    _check_hosts(data, r, index)
    _check_servers(data, r, index)
    _check_libraries(data, r, index)
    return index


def _check_switch_ref(r, path, value, index) -> None:
    name = str_of(value)
    if name is not None and name not in index.switches:
        r(path, "unknown switch", expected=one_of(index.switches))


def _check_fabric(data, fabric, r, index) -> None:
    attached: dict[str, int] = {}

    def attach(value):
        if str_of(value) in index.switches:
            attached[value] = attached.get(value, 0) + 1

    for i, isl in entries_of(fabric, "isls"):
        base = ("fabric", "isls", i)
        for end in ("a", "b"):
            _check_switch_ref(r, base + (end,), isl.get(end), index)
            attach(isl.get(end))
        if str_of(isl.get("a")) is not None and isl.get("a") == isl.get("b"):
            r(base + ("b",), "an ISL joins two different switches",
              expected="a switch other than " + repr(isl.get("a")))
    for _, array in entries_of(data, "arrays"):
        for _, port in entries_of(array, "ports"):
            attach(port.get("switch"))
    for _, host in entries_of(data, "hosts"):
        for _, hba in entries_of(host, "hbas"):
            attach(hba.get("switch"))
    for i, switch in entries_of(fabric, "switches"):
        count = attached.get(str_of(switch.get("name")), 0)
        ports = switch.get("ports", 16)
        if int_of(ports) is not None and count > ports:
            path = ("fabric", "switches", i, "ports")
            if "ports" in switch:
                r(path, "too few switch ports",
                  expected=f"at least {count}: the ports, HBAs and ISL ends attached to it")
            else:
                r(path[:-1], "too few switch ports", got="16 (the default)",
                  expected=f"at least {count}: the ports, HBAs and ISL ends attached to it")

    zones = _Unique(r, "zone name")
    ports = dict.fromkeys(index.array_ports() + index.host_hbas())
    for i, zone in entries_of(fabric, "zones"):
        zones.add(str_of(zone.get("name")), ("fabric", "zones", i, "name"))
        for j, member in list_of(zone, "members"):
            if isinstance(member, str) and is_port_ref(member) and member not in ports:
                r(("fabric", "zones", i, "members", j), "unknown port",
                  expected=one_of(ports))


def _check_arrays(data, r, index) -> None:
    wwpns = _Unique(r, "WWPN")
    device_ids = _Unique(r, "device ID")
    initiators = dict.fromkeys(index.initiators())
    for i, array in entries_of(data, "arrays"):
        base = ("arrays", i)
        name = str_of(array.get("name"))
        device_ids.add(text_of(array.get("device_id")), base + ("device_id",))
        for j, manager in list_of(array, "managers"):
            if isinstance(manager, str) and manager not in initiators:
                r(base + ("managers", j), "unknown manager",
                  expected=one_of(initiators) + " (hosts, arrays or servers)")
        port_names = _Unique(r, "port name")
        port_numbers = _Unique(r, "port number")
        own_ports: dict[str, None] = {}
        for j, port in entries_of(array, "ports"):
            path = base + ("ports", j)
            port_names.add(str_of(port.get("name")), path + ("name",))
            port_numbers.add(int_of(port.get("number")), path + ("number",))
            if isinstance(port.get("wwpn"), str):
                wwpns.add(port["wwpn"].lower(), path + ("wwpn",))
            _check_switch_ref(r, path + ("switch",), port.get("switch"), index)
            if str_of(port.get("name")):
                own_ports[port["name"]] = None
        numbers = _Unique(r, "volume number")
        pairs = _Unique(r, "(port, LUN) pair")
        sizes = {}
        for j, volume in entries_of(array, "volumes"):
            number = int_of(volume.get("number"))
            if number is not None and number not in sizes:
                sizes[number] = size_of(volume.get("size"))
        for j, volume in entries_of(array, "volumes"):
            path = base + ("volumes", j)
            number = int_of(volume.get("number"))
            numbers.add(number, path + ("number",))
            port, lun = volume.get("port"), volume.get("lun")
            if port is not None and lun is None:
                r.missing(path + ("lun",), "a 'lun' key: a volume has both port and lun, or neither")
            if lun is not None and port is None:
                r.missing(path + ("port",), "a 'port' key: a volume has both port and lun, or neither")
            if isinstance(port, str) and port not in own_ports:
                r(path + ("port",), "unknown port of this array", expected=one_of(own_ports))
            if isinstance(port, str) and int_of(lun) is not None:
                pairs.add((port, int(lun)), path + ("lun",))
            for k, host in list_of(volume, "hosts"):
                if isinstance(host, str) and host not in initiators:
                    r(path + ("hosts", k), "unknown initiator",
                      expected=one_of(initiators) + " (hosts, arrays or servers)")
            for k, dest in list_of(volume, "copy_destinations"):
                dest_n = int_of(dest)
                if dest_n is None:
                    continue
                dpath = path + ("copy_destinations", k)
                if dest_n not in sizes:
                    r(dpath, "unknown volume", expected="a volume number of this array: "
                      + one_of(sizes))
                elif dest_n == number:
                    r(dpath, "a volume cannot be its own copy destination",
                      expected="another volume of this array")
                elif sizes.get(number) is not None and sizes[dest_n] is not None \
                        and sizes[number] != sizes[dest_n]:
                    r(dpath, "copy destination of a different size",
                      expected=f"a volume of {sizes[number]} bytes like volume {number} "
                               f"(volume {dest_n} has {sizes[dest_n]})")
        del name
    for i, host in entries_of(data, "hosts"):
        for j, hba in entries_of(host, "hbas"):
            if isinstance(hba.get("wwpn"), str):
                wwpns.add(hba["wwpn"].lower(), ("hosts", i, "hbas", j, "wwpn"))


def _check_hosts(data, r, index) -> None:
    array_ports = dict.fromkeys(index.array_ports())
    for i, host in entries_of(data, "hosts"):
        base = ("hosts", i)
        hbas = _Unique(r, "HBA name")
        for j, hba in entries_of(host, "hbas"):
            hbas.add(str_of(hba.get("name")), base + ("hbas", j, "name"))
            _check_switch_ref(r, base + ("hbas", j, "switch"), hba.get("switch"), index)
        mounts = _Unique(r, "mount point")
        for j, mount in entries_of(host, "mounts"):
            mounts.add(text_of(mount.get("mount_point")), base + ("mounts", j, "mount_point"))
            port = mount.get("port")
            if isinstance(port, str) and is_port_ref(port) and port not in array_ports:
                r(base + ("mounts", j, "port"), "unknown array port",
                  expected=one_of(array_ports))
        per_array = _Unique(r, "restore port for this array")
        for j, rp in entries_of(host, "restore_ports"):
            port = rp.get("port")
            path = base + ("restore_ports", j, "port")
            if isinstance(port, str) and is_port_ref(port) and port not in array_ports:
                r(path, "unknown array port", expected=one_of(array_ports))
            elif isinstance(port, str) and is_port_ref(port):
                per_array.add(port.split("/")[0], path)


def check_destination(r, path, d, index, known_volume) -> None:
    """The destination of definition (or define step) `d` at `path`."""
    typ, method, dest = d.get("type"), d.get("method"), d.get("destination")
    if not isinstance(dest, dict):
        return
    dpath = path + ("destination",)
    if typ == "tape":
        if method is not None:
            r(path + ("method",), "a method is for disk backups only",
              expected="no method for type: tape")
        if dest.get("media") is None:
            r.missing(dpath + ("media",), "a 'media' key: a tape backup's tape ID")
        for key in ("array", "volume"):
            if dest.get(key) is not None:
                r(dpath + (key,), "not part of a tape destination", got=key,
                  expected="media only", at_key=True)
        return
    if typ != "disk":
        return
    method = method if method in METHODS else ("mirror" if method is None else None)
    if dest.get("media") is not None:
        r(dpath + ("media",), "not part of a disk destination", got="media",
          expected="array (and volume for a mirror)", at_key=True)
    array = dest.get("array")
    if array is None:
        r.missing(dpath + ("array",), "an 'array' key: the array of a disk backup")
    elif isinstance(array, str) and array not in index.arrays:
        r(dpath + ("array",), "unknown array", expected=one_of(index.arrays))
        array = None
    volume = dest.get("volume")
    if method == "mirror":
        if volume is None:
            r.missing(dpath + ("volume",), "a 'volume' key: a mirror's destination volume")
        elif int_of(volume) is not None and isinstance(array, str):
            known_volume(dpath + ("volume",), array, int(volume))
    elif method == "snapshot" and volume is not None:
        r(dpath + ("volume",), "a snapshot destination names the array only", got="volume",
          expected="no volume: the array numbers each snapshot", at_key=True)


def _check_servers(data, r, index) -> None:
    definitions = _Unique(r, "definition name")
    for i, server in entries_of(data, "backup_servers"):
        base = ("backup_servers", i)
        lib = server.get("tape_library")
        if isinstance(lib, str) and lib not in index.libraries:
            r(base + ("tape_library",), "unknown tape library", expected=one_of(index.libraries))
        for j, d in entries_of(server, "definitions"):
            path = base + ("definitions", j)
            name = str_of(d.get("name"))
            definitions.add(name, path + ("name",))
            if name is not None and name not in index.definitions:
                index.definitions[name] = d
                dest = dict_of(d.get("destination"))
                if d.get("method") == "snapshot" and isinstance(dest.get("array"), str):
                    index.snapshot_arrays.add(dest["array"])
            host = d.get("host")
            if isinstance(host, str) and host not in index.hosts:
                r(path + ("host",), "unknown host", expected=one_of(index.hosts))
            mount_point = text_of(d.get("mount_point"))
            if isinstance(host, str) and host in index.hosts and mount_point is not None \
                    and mount_point not in index.hosts[host]["mounts"]:
                r(path + ("mount_point",), f"not a mount point of {host}",
                  expected=one_of(index.hosts[host]["mounts"]))

            def known_volume(vpath, array, volume):
                volumes = index.volumes(array)
                if volume not in volumes:
                    r(vpath, f"unknown volume of {array}", expected=one_of(volumes))
            check_destination(r, path, d, index, known_volume)


def _check_libraries(data, r, index) -> None:
    media = _Unique(r, "media ID")
    for i, lib in entries_of(data, "tape_libraries"):
        for j, m in list_of(lib, "media"):
            media.add(text_of(m), ("tape_libraries", i, "media", j))
