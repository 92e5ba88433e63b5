"""The data model of topology and scenario files (pydantic v2), with the units of `san.units`.

Every model forbids unknown keys; field names are the YAML keys (`as` and `from` are the
aliases of `as_` and `from_`).  Sizes are int bytes, speeds float bytes/s, durations float
seconds, times aware UTC datetimes.  Scalar fields use `PlainValidator`s that raise
`PydanticCustomError('san', ...)` carrying `what` (what is wrong) and `expected` (what would
be right), which the loader turns into located problem lines.

These models check the shape of one file; names that refer to other parts of the file are
checked by `san.topology.checks`, and the loader (`san.topology.loader`) runs both.
"""
from __future__ import annotations

import datetime as _dt
import math
import re
from typing import Annotated, Any, Optional

from pydantic import (BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator,
                      model_validator)
from pydantic_core import PydanticCustomError

from san.errors import CODES
from san.units import (
    BLOCK, DURATION_EXPECTED, PiB, SCHEDULE_EXPECTED, SIZE_EXPECTED, SPEED_EXPECTED,
    TIME_EXPECTED, Schedule, parse_duration, parse_schedule, parse_size, parse_speed,
    parse_time,
)

NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,31}")
NAME_EXPECTED = "a name: a letter, then up to 31 letters, digits, '.', '_' or '-'"
WWPN_RE = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){7}")
WWPN_EXPECTED = "a WWPN like '50:06:0e:80:00:00:00:01' (8 hex bytes separated by ':')"
ACTIONS = ("quiesce", "resume", "flush", "unmount", "mount", "fsck")
FILESYSTEMS = ("fat", "none")
DEFINITION_TYPES = ("disk", "tape")
METHODS = ("mirror", "snapshot")
FAULT_KINDS = ("kill", "restart", "link_down", "link_up", "corrupt")
CATALOG_FIELDS = ("host", "mount_point", "type", "device_id", "media_id", "file", "label",
                  "timestamp")
ERROR_CODES = tuple(sorted(CODES))
LABEL_MAX = 128
MOUNT_POINT_MAX = 256
DEFAULT_START = _dt.datetime(2026, 1, 1, tzinfo=_dt.timezone.utc)


# --------------------------------------------------------------------------- scalar types

def bad(what: str, expected: str) -> PydanticCustomError:
    """The error every scalar validator raises: what is wrong, and what was expected."""
    return PydanticCustomError("san", "{what}", {"what": what, "expected": expected})


def one_of(choices) -> str:
    choices = list(dict.fromkeys(str(c) for c in choices))
    if not choices:
        return "a name defined in the file (there are none)"
    shown = ", ".join(str(c) for c in choices[:30])
    return "one of " + shown + (", ..." if len(choices) > 30 else "")


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_text(value):
    """A string as written: YAML numbers keep their source text (`device_id: 0001`)."""
    if isinstance(value, str):
        return value
    raw = getattr(value, "raw", None)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(raw, str):
        return raw
    return None


def _name(value):
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise bad("invalid name", NAME_EXPECTED)
    return value


def _text(value):
    text = _as_text(value)
    if text is None or text == "":
        raise bad("invalid value", "a non-empty string")
    return text


def _label(value):
    text = _as_text(value)
    if text is None:
        raise bad("invalid label", "a string")
    if len(text.encode("utf-8")) > LABEL_MAX:
        raise bad("label too long", f"at most {LABEL_MAX} bytes of UTF-8, "
                  f"this is {len(text.encode('utf-8'))}")
    return text


def _mount_point(value):
    text = _as_text(value)
    if text is None or not text.startswith("/"):
        raise bad("invalid mount point", "an absolute path like /db")
    if len(text.encode("utf-8")) > MOUNT_POINT_MAX:
        raise bad("mount point too long", f"at most {MOUNT_POINT_MAX} bytes of UTF-8, "
                  f"this is {len(text.encode('utf-8'))}")
    return text


def _port_ref(value):
    parts = value.split("/") if isinstance(value, str) else []
    if len(parts) != 2 or not all(NAME_RE.fullmatch(p) for p in parts):
        raise bad("invalid port reference", "ARRAY/PORT or HOST/HBA, e.g. array1/fc0")
    return value


def _target(value):
    if isinstance(value, str):
        parts = value.split("/")
        if 1 <= len(parts) <= 2 and all(NAME_RE.fullmatch(p) for p in parts):
            return value
    raise bad("invalid target", "an element name, ARRAY/PORT, HOST/HBA or an ISL name")


def _wwpn(value):
    if not isinstance(value, str) or not WWPN_RE.fullmatch(value):
        raise bad("invalid WWPN", WWPN_EXPECTED)
    return value.lower()


