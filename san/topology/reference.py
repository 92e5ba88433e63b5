"""`docs/reference.md`, generated from the models, so the reference says what the code accepts.

Every key of a topology file and every scenario op with its arguments comes from the models
(`models`, `steps`): its type, whether it is required, its default as written in YAML, and
its description.  The value types and units come from `fields` and `san.units`, the error
codes from `san.errors.CODES`; the few words that the code does not carry (what an error code,
an action or a fault kind means) are here, and generating fails if one is missing or stale.

    python -m san.topology.reference -o docs/reference.md

A unit test regenerates it and compares it with the file in the repository.
"""
from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from san.errors import CODES
from san.topology.fields import (
    ACTIONS, CATALOG_FIELDS, FAULT_KINDS, Shown, shown_in, shown_of, yaml_default,
)
from san.topology.models import Topology
from san.topology.step_checks import BACKUP_MAKERS
from san.topology.steps import OPS, ScenarioHead, StepBase
from san.units import (DURATION_UNITS, SCHEDULE_EXPECTED, SIZE_UNITS, SPEED_NAMES,
                       TIME_EXPECTED)

COMMAND = "python -m san.topology.reference -o docs/reference.md"

ERROR_MEANINGS = {
    "ZONING_DENIED": "the switch: the initiator port is not zoned with the target port",
    "LUN_NOT_MAPPED": "the array: LUN masking does not show that volume to that initiator",
    "LBA_OUT_OF_RANGE": "an I/O range runs past the end of the volume (nothing is written)",
    "READ_ONLY": "a write to a volume that takes none: a snapshot, the destination of a "
                 "running copy, a filesystem mounted read-only",
    "NOT_A_COPY_DESTINATION": "a mirror onto a volume that is not among the source's "
                              "`copy_destinations`, or a `copy_volume` onto a host's mounted volume",
    "NO_SUCH_VOLUME": "no such volume in that array (or no array with that device ID)",
    "NO_SUCH_PORT": "no such port, or no volume at that LUN of the port",
    "NO_SUCH_MOUNT": "the host has no such mount point",
    "NO_SUCH_BACKUP": "the name has no catalog row now (deleted, migrated, or lost and not "
                      "rebuilt), or its volume holds another backup now, or none (overwritten "
                      "by another server's mirror, or deleted: the stale row is deleted)",
    "NO_SUCH_MEDIA": "no such medium in the library (or the server has no library)",
    "NO_SUCH_FILE": "no such file in the filesystem or the backup",
    "INVALID_VOLUME_INFO": "a volume info record that cannot be read (bad format ID, not "
                           "UTF-8, wrong size, a byte other than NUL after a text's end)",
    "CAPACITY_MISMATCH": "source and destination of a copy differ in size",
    "POOL_FULL": "the snapshot pool was full when data a snapshot needed was overwritten: "
                 "that snapshot is broken",
    "TAPE_FULL": "the medium has no room for the file (the medium is left as it was)",
    "MEDIA_ERROR": "a damaged tape label, length word or data, naming the medium and the record",
    "NO_SPACE": "the FAT filesystem is full",
    "FSCK_FAILED": "the filesystem check found problems, or the volume holds no readable FAT "
                   "filesystem",
    "BUSY": "the volume is already the destination of a running copy or restore, or another "
            "flow of the backup server (a mirror backup, a `copy_volume`, a `delete_backup`) "
            "is writing it, or it is attached for a file restore or a copy to tape that is "
            "reading it (or an application write waited more than 10 minutes at a "
            "quiesced mount)",
    "LINK_DOWN": "no live path: a port, HBA or ISL on the way is down",
    "ELEMENT_DOWN": "a killed element, until `fault kind: restart`; also an element that did "
                    "not start (its actor died, or did not answer in time, or its state dir is "
                    "held by another run)",
    "UNAUTHORIZED": "the caller is not among the array's `managers`",
    "CHECKSUM_MISMATCH": "stored data fails its granule checksum: names the array, the volume "
                         "and the byte range",
    "VERIFY_MISMATCH": "`verify` found other content than the checkpoint's (or `scrub` another "
                       "number of bad ranges than `expect_bad`)",
    "CATALOG_MISMATCH": "`expect_catalog` found other rows",
    "INVALID_INPUT": "a bad argument, shown with its value (also every refusal of the command "
                     "line before Ray starts, and a bug met on the way: `internal error in ...`, "
                     "which no `expect_error` matches)",
}
ACTION_MEANINGS = {
    "quiesce": "application writes to that mount wait until `resume` (a quiesce ordered by a backup server that died meanwhile is dropped by the host, checked every 2 s while a write waits)",
    "resume": "lets them go on",
    "flush": "writes back the host's cache, leaving a clean filesystem",
    "unmount": "unmounts the filesystem (after writing it back)",
    "mount": "mounts it again",
    "fsck": "checks the filesystem (`fsck.fat -n`); `FSCK_FAILED` if it is bad",
    "repair": "repairs the filesystem as the array holds it (`fsck.fat -a`, e.g. after the host "
              "died while writing it) and writes back what that changed; `FSCK_FAILED` if it "
              "is still bad",
}
FAULT_MEANINGS = {
    "kill": "the target element stops: everything through it fails `ELEMENT_DOWN`",
    "restart": "a killed element comes back with the data in its state directory",
    "link_down": "a port, HBA or ISL goes down: paths through it fail `LINK_DOWN`",
    "link_up": "it comes back",
    "corrupt": "flips a stored byte of an array's `volume` or a library's `media` at `offset`, "
               "behind the element's back",
}
CATALOG_MEANINGS = {
    "host": "the host backed up", "mount_point": "its mount point",
    "type": "`disk` or `tape`: where this copy lives",
    "device_id": "the array's device ID, or the library's name",
    "media_id": "the volume number or the tape ID, always a string",
    "file": "the file number on the tape, or null", "label": "the definition's label",
    "timestamp": "when the backup was ordered, `YYYY-MM-DDTHH:MM:SSZ`",
}


