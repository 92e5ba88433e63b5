"""Cross-reference checks of topology and scenario files, on the plain data, tolerantly.

The models (`schema.py`) check each value's shape; these checks look at how values refer to
each other: names exist, names and numbers are unique, counts fit.  They run on the raw
data even when part of it has type errors (entries that are not mappings, or values of the
wrong type, are skipped: the model validation reports those), so that one run reports
every problem of a file.
"""
from __future__ import annotations

from typing import Any

from san.topology import schema as S
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
        from san.topology.loader import message
        full = self.prefix + tuple(path)
        line, col = self.src.mark(full[:-1])
        self.src.add(line, col, full, message("missing required key", None,
                                              expected or f"a '{full[-1]}' key here"))

    def line(self, path) -> int:
        return self.src.mark(self.prefix + tuple(path))[0]


# ---------------------------------------------------------------------------- helpers

def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _items(data, key) -> list[tuple[int, dict]]:
    """(index, entry) of the mapping entries of the list data[key]."""
    seq = _dict(data).get(key)
    if not isinstance(seq, list):
        return []
    return [(i, item) for i, item in enumerate(seq) if isinstance(item, dict)]


def _list(data, key) -> list[tuple[int, Any]]:
    seq = _dict(data).get(key)
    return list(enumerate(seq)) if isinstance(seq, list) else []


def _str(value) -> str | None:
    return value if isinstance(value, str) else None


def _text(value) -> str | None:
    text = S._as_text(value)
    return text if text else None


def _int(value) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _is_ref(value) -> bool:
    """True if `value` has the ARRAY/PORT form (else the models report its syntax)."""
    parts = value.split("/") if isinstance(value, str) else []
    return len(parts) == 2 and all(S.NAME_RE.fullmatch(p) for p in parts)


def _size(value) -> int | None:
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
    fabric = _dict(data.get("fabric"))
    groups = [
        ("switch", ("fabric", "switches"), _items(fabric, "switches"), index.switches),
        ("isl", ("fabric", "isls"), _items(fabric, "isls"), index.isls),
        ("array", ("arrays",), _items(data, "arrays"), None),
        ("host", ("hosts",), _items(data, "hosts"), None),
        ("backup_server", ("backup_servers",), _items(data, "backup_servers"), index.servers),
        ("tape_library", ("tape_libraries",), _items(data, "tape_libraries"), None),
    ]
    names = _Unique(r, "element name")
    for kind, base, entries, table in groups:
        for i, entry in entries:
            name = _str(entry.get("name"))
            names.add(name, base + (i, "name"))
            if name is None or name in index.elements:
                continue
            index.elements[name] = kind
            if table is not None:
                table[name] = entry
            if kind == "array":
                index.arrays[name] = {
                    "ports": {p: e for _, e in _items(entry, "ports")
                              if (p := _str(e.get("name"))) is not None},
                    "volumes": {n: _size(v.get("size")) for _, v in _items(entry, "volumes")
                                if (n := _int(v.get("number"))) is not None},
                }
            elif kind == "host":
                index.hosts[name] = {
                    "hbas": {b: e for _, e in _items(entry, "hbas")
                             if (b := _str(e.get("name"))) is not None},
                    "mounts": [m for _, e in _items(entry, "mounts")
                               if (m := _text(e.get("mount_point"))) is not None],
                }
            elif kind == "tape_library":
                index.libraries[name] = [m for _, v in _list(entry, "media")
                                         if (m := _text(v)) is not None]

    _check_fabric(data, fabric, r, index)
    _check_arrays(data, r, index)
    _check_hosts(data, r, index)
    _check_servers(data, r, index)
    _check_libraries(data, r, index)
    return index


def _check_switch_ref(r, path, value, index) -> None:
    name = _str(value)
    if name is not None and name not in index.switches:
        r(path, "unknown switch", expected=S.one_of(index.switches))