def int_type(minimum: int | None = 0, maximum: int | None = None, what: str = "an integer"):
    def check(value):
        rng = _range_text(minimum, maximum)
        if not _is_int(value):
            raise bad("not an integer", f"{what}{rng}")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise bad("out of range", f"{what}{rng}")
        return int(value)
    return Annotated[int, PlainValidator(check)]


def _range_text(minimum, maximum) -> str:
    if minimum is not None and maximum is not None:
        return f" from {minimum} to {maximum}"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def size_type(minimum: int = 1, maximum: int | None = PiB, multiple: int = BLOCK,
              kind: str = "size"):
    """A size in bytes; `kind` names it in messages (size, offset)."""
    def check(value):
        low = "more than 0 bytes" if minimum == 1 else f"at least {minimum} bytes"
        high = " and at most 1 PiB" if maximum == PiB else (
            f" and at most {maximum} bytes" if maximum is not None else "")
        if _is_int(value) and value < 0:
            raise bad(f"{kind} out of range", f"{low}{high}")
        try:
            nbytes = parse_size(value)
        except ValueError:
            raise bad(f"invalid {kind}", SIZE_EXPECTED) from None
        if nbytes < minimum or (maximum is not None and nbytes > maximum):
            raise bad(f"{kind} out of range", f"{low}{high}")
        if multiple > 1 and nbytes % multiple:
            raise bad(f"{kind} not a multiple of {multiple}",
                      f"a multiple of the {multiple}-byte block size")
        return nbytes
    return Annotated[int, PlainValidator(check)]


def _speed(value):
    try:
        return float(parse_speed(value))
    except ValueError:
        raise bad("invalid speed", SPEED_EXPECTED) from None


def _duration(value):
    try:
        seconds = float(parse_duration(value))
    except ValueError:
        raise bad("invalid duration", DURATION_EXPECTED) from None
    return seconds


def _time(value):
    try:
        return parse_time(value)
    except (ValueError, TypeError, OverflowError):
        raise bad("invalid time", TIME_EXPECTED) from None


def _schedule(value):
    if isinstance(value, Schedule):
        return value
    try:
        return parse_schedule(value)
    except (ValueError, TypeError, OverflowError):
        raise bad("invalid schedule", SCHEDULE_EXPECTED) from None


def choice(*values: str, what: str = "value"):
    def check(value):
        if not isinstance(value, str) or value not in values:
            raise bad(f"unknown {what}", one_of(values))
        return value
    return Annotated[str, PlainValidator(check)]


def _non_negative_number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0:
        raise bad("invalid amount", "a number >= 0")
    return float(value)


def _raw_list(value):
    if not isinstance(value, list):
        raise bad("wrong type", "a list")
    return value


def _row_value(value):
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = _as_text(value)
    if text is None:
        if isinstance(value, (int, float)):
            return str(value)
        if isinstance(value, _dt.datetime):
            from san.units import format_time
            return format_time(value)
        raise bad("invalid row value", "a string, a number or null")
    return text


Name = Annotated[str, PlainValidator(_name)]
Text = Annotated[str, PlainValidator(_text)]
Label = Annotated[str, PlainValidator(_label)]
MountPoint = Annotated[str, PlainValidator(_mount_point)]
PortRef = Annotated[str, PlainValidator(_port_ref)]
TargetRef = Annotated[str, PlainValidator(_target)]
Wwpn = Annotated[str, PlainValidator(_wwpn)]
Speed = Annotated[float, PlainValidator(_speed)]
Duration = Annotated[float, PlainValidator(_duration)]
Time = Annotated[_dt.datetime, PlainValidator(_time)]
ScheduleT = Annotated[Schedule, PlainValidator(_schedule),
                      PlainSerializer(lambda s: s.text, return_type=str)]
Amount = Annotated[float, PlainValidator(_non_negative_number)]
RawList = Annotated[list, PlainValidator(_raw_list)]
RowValue = Annotated[Optional[str], PlainValidator(_row_value)]

Number = int_type(0, what="a whole number")
Lun = int_type(0, 16383, what="a LUN")
Count = int_type(1, what="a count")
Seed = int_type(0, what="a seed (a whole number)")
VolumeSize = size_type()
IoSize = size_type()
Offset = size_type(minimum=0, maximum=PiB, kind="offset")
FileSize = size_type(minimum=0, maximum=PiB, multiple=1)
Capacity = size_type(minimum=1, maximum=None, multiple=1)
PoolSize = size_type(minimum=0, maximum=None, multiple=1)
Threshold = size_type(minimum=0, maximum=None, multiple=1)
Action = choice(*ACTIONS, what="action")
Filesystem = choice(*FILESYSTEMS, what="filesystem")
DefinitionType = choice(*DEFINITION_TYPES, what="backup type")
Method = choice(*METHODS, what="method")
FaultKind = choice(*FAULT_KINDS, what="fault kind")
ErrorCode = choice(*ERROR_CODES, what="error code")
CatalogField = choice(*CATALOG_FIELDS, what="catalog field")


