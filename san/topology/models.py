"""The models of a topology file (pydantic v2): the SAN's elements as plain data.

Every model forbids unknown keys and reads an explicit `null` for an optional key as "absent";
field names are the YAML keys.  Values use the types of `fields` (sizes int bytes, speeds
float bytes/s, times aware UTC datetimes).  Each model's docstring and each field's
description are what `san schema` and `docs/reference.md` tell the user, so they say what
the key means, not how it is stored.

These models check the shape of one file; names that refer to other parts of the file are
checked by `checks`, and the loader runs both.
"""
from __future__ import annotations

import datetime as _dt
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from san.kinds import KINDS
from san.topology.fields import (
    Action, Amount, Capacity, Count, DefinitionType, DeviceId, Drives, Filesystem, Label, Lun,
    MediaId, Method, MountPoint, Name, Number, PoolSize, PortRef, ScheduleT, Speed, Text, Time,
    VolumeSize, Wwpn, shown_of, yaml_default,
)

DEFAULT_START = _dt.datetime(2026, 1, 1, tzinfo=_dt.timezone.utc)


def _as_written(schema: dict, cls) -> None:
    """A model's JSON Schema as a YAML user reads it: each default as it would be written
    (8GFC, not 800000000.0), and each field's description followed by what its type accepts."""
    if "description" in schema:
        schema["description"] = " ".join(schema["description"].split())
    properties = schema.get("properties", {})
    for name, field in cls.model_fields.items():
        prop = properties.get(field.alias or name)
        if prop is None:
            continue
        if not field.is_required():
            prop["default"] = yaml_default(field)
            _null_allowed(prop)     # `key: null` is the key left out (`_null_is_absent`)
        shown = shown_of(field)
        if field.description and shown is not None and shown.accepts and not shown.choices:
            prop["description"] = f"{field.description} Accepts {shown.accepts}."


def _null_allowed(prop: dict) -> None:
    """Let an optional key's schema `prop` accept null, as `san validate` does (in place)."""
    null = {"type": "null"}
    if null in prop.get("anyOf", ()) or prop.get("type") == "null" or \
            (isinstance(prop.get("type"), list) and "null" in prop["type"]):
        return
    inner = {k: v for k, v in prop.items() if k not in ("description", "default")}
    for k in inner:
        del prop[k]
    prop["anyOf"] = [inner, null]


class SanModel(BaseModel):
    """Unknown keys are errors; an explicit `null` for an optional key means "absent"."""
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True,
                              validate_default=False, json_schema_extra=_as_written)

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data):
        if isinstance(data, dict):
            fields = cls.model_fields
            by_key = {(f.alias or n): f for n, f in fields.items()}
            return {k: v for k, v in data.items()
                    if not (v is None and k in by_key and not by_key[k].is_required())}
        return data

    @classmethod
    def yaml_keys(cls) -> list[str]:
        """The keys this mapping accepts, as written in YAML."""
        return [(f.alias or n) for n, f in cls.model_fields.items() if n != "source"]


class Placement(SanModel):
    """Where an element runs: on the Ray nodes that offer these custom resources."""
    resources: dict[Text, Amount] = Field(
        {}, description="Ray custom resource -> amount this element holds while it runs "
                        "(e.g. {site_a: 1}; ask 0.01 to pin many elements to one node).")


_PLACEMENT = "Run this element on the Ray nodes offering these custom resources."


class Switch(SanModel):
    """An FC switch."""
    name: Name = Field(description="The switch's name.")
    ports: Count = Field(16, description="Number of ports: at least the array ports, HBAs and "
                                         "ISL ends attached to it.")
    speed: Speed = Field(800e6, description="Port speed; ports and HBAs on it default to it.")
    placement: Optional[Placement] = Field(None, description=_PLACEMENT)


class Isl(SanModel):
    """An inter-switch link joining two switches."""
    name: Name = Field(description="The ISL's name (a fault target).")
    a: Name = Field(description="One switch.")
    b: Name = Field(description="The other switch.")
    speed: Optional[Speed] = Field(None, description="Link speed; default: the lower of its "
                                                     "two switches' speeds.")


