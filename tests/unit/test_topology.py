"""Topology files: good files load, every bad file gives located problems (never a traceback)."""
from __future__ import annotations

import ast
import glob
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from san.errors import ValidationFailed
from san.topology import (
    Array, Host, Problem, Topology, load_scenario, load_topology, path_status, render_inspect,
    validate_files,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"

# A small valid topology; each bad case below changes one or two things in it.
MINI = """\
name: mini
fabric:
  switches:
    - {name: fcsw1, ports: 8, speed: 8GFC}
  zones:
    - {name: z1, members: [host1/hba0, array1/fc0]}
arrays:
  - name: array1
    device_id: DEV-1
    managers: [backup1]
    ports:
      - {name: fc0, number: 0, wwpn: "50:06:0e:80:00:00:00:01", switch: fcsw1}
    volumes:
      - {number: 0, size: 1GiB, port: fc0, lun: 0, hosts: [host1], copy_destinations: [1]}
      - {number: 1, size: 1GiB}
hosts:
  - name: host1
    hbas:
      - {name: hba0, wwpn: "21:00:00:e0:8b:00:00:01", switch: fcsw1}
    mounts:
      - {mount_point: /db, port: array1/fc0, lun: 0}
    restore_ports:
      - {port: array1/fc0, lun: 9}
backup_servers:
  - name: backup1
    tape_library: lib1
    definitions:
      - {name: d1, host: host1, mount_point: /db, type: disk, destination: {array: array1, volume: 1}, label: nightly}
tape_libraries:
  - {name: lib1, media: [T00001, T00002]}
"""


def mini(*replacements: tuple[str, str]) -> str:
    text = MINI
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def problems_of(tmp_path, monkeypatch, text: str | bytes, name: str = "bad.yaml") -> list[str]:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return [str(p) for p in validate_files([name])]


def assert_reported(lines: list[str], expected: list[str]) -> None:
    for fragment in expected:
        assert any(fragment in line for line in lines), \
            f"{fragment!r} not in:\n" + "\n".join(lines)


# ------------------------------------------------------------------------------ good files

def all_topology_dir_files():
    return sorted(glob.glob(str(ROOT / "topologies" / "**" / "*.yaml"), recursive=True))


@pytest.mark.parametrize("path", all_topology_dir_files(), ids=os.path.basename)
def test_shipped_files_are_valid(path):
    assert [str(p) for p in validate_files([path])] == []


@pytest.mark.parametrize("name", ["two-arrays", "single-array", "two-switches"])
def test_shipped_topologies_load(name):
    topology = load_topology(ROOT / "topologies" / f"{name}.yaml")
    assert isinstance(topology, Topology)
    assert topology.name == name
    for array in topology.arrays:
        for port in array.ports:
            assert isinstance(port.speed, float)
    for host in topology.hosts:
        for hba in host.hbas:
            assert isinstance(hba.speed, float)
    for isl in topology.fabric.isls:
        assert isinstance(isl.speed, float)


def test_two_arrays_values():
    t = load_topology(ROOT / "topologies" / "two-arrays.yaml")
    assert t.start.isoformat() == "2026-01-01T00:00:00+00:00"
    assert t.lan.speed == 125e6
    a1 = t.element("array1")
    assert isinstance(a1, Array)
    assert a1.snapshot_pool == 8 * 2**30
    assert a1.copy_speed == 1000e6
    assert a1.volumes[0].size == 2 * 2**30
    assert a1.volumes[0].copy_destinations == [1, 2]
    assert a1.volumes[1].port is None and a1.volumes[1].lun is None
    assert t.kind_of("fcsw1") == "switch"
    assert t.kind_of("array2") == "array"
    assert t.kind_of("host1") == "host"
    assert t.kind_of("backup1") == "backup_server"
    assert t.kind_of("lib1") == "tape_library"
    assert t.kind_of("nothing") is None
    assert t.element("nothing") is None
    assert t.port("array1/fc1").wwpn == "50:06:0e:80:00:00:00:02"
    assert t.port("host1/hba0").speed == 800e6
    assert t.port("host1/fc9") is None
    assert t.port("junk") is None
    host = t.element("host1")
    assert isinstance(host, Host)
    assert host.mounts[0].filesystem == "fat"
    assert host.restore_ports[0].lun == 9
    server = t.backup_servers[0]
    d = server.definitions[0]
    assert (d.type, d.method, d.destination.array, d.destination.volume) == \
        ("disk", "mirror", "array1", 1)
    assert d.pre == ["quiesce", "flush"] and d.post == ["resume"]
    assert d.schedule.kind == "daily" and d.schedule.hour == 2
    lib = t.tape_libraries[0]
    assert (lib.drives, lib.drive_speed, lib.media_capacity) == (2, 160e6, 800 * 10**9)
    assert isinstance(lib.media_capacity, int)
    assert t.source.endswith("two-arrays.yaml")


def test_defaults(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nfabric: {switches: [{name: s1, speed: 4GFC}, {name: s2, speed: 16GFC}],"
                    " isls: [{name: i1, a: s1, b: s2}]}\n"
                    "tape_libraries: [{name: l1, media: [A]}]\n"
                    "backup_servers: [{name: b1, definitions: []}]\n")
    t = load_topology(path)
    assert t.fabric.isls[0].speed == 400e6          # the lower of its switches'
    assert t.fabric.switches[0].ports == 16
    assert t.lan.speed == 125e6
    assert t.tape_libraries[0].drives == 1
    assert t.tape_libraries[0].drive_speed == 160e6
    assert t.tape_libraries[0].media_capacity == 800 * 10**9
    assert t.arrays == [] and t.hosts == []


def test_single_array_definitions():
    t = load_topology(ROOT / "topologies" / "single-array.yaml")
    methods = {d.name: d.method for s in t.backup_servers for d in s.definitions}
    assert sorted(methods.values()) == ["mirror", "snapshot"]
    assert t.tape_libraries and len(t.hosts) == 2 and len(t.fabric.switches) == 1
    unmapped = [v for v in t.arrays[0].volumes if v.port is None]
    assert unmapped


def test_two_switches_shape_and_paths():
    t = load_topology(ROOT / "topologies" / "two-switches.yaml")
    assert [i.name for i in t.fabric.isls] == ["isl1"]
    assert t.fabric.isls[0].speed == 1600e6
    denied = [(h.name, m.mount_point, path_status(t, h.name, m.port, m.lun))
              for h in t.hosts for m in h.mounts]
    assert ("host1", "/denied", "denied: not zoned") in denied
    assert ("host1", "/db", None) in denied                # zoned across the ISL
    assert ("host2", "/data", None) in denied
    assert path_status(t, "array1", "array2/fc1", 0) is None   # array as initiator
    assert path_status(t, "host1", "array2/fc0", 7) == "denied: no such LUN"
    assert path_status(t, "host1", "array9/fc0", 0) == "denied: no such port"


def test_path_status_masking_and_routes(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(mini(
        ("hosts: [host1]", "hosts: [backup1]"),
    ) + "  # second fabric with no ISL\n")
    t = load_topology(path)
    assert path_status(t, "host1", "array1/fc0", 0) == "denied: LUN masked"
    t2 = load_topology(ROOT / "topologies" / "two-switches.yaml")
    t2.fabric.isls.clear()
    assert path_status(t2, "host1", "array2/fc0", 0) == "denied: no route"


def test_inspect_renders_every_table():
    console = Console(record=True, width=200)
    render_inspect(load_topology(ROOT / "topologies" / "two-switches.yaml"), console)
    out = console.export_text()
    for fragment in ("Volumes / LUN map", "port table", "Zones", "ISLs", "isl1",
                     "Backup definitions", "db-mirror", "DENIED: not zoned", "allowed",
                     "HTC-2001", "50:06:0e:80:00:00:20:01"):
        assert fragment in out, fragment
    console = Console(record=True, width=200)
    render_inspect(load_topology(ROOT / "topologies" / "single-array.yaml"), console)
    out = console.export_text()
    assert "T00001" in out and "snapshot" in out and "every 6h" in out


def test_inspect_on_an_80_column_terminal_cuts_no_value(tmp_path):
    """Values wider than their column were cut with an ellipsis ('50:0…', 'HTC-…'): they
    fold instead, each piece of a WWPN on the lines of its cell."""
    console = Console(record=True, width=80)
    render_inspect(load_topology(ROOT / "topologies" / "two-arrays.yaml"), console)
    out = console.export_text()
    assert "…" not in out


def test_inspect_names_only_fc_speeds_by_their_fc_name(tmp_path):
    """A LAN of 100 MB/s read "LAN 1GFC", an 800 MB/s copy engine "8GFC", a 400 MB/s tape
    drive "4GFC": the rates of FC names, but no FC links."""
    text = (ROOT / "topologies" / "two-arrays.yaml").read_text().replace(
        "lan: {speed: 1GbE}", "lan: {speed: 100 MB/s}").replace(
        "copy_speed: 1000MB/s", "copy_speed: 800 MB/s").replace(
        "drive_speed: 160MB/s", "drive_speed: 400MB/s")
    (tmp_path / "t.yaml").write_text(text)
    console = Console(record=True, width=240)
    render_inspect(load_topology(tmp_path / "t.yaml"), console)
    out = console.export_text()
    assert "LAN 100 MB/s" in out and "800 MB/s" in out and "400 MB/s" in out
    assert "1GFC" not in out and "4GFC" not in out


# ------------------------------------------------------------------------------ bad files

BAD = [
    # (id, text, expected fragments of problem lines)
    ("bad-size",
     mini(("size: 1GiB, port", "size: 3 furlongs, port")),
     ["bad.yaml:14:27: arrays[0].volumes[0].size: invalid size (got '3 furlongs'; expected a size"]),
    ("size-not-multiple",
     mini(("{number: 1, size: 1GiB}", "{number: 1, size: 1000}")),
     ["15:27: arrays[0].volumes[1].size: size not a multiple of 512 (got '1000'"]),
    ("size-zero",
     mini(("{number: 1, size: 1GiB}", "{number: 1, size: 0}")),
     ["15:27: arrays[0].volumes[1].size: size out of range (got '0'; expected more than 0"]),
    ("size-too-big",
     mini(("{number: 1, size: 1GiB}", "{number: 1, size: 2PiB}")),
     ["arrays[0].volumes[1].size: size out of range (got '2PiB'; expected more than 0 bytes "
      "and at most 1 PiB)"]),
    ("bad-speed",
     mini(("speed: 8GFC}", "speed: 9GFC}")),
     ["4:38: fabric.switches[0].speed: invalid speed (got '9GFC'; expected a speed: 1GFC"]),
    ("speed-infinite",
     mini(("speed: 8GFC}", "speed: " + "9" * 400 + " MB/s}")),
     ["fabric.switches[0].speed: invalid speed", "from 0.001 MB/s to 10000000 MB/s"]),
    ("speed-next-to-nothing",
     mini(("speed: 8GFC}", "speed: 0.0000001 MB/s}")),
     ["fabric.switches[0].speed: invalid speed (got '0.0000001 MB/s'"]),
    ("amount-past-a-float-with-others",    # every problem still listed, no internal error
     mini(("name: mini\n", "name: mini\nstart: yesterday\n"),
          ("- name: host1\n", "- name: host1\n    placement: {resources: {site_a: 1" + "0" * 400
           + "}}\n")),
     ["2:8: start: invalid time (got 'yesterday'", "hosts[0].placement.resources.site_a: "
      "invalid amount"]),
    ("bad-time",
     mini(("name: mini\n", "name: mini\nstart: yesterday\n")),
     ["2:8: start: invalid time (got 'yesterday'; expected a UTC time"]),
    ("bad-schedule",
     mini(("label: nightly}", "label: nightly, schedule: hourly}")),
     ["definitions[0].schedule: invalid schedule (got 'hourly'; expected a schedule: "
      "'once 2026-12-01T02:00'"]),
    ("schedule-past-a-century",
     mini(("label: nightly}", "label: nightly, schedule: every 99999999d}")),
     ["definitions[0].schedule: schedule out of range (got 'every 99999999d'; expected an "
      "interval above 0 and at most 100 years)"]),
    ("unknown-top-key",
     mini(("name: mini\n", "name: mini\ncolour: red\n")),
     ["2:1: colour: unknown key (got 'colour'; expected one of name, start, lan, fabric, "
      "arrays, hosts, backup_servers, tape_libraries)"]),
    ("unknown-nested-key",
     mini(("{number: 1, size: 1GiB}", "{number: 1, size: 1GiB, colour: red}")),
     ["15:33: arrays[0].volumes[1].colour: unknown key (got 'colour'; expected one of number, "
      "size, port, lun, hosts, copy_destinations)"]),
    ("source-is-not-a-key",
     mini(("name: mini\n", "name: mini\nsource: x\n")),
     ["2:1: source: unknown key (got 'source'"]),
    ("missing-name",
     mini(("  - name: array1\n    device_id", "  - device_id")),
     ["8:5: arrays[0].name: missing required key (expected a 'name' key in this mapping)"]),
    ("missing-device-id",
     mini(("    device_id: DEV-1\n", "")),
     ["8:5: arrays[0].device_id: missing required key"]),
    ("missing-label",
     mini((", label: nightly}", "}")),
     ["28:9: backup_servers[0].definitions[0].label: missing required key"]),
    ("missing-media",
     mini(("{name: lib1, media: [T00001, T00002]}", "{name: lib1}")),
     ["tape_libraries[0].media: missing required key"]),
    ("wrong-type-list",
     mini(("managers: [backup1]", "managers: backup1")),
     ["10:15: arrays[0].managers: wrong type (got 'backup1'; expected a list)"]),
    ("wrong-type-mapping",
     mini(("  - name: host1\n", "  - host1\n  - name: host1\n")),
     ["17:5: hosts[0]: wrong type (got 'host1'; expected a mapping)"]),
    ("wrong-type-int",
     mini(("lun: 9}", "lun: nine}")),
     ["23:33: hosts[0].restore_ports[0].lun: not an integer (got 'nine'; expected a LUN"]),
    ("bool-is-not-int",
     mini(("{name: fc0, number: 0,", "{name: fc0, number: true,")),
     ["arrays[0].ports[0].number: not an integer (got 'true'"]),
    ("bad-name-syntax",
     mini(("name: mini", "name: 9lives")),
     ["1:7: name: invalid name (got '9lives'; expected a name: a letter, then up to 31"]),
    ("name-too-long",
     mini(("name: host1\n", "name: h" + "x" * 32 + "\n")),
     ["hosts[0].name: invalid name"]),
    ("bad-wwpn",
     mini(('wwpn: "21:00:00:e0:8b:00:00:01"', 'wwpn: "21:00:00:e0:8b:00:01"')),
     ["hosts[0].hbas[0].wwpn: invalid WWPN (got '21:00:00:e0:8b:00:01'; expected a WWPN"]),
    ("bad-filesystem",
     mini(("lun: 0}\n    restore", "lun: 0, filesystem: ntfs}\n    restore")),
     ["hosts[0].mounts[0].filesystem: unknown filesystem (got 'ntfs'; expected one of fat, none)"]),
    ("bad-type",
     mini(("type: disk", "type: cloud")),
     ["definitions[0].type: unknown backup type (got 'cloud'; expected one of disk, tape)"]),
    ("bad-method",
     mini(("type: disk,", "type: disk, method: clone,")),
     ["definitions[0].method: unknown method (got 'clone'; expected one of mirror, snapshot)"]),
    ("bad-action",
     mini(("label: nightly}", "label: nightly, pre: [quiesce, rm -rf]}")),
     ["definitions[0].pre[1]: unknown action (got 'rm -rf'; expected one of quiesce, resume, "
      "flush, unmount, mount, fsck, repair)"]),
    ("label-too-long",
     mini(("label: nightly}", "label: " + "é" * 65 + "}")),
     ["definitions[0].label: label too long (got '", "expected at most 128 bytes of UTF-8"]),
    ("mount-point-relative",
     mini(("{mount_point: /db,", "{mount_point: db,")),
     ["21:23: hosts[0].mounts[0].mount_point: invalid mount point (got 'db'; expected an "
      "absolute path"]),
    ("mount-point-too-long",
     mini(("{mount_point: /db,", "{mount_point: /" + "d" * 256 + ",")),
     ["hosts[0].mounts[0].mount_point: mount point too long"]),
    ("duplicate-element-name",
     mini(("  - name: backup1\n", "  - name: host1\n"), ("managers: [backup1]", "managers: []")),
     ["25:11: backup_servers[0].name: duplicate element name (got 'host1'; expected a unique "
      "element name, this one is first used at line 17)"]),
    ("duplicate-zone",
     mini(("    - {name: z1, members: [host1/hba0, array1/fc0]}\n",
           "    - {name: z1, members: [host1/hba0, array1/fc0]}\n"
           "    - {name: z1, members: [host1/hba0]}\n")),
     ["7:14: fabric.zones[1].name: duplicate zone name"]),
    ("duplicate-wwpn",
     mini(('wwpn: "21:00:00:e0:8b:00:00:01"', 'wwpn: "50:06:0E:80:00:00:00:01"')),
     ["hosts[0].hbas[0].wwpn: duplicate WWPN (got '50:06:0E:80:00:00:00:01'; expected a unique "
      "WWPN, this one is first used at line 12)"]),
    ("duplicate-device-id",
     mini(("hosts:\n", "  - {name: array2, device_id: DEV-1, ports: [], volumes: []}\nhosts:\n")),
     ["16:31: arrays[1].device_id: duplicate device ID (got 'DEV-1'; expected a unique device "
      "ID, this one is first used at line 9)"]),
    ("duplicate-volume-number",
     mini(("{number: 1, size: 1GiB}", "{number: 0, size: 1GiB}")),
     ["15:18: arrays[0].volumes[1].number: duplicate volume number (got '0'"]),
    ("duplicate-port-lun",
     mini(("{number: 1, size: 1GiB}", "{number: 1, size: 1GiB, port: fc0, lun: 0}")),
     ["arrays[0].volumes[1].lun: duplicate (port, LUN) pair"]),
    ("duplicate-port-name-and-number",
     mini(("switch: fcsw1}\n    volumes",
           "switch: fcsw1}\n      - {name: fc0, number: 0, wwpn: \"50:06:0e:80:00:00:00:09\", "
           "switch: fcsw1}\n    volumes")),
     ["arrays[0].ports[1].name: duplicate port name", "arrays[0].ports[1].number: duplicate port number"]),
    ("duplicate-hba-name",
     mini(("switch: fcsw1}\n    mounts",
           "switch: fcsw1}\n      - {name: hba0, wwpn: \"21:00:00:e0:8b:00:00:02\", "
           "switch: fcsw1}\n    mounts")),
     ["hosts[0].hbas[1].name: duplicate HBA name (got 'hba0'"]),
    ("duplicate-mount-point",
     mini(("lun: 0}\n    restore", "lun: 0}\n      - {mount_point: /db, port: array1/fc0, lun: 1}\n    restore")),
     ["hosts[0].mounts[1].mount_point: duplicate mount point (got '/db'"]),
    ("duplicate-definition",
     mini(("label: nightly}", "label: nightly}\n      - {name: d1, host: host1, mount_point: /db, "
                              "type: tape, destination: {media: T00001}, label: t}")),
     ["backup_servers[0].definitions[1].name: duplicate definition name (got 'd1'"]),
    ("duplicate-media",
     mini(("media: [T00001, T00002]", "media: [T00001, T00001]")),
     ["30:34: tape_libraries[0].media[1]: duplicate media ID (got 'T00001'"]),
    ("unknown-switch",
     mini(('"21:00:00:e0:8b:00:00:01", switch: fcsw1', '"21:00:00:e0:8b:00:00:01", switch: fcsw9')),
     ["hosts[0].hbas[0].switch: unknown switch (got 'fcsw9'; expected one of fcsw1)"]),
    ("unknown-zone-member",
     mini(("members: [host1/hba0, array1/fc0]", "members: [host1/hba0, array1/fc7]")),
     ["6:40: fabric.zones[0].members[1]: unknown port (got 'array1/fc7'; expected one of "
      "array1/fc0, host1/hba0)"]),
    ("zone-member-syntax",
     mini(("members: [host1/hba0, array1/fc0]", "members: [host1, array1/fc0]")),
     ["fabric.zones[0].members[0]: invalid port reference (got 'host1'; expected ARRAY/PORT or "
      "HOST/HBA"]),
    ("volume-port-unknown",
     mini(("size: 1GiB, port: fc0", "size: 1GiB, port: fc5")),
     ["arrays[0].volumes[0].port: unknown port of this array (got 'fc5'; expected one of fc0)"]),
    ("volume-port-without-lun",
     mini(("{number: 1, size: 1GiB}", "{number: 1, size: 1GiB, port: fc0}")),
     ["15:9: arrays[0].volumes[1].lun: missing required key (expected a 'lun' key: a volume has "
      "both port and lun, or neither)"]),
    ("volume-lun-without-port",
     mini(("{number: 1, size: 1GiB}", "{number: 1, size: 1GiB, lun: 3}")),
     ["arrays[0].volumes[1].port: missing required key"]),
    ("volume-hosts-unknown",
     mini(("hosts: [host1]", "hosts: [host1, host7]")),
     ["arrays[0].volumes[0].hosts[1]: unknown initiator (got 'host7'; expected one of array1, "
      "host1, backup1 (hosts, arrays or servers))"]),
    ("managers-unknown",
     mini(("managers: [backup1]", "managers: [lib1]")),
     ["arrays[0].managers[0]: unknown manager (got 'lib1'"]),
    ("mount-port-unknown",
     mini(("{mount_point: /db, port: array1/fc0", "{mount_point: /db, port: array2/fc0")),
     ["hosts[0].mounts[0].port: unknown array port (got 'array2/fc0'; expected one of array1/fc0)"]),
    ("mount-port-is-an-hba",
     mini(("{mount_point: /db, port: array1/fc0", "{mount_point: /db, port: host1/hba0")),
     ["hosts[0].mounts[0].port: unknown array port (got 'host1/hba0'"]),
    ("restore-port-unknown",
     mini(("{port: array1/fc0, lun: 9}", "{port: array1/fc1, lun: 9}")),
     ["hosts[0].restore_ports[0].port: unknown array port (got 'array1/fc1'"]),
    ("two-restore-ports-one-array",
     mini(("{port: array1/fc0, lun: 9}", "{port: array1/fc0, lun: 9}\n      - {port: array1/fc0, lun: 8}")),
     ["hosts[0].restore_ports[1].port: duplicate restore port for this array"]),
    ("copy-destination-unknown",
     mini(("copy_destinations: [1]", "copy_destinations: [1, 4]")),
     ["arrays[0].volumes[0].copy_destinations[1]: unknown volume (got '4'; expected a volume "
      "number of this array: one of 0, 1)"]),
    ("copy-destination-self",
     mini(("copy_destinations: [1]", "copy_destinations: [0]")),
     ["arrays[0].volumes[0].copy_destinations[0]: a volume cannot be its own copy destination"]),
    ("copy-destination-size",
     mini(("{number: 1, size: 1GiB}", "{number: 1, size: 2GiB}")),
     ["arrays[0].volumes[0].copy_destinations[0]: copy destination of a different size (got '1'"]),
    ("definition-host-unknown",
     mini(("{name: d1, host: host1", "{name: d1, host: hostX")),
     ["definitions[0].host: unknown host (got 'hostX'; expected one of host1)"]),
    ("definition-mount-point-unknown",
     mini(("host: host1, mount_point: /db", "host: host1, mount_point: /logs")),
     ["definitions[0].mount_point: not a mount point of host1 (got '/logs'; expected one of /db)"]),
    ("definition-array-unknown",
     mini(("destination: {array: array1, volume: 1}", "destination: {array: array3, volume: 1}")),
     ["definitions[0].destination.array: unknown array (got 'array3'; expected one of array1)"]),
    ("mirror-needs-volume",
     mini(("destination: {array: array1, volume: 1}", "destination: {array: array1}")),
     ["definitions[0].destination.volume: missing required key (expected a 'volume' key"]),
    ("mirror-volume-unknown",
     mini(("destination: {array: array1, volume: 1}", "destination: {array: array1, volume: 5}")),
     ["definitions[0].destination.volume: unknown volume of array1 (got '5'; expected one of 0, 1)"]),
    ("snapshot-takes-array-only",
     mini(("type: disk,", "type: disk, method: snapshot,")),
     ["definitions[0].destination.volume: a snapshot destination names the array only"]),
    ("tape-needs-media",
     mini(("type: disk, destination: {array: array1, volume: 1}", "type: tape, destination: {}")),
     ["definitions[0].destination.media: missing required key (expected a 'media' key"]),
    ("tape-has-no-method",
     mini(("type: disk, destination: {array: array1, volume: 1}",
           "type: tape, method: mirror, destination: {media: T00001}")),
     ["definitions[0].method: a method is for disk backups only (got 'mirror'"]),
    ("server-library-unknown",
     mini(("tape_library: lib1", "tape_library: lib2")),
     ["26:19: backup_servers[0].tape_library: unknown tape library (got 'lib2'; expected one of lib1)"]),
    ("isl-unknown-switch",
     mini(("  zones:", "  isls: [{name: isl1, a: fcsw1, b: fcsw2}]\n  zones:")),
     ["5:36: fabric.isls[0].b: unknown switch (got 'fcsw2'; expected one of fcsw1)"]),
    ("isl-same-switch",
     mini(("  zones:", "  isls: [{name: isl1, a: fcsw1, b: fcsw1}]\n  zones:")),
     ["fabric.isls[0].b: an ISL joins two different switches"]),
    ("switch-too-few-ports",
     mini(("ports: 8,", "ports: 1,")),
     ["4:28: fabric.switches[0].ports: too few switch ports (got '1'; expected at least 2"]),
    ("placement",
     mini(("  - {name: lib1,", "  - {placement: {resources: {site_a: -1}, x: 1}, name: lib1,")),
     ["tape_libraries[0].placement.resources.site_a: invalid amount (got '-1'",
      "tape_libraries[0].placement.x: unknown key"]),
    # values the run-time formats cannot hold: refused here, not met as a traceback later
    ("start-before-fat-dates",
     mini(("name: mini\n", "name: mini\nstart: 1975-01-01T00:00:00Z\n")),
     ["start: time out of range (got '1975-01-01T00:00:00Z'; expected a UTC time from "
      "1980-01-01T00:00:00Z to 2106-02-07T06:28:15Z)"]),
    ("start-after-volume-info-timestamps",
     mini(("name: mini\n", "name: mini\nstart: 2106-02-07T06:28:16Z\n")),
     ["start: time out of range (got '2106-02-07T06:28:16Z'"]),
    ("media-id-a-path",
     mini(("media: [T00001, T00002]", "media: [T00001, /tmp/q]")),
     ["tape_libraries[0].media[1]: invalid media ID (got '/tmp/q'; expected 1 to 6 letters, "
      "digits, '.', '_' or '-' (a tape's VOL1 label))"]),
    ("media-id-too-long",
     mini(("media: [T00001, T00002]", "media: [T00001, TAPE000002]")),
     ["tape_libraries[0].media[1]: invalid media ID (got 'TAPE000002'"]),
    ("device-id-not-ascii",
     mini(("device_id: DEV-1", "device_id: DÉV-1")),
     ["arrays[0].device_id: invalid device ID (got 'DÉV-1'; expected 1 to 200 printable ASCII "
      "characters (SCSI INQUIRY's))"]),
    ("device-id-too-long",
     mini(("device_id: DEV-1", "device_id: " + "D" * 201)),
     ["arrays[0].device_id: invalid device ID"]),
    ("drives-without-bound",
     mini(("{name: lib1, media:", "{name: lib1, drives: 10000000000000000000, media:")),
     ["tape_libraries[0].drives: out of range (got '10000000000000000000'; expected a number of "
      "drives from 1 to 256)"]),
    ("label-lone-surrogate",
     mini(("label: nightly}", 'label: "night\\ud800ly"}')),
     ["definitions[0].label: invalid label"]),
    ("mount-point-lone-surrogate",
     mini(("{mount_point: /db, port: array1/fc0", '{mount_point: "/d\\ud800b", port: array1/fc0')),
     ["hosts[0].mounts[0].mount_point: invalid mount point"]),
    ("duplicate-yaml-key",
     mini(("    device_id: DEV-1\n", "    device_id: DEV-1\n    device_id: DEV-2\n")),
     ["10:5: arrays[0].device_id: duplicate key (got 'device_id'; expected each key once in a "
      "mapping, first at line 9)"]),
    # a key YAML reads as a number or a boolean is named as written, at its own line
    ("number-key",
     mini(("    device_id: DEV-1\n", "    device_id: DEV-1\n    7: x\n")),
     ["10:5: arrays[0]['7']: unknown key (got '7'; expected one of name, device_id"]),
    ("boolean-key",
     mini(("    device_id: DEV-1\n", "    device_id: DEV-1\n    true: x\n")),
     ["10:5: arrays[0].true: unknown key (got 'true'; expected one of name, device_id"]),
]


@pytest.mark.parametrize("text,expected", [(t, e) for _, t, e in BAD], ids=[i for i, _, _ in BAD])
def test_bad_topology(tmp_path, monkeypatch, text, expected):
    lines = problems_of(tmp_path, monkeypatch, text)
    assert lines, "no problem reported"
    assert_reported(lines, expected)
    for line in lines:
        assert line.startswith("bad.yaml:"), line
    with pytest.raises(ValidationFailed) as info:
        load_topology(tmp_path / "bad.yaml")
    assert info.value.code == "INVALID_INPUT"
    assert all(isinstance(p, Problem) for p in info.value.problems)


def test_a_number_with_a_leading_zero_is_decimal_as_yaml_1_2_reads_it(tmp_path, monkeypatch):
    """YAML 1.1 reads 010 as octal 8: a volume written `number: 010, lun: 011` became volume 8
    at LUN 9, silently, beside a volume 11 (editors, on YAML 1.2, showed 10 and 11)."""
    text = mini(("{number: 1, size: 1GiB}", "{number: 010, size: 1GiB}"),
                ("copy_destinations: [1]", "copy_destinations: [10]"),
                ("lun: 0, hosts", "lun: 011, hosts"),
                ("mount_point: /db, port: array1/fc0, lun: 0", "mount_point: /db, port: array1/fc0, lun: 11"),
                ("destination: {array: array1, volume: 1}", "destination: {array: array1, volume: 10}"))
    assert problems_of(tmp_path, monkeypatch, text) == []
    t = load_topology(tmp_path / "bad.yaml")
    assert [(v.number, v.lun) for v in t.arrays[0].volumes] == [(0, 11), (10, None)]


@pytest.mark.parametrize("written, start", [
    ("2026-03-01", "2026-03-01T00:00:00+00:00"),            # a date alone: midnight UTC
    ("2026-03-01T02:30:00Z", "2026-03-01T02:30:00+00:00"),
    ('"2026-03-01"', "2026-03-01T00:00:00+00:00"),
])
def test_an_unquoted_date_or_time_is_read_as_written(tmp_path, monkeypatch, written, start):
    """YAML makes unquoted dates date objects: `start:` refused them, and a label written
    as a date was "not a string"."""
    text = mini(("name: mini\n", f"name: mini\nstart: {written}\n"),
                ("label: nightly}", "label: 2026-03-01}"))
    assert problems_of(tmp_path, monkeypatch, text) == []
    t = load_topology(tmp_path / "bad.yaml")
    assert t.start.isoformat() == start
    assert t.backup_servers[0].definitions[0].label == "2026-03-01"


def test_mini_is_valid(tmp_path, monkeypatch):
    assert problems_of(tmp_path, monkeypatch, MINI) == []


def test_exact_line_format(tmp_path, monkeypatch):
    text = mini(("size: 1GiB, port", "size: 3 furlongs, port"))
    lines = problems_of(tmp_path, monkeypatch, text)
    assert lines == [
        "bad.yaml:14:27: arrays[0].volumes[0].size: invalid size (got '3 furlongs'; expected a "
        "size: bytes, or a number with B KiB MiB GiB TiB PiB KB MB GB TB)"]
    text = mini(("host: host1, mount_point", "host: host9, mount_point"))
    assert problems_of(tmp_path, monkeypatch, text) == [
        "bad.yaml:28:26: backup_servers[0].definitions[0].host: unknown host (got 'host9'; "
        "expected one of host1)"]
    text = mini(('switch: fcsw1}\n    volumes', 'switch: fcsw9}\n    volumes'))
    assert problems_of(tmp_path, monkeypatch, text) == [
        "bad.yaml:12:73: arrays[0].ports[0].switch: unknown switch (got 'fcsw9'; expected one "
        "of fcsw1)"]
    p = Problem("f.yaml", 3, 4, "a.b", "what (got 'x'; expected y)")
    assert str(p) == "f.yaml:3:4: a.b: what (got 'x'; expected y)"


def test_all_problems_in_one_run(tmp_path, monkeypatch):
    text = mini(
        ("name: mini", "name: 9mini"),
        ("speed: 8GFC}", "speed: 9GFC}"),
        ("size: 1GiB, port", "size: 3 furlongs, port"),
        ("{number: 1, size: 1GiB}", "{number: 0, size: 1GiB, colour: blue}"),
        ("hosts: [host1]", "hosts: [hostX]"),
        ("lun: 9}", "lun: nine}"),
        ("type: disk", "type: cloud"),
        ("media: [T00001, T00002]", "media: [T00001, T00001]"),
    )
    lines = problems_of(tmp_path, monkeypatch, text)
    assert_reported(lines, [
        "1:7: name: invalid name",
        "4:38: fabric.switches[0].speed: invalid speed",
        "14:27: arrays[0].volumes[0].size: invalid size",
        "14:66: arrays[0].volumes[0].hosts[0]: unknown initiator",
        "14:94: arrays[0].volumes[0].copy_destinations[0]: unknown volume (got '1'",
        "15:18: arrays[0].volumes[1].number: duplicate volume number",
        "15:33: arrays[0].volumes[1].colour: unknown key",
        "23:33: hosts[0].restore_ports[0].lun: not an integer",
        "28:57: backup_servers[0].definitions[0].type: unknown backup type",
        "30:34: tape_libraries[0].media[1]: duplicate media ID",
    ])
    # sorted by file, line, column
    keys = [(int(l.split(":")[1]), int(l.split(":")[2])) for l in lines]
    assert keys == sorted(keys)


def test_problems_sorted_across_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "b.yaml").write_text("name: 1b\n")
    (tmp_path / "a.yaml").write_text("name: a\nx: 1\nname: c\n")
    lines = [str(p) for p in validate_files(["b.yaml", "a.yaml"])]
    assert [l.split(":")[0] for l in lines] == ["a.yaml", "a.yaml", "b.yaml"]


# ------------------------------------------------------------------------------ any input

GARBAGE = [
    ("empty", b"", ["bad.yaml:1:1: (document): empty file"]),
    ("only-comment", b"# nothing\n", ["bad.yaml:1:1: (document): empty file"]),
    ("a-list", b"- a\n- b\n", ["bad.yaml:1:1: (document): wrong type (got a list; expected a mapping"]),
    ("a-scalar", b"hello\n", ["bad.yaml:1:1: (document): wrong type (got 'hello'; expected a mapping"]),
    ("syntax", b"name: x\n  bad: [\n", ["bad.yaml:2:6: (document): YAML syntax error"]),
    ("unclosed", b"name: [a, b\n", ["bad.yaml:2:1: (document): YAML syntax error"]),
    ("tab-indent", b"name: x\nfabric:\n\tswitches: []\n", ["bad.yaml:3:1: (document): YAML syntax error"]),
    ("binary", bytes(range(256)) * 3, ["(document): not a UTF-8 text file"]),
    ("nul", b"name: a\x00b\n", ["bad.yaml:1:8: (document): not a YAML text file"]),
    ("two-documents", b"name: a\n---\nname: b\n", ["bad.yaml:2:1: (document): YAML syntax error"]),
    ("unknown-tag", b"name: !shell rm\n", ["1:7: name: unsupported YAML tag (got '!shell'"]),
    ("python-tag", b"name: !!python/object:os.system x\n", ["name: unsupported YAML tag"]),
    ("recursive-alias", b"name: t\narrays: &a [*a]\n", ["arrays[0]: recursive alias"]),
    ("alias-bomb",
     b"name: t\na: &a [1,2,3,4,5,6,7,8,9,0]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
     b"c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
     b"e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n",
     ["(document): document too large"]),
    ("deep", b"[" * 3000 + b"]" * 3000, ["(document):"]),
    ("deep-is-located", b"name: t\narrays: " + b"[" * 200 + b"]" * 200 + b"\n",
     ["bad.yaml:2:108: (document): YAML nested too deeply (expected at most 100 levels of lists "
      "and mappings inside each other)"]),
    ("deep-through-aliases",
     b"name: t\na: &a " + b"[" * 60 + b"]" * 60 + b"\nb: " + b"[" * 60 + b"*a" + b"]" * 60 + b"\n",
     ["bad.yaml:2:46: (document): YAML nested too deeply once its aliases are expanded"]),
    ("recursive-merge", b"name: t\nfabric: &f {<<: *f}\n",
     ["bad.yaml:2:9: fabric: recursive alias (expected a value that does not contain itself)"]),
    ("control-characters", b'name: "a\\rb\\e[31m\\L\\u202e"\n"x\\ny": 1\n',
     [r"bad.yaml:1:7: name: invalid name (got 'a\rb\x1b[31m\u2028\u202e'",
      r"bad.yaml:2:1: ['x\ny']: unknown key (got 'x y'"]),
    ("complex-key", b"name: t\n? [a, b]\n: 1\n", ["2:3: ?: a key must be a plain value (got a list; expected a name)"]),
    ("null-name", b"name:\n", ["1:6: name: invalid name (got null"]),
    ("number-name", b"name: 12\n", ["1:7: name: invalid name (got '12'"]),
    ("yes-is-text", b"name: yes\nhosts: [{name: on}]\n", None),
]


@pytest.mark.parametrize("blob,expected", [(b, e) for _, b, e in GARBAGE],
                         ids=[i for i, _, _ in GARBAGE])
def test_any_input_gives_problems_not_tracebacks(tmp_path, monkeypatch, blob, expected):
    lines = problems_of(tmp_path, monkeypatch, blob)
    if expected is None:
        assert lines == []
        return
    assert lines
    assert_reported(lines, expected)
    assert not any("internal error" in line for line in lines), lines


def test_missing_file_and_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    lines = [str(p) for p in validate_files(["nothere.yaml", "adir"])]
    assert_reported(lines, ["adir:1:1: (document): cannot read the file",
                            "nothere.yaml:1:1: (document): cannot read the file"])
    with pytest.raises(ValidationFailed):
        load_topology("nothere.yaml")
    with pytest.raises(ValidationFailed):
        load_scenario("nothere.yaml")


def test_yaml_merge_keys_and_aliases(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nfabric:\n  switches:\n    - &sw {name: s1, ports: 4, speed: 4GFC}\n"
                    "    - {<<: *sw, name: s2}\n")
    t = load_topology(path)
    assert [(s.name, s.ports, s.speed) for s in t.fabric.switches] == \
        [("s1", 4, 400e6), ("s2", 4, 400e6)]


def test_unquoted_wwpn_and_numeric_device_id(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(MINI.replace('"21:00:00:e0:8b:00:00:01"', "21:00:00:00:00:00:00:01")
                    .replace("device_id: DEV-1", "device_id: 0001"))
    t = load_topology(path)
    assert t.hosts[0].hbas[0].wwpn == "21:00:00:00:00:00:00:01"
    assert t.arrays[0].device_id == "0001"


# ------------------------------------------------------------------------------ the package

# each case: (module, the names its importers use: san/, tests/, benchmarks/)
PUBLIC = [
    ("san.topology", "load_topology load_scenario validate_files is_scenario_file format_path "
                     "Problem Topology Scenario Step StepBase OPS ACTIONS FAULT_KINDS "
                     "CATALOG_FIELDS Switch Isl Zone Fabric Lan Array ArrayPort Volume Host Hba "
                     "Mount RestorePort BackupServer Definition Destination TapeLibrary "
                     "Placement FileSpec render_inspect path_status"),
    ("san.topology.loader", "Problem format_path load_topology load_scenario validate_files "
                            "is_scenario_file"),
    ("san.topology.inspect", "render_inspect path_status"),
]


@pytest.mark.parametrize("key, keys, what", [
    ("step", ["name", "topology", "steps"], "unknown key, did you mean 'steps'?"),
    ("swtiches", ["switches", "isls", "zones"], "unknown key, did you mean 'switches'?"),
    ("topolgy", ["name", "topology", "steps"], "unknown key, did you mean 'topology'?"),
    ("from_", ["op", "server", "from"], "unknown key, did you mean 'from'?"),
    ("extra", ["name", "topology", "steps"], "unknown key"),     # nothing close: no guess
    ("", ["name"], "unknown key"),
    # a key another mapping accepts is misplaced, not misspelt: no guess
    ("host", ["op", "pre", "post"], "unknown key"),
    ("port", ["op", "pre", "post"], "unknown key"),
    ("speed", ["op", "size", "seed"], "unknown key"),
    ("count", ["mount"], "unknown key"),
    ("source", ["resources"], "unknown key"),
])
def test_an_unknown_key_names_the_key_it_likely_misspells(key, keys, what):
    from san.topology.loader import unknown_key
    assert unknown_key(key, keys) == what


@pytest.mark.parametrize("keys, scenario", [
    ({"name", "topology", "steps"}, True),
    ({"name", "topology", "step"}, True),           # a typo in steps: still a scenario
    ({"name", "topolgy", "steps"}, True),
    ({"steps"}, True),
    ({"name", "fabric", "arrays"}, False),
    ({"name", "fabric", "arrays", "topology"}, False),   # a stray key in a topology
    ({"name"}, False),
    (set(), False),
])
def test_a_file_is_a_scenario_by_its_top_level_keys(keys, scenario):
    from san.topology.loader import is_scenario_keys
    assert is_scenario_keys(keys) is scenario


def test_a_stray_topology_key_in_a_topology_is_one_unknown_key(tmp_path):
    text = (ROOT / "topologies" / "single-array.yaml").read_text() + "topology: mine\n"
    (tmp_path / "t.yaml").write_text(text)
    lines = [str(p) for p in validate_files([tmp_path / "t.yaml"])]
    assert len(lines) == 1 and ": topology: unknown key (got 'topology'; expected one of " in lines[0]


@pytest.mark.parametrize("module,names", PUBLIC, ids=[m for m, _ in PUBLIC])
def test_public_names_stay_importable(module, names):
    imported = importlib.import_module(module)
    assert [n for n in names.split() if not hasattr(imported, n)] == []


PACKAGE = ROOT / "san" / "topology"


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_each_module_is_one_room_with_a_docstring(path):
    tree = ast.parse(path.read_text())
    assert ast.get_docstring(tree), f"{path.name} does not say what it is for"
    assert len(path.read_text().splitlines()) <= 600, f"{path.name} is too large to read"


def test_the_modules_of_the_package_import_each_other_without_a_cycle():
    """Imports anywhere in a module count, inside functions too."""
    graph = {}
    for path in PACKAGE.glob("*.py"):
        uses = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                name = node.module
                uses |= {f"{name}.{a.name}" for a in node.names} if name == "san.topology" \
                    else {name}
            elif isinstance(node, ast.Import):
                uses |= {a.name for a in node.names}
        graph[f"san.topology.{path.stem}"] = {u for u in uses if u.startswith("san.topology.")}
    graph["san.topology.__init__"] = set()          # the package re-exports; nobody needs it

    def visit(module, trail):
        assert module not in trail, " -> ".join(trail + [module])
        for used in graph.get(module, ()):
            visit(used, trail + [module])
    for module in graph:
        visit(module, [])


def test_importing_the_topology_package_never_imports_ray():
    done = subprocess.run(
        [sys.executable, "-c", "import san.topology, sys; assert 'ray' not in sys.modules"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