# --------------------------------------------------------------------------- base model

class SanModel(BaseModel):
    """Unknown keys are errors; an explicit `null` for an optional key means "absent"."""
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True,
                              validate_default=False)

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


# --------------------------------------------------------------------------- topology

class Placement(SanModel):
    resources: dict[Text, Amount] = {}


class Switch(SanModel):
    name: Name
    ports: Count = 16
    speed: Speed = 800e6
    placement: Optional[Placement] = None


class Isl(SanModel):
    name: Name
    a: Name
    b: Name
    speed: Optional[Speed] = None          # resolved by the loader: the lower of a's and b's


class Zone(SanModel):
    name: Name
    members: list[PortRef]


class Fabric(SanModel):
    switches: list[Switch] = []
    isls: list[Isl] = []
    zones: list[Zone] = []


class Lan(SanModel):
    speed: Speed = 125e6


class ArrayPort(SanModel):
    name: Name
    number: Number
    wwpn: Wwpn
    switch: Name
    speed: Optional[Speed] = None          # resolved by the loader: the switch's


class Volume(SanModel):
    number: Number
    size: VolumeSize
    port: Optional[Name] = None
    lun: Optional[Lun] = None
    hosts: list[Name] = []
    copy_destinations: list[Number] = []


class Array(SanModel):
    name: Name
    device_id: Text
    managers: list[Name] = []
    snapshot_pool: Optional[PoolSize] = None
    copy_speed: Speed = 1000e6
    ports: list[ArrayPort]
    volumes: list[Volume]
    placement: Optional[Placement] = None

    def port(self, name: str) -> ArrayPort | None:
        return next((p for p in self.ports if p.name == name), None)

    def volume(self, number: int) -> Volume | None:
        return next((v for v in self.volumes if v.number == number), None)

    def volume_at(self, port: str, lun: int) -> Volume | None:
        return next((v for v in self.volumes if v.port == port and v.lun == lun), None)


class Hba(SanModel):
    name: Name
    wwpn: Wwpn
    switch: Name
    speed: Optional[Speed] = None          # resolved by the loader: the switch's


class Mount(SanModel):
    mount_point: MountPoint
    device: Optional[Text] = None
    port: PortRef
    lun: Lun
    filesystem: Filesystem = "none"


class RestorePort(SanModel):
    port: PortRef
    lun: Lun


class Host(SanModel):
    name: Name
    hbas: list[Hba] = []
    mounts: list[Mount] = []
    restore_ports: list[RestorePort] = []
    placement: Optional[Placement] = None

    def hba(self, name: str) -> Hba | None:
        return next((h for h in self.hbas if h.name == name), None)

    def mount(self, mount_point: str) -> Mount | None:
        return next((m for m in self.mounts if m.mount_point == mount_point), None)


class Destination(SanModel):
    array: Optional[Name] = None
    volume: Optional[Number] = None
    media: Optional[Text] = None


class Definition(SanModel):
    name: Name
    host: Name
    mount_point: MountPoint
    type: DefinitionType
    method: Optional[Method] = None        # 'mirror' by default for disk, None for tape
    destination: Destination
    pre: list[Action] = []
    post: list[Action] = []
    label: Label
    schedule: Optional[ScheduleT] = None

    @model_validator(mode="after")
    def _default_method(self):
        if self.type == "disk" and self.method is None:
            self.method = "mirror"
        return self


class BackupServer(SanModel):
    name: Name
    tape_library: Optional[Name] = None
    definitions: list[Definition] = []
    placement: Optional[Placement] = None

    def definition(self, name: str) -> Definition | None:
        return next((d for d in self.definitions if d.name == name), None)


class TapeLibrary(SanModel):
    name: Name
    drives: Count = 1
    drive_speed: Speed = 160e6
    media: list[Text]
    media_capacity: Capacity = 800 * 10**9
    placement: Optional[Placement] = None


ELEMENT_KINDS = (("switch", "switches"), ("isl", "isls"), ("array", "arrays"), ("host", "hosts"),
                 ("backup_server", "backup_servers"), ("tape_library", "tape_libraries"))


class Topology(SanModel):
    name: Name
    start: Time = DEFAULT_START
    lan: Lan = Lan()
    fabric: Fabric = Fabric()
    arrays: list[Array] = []
    hosts: list[Host] = []
    backup_servers: list[BackupServer] = []
    tape_libraries: list[TapeLibrary] = []
    source: Optional[str] = None           # the file it was loaded from (not a YAML key)

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


# --------------------------------------------------------------------------- scenario steps

class StepBase(SanModel):
    """Fields every step may carry.  `op` is the step's op name."""
    op: str
    title: Optional[Text] = None
    expect_error: Optional[ErrorCode] = None
    as_: Optional[Name] = Field(None, alias="as")