class Zone(SanModel):
    """An FC zone: an initiator port may reach a target port only inside a zone."""
    name: Name = Field(description="The zone's name.")
    members: list[PortRef] = Field(description="The ports in the zone: ARRAY/PORT or HOST/HBA.")


class Fabric(SanModel):
    """The FC fabric: switches, the links between them, zoning."""
    switches: list[Switch] = Field([], description="The FC switches.")
    isls: list[Isl] = Field([], description="Inter-switch links.")
    zones: list[Zone] = Field([], description="Zones; a path outside every zone is denied.")


class Lan(SanModel):
    """The management LAN: every element has one NIC on it."""
    speed: Speed = Field(125e6, description="Speed of every element's NIC.")


class ArrayPort(SanModel):
    """An FC port of a disk array."""
    name: Name = Field(description="The port's name inside its array (ARRAY/PORT elsewhere).")
    number: Number = Field(description="The port number, unique in the array.")
    wwpn: Wwpn = Field(description="Its world wide port name, unique in the file.")
    switch: Name = Field(description="The switch it is plugged into.")
    speed: Optional[Speed] = Field(None, description="Port speed; default: its switch's. A link "
                                                     "runs at the lower of its two ends.")


class Volume(SanModel):
    """A thin volume of a disk array, and its LUN mapping."""
    number: Number = Field(description="The volume number, unique in the array.")
    size: VolumeSize = Field(description="Its size (a multiple of 512 bytes, at most 1 PiB).")
    port: Optional[Name] = Field(None, description="The array port it is mapped at (with lun); "
                                                   "unmapped if absent (e.g. a mirror "
                                                   "destination).")
    lun: Optional[Lun] = Field(None, description="Its LUN at that port (with port).")
    hosts: list[Name] = Field([], description="The initiators (hosts, arrays or servers) LUN "
                                              "masking lets see it.")
    copy_destinations: list[Number] = Field([], description="Volumes of this array (of the same "
                                                            "size) it may be copied to: mirror "
                                                            "destinations.")


class Array(SanModel):
    """A disk array: FC ports, thin volumes, a management interface on the LAN."""
    name: Name = Field(description="The array's name.")
    device_id: DeviceId = Field(description="What SCSI INQUIRY reports, and what the catalog "
                                        "records; unique.")
    managers: list[Name] = Field([], description="Who may use its management (LAN) "
                                                 "interface: hosts, arrays or servers.")
    snapshot_pool: Optional[PoolSize] = Field(None, description="Cap on what snapshots keep "
                                                                "(in the pool, or left in "
                                                                "place by redirect-on-write); "
                                                                "default: no cap.")
    snapshot_mode: Literal["redirect-on-write", "copy-on-write"] = Field(
        "redirect-on-write", description="How a write keeps what a snapshot needs: "
                                         "redirect-on-write writes the new data in the "
                                         "granule's second place and moves nothing; "
                                         "copy-on-write first copies the old data into the "
                                         "snapshot pool.")
    copy_speed: Speed = Field(1000e6, description="Speed of copies inside the array (mirrors, "
                                                  "restores, checks).")
    ports: list[ArrayPort] = Field(description="Its FC ports.")
    volumes: list[Volume] = Field(description="Its volumes.")
    placement: Optional[Placement] = Field(None, description=_PLACEMENT)

    def port(self, name: str) -> ArrayPort | None:
        return next((p for p in self.ports if p.name == name), None)

    def volume(self, number: int) -> Volume | None:
        return next((v for v in self.volumes if v.number == number), None)

    def volume_at(self, port: str, lun: int) -> Volume | None:
        return next((v for v in self.volumes if v.port == port and v.lun == lun), None)


class Hba(SanModel):
    """A host bus adapter: a host's FC port."""
    name: Name = Field(description="The HBA's name inside its host (HOST/HBA elsewhere).")
    wwpn: Wwpn = Field(description="Its world wide port name, unique in the file.")
    switch: Name = Field(description="The switch it is plugged into.")
    speed: Optional[Speed] = Field(None, description="HBA speed; default: its switch's.")


