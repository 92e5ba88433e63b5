"""The models of a scenario file: its head, and one step model per op (`OPS`).

A step is a mapping with an `op`; the loader picks the op's model from `OPS` and validates the
step against it, so each model lists exactly the arguments of its op (`as` and `from` are the
aliases of `as_` and `from_`).  A `concurrent` step's `steps` are validated the same way, one
by one.  Each step model's docstring says what its op does: `san schema` and
`docs/reference.md` show it to the user.  Names that refer to the topology or to earlier steps
are checked by `step_checks`.
"""
from __future__ import annotations

from typing import Any, Optional

from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from san.topology.fields import (
    Action, CatalogField, Duration, ErrorCode, FaultKind, FileSize, IoSize, MediaId, Name,
    Number, Offset, RowValue, Seed, Shown, Text, TargetRef, Threshold, bad, raw_list, value_type,
)
from san.topology.models import Definition, SanModel, Topology

STEP_REF = "#/$defs/Step"       # where `san schema scenario` keeps the one-of-the-ops schema

_HOST = "The host."
_MOUNT = "The mount point on that host."
_BACKUP = "The backup: the `as` name of an earlier step that made it."
_PRE = "Actions on the host before the work starts."
_POST = "Actions on the host after it."
_SERVER = "The backup server; default: the only one."
_TARGET = " (one of host+mount, array+volume or backup)"


class StepBase(SanModel):
    """Fields every step may carry.  `op` is the step's op name."""
    op: str = Field(description="The op.")
    title: Optional[Text] = Field(None, description="Shown in the report; what a fault's "
                                                    "`when.step` names.")
    expect_error: Optional[ErrorCode] = Field(None, description="The step is as expected only "
                                                                "if it fails with this code.  "
                                                                "With NO_SUCH_MOUNT, its mount "
                                                                "may be one its host lacks "
                                                                "(validate refuses that "
                                                                "otherwise).")
    as_: Optional[Name] = Field(None, alias="as", description="A name for what the step makes "
                                                              "(a backup, a checkpoint).")


class WriteStep(StepBase):
    """Block writes through the FC path; the data is a fixed function of (seed, offset)."""
    host: Name = Field(description=_HOST)
    mount: Text = Field(description=_MOUNT)
    offset: Offset = Field(description="Where the write starts on the volume.")
    size: IoSize = Field(description="How much to write.")
    seed: Seed = Field(description="Seed of the data pattern.")


class FileSpec(SanModel):
    """A file to write: its size and the seed of its data."""
    size: FileSize = Field(description="The file's size, any number of bytes.")
    seed: Seed = Field(description="Seed of the data pattern.")


class WriteFilesStep(StepBase):
    """Writes files into the mount's FAT filesystem (NO_SPACE when full).  A file it replaces
    stays whole until the new one is written, so the new content needs room beside it."""
    host: Name = Field(description=_HOST)
    mount: Text = Field(description=_MOUNT)
    files: dict[Text, FileSpec] = Field(description="Path in the filesystem -> {size, seed}.")


class RemoveFilesStep(StepBase):
    """Deletes files from the mount's FAT filesystem (NO_SUCH_FILE)."""
    host: Name = Field(description=_HOST)
    mount: Text = Field(description=_MOUNT)
    files: list[Text] = Field(description="Paths in the filesystem.")


class CheckpointStep(StepBase):
    """Records the content of a mount, a volume or a backup under a name, for `verify`: a
    readable FAT's files (path, size, SHA-256), otherwise the volume digest.  Moves 0 bytes
    in 0 modeled seconds."""
    as_: Name = Field(alias="as", description="The checkpoint's name.")
    host: Optional[Name] = Field(None, description="The host (with mount)" + _TARGET + ".")
    mount: Optional[Text] = Field(None, description="The mount point (with host).")
    array: Optional[Name] = Field(None, description="The array (with volume)" + _TARGET + ".")
    volume: Optional[Number] = Field(None, description="The volume number (with array).")
    backup: Optional[Name] = Field(None, description="A backup's `as` name" + _TARGET + ".")