class WriteStep(StepBase):
    host: Name
    mount: Text
    offset: Offset
    size: IoSize
    seed: Seed


class FileSpec(SanModel):
    size: FileSize
    seed: Seed


class WriteFilesStep(StepBase):
    host: Name
    mount: Text
    files: dict[Text, FileSpec]


class RemoveFilesStep(StepBase):
    host: Name
    mount: Text
    files: list[Text]


class CheckpointStep(StepBase):
    as_: Name = Field(alias="as")
    host: Optional[Name] = None
    mount: Optional[Text] = None
    array: Optional[Name] = None
    volume: Optional[Number] = None
    backup: Optional[Name] = None


class VerifyStep(StepBase):
    checkpoint: Name
    host: Optional[Name] = None
    mount: Optional[Text] = None
    array: Optional[Name] = None
    volume: Optional[Number] = None
    backup: Optional[Name] = None


class ListDestinationsStep(StepBase):
    host: Name
    mount: Text


class DefineStep(StepBase, Definition):
    """A definition's fields (and its default method), plus the server that gets it."""
    server: Optional[Name] = None          # filled in when the topology has one server

    @property
    def definition(self) -> Definition:
        """The definition this step adds."""
        return Definition.model_validate(
            {k: getattr(self, k) for k in Definition.model_fields if getattr(self, k) is not None})


class BackupStep(StepBase):
    definition: Name


class RestoreTarget(SanModel):
    host: Name
    mount: Text


class RestoreVolumeStep(StepBase):
    backup: Name
    to: Optional[RestoreTarget] = None
    pre: list[Action] = []
    post: list[Action] = []


class RestoreFilesStep(StepBase):
    backup: Name
    files: list[Text]
    pre: list[Action] = []
    post: list[Action] = []


class DeleteBackupStep(StepBase):
    backup: Name


class VolumeTarget(SanModel):
    array: Name
    volume: Number


class CopyVolumeStep(StepBase):
    backup: Name
    to: VolumeTarget


class CopyToTapeStep(StepBase):
    backup: Name
    media: Text
    pre: list[Action] = []
    post: list[Action] = []


class MigrateStep(CopyToTapeStep):
    pass


class LoseCatalogStep(StepBase):
    server: Optional[Name] = None


class RebuildCatalogStep(StepBase):
    server: Optional[Name] = None
    from_: Optional[list[Name]] = Field(None, alias="from")


class ExpectCatalogStep(StepBase):
    server: Optional[Name] = None
    count: Number
    rows: list[dict[CatalogField, RowValue]] = []


class AdvanceClockStep(StepBase):
    by: Duration


class When(SanModel):
    step: Text
    after: Threshold


class FaultStep(StepBase):
    kind: FaultKind
    target: TargetRef
    volume: Optional[Number] = None
    media: Optional[Text] = None
    offset: Optional[Offset] = None
    when: Optional[When] = None


class ScrubStep(StepBase):
    """Read and verify every written granule of one volume of an array, or of all of them."""
    array: Name
    volume: Optional[Number] = None
    expect_bad: Optional[Number] = None


class ConcurrentStep(StepBase):
    steps: RawList                          # the loader replaces it by the validated steps


OPS: dict[str, type[StepBase]] = {
    "write": WriteStep,
    "write_files": WriteFilesStep,
    "remove_files": RemoveFilesStep,
    "checkpoint": CheckpointStep,
    "verify": VerifyStep,
    "list_destinations": ListDestinationsStep,
    "define": DefineStep,
    "backup": BackupStep,
    "restore_volume": RestoreVolumeStep,
    "restore_files": RestoreFilesStep,
    "delete_backup": DeleteBackupStep,
    "copy_volume": CopyVolumeStep,
    "copy_to_tape": CopyToTapeStep,
    "migrate": MigrateStep,
    "lose_catalog": LoseCatalogStep,
    "rebuild_catalog": RebuildCatalogStep,
    "expect_catalog": ExpectCatalogStep,
    "advance_clock": AdvanceClockStep,
    "fault": FaultStep,
    "scrub": ScrubStep,
    "concurrent": ConcurrentStep,
}
SERVER_OPS = ("define", "lose_catalog", "rebuild_catalog", "expect_catalog")

Step = StepBase


def _topology_ref(value):
    if isinstance(value, dict) or (isinstance(value, str) and value):
        return value
    raise bad("wrong type", "a path to a topology file, or an inline topology mapping")


class ScenarioHead(SanModel):
    """The top level of a scenario file, before its topology and steps are validated."""
    name: Name
    topology: Annotated[Any, PlainValidator(_topology_ref)]
    steps: RawList


class Scenario(SanModel):
    name: Name
    topology: Topology
    steps: list[Any]                        # StepBase subclasses (see OPS)
    source: Optional[str] = None