def _check_fabric(data, fabric, r, index) -> None:
    attached: dict[str, int] = {}

    def attach(value):
        if _str(value) in index.switches:
            attached[value] = attached.get(value, 0) + 1

    for i, isl in _items(fabric, "isls"):
        base = ("fabric", "isls", i)
        for end in ("a", "b"):
            _check_switch_ref(r, base + (end,), isl.get(end), index)
            attach(isl.get(end))
        if _str(isl.get("a")) is not None and isl.get("a") == isl.get("b"):
            r(base + ("b",), "an ISL joins two different switches",
              expected="a switch other than " + repr(isl.get("a")))
    for _, array in _items(data, "arrays"):
        for _, port in _items(array, "ports"):
            attach(port.get("switch"))
    for _, host in _items(data, "hosts"):
        for _, hba in _items(host, "hbas"):
            attach(hba.get("switch"))
    for i, switch in _items(fabric, "switches"):
        count = attached.get(_str(switch.get("name")), 0)
        ports = switch.get("ports", 16)
        if _int(ports) is not None and count > ports:
            path = ("fabric", "switches", i, "ports")
            if "ports" in switch:
                r(path, "too few switch ports",
                  expected=f"at least {count}: the ports, HBAs and ISL ends attached to it")
            else:
                r(path[:-1], "too few switch ports", got="16 (the default)",
                  expected=f"at least {count}: the ports, HBAs and ISL ends attached to it")

    zones = _Unique(r, "zone name")
    ports = index.array_ports() + index.host_hbas()
    for i, zone in _items(fabric, "zones"):
        zones.add(_str(zone.get("name")), ("fabric", "zones", i, "name"))
        for j, member in _list(zone, "members"):
            if isinstance(member, str) and _is_ref(member) and member not in ports:
                r(("fabric", "zones", i, "members", j), "unknown port",
                  expected=S.one_of(ports))


def _check_arrays(data, r, index) -> None:
    wwpns = _Unique(r, "WWPN")
    device_ids = _Unique(r, "device ID")
    for i, array in _items(data, "arrays"):
        base = ("arrays", i)
        name = _str(array.get("name"))
        device_ids.add(_text(array.get("device_id")), base + ("device_id",))
        for j, manager in _list(array, "managers"):
            if isinstance(manager, str) and manager not in index.initiators():
                r(base + ("managers", j), "unknown manager",
                  expected=S.one_of(index.initiators()) + " (hosts, arrays or servers)")
        port_names = _Unique(r, "port name")
        port_numbers = _Unique(r, "port number")
        own_ports = []
        for j, port in _items(array, "ports"):
            path = base + ("ports", j)
            port_names.add(_str(port.get("name")), path + ("name",))
            port_numbers.add(_int(port.get("number")), path + ("number",))
            if isinstance(port.get("wwpn"), str):
                wwpns.add(port["wwpn"].lower(), path + ("wwpn",))
            _check_switch_ref(r, path + ("switch",), port.get("switch"), index)
            if _str(port.get("name")):
                own_ports.append(port["name"])
        numbers = _Unique(r, "volume number")
        pairs = _Unique(r, "(port, LUN) pair")
        sizes = {}
        for j, volume in _items(array, "volumes"):
            number = _int(volume.get("number"))
            if number is not None and number not in sizes:
                sizes[number] = _size(volume.get("size"))
        for j, volume in _items(array, "volumes"):
            path = base + ("volumes", j)
            number = _int(volume.get("number"))
            numbers.add(number, path + ("number",))
            port, lun = volume.get("port"), volume.get("lun")
            if port is not None and lun is None:
                r.missing(path + ("lun",), "a 'lun' key: a volume has both port and lun, or neither")
            if lun is not None and port is None:
                r.missing(path + ("port",), "a 'port' key: a volume has both port and lun, or neither")
            if isinstance(port, str) and port not in own_ports:
                r(path + ("port",), "unknown port of this array", expected=S.one_of(own_ports))
            if isinstance(port, str) and _int(lun) is not None:
                pairs.add((port, int(lun)), path + ("lun",))
            for k, host in _list(volume, "hosts"):
                if isinstance(host, str) and host not in index.initiators():
                    r(path + ("hosts", k), "unknown initiator",
                      expected=S.one_of(index.initiators()) + " (hosts, arrays or servers)")
            for k, dest in _list(volume, "copy_destinations"):
                dest_n = _int(dest)
                if dest_n is None:
                    continue
                dpath = path + ("copy_destinations", k)
                if dest_n not in sizes:
                    r(dpath, "unknown volume", expected="a volume number of this array: "
                      + S.one_of(sizes))
                elif dest_n == number:
                    r(dpath, "a volume cannot be its own copy destination",
                      expected="another volume of this array")
                elif sizes.get(number) is not None and sizes[dest_n] is not None \
                        and sizes[number] != sizes[dest_n]:
                    r(dpath, "copy destination of a different size",
                      expected=f"a volume of {sizes[number]} bytes like volume {number} "
                               f"(volume {dest_n} has {sizes[dest_n]})")
        del name
    for i, host in _items(data, "hosts"):
        for j, hba in _items(host, "hbas"):
            if isinstance(hba.get("wwpn"), str):
                wwpns.add(hba["wwpn"].lower(), ("hosts", i, "hbas", j, "wwpn"))


