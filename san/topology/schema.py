"""The data model of topology and scenario files in one import (re-exports, no code).

The model lives in three rooms: `fields` (the value types and their units), `models` (the
topology) and `steps` (the scenario and its ops).  This module keeps every name that
`san.topology.schema` offered before that split, so `from san.topology.schema import
Definition` and `schema.WriteStep` keep working; new code imports from the rooms themselves.
"""
from san.topology.fields import (  # noqa: F401
    ACTIONS, CATALOG_FIELDS, DEFINITION_TYPES, ERROR_CODES, FAULT_KINDS, FILESYSTEMS, LABEL_MAX,
    METHODS, MOUNT_POINT_MAX, NAME_EXPECTED, NAME_RE, WWPN_EXPECTED, WWPN_RE, Action, Amount,
    Capacity, CatalogField, Count, DefinitionType, Duration, ErrorCode, FaultKind, FileSize,
    Filesystem, IoSize, Label, Lun, Method, MountPoint, Name, Number, Offset, PoolSize, PortRef,
    RawList, RowValue, ScheduleT, Seed, Speed, TargetRef, Text, Threshold, Time, VolumeSize, Wwpn,
    article, bad, choice, int_type, one_of, size_type,
)
from san.topology.models import (  # noqa: F401
    DEFAULT_START, ELEMENT_KINDS, Array, ArrayPort, BackupServer, Definition, Destination, Fabric,
    Hba, Host, Isl, Lan, Mount, Placement, RestorePort, SanModel, Switch, TapeLibrary, Topology,
    Volume, Zone,
)
from san.topology.steps import (  # noqa: F401
    OPS, SERVER_OPS, AdvanceClockStep, BackupStep, CheckpointStep, ConcurrentStep,
    CopyToTapeStep, CopyVolumeStep, DefineStep, DeleteBackupStep, ExpectCatalogStep, FaultStep,
    FileSpec, ListDestinationsStep, LoseCatalogStep, MigrateStep, RebuildCatalogStep,
    RemoveFilesStep, RestoreFilesStep, RestoreTarget, RestoreVolumeStep, Scenario, ScenarioHead,
    ScrubStep, Step, StepBase, VerifyStep, VolumeTarget, When, WriteFilesStep, WriteStep,
)