class VerifyStep(StepBase):
    """VERIFY_MISMATCH unless the content of a mount, a volume or a backup equals a
    checkpoint.  Moves 0 bytes in 0 modeled seconds."""
    checkpoint: Name = Field(description="The `as` name of an earlier checkpoint step.")
    host: Optional[Name] = Field(None, description="The host (with mount)" + _TARGET + ".")
    mount: Optional[Text] = Field(None, description="The mount point (with host).")
    array: Optional[Name] = Field(None, description="The array (with volume)" + _TARGET + ".")
    volume: Optional[Number] = Field(None, description="The volume number (with array).")
    backup: Optional[Name] = Field(None, description="A backup's `as` name" + _TARGET + ".")


class ListDestinationsStep(StepBase):
    """Asks the array behind a mount for the volumes it may be copied to (Fig. 8):
    `result.destinations`, and the array's `result.device_id`."""
    host: Name = Field(description=_HOST)
    mount: Text = Field(description=_MOUNT)


class DefineStep(StepBase, Definition):
    """Adds a backup definition (Fig. 8): a definition's fields, plus the server that gets
    it.  Its destination is checked by the array when used."""
    server: Optional[Name] = Field(None, description=_SERVER)   # filled in by the loader

    @property
    def definition(self) -> Definition:
        """The definition this step adds."""
        return Definition.model_validate(
            {k: getattr(self, k) for k in Definition.model_fields if getattr(self, k) is not None})


class BackupStep(StepBase):
    """Runs a definition now: a mirror (Figs. 9-10), a snapshot (Figs. 17-18) or a tape
    backup.  Ends when the data is complete and the volume info recorded."""
    definition: Name = Field(description="A definition of the topology or of an earlier "
                                         "define step.")


class RestoreTarget(SanModel):
    """A host's mount to restore onto."""
    host: Name = Field(description=_HOST)
    mount: Text = Field(description=_MOUNT)


class RestoreVolumeStep(StepBase):
    """Copies a backup, from disk or tape, back onto a volume (Fig. 12); writes no volume
    info to the target."""
    backup: Name = Field(description=_BACKUP)
    to: Optional[RestoreTarget] = Field(None, description="The mount to restore onto; "
                                                          "default: the backup's source.")
    pre: list[Action] = Field([], description=_PRE)
    post: list[Action] = Field([], description=_POST)


class RestoreFilesStep(StepBase):
    """Copies named files from a backup back into the live filesystem (Fig. 13), others left
    alone (NO_SUCH_FILE; INVALID_INPUT for a path leaving the mount)."""
    backup: Name = Field(description=_BACKUP)
    files: list[Text] = Field(description="Paths in the backed-up filesystem.")
    pre: list[Action] = Field([], description=_PRE)
    post: list[Action] = Field([], description=_POST)


class DeleteBackupStep(StepBase):
    """Deletes a backup (Fig. 14): a snapshot and its pool space; of a mirror, its volume
    info and row; of a tape copy, its row."""
    backup: Name = Field(description=_BACKUP)


class VolumeTarget(SanModel):
    """A volume of an array."""
    array: Name = Field(description="The array.")
    volume: Number = Field(description="The volume number.")


class CopyVolumeStep(StepBase):
    """Copies a backup with its volume info to another volume (Fig. 19), inside one array or
    to another array over FC; the destination must have the source's size
    (CAPACITY_MISMATCH)."""
    backup: Name = Field(description=_BACKUP)
    to: VolumeTarget = Field(description="The destination volume.")


class CopyToTapeStep(StepBase):
    """Copies a disk backup to tape (Fig. 16): the medium holds its volume image."""
    backup: Name = Field(description=_BACKUP)
    media: Text = Field(description="The tape ID.")
    pre: list[Action] = Field([], description=_PRE)
    post: list[Action] = Field([], description=_POST)


class MigrateStep(CopyToTapeStep):
    """Copies a disk backup to tape, then deletes the disk backup."""


class LoseCatalogStep(StepBase):
    """The server loses its catalog (its definitions survive)."""
    server: Optional[Name] = Field(None, description=_SERVER)