def _check_hosts(data, r, index) -> None:
    array_ports = index.array_ports()
    for i, host in _items(data, "hosts"):
        base = ("hosts", i)
        hbas = _Unique(r, "HBA name")
        for j, hba in _items(host, "hbas"):
            hbas.add(_str(hba.get("name")), base + ("hbas", j, "name"))
            _check_switch_ref(r, base + ("hbas", j, "switch"), hba.get("switch"), index)
        mounts = _Unique(r, "mount point")
        for j, mount in _items(host, "mounts"):
            mounts.add(_text(mount.get("mount_point")), base + ("mounts", j, "mount_point"))
            port = mount.get("port")
            if isinstance(port, str) and _is_ref(port) and port not in array_ports:
                r(base + ("mounts", j, "port"), "unknown array port",
                  expected=S.one_of(array_ports))
        per_array = _Unique(r, "restore port for this array")
        for j, rp in _items(host, "restore_ports"):
            port = rp.get("port")
            path = base + ("restore_ports", j, "port")
            if isinstance(port, str) and _is_ref(port) and port not in array_ports:
                r(path, "unknown array port", expected=S.one_of(array_ports))
            elif isinstance(port, str) and _is_ref(port):
                per_array.add(port.split("/")[0], path)


def _check_destination(r, path, d, index, known_volume) -> None:
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
    method = method if method in S.METHODS else ("mirror" if method is None else None)
    if dest.get("media") is not None:
        r(dpath + ("media",), "not part of a disk destination", got="media",
          expected="array (and volume for a mirror)", at_key=True)
    array = dest.get("array")
    if array is None:
        r.missing(dpath + ("array",), "an 'array' key: the array of a disk backup")
    elif isinstance(array, str) and array not in index.arrays:
        r(dpath + ("array",), "unknown array", expected=S.one_of(index.arrays))
        array = None
    volume = dest.get("volume")
    if method == "mirror":
        if volume is None:
            r.missing(dpath + ("volume",), "a 'volume' key: a mirror's destination volume")
        elif _int(volume) is not None and isinstance(array, str):
            known_volume(dpath + ("volume",), array, int(volume))
    elif method == "snapshot" and volume is not None:
        r(dpath + ("volume",), "a snapshot destination names the array only", got="volume",
          expected="no volume: the array numbers each snapshot", at_key=True)