# ------------------------------------------------------------------------------ walking models

def _models_in(tp) -> list[type[BaseModel]]:
    """The models directly inside a field's type (through Optional, list, dict, Annotated)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for arg in typing.get_args(tp) for m in _models_in(arg)]


def _tree(root: type[BaseModel], path: str, seen: dict) -> dict:
    """model -> the YAML paths where it appears, below `root` at `path`, in order."""
    seen.setdefault(root, []).append(path or "(top level)")
    for name, field in root.model_fields.items():
        if name == "source":
            continue
        key = field.alias or name
        for model in _models_in(field.annotation):
            inner = f"{path}.{key}" if path else key
            origin = typing.get_origin(_unwrap_optional(field.annotation))
            if origin is list:
                inner += "[]"
            elif origin is dict:
                inner += ".*"
            if model not in seen:
                _tree(model, inner, seen)
            else:
                seen[model].append(inner)
    return seen


def _all_shown(tp) -> list:
    """Every `Shown` inside a type: its own, its items', its keys' and values'."""
    found = list(getattr(tp, "__metadata__", ()))
    return found + [m for arg in typing.get_args(tp) for m in _all_shown(arg)]


def _unwrap_optional(tp):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return tp


def _type_text(field: FieldInfo) -> str:
    """How the type of a field reads in a table: name, list of port, [Switch](#switch)..."""
    return _type_of(field.annotation, field)


def _type_of(tp, field: FieldInfo | None) -> str:
    tp = _unwrap_optional(tp)
    origin = typing.get_origin(tp)
    if origin is list:
        return "list of " + _type_of(typing.get_args(tp)[0], None)
    if origin is dict:
        key, value = typing.get_args(tp)
        return f"mapping: {_type_of(key, None)} → {_type_of(value, None)}"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return f"[{tp.__name__}](#{tp.__name__.lower()})"
    shown = shown_in(tp) or (shown_of(field) if field is not None else None)
    if shown is not None:
        return shown.label
    return "text" if tp is str else getattr(tp, "__name__", str(tp))