class RebuildCatalogStep(StepBase):
    """Rebuilds the catalog from the volume info in arrays (Fig. 15) and from tape labels;
    adds no row twice."""
    server: Optional[Name] = Field(None, description=_SERVER)
    from_: Optional[list[Name]] = Field(None, alias="from", description=(
        "Arrays and tape libraries to read; default: the arrays that list the server as "
        "manager, and its library."))


class ExpectCatalogStep(StepBase):
    """CATALOG_MISMATCH unless the catalog has exactly `count` rows and each partial row
    matches a different row (fields compared as strings, order ignored)."""
    server: Optional[Name] = Field(None, description=_SERVER)
    count: Number = Field(description="The number of rows.")
    rows: list[dict[CatalogField, RowValue]] = Field([], description="Partial rows: catalog "
                                                                     "field -> value.")


class AdvanceClockStep(StepBase):
    """Moves simulated time; scheduled backups that fall due run, in time order (ties by
    name), each at its due time; one whose time an earlier step's modeled time passed runs
    first, late. A failed run or a server down does not stop the others, nor the clock; a
    down server's definitions fall due by their schedules as last known (the topology's, a
    define step's) and each run fails ELEMENT_DOWN at its time."""
    by: Duration = Field(description="How far.")


class When(SanModel):
    """When a fault inside `concurrent` fires: once another step has moved so many bytes."""
    step: Text = Field(description="The title of another step of the same concurrent, "
                                   "which no other step of it has.")
    after: Threshold = Field(description="The bytes that step has moved.")


class FaultStep(StepBase):
    """kill, restart, link_down or link_up an element, a port or an ISL; corrupt flips stored
    bytes of an array volume or a tape medium behind the element's back.  Inside concurrent,
    `when` strikes once another step has moved so many bytes (at a chunk boundary)."""
    kind: FaultKind = Field(description="What happens.")
    target: TargetRef = Field(description="An element, a port (ARRAY/PORT, HOST/HBA) or an ISL.")
    volume: Optional[Number] = Field(None, description="corrupt: the array's volume.")
    media: Optional[MediaId] = Field(None, description="corrupt: the library's medium.")
    offset: Optional[Offset] = Field(None, description="corrupt: where the flipped byte is.")
    when: Optional[When] = Field(None, description="Inside concurrent: fire once another step "
                                                   "has moved so many bytes.")


class ScrubStep(StepBase):
    """Read and verify every written granule of one volume of an array, or of all of them:
    `result.checked_bytes` and `result.bad` (adjacent bad granules merged)."""
    array: Name = Field(description="The array.")
    volume: Optional[Number] = Field(None, description="One volume; default: every volume, "
                                                       "snapshots included.")
    expect_bad: Optional[Number] = Field(None, description="VERIFY_MISMATCH unless exactly so "
                                                           "many ranges are bad.")


def _step_list(what: str):
    """A list of steps: each validated by its op's model (the loader does it, one by one)."""
    return value_type(raw_list, {"type": "array", "items": {"$ref": STEP_REF}},
                      Shown("steps", what), list)


StepList = _step_list("a list of steps, each a mapping with an op")


class ConcurrentStep(StepBase):
    """Runs the inner steps at the same time, for real and in modeled time; its modeled time
    is until the last one ends.  It is as expected when every inner step is: an inner step
    that should fail carries its own `expect_error`, the concurrent step none."""
    steps: StepList = Field(description="The inner steps.")   # replaced by the validated steps


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


TopologyRef = value_type(_topology_ref, {"anyOf": [
    {"type": "string", "minLength": 1,
     "description": "A topology file: a path relative to this file, or absolute."},
    {"$ref": "#/$defs/Topology"}]}, Shown("topology", "a path or an inline topology"))


class ScenarioHead(SanModel):
    """A scenario file: a topology and the steps to run on it."""
    name: Name = Field(description="The scenario's name.")
    topology: TopologyRef = Field(description="A topology file (relative to this file, or "
                                              "absolute), or an inline topology mapping.")
    steps: StepList = Field(description="The steps, run in order.")


class Scenario(SanModel):
    """A loaded scenario: its topology model and its validated steps (`OPS` models)."""
    name: Name
    topology: Topology
    steps: list[Any]                        # StepBase subclasses (see OPS)
    source: SkipJsonSchema[Optional[str]] = None