def _check_servers(data, r, index) -> None:
    definitions = _Unique(r, "definition name")
    for i, server in _items(data, "backup_servers"):
        base = ("backup_servers", i)
        lib = server.get("tape_library")
        if isinstance(lib, str) and lib not in index.libraries:
            r(base + ("tape_library",), "unknown tape library", expected=S.one_of(index.libraries))
        for j, d in _items(server, "definitions"):
            path = base + ("definitions", j)
            name = _str(d.get("name"))
            definitions.add(name, path + ("name",))
            if name is not None and name not in index.definitions:
                index.definitions[name] = d
                dest = _dict(d.get("destination"))
                if d.get("method") == "snapshot" and isinstance(dest.get("array"), str):
                    index.snapshot_arrays.add(dest["array"])
            host = d.get("host")
            if isinstance(host, str) and host not in index.hosts:
                r(path + ("host",), "unknown host", expected=S.one_of(index.hosts))
            mount_point = _text(d.get("mount_point"))
            if isinstance(host, str) and host in index.hosts and mount_point is not None \
                    and mount_point not in index.hosts[host]["mounts"]:
                r(path + ("mount_point",), f"not a mount point of {host}",
                  expected=S.one_of(index.hosts[host]["mounts"]))

            def known_volume(vpath, array, volume):
                volumes = index.volumes(array)
                if volume not in volumes:
                    r(vpath, f"unknown volume of {array}", expected=S.one_of(volumes))
            _check_destination(r, path, d, index, known_volume)


def _check_libraries(data, r, index) -> None:
    media = _Unique(r, "media ID")
    for i, lib in _items(data, "tape_libraries"):
        for j, m in _list(lib, "media"):
            media.add(_text(m), ("tape_libraries", i, "media", j))


# ---------------------------------------------------------------------------- scenario

class _Names:
    """What earlier steps made: checkpoints, backups, definitions, snapshot arrays."""

    def __init__(self, index: Index | None = None):
        self.checkpoints: set[str] = set()
        self.backups: set[str] = set()
        self.definitions: dict[str, Any] = dict(index.definitions) if index else {}
        self.snapshot_arrays: set[str] = set(index.snapshot_arrays) if index else set()

    def copy(self) -> "_Names":
        new = _Names()
        new.checkpoints, new.backups = set(self.checkpoints), set(self.backups)
        new.definitions, new.snapshot_arrays = dict(self.definitions), set(self.snapshot_arrays)
        return new

    def update(self, other: "_Names") -> None:
        self.checkpoints |= other.checkpoints
        self.backups |= other.backups
        for k, v in other.definitions.items():
            self.definitions.setdefault(k, v)
        self.snapshot_arrays |= other.snapshot_arrays


def _earlier(kind: str, names) -> str:
    if not names:
        return f"the 'as' name of an earlier {kind} step (there is none before this step)"
    return f"the 'as' name of an earlier {kind} step: " + S.one_of(sorted(names))


BACKUP_MAKERS = ("backup", "copy_volume", "copy_to_tape", "migrate")
TARGET_FORMS = (("host", "mount"), ("array", "volume"), ("backup",))


def check_steps(steps: Any, r: Reporter, index: Index | None) -> None:
    """Reports the reference problems of a scenario's steps (names need the topology index)."""
    if not isinstance(steps, list):
        return
    _StepChecker(r, index).walk(steps, ("steps",), _Names(index), sequential=True)