def _default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    value = yaml_default(field)
    if value is None:
        return "optional"
    if isinstance(value, (list, dict)):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(model: type[BaseModel], skip=()) -> list[str]:
    rows = ["| key | type | default | what it is |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if name == "source" or name in skip:
            continue
        rows.append(f"| `{field.alias or name}` | {_type_text(field)} | {_default_text(field)} "
                    f"| {_cell(field.description or '')} |")
    return rows


def _doc(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or "").split())


def _section(model: type[BaseModel], paths: list[str], level: str = "###") -> list[str]:
    where = ", ".join(f"`{p}`" for p in dict.fromkeys(paths))
    return [f"{level} {model.__name__}", "", f"{_doc(model)}  Where: {where}.", "",
            *_table(model), ""]


# ------------------------------------------------------------------------------ the document

def _topology_part() -> list[str]:
    out = ["## Topology file", "",
           "A topology file is one mapping, [Topology](#topology).  Unknown keys are errors; "
           "an explicit `null` for an optional key means the key is absent.  Names are one "
           "namespace per file; ports are named `ARRAY/PORT` or `HOST/HBA`.", ""]
    for model, paths in _tree(Topology, "", {}).items():
        out += _section(model, paths)
    return out


def _own_fields(cls) -> list[str]:
    """The fields of a step model that its op adds or changes (beyond every step's)."""
    base = StepBase.model_fields
    return [n for n, f in cls.model_fields.items()
            if n not in base or f.is_required() != base[n].is_required()]


def _scenario_part() -> list[str]:
    out = ["## Scenario file", "", f"{_doc(ScenarioHead)}  The top level:", "",
           *_table(ScenarioHead), "",
           "### Every step", "",
           "Every step is a mapping with an `op` (one of the ops below) and that op's "
           "arguments; it may also carry these keys:", "",
           *_table(StepBase, skip=("op",)), "",
           "A step naming a backup that has no catalog row now fails `NO_SUCH_BACKUP`.  Names "
           "given by `as` follow the copy itself (device, media, file), so they still work "
           "after the catalog is lost and rebuilt.", "", "## Ops", ""]
    parts: dict = {}
    for op, cls in OPS.items():
        own = _own_fields(cls)
        out += [f"### `{op}`", "", _doc(cls), ""]
        if op in BACKUP_MAKERS:
            out += ["`as` names the backup it makes, for later steps.", ""]
        if own:
            skip = [n for n in cls.model_fields if n not in own]
            out += [*_table(cls, skip=skip), ""]
        else:
            out += ["No arguments beyond every step's.", ""]
        for name in own:
            for model in _models_in(cls.model_fields[name].annotation):
                key = cls.model_fields[name].alias or name
                parts.setdefault(model, []).append(f"{op}: {key}")
    out += ["## Parts of steps", ""]
    for model, paths in parts.items():
        out += _section(model, paths)
    return out


def _value_types() -> list[str]:
    found: dict = {}
    models = list(_tree(Topology, "", {})) + [ScenarioHead, StepBase, *OPS.values()]
    for cls in OPS.values():
        models += list(_tree(cls, "", {}))
    for model in models:
        for name, field in model.model_fields.items():
            if name in ("source", "op"):
                continue
            for shown in [*field.metadata, *_all_shown(field.annotation)]:
                if not isinstance(shown, Shown):
                    continue
                if found.setdefault(shown.label, shown.accepts) != shown.accepts:
                    raise ValueError(f"value type {shown.label!r} accepts two things: "
                                     f"{found[shown.label]!r} and {shown.accepts!r}")
    rows = ["## Value types", "", "The types named in the tables above:", "",
            "| type | accepts |", "|---|---|"]
    for label in sorted(found, key=str.lower):
        rows.append(f"| {label} | {_cell(found[label])} |")
    return rows + [""]