class Mount(SanModel):
    """A row of a host's port table (Fig. 3): a mount point on a LUN behind an array port."""
    mount_point: MountPoint = Field(description="Where the host mounts the volume, e.g. /db.")
    device: Optional[Text] = Field(None, description="The host's device name, e.g. /dev/sda "
                                                     "(informational).")
    port: PortRef = Field(description="The array port it reaches the volume at: ARRAY/PORT.")
    lun: Lun = Field(description="The volume's LUN at that port.")
    filesystem: Filesystem = Field("none", description="fat: a FAT filesystem (formatted when "
                                                       "blank); none: raw blocks.")


class RestorePort(SanModel):
    """A row of a host's restore port table (Fig. 13): where a backup of that array is
    attached for a file restore."""
    port: PortRef = Field(description="An array port, ARRAY/PORT; one restore port per array.")
    lun: Lun = Field(description="The LUN a backup volume is attached at.")


class Host(SanModel):
    """A client host: HBAs, mounts, the backup client."""
    name: Name = Field(description="The host's name.")
    hbas: list[Hba] = Field([], description="Its HBAs; I/O uses the first with a live, zoned "
                                            "path, moves to the next when that path goes down "
                                            "mid-transfer, and back when it returns.")
    mounts: list[Mount] = Field([], description="Its port table.")
    restore_ports: list[RestorePort] = Field([], description="Its restore port table.")
    placement: Optional[Placement] = Field(None, description=_PLACEMENT)

    def hba(self, name: str) -> Hba | None:
        return next((h for h in self.hbas if h.name == name), None)

    def mount(self, mount_point: str) -> Mount | None:
        return next((m for m in self.mounts if m.mount_point == mount_point), None)


class Destination(SanModel):
    """Where a backup goes: {array, volume} for a mirror, {array} for a snapshot, {media}
    for tape."""
    array: Optional[Name] = Field(None, description="The array (disk backups).")
    volume: Optional[Number] = Field(None, description="The destination volume (mirror only).")
    media: Optional[MediaId] = Field(None, description="The tape ID (tape backups only).")


class Definition(SanModel):
    """A row of the backup definition table (Fig. 5): what to back up, where, and how."""
    name: Name = Field(description="The definition's name, unique in the file.")
    host: Name = Field(description="The host whose volume is backed up.")
    mount_point: MountPoint = Field(description="Its mount point on that host.")
    type: DefinitionType = Field(description="disk (mirror or snapshot in an array) or tape.")
    method: Optional[Method] = Field(None, description="mirror or snapshot (disk only); "
                                                       "default for disk: mirror.")
    destination: Destination = Field(description="{array, volume} for a mirror, {array} for "
                                                 "a snapshot, {media} for tape.")
    pre: list[Action] = Field([], description="Actions on the host before the copy is ordered.")
    post: list[Action] = Field([], description="Actions on the host once the array accepted "
                                               "the copy.")
    label: Label = Field(description="Free text kept in the volume info and the catalog.")
    schedule: Optional[ScheduleT] = Field(None, description="When it runs by itself as the "
                                                            "clock advances.")

    @model_validator(mode="after")
    def _default_method(self):
        if self.type == "disk" and self.method is None:
            self.method = "mirror"
        return self


class BackupServer(SanModel):
    """A backup server: definitions, the catalog (SQLite), a tape library."""
    name: Name = Field(description="The server's name.")
    tape_library: Optional[Name] = Field(None, description="The tape library it writes to.")
    definitions: list[Definition] = Field([], description="Its backup definition table.")
    placement: Optional[Placement] = Field(None, description=_PLACEMENT)

    def definition(self, name: str) -> Definition | None:
        return next((d for d in self.definitions if d.name == name), None)


class TapeLibrary(SanModel):
    """A tape library: drives and media (SIMH tape images with ANSI labels)."""
    name: Name = Field(description="The library's name.")
    drives: Drives = Field(1, description="Number of drives; work beyond it waits for a drive.")
    drive_speed: Speed = Field(160e6, description="Speed of each drive.")
    media: list[MediaId] = Field(description="Its tape IDs (media), unique in the file.")
    media_capacity: Capacity = Field(800 * 10**9, description="Capacity of each medium.")
    placement: Optional[Placement] = Field(None, description=_PLACEMENT)


