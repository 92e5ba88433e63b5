"""The value types of topology and scenario files: names, sizes, speeds, times, choices.

Each type is an `Annotated` pydantic type with three parts that must agree:
- a `PlainValidator` that takes the value as written (int or str, via `san.units`) and returns
  plain numbers (sizes int bytes, speeds float bytes/s, durations float seconds, times aware
  UTC datetimes), or raises `bad(what, expected)`, which the loader turns into a located line;
- a `WithJsonSchema`: what an editor may accept, for `san schema` (JSON Schema 2020-12);
- a `Shown`: the type's name in the reference, what it accepts, and how a default of it is
  written in YAML (`800e6` is `8GFC`), for `san schema` and `docs/reference.md`.
"""
from __future__ import annotations

import datetime as _dt
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Optional

from pydantic import BaseModel, PlainSerializer, PlainValidator

from san.actions import ACTIONS as _ACTIONS
from pydantic.fields import FieldInfo
from pydantic.json_schema import WithJsonSchema
from pydantic_core import PydanticCustomError

from san.errors import CODES
from san.units import (
    BLOCK, CLOCK_RANGE, DURATION_EXPECTED, DURATION_UNITS, MEDIA_ID_EXPECTED, MEDIA_ID_PATTERN,
    PiB, SCHEDULE_EXPECTED, SIZE_EXPECTED, SIZE_UNITS, SPEED_EXPECTED, SPEED_NAMES, TIME_EXPECTED,
    WEEKDAYS, Schedule, format_time, in_clock_range, parse_duration, parse_schedule, parse_size,
    parse_speed, parse_time,
)

NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,31}")
NAME_EXPECTED = "a name: a letter, then up to 31 letters, digits, '.', '_' or '-'"
WWPN_RE = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){7}")
WWPN_EXPECTED = "a WWPN like '50:06:0e:80:00:00:00:01' (8 hex bytes separated by ':')"
ACTIONS = _ACTIONS       # the host's closed vocabulary (san.actions, light for its actors)
FILESYSTEMS = ("fat", "none")
DEFINITION_TYPES = ("disk", "tape")
METHODS = ("mirror", "snapshot")
FAULT_KINDS = ("kill", "restart", "link_down", "link_up", "corrupt")
CATALOG_FIELDS = ("host", "mount_point", "type", "device_id", "media_id", "file", "label",
                  "timestamp")
ERROR_CODES = tuple(sorted(CODES))
LABEL_MAX = 128
MOUNT_POINT_MAX = 256

# the same syntax as JSON Schema patterns (ECMA 262), anchored
_NAME = NAME_RE.pattern
_NUMBER = r"\s*\d+(\.\d+)?\s*"
NAME_PATTERN = f"^{_NAME}$"
PORT_REF_PATTERN = f"^{_NAME}/{_NAME}$"
TARGET_PATTERN = f"^{_NAME}(/{_NAME})?$"
WWPN_PATTERN = f"^{WWPN_RE.pattern}$"
SIZE_PATTERN = f"^{_NUMBER}({'|'.join(SIZE_UNITS)})?\\s*$"
SPEED_PATTERN = f"^\\s*({'|'.join(SPEED_NAMES)}|\\d+(\\.\\d+)?\\s*(MB/s|Gb/s))\\s*$"
DURATION_PATTERN = f"^{_NUMBER}[{''.join(DURATION_UNITS)}]\\s*$"
TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}(:?\d{2})?)?$"
_DAY = "|".join(f"[{d[0].upper()}{d[0]}][{d[1].upper()}{d[1]}][{d[2].upper()}{d[2]}]"
                for d in WEEKDAYS)
SCHEDULE_PATTERNS = (r"^\s*once\s+\S+\s*$", r"^\s*daily\s+\d{1,2}:\d{2}\s*$",
                     f"^\\s*weekly\\s+({_DAY})\\S*\\s+\\d{{1,2}}:\\d{{2}}\\s*$",
                     f"^\\s*every\\s+\\d+(\\.\\d+)?[{''.join(DURATION_UNITS)}]\\s*$")


# --------------------------------------------------------------------------- messages

def bad(what: str, expected: str) -> PydanticCustomError:
    """The error every scalar validator raises: what is wrong, and what was expected."""
    return PydanticCustomError("san", "{what}", {"what": what, "expected": expected})