def _units() -> list[str]:
    out = ["## Units", "", "Sizes: an integer (bytes) or a number with a unit, with or "
           "without a space (`4MiB`, `4 MiB`, `1.5GiB` when that is a whole number of bytes).  "
           "The block size is 512 bytes everywhere.", "", "| unit | bytes |", "|---|---|"]
    out += [f"| `{unit}` | {factor} |" for unit, factor in SIZE_UNITS.items()]
    out += ["", "Speeds: a name, or `N MB/s` (MB = 10^6 bytes) or `N Gb/s`, per direction.  A "
            "link runs at the lower of its two ends' speeds.", "",
            "| speed | MB/s |", "|---|---|"]
    out += [f"| `{name}` | {rate / 1e6:g} |" for name, rate in SPEED_NAMES.items()]
    out += ["", "Durations: a number and one of "
            + ", ".join(f"`{u}` ({s} s)" for u, s in DURATION_UNITS.items()) + ".", "",
            f"Schedules: {SCHEDULE_EXPECTED.split(': ', 1)[1]}.  Times: {TIME_EXPECTED}; "
            "a time without a zone is UTC.", ""]
    return out


def _closed(title: str, values, meanings: dict, intro: str) -> list[str]:
    if set(values) != set(meanings):
        raise ValueError(f"{title}: meanings for {sorted(meanings)}, but the code has "
                         f"{sorted(values)}")
    return [f"## {title}", "", intro, "", "| value | meaning |", "|---|---|",
            *[f"| `{v}` | {_cell(meanings[v])} |" for v in values], ""]


def render() -> str:
    """The whole of docs/reference.md."""
    lines = [f"<!-- Generated from the models in san/topology/ by `{COMMAND}`; "
             "do not edit by hand. -->", "",
             "# Reference: topology and scenario files", "",
             "Every key and every op, as `san validate` checks them.  The JSON Schemas "
             "([topology](topology.schema.json), [scenario](scenario.schema.json)) say the "
             "same for editors; see [editors.md](editors.md).", "",
             "Contents: [Topology file](#topology-file) · [Scenario file](#scenario-file) · "
             "[Ops](#ops) · [Value types](#value-types) · [Units](#units) · "
             "[Actions](#actions) · [Fault kinds](#fault-kinds) · "
             "[Catalog rows](#catalog-rows) · [Error codes](#error-codes)", ""]
    lines += _topology_part() + _scenario_part() + _value_types() + _units()
    lines += _closed("Actions", ACTIONS, ACTION_MEANINGS,
                     "The `pre` and `post` actions of definitions and steps, run on the "
                     "host's mount (a closed vocabulary: no shell commands).  On a raw mount, "
                     "`flush`, `mount`, `unmount`, `fsck` and `repair` succeed and do nothing.")
    lines += _closed("Fault kinds", FAULT_KINDS, FAULT_MEANINGS,
                     "The `kind` of a `fault` step.")
    lines += _closed("Catalog rows", CATALOG_FIELDS, CATALOG_MEANINGS,
                     "A catalog row (one per copy of a backup) has these fields, which "
                     "`expect_catalog` rows match as strings and the JSON report lists.")
    lines += _closed("Error codes", sorted(CODES), ERROR_MEANINGS,
                     "A failure prints and reports as `CODE: message`, the message naming the "
                     "objects involved; a step's `expect_error` names the code it expects.  A "
                     "bug met on the way (an exception that is not one of these failures) is "
                     "reported as `INVALID_INPUT: internal error in WHERE: ...`, on one line; no "
                     "`expect_error` matches it, and the CLI exits 1.")
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m san.topology.reference",
                                     description="Write docs/reference.md from the models.")
    parser.add_argument("-o", "--output", metavar="OUT", help="write here, not to stdout")
    args = parser.parse_args(argv)
    text = render()
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