class _StepChecker:
    def __init__(self, r: Reporter, index: Index | None):
        self.r = r
        self.index = index

    # a name of the topology -------------------------------------------------------
    def ref(self, path, value, table, what) -> bool:
        """True if `value` (when a string) names an entry of `table`; reports if not."""
        if self.index is None or not isinstance(value, str):
            return True
        if value in table:
            return True
        self.r(path, f"unknown {what}", expected=S.one_of(table))
        return False

    def known_volume(self, names: _Names):
        def check(path, array, volume):
            if self.index is None:
                return
            volumes = self.index.volumes(array)
            if volume not in volumes and array not in names.snapshot_arrays:
                self.r(path, f"unknown volume of {array}", expected=S.one_of(volumes))
        return check

    def volume(self, path, array, volume, names) -> None:
        if isinstance(array, str) and self.index is not None and array in self.index.arrays \
                and _int(volume) is not None:
            self.known_volume(names)(path, array, int(volume))

    # the steps -----------------------------------------------------------------
    def walk(self, steps: list, path: tuple, names: _Names, sequential: bool) -> _Names:
        produced = _Names()
        titles = {}
        if not sequential:
            for i, step in enumerate(steps):
                if isinstance(step, dict) and isinstance(step.get("title"), str):
                    titles.setdefault(step["title"], i)
        for i, step in enumerate(steps):
            if not isinstance(step, dict) or not isinstance(step.get("op"), str) \
                    or step["op"] not in S.OPS:
                continue
            made = self.step(step, path + (i,), names, None if sequential else titles, i)
            produced.update(made)
            if sequential:
                names.update(made)
        return produced

    def step(self, step: dict, path: tuple, names: _Names, titles, position) -> _Names:
        r, index, op = self.r, self.index, step["op"]
        made = _Names()
        as_ = step.get("as") if isinstance(step.get("as"), str) else None
        if op == "checkpoint" and as_:
            made.checkpoints.add(as_)
        if op in BACKUP_MAKERS and as_:
            made.backups.add(as_)

        hosts = index.hosts if index else {}
        arrays = index.arrays if index else {}
        if op != "define" and "host" in step:
            self.ref(path + ("host",), step.get("host"), hosts, "host")
        if "array" in step:
            if self.ref(path + ("array",), step.get("array"), arrays, "array"):
                self.volume(path + ("volume",), step.get("array"), step.get("volume"), names)
        if "backup" in step and isinstance(step.get("backup"), str) \
                and step["backup"] not in names.backups:
            r(path + ("backup",), "unknown backup",
              expected=_earlier("backup", names.backups))
        if op in ("checkpoint", "verify"):
            self.target_form(step, path)
        if op == "verify" and isinstance(step.get("checkpoint"), str) \
                and step["checkpoint"] not in names.checkpoints:
            r(path + ("checkpoint",), "unknown checkpoint",
              expected=_earlier("checkpoint", names.checkpoints))
        if op == "backup" and index is not None and isinstance(step.get("definition"), str) \
                and step["definition"] not in names.definitions:
            r(path + ("definition",), "unknown definition",
              expected="a definition of the topology or of an earlier define step: "
                       + S.one_of(names.definitions))
        if op in S.SERVER_OPS:
            self.server(step, path)
        if op == "define":
            self.define(step, path, names, made)
        if op == "restore_volume" and isinstance(step.get("to"), dict):
            self.ref(path + ("to", "host"), step["to"].get("host"), hosts, "host")
        if op == "copy_volume" and isinstance(step.get("to"), dict):
            to = step["to"]
            if self.ref(path + ("to", "array"), to.get("array"), arrays, "array"):
                self.volume(path + ("to", "volume"), to.get("array"), to.get("volume"), names)
        if op == "rebuild_catalog" and index is not None:
            sources = list(index.arrays) + list(index.libraries)
            for j, name in _list(step, "from"):
                if isinstance(name, str) and name not in sources:
                    r(path + ("from", j), "unknown array or tape library",
                      expected=S.one_of(sources))
        if op == "fault":
            self.fault(step, path, names, titles, position)
        if op == "concurrent" and isinstance(step.get("steps"), list):
            made.update(self.walk(step["steps"], path + ("steps",), names.copy(),
                                  sequential=False))
        return made

    def target_form(self, step: dict, path: tuple) -> None:
        present = [form for form in TARGET_FORMS if any(step.get(k) is not None for k in form)]
        forms = "host+mount, array+volume or backup"
        if not present:
            self.r(path, "no target", got=None, expected=f"exactly one of {forms}")
            return
        if len(present) > 1:
            self.r(path, "more than one target", got="+".join(present[0]) + " and "
                   + "+".join(present[1]), expected=f"exactly one of {forms}")
            return
        for key in present[0]:
            if step.get(key) is None:
                self.r.missing(path + (key,), f"{S.article(key)} '{key}' key with "
                               + "+".join(k for k in present[0] if k != key))

    def server(self, step: dict, path: tuple) -> None:
        if self.index is None:
            return
        servers = self.index.servers
        if step.get("server") is None:
            if len(servers) != 1:
                self.r.missing(path + ("server",),
                               "a 'server' key (the topology has "
                               + (f"{len(servers)} backup servers: {', '.join(servers)})"
                                  if servers else "no backup server)"))
        else:
            self.ref(path + ("server",), step.get("server"), servers, "backup server")

    def define(self, step: dict, path: tuple, names: _Names, made: _Names) -> None:
        index = self.index
        name = _str(step.get("name"))
        if name is not None:
            if name in names.definitions:
                self.r(path + ("name",), "duplicate definition name",
                       expected="a definition name not yet defined")
            made.definitions[name] = step
            dest = _dict(step.get("destination"))
            if step.get("method") == "snapshot" and isinstance(dest.get("array"), str):
                made.snapshot_arrays.add(dest["array"])
        if index is None:
            return
        self.ref(path + ("host",), step.get("host"), index.hosts, "host")
        _check_destination(self.r, path, step, index, self.known_volume(names))

    def fault(self, step: dict, path: tuple, names: _Names, titles, position) -> None:
        r, index = self.r, self.index
        kind, target = step.get("kind"), step.get("target")
        if index is not None and isinstance(target, str):
            targets = list(index.elements) + index.array_ports() + index.host_hbas()
            if target not in targets:
                r(path + ("target",), "unknown target",
                  expected=S.one_of(targets) + " (an element, port or ISL)")
            target_kind = index.elements.get(target)
        else:
            target_kind = None
        if kind == "corrupt":
            has_volume, has_media = step.get("volume") is not None, step.get("media") is not None
            if step.get("offset") is None:
                r.missing(path + ("offset",), "an 'offset' key for a corrupt fault")
            if has_volume == has_media:
                if has_volume:
                    r(path + ("media",), "corrupt takes volume or media, not both", got="media",
                      expected="volume (of an array) or media (of a tape library)", at_key=True)
                else:
                    r.missing(path + ("volume",), "a 'volume' key (target an array) or a "
                              "'media' key (target a tape library) for a corrupt fault")
            elif has_volume and target_kind is not None and target_kind != "array":
                r(path + ("target",), "corrupt with volume needs an array",
                  expected=S.one_of(index.arrays))
            elif has_volume and target_kind == "array":
                self.volume(path + ("volume",), target, step.get("volume"), names)
            elif has_media and target_kind is not None and target_kind != "tape_library":
                r(path + ("target",), "corrupt with media needs a tape library",
                  expected=S.one_of(index.libraries))
        elif kind in S.FAULT_KINDS:
            for key in ("volume", "media", "offset"):
                if step.get(key) is not None:
                    r(path + (key,), f"only a corrupt fault takes {key}", got=key,
                      expected=f"no {key} for kind: {kind}", at_key=True)
        when = step.get("when")
        if isinstance(when, dict):
            if titles is None:
                r(path + ("when",), "when works only inside a concurrent step", got=None,
                  expected="no when outside concurrent")
            elif isinstance(when.get("step"), str):
                others = [t for t, i in titles.items() if i != position]
                if when["step"] not in others:
                    r(path + ("when", "step"), "unknown step title",
                      expected="the title of another step in this concurrent: "
                               + S.one_of(others))