# (kind, YAML key) of everything that has a name in a topology's one namespace: the element
# kinds of the registry (`san.kinds`), and the ISLs
ELEMENT_KINDS = tuple((k.name, k.collection[-1]) for k in KINDS) + (("isl", "isls"),)


class Topology(SanModel):
    """A topology file: the SAN's elements, their links, zoning, and backup definitions."""
    name: Name = Field(description="The topology's name.")
    start: Time = Field(DEFAULT_START, description="The simulated clock's start (UTC).")
    lan: Lan = Field(Lan(), description="The management LAN.")
    fabric: Fabric = Field(Fabric(), description="Switches, ISLs and zones.")
    arrays: list[Array] = Field([], description="The disk arrays.")
    hosts: list[Host] = Field([], description="The client hosts.")
    backup_servers: list[BackupServer] = Field([], description="The backup servers.")
    tape_libraries: list[TapeLibrary] = Field([], description="The tape libraries.")
    # the file it was loaded from: set by the loader, not a YAML key
    source: SkipJsonSchema[Optional[str]] = None

    def _groups(self):
        return (("switch", self.fabric.switches), ("isl", self.fabric.isls),
                ("array", self.arrays), ("host", self.hosts),
                ("backup_server", self.backup_servers), ("tape_library", self.tape_libraries))

    def element(self, name: str):
        """The element model (Switch, Isl, Array, Host, BackupServer, TapeLibrary), or None."""
        for _, group in self._groups():
            for element in group:
                if element.name == name:
                    return element
        return None

    def kind_of(self, name: str) -> str | None:
        """'switch', 'isl', 'array', 'host', 'backup_server', 'tape_library' or None."""
        for kind, group in self._groups():
            if any(e.name == name for e in group):
                return kind
        return None

    def port(self, ref: str) -> ArrayPort | Hba | None:
        """The ArrayPort of 'array1/fc0' or the Hba of 'host1/hba0', or None."""
        if not isinstance(ref, str) or ref.count("/") != 1:
            return None
        owner, name = ref.split("/")
        element = self.element(owner)
        if isinstance(element, Array):
            return element.port(name)
        if isinstance(element, Host):
            return element.hba(name)
        return None

    def array(self, name: str) -> Array | None:
        return next((a for a in self.arrays if a.name == name), None)

    def host(self, name: str) -> Host | None:
        return next((h for h in self.hosts if h.name == name), None)

    def switch(self, name: str) -> Switch | None:
        return next((s for s in self.fabric.switches if s.name == name), None)

    def backup_server(self, name: str) -> BackupServer | None:
        return next((s for s in self.backup_servers if s.name == name), None)

    def tape_library(self, name: str) -> TapeLibrary | None:
        return next((t for t in self.tape_libraries if t.name == name), None)

    def definition(self, name: str) -> tuple[BackupServer, Definition] | None:
        """(server, definition) of a definition name (unique in a file), or None."""
        for server in self.backup_servers:
            found = server.definition(name)
            if found is not None:
                return server, found
        return None

    def array_by_device_id(self, device_id: str) -> Array | None:
        return next((a for a in self.arrays if a.device_id == device_id), None)

    def resolve_speeds(self) -> "Topology":
        """Fill port / HBA speeds from their switch and ISL speeds from the slower switch."""
        speeds = {s.name: s.speed for s in self.fabric.switches}
        for array in self.arrays:
            for port in array.ports:
                if port.speed is None:
                    port.speed = speeds.get(port.switch, 800e6)
        for host in self.hosts:
            for hba in host.hbas:
                if hba.speed is None:
                    hba.speed = speeds.get(hba.switch, 800e6)
        for isl in self.fabric.isls:
            if isl.speed is None:
                isl.speed = min(speeds.get(isl.a, 800e6), speeds.get(isl.b, 800e6))
        return self