def one_of(choices) -> str:
    """'one of a, b, c' (the first 30 shown) for a '(expected ...)'; takes only the first 31
    distinct choices from `choices`, so that a file with many names is not read once for
    each of its problems."""
    shown: dict[str, None] = {}
    for choice in choices:
        shown[str(choice)] = None
        if len(shown) > 30:
            break
    if not shown:
        return "a name defined in the file (there are none)"
    return "one of " + ", ".join(list(shown)[:30]) + (", ..." if len(shown) > 30 else "")


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


# --------------------------------------------------------------------------- how a type shows

def _same(value):
    return value


@dataclass(frozen=True)
class Shown:
    """A value type as a user reads about it: `label` names it in the reference's tables
    (explained under "Value types"), `accepts` says what may be written, `write` writes a
    default of it as YAML would (bytes/s 800e6 -> '8GFC'), `choices` is its closed set."""
    label: str
    accepts: str = ""
    write: Callable[[Any], Any] = _same
    choices: tuple = ()            # a closed set: the schema's enum says what it accepts


def shown_of(field: FieldInfo) -> Shown | None:
    """How the values of a field show: its own type's, or its items' for a list or a mapping
    (their values'), or the type's inside Optional; None for a model or a plain type."""
    found = next((m for m in field.metadata if isinstance(m, Shown)), None)
    return found or shown_in(field.annotation)


def shown_in(tp) -> Shown | None:
    """How the values of type `tp` show (see `shown_of`)."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        found = next((m for m in tp.__metadata__ if isinstance(m, Shown)), None)
        return found or shown_in(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return shown_in(args[0]) if len(args) == 1 else None
    if origin in (list, dict):
        return shown_in(typing.get_args(tp)[-1])
    return None


def yaml_default(field: FieldInfo):
    """A field's default as a user writes it in YAML: 8GFC rather than 800000000.0, `{}` for
    a mapping whose own defaults apply."""
    default = field.get_default(call_default_factory=True)
    if default is None or isinstance(default, (list, dict)):
        return default
    if isinstance(default, BaseModel):
        return {}
    found = next((m for m in field.metadata if isinstance(m, Shown)), None)
    return found.write(default) if found else default


def size_text(nbytes: int):
    """A size as a user would write it: the unit giving the fewest digits (800GB, 2GiB)."""
    if not nbytes:
        return nbytes
    written = [(len(str(nbytes // factor)), -factor, f"{nbytes // factor}{unit}")
               for unit, factor in SIZE_UNITS.items() if factor > 1 and nbytes % factor == 0]
    return min(written)[2] if written else nbytes


def speed_text(rate: float) -> str:
    """A speed as a user would write it: its name (8GFC, 1GbE) or 'N MB/s'."""
    name = next((n for n, v in SPEED_NAMES.items() if v == rate), None)
    return name or f"{rate / 1e6:g} MB/s"


def value_type(validator, schema: dict, shown: Shown, base=Any):
    """`base` checked by `validator`, with its JSON Schema and how it shows."""
    return Annotated[base, PlainValidator(validator), WithJsonSchema(schema), shown]


def _text_or_number(**string) -> dict:
    """YAML may read `0001` or `1.0` as numbers; these fields keep them as written."""
    return {"type": ["string", "number"], **string}


# --------------------------------------------------------------------------- validators

def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def as_text(value):
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
    text = as_text(value)
    if text is None or text == "":
        raise bad("invalid value", "a non-empty string")
    if not _encodes(text):
        raise bad("invalid text", "text that is valid Unicode (no lone surrogate like \\ud800)")
    return text


def _encodes(text: str) -> bool:
    """Is `text` valid Unicode (YAML's "\\ud800" escape makes a lone surrogate, which no file
    name, FAT entry or label can hold)?"""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


DEVICE_ID_MAX = 200
DEVICE_ID_EXPECTED = f"1 to {DEVICE_ID_MAX} printable ASCII characters (SCSI INQUIRY's)"


def _media_id(value):
    # also the medium's file name in the state dir: no '/', nothing a VOL1 label cannot hold
    text = as_text(value)
    if text is None or not re.fullmatch(MEDIA_ID_PATTERN, text):
        raise bad("invalid media ID", MEDIA_ID_EXPECTED)
    return text


def _device_id(value):
    text = as_text(value)
    if text is None or not 1 <= len(text) <= DEVICE_ID_MAX or not all(" " <= c <= "~" for c in text):
        raise bad("invalid device ID", DEVICE_ID_EXPECTED)
    return text


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def _label(value):
    text = as_text(value)
    if text is None:
        raise bad("invalid label", "a string")
    if not _encodes(text):
        raise bad("invalid label", "text that is valid Unicode (no lone surrogate like \\ud800)")
    if _utf8_len(text) > LABEL_MAX:
        raise bad("label too long",
                  f"at most {LABEL_MAX} bytes of UTF-8, this is {_utf8_len(text)}")
    return text


def _mount_point(value):
    text = as_text(value)
    if text is None or not text.startswith("/"):
        raise bad("invalid mount point", "an absolute path like /db")
    if not _encodes(text):
        raise bad("invalid mount point", "a path that is valid Unicode (no lone surrogate)")
    if _utf8_len(text) > MOUNT_POINT_MAX:
        raise bad("mount point too long", f"at most {MOUNT_POINT_MAX} bytes of UTF-8, "
                  f"this is {_utf8_len(text)}")
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


def _range_text(minimum, maximum) -> str:
    if minimum is not None and maximum is not None:
        return f" from {minimum} to {maximum}"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def int_type(minimum: int | None = 0, maximum: int | None = None, what: str = "an integer",
             label: str = "integer"):
    """A whole number in [minimum, maximum]; `what` names it in messages."""
    rng = _range_text(minimum, maximum)

    def check(value):
        if not _is_int(value):
            raise bad("not an integer", f"{what}{rng}")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise bad("out of range", f"{what}{rng}")
        return int(value)
    schema = {"type": "integer"}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return value_type(check, schema, Shown(label, f"{what}{rng}"), int)


def size_type(minimum: int = 1, maximum: int | None = PiB, multiple: int = BLOCK,
              kind: str = "size", label: str | None = None):
    """A size in bytes; `kind` names it in messages (size, offset), `label` in the reference."""
    low = "more than 0 bytes" if minimum == 1 else f"at least {minimum} bytes"
    high = " and at most 1 PiB" if maximum == PiB else (
        f" and at most {maximum} bytes" if maximum is not None else "")

    def check(value):
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
    integer = {"type": "integer", "minimum": minimum}
    if maximum is not None:
        integer["maximum"] = maximum
    if multiple > 1:
        integer["multipleOf"] = multiple
    schema = {"anyOf": [integer, {"type": "string", "pattern": SIZE_PATTERN}]}
    whole = f", a multiple of {multiple}" if multiple > 1 else ""
    label = label or kind
    accepts = f"{article(label)} {label}: bytes, or a number with a unit; {low}{high}{whole}"
    return value_type(check, schema, Shown(label, accepts, size_text), int)


def _speed(value):
    try:
        return float(parse_speed(value))
    except ValueError:
        raise bad("invalid speed", SPEED_EXPECTED) from None


MAX_DURATION = 100 * 365.25 * 86400     # a century: the simulated clock's dates stay valid


def _duration(value):
    try:
        seconds = float(parse_duration(value))
    except ValueError:
        raise bad("invalid duration", DURATION_EXPECTED) from None
    if not seconds <= MAX_DURATION:       # also nan and inf ('9' * 400 + 's' is inf)
        raise bad("duration out of range", "at most 100 years")
    return seconds


def _time(value):
    try:
        moment = parse_time(value)
    except (ValueError, TypeError, OverflowError):
        raise bad("invalid time", TIME_EXPECTED) from None
    if not in_clock_range(moment):
        raise bad("time out of range", f"a UTC time {CLOCK_RANGE}")
    return moment


def _schedule(value):
    if isinstance(value, Schedule):
        return value
    try:
        schedule = parse_schedule(value)
    except (ValueError, TypeError, OverflowError):
        raise bad("invalid schedule", SCHEDULE_EXPECTED) from None
    if schedule.kind == "every" and not 0 < schedule.interval <= MAX_DURATION:
        raise bad("schedule out of range", "an interval above 0 and at most 100 years")
    return schedule


def choice(*values: str, what: str = "value"):
    """One of a closed set of words; `what` names it in messages."""
    def check(value):
        if not isinstance(value, str) or value not in values:
            raise bad(f"unknown {what}", one_of(values))
        return value
    return value_type(check, {"type": "string", "enum": list(values)},
                      Shown(what, one_of(values), choices=values), str)


def _non_negative_number(value):
    try:        # an int past a float's range is no amount either (not an internal error)
        finite = not isinstance(value, bool) and isinstance(value, (int, float)) \
            and math.isfinite(value)
    except OverflowError:
        finite = False
    if not finite or value < 0:
        raise bad("invalid amount", "a number >= 0")
    return float(value)


def raw_list(value):
    if not isinstance(value, list):
        raise bad("wrong type", "a list")
    return value


def _row_value(value):
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = as_text(value)
    if text is None:
        if isinstance(value, (int, float)):
            return str(value)
        if isinstance(value, _dt.datetime):
            return format_time(value)
        raise bad("invalid row value", "a string, a number or null")
    return text


# --------------------------------------------------------------------------- the types

Name = value_type(_name, {"type": "string", "pattern": NAME_PATTERN},
                  Shown("name", NAME_EXPECTED), str)
Text = value_type(_text, _text_or_number(minLength=1), Shown("text", "a non-empty string"), str)
MediaId = value_type(_media_id, _text_or_number(pattern=MEDIA_ID_PATTERN),
                     Shown("media ID", MEDIA_ID_EXPECTED), str)
DeviceId = value_type(_device_id, _text_or_number(minLength=1, maxLength=DEVICE_ID_MAX,
                                                  pattern="^[ -~]+$"),
                      Shown("device ID", DEVICE_ID_EXPECTED), str)
Label = value_type(_label, _text_or_number(maxLength=LABEL_MAX),
                   Shown("label", f"a string of at most {LABEL_MAX} bytes of UTF-8"), str)
MountPoint = value_type(_mount_point,
                        {"type": "string", "pattern": "^/", "maxLength": MOUNT_POINT_MAX},
                        Shown("mount point", f"an absolute path like /db, at most "
                              f"{MOUNT_POINT_MAX} bytes of UTF-8"), str)
PortRef = value_type(_port_ref, {"type": "string", "pattern": PORT_REF_PATTERN},
                     Shown("port", "ARRAY/PORT or HOST/HBA, e.g. array1/fc0"), str)
TargetRef = value_type(_target, {"type": "string", "pattern": TARGET_PATTERN},
                       Shown("target", "an element name, ARRAY/PORT, HOST/HBA or an ISL name"),
                       str)
Wwpn = value_type(_wwpn, {"type": "string", "pattern": WWPN_PATTERN},
                  Shown("WWPN", WWPN_EXPECTED), str)
Speed = value_type(_speed, {"type": "string", "pattern": SPEED_PATTERN,
                            "examples": ["8GFC", "1GbE", "100 MB/s"]},
                   Shown("speed", SPEED_EXPECTED, speed_text), float)
Duration = value_type(_duration, {"type": "string", "pattern": DURATION_PATTERN},
                      Shown("duration", DURATION_EXPECTED), float)
Time = value_type(_time, {"type": "string", "pattern": TIME_PATTERN},
                  Shown("time", f"{TIME_EXPECTED}, {CLOCK_RANGE}", format_time), _dt.datetime)
ScheduleT = Annotated[Schedule, PlainValidator(_schedule),
                      PlainSerializer(lambda s: s.text, return_type=str),
                      WithJsonSchema({"type": "string",
                                      "anyOf": [{"pattern": p} for p in SCHEDULE_PATTERNS]}),
                      Shown("schedule", SCHEDULE_EXPECTED, lambda s: s.text)]
Amount = value_type(_non_negative_number, {"type": "number", "minimum": 0},
                    Shown("amount", "a number >= 0"), float)
RawList = value_type(raw_list, {"type": "array"}, Shown("list"), list)
RowValue = value_type(_row_value, {"type": ["string", "number", "boolean", "null"]},
                      Shown("row value", "a string, a number, true, false or null"),
                      Optional[str])

Number = int_type(0, what="a whole number")
Lun = int_type(0, 16383, what="a LUN", label="LUN")
Count = int_type(1, what="a count", label="count")
Drives = int_type(1, 256, what="a number of drives", label="drive count")
Seed = int_type(0, 2**64 - 1, what="a seed (a whole number below 2**64)", label="seed")
VolumeSize = size_type()
IoSize = size_type()
Offset = size_type(minimum=0, maximum=PiB, kind="offset")
FileSize = size_type(minimum=0, maximum=PiB, multiple=1, label="file size")
Capacity = size_type(minimum=1, maximum=None, multiple=1, label="capacity")
PoolSize = size_type(minimum=0, maximum=None, multiple=1, label="pool size")
Threshold = size_type(minimum=0, maximum=None, multiple=1, label="byte count")
Action = choice(*ACTIONS, what="action")
Filesystem = choice(*FILESYSTEMS, what="filesystem")
DefinitionType = choice(*DEFINITION_TYPES, what="backup type")
Method = choice(*METHODS, what="method")
FaultKind = choice(*FAULT_KINDS, what="fault kind")
ErrorCode = choice(*ERROR_CODES, what="error code")
CatalogField = choice(*CATALOG_FIELDS, what="catalog field")
