"""Topology and scenario files: strict loading into plain models, with located problems.

The rooms: `fields` (value types and units), `models` (a topology), `steps` (a scenario and
its ops), `source` (YAML with positions), `problems` (the problem line), `checks` and
`step_checks` (cross-references), `loader` (all of it, file by file), `inspect` (tables),
`json_schema` (`san schema`) and `reference` (`docs/reference.md`).  Nothing here imports Ray.

>>> from san.topology import load_topology
>>> load_topology("topologies/two-arrays.yaml").kind_of("array1")
'array'
"""
from san.topology.fields import ACTIONS, CATALOG_FIELDS, FAULT_KINDS
from san.topology.inspect import path_status, render_inspect
from san.topology.loader import is_scenario_file, load_scenario, load_topology, validate_files
from san.topology.models import (
    Array, ArrayPort, BackupServer, Definition, Destination, Fabric, Hba, Host, Isl, Lan, Mount,
    Placement, RestorePort, Switch, TapeLibrary, Topology, Volume, Zone,
)
from san.topology.problems import Problem, format_path
from san.topology.steps import OPS, FileSpec, Scenario, Step, StepBase

__all__ = [
    "load_topology", "load_scenario", "validate_files", "is_scenario_file", "format_path",
    "Problem", "Topology", "Scenario", "Step", "StepBase", "OPS", "ACTIONS", "FAULT_KINDS",
    "CATALOG_FIELDS", "Switch", "Isl", "Zone", "Fabric", "Lan", "Array", "ArrayPort", "Volume",
    "Host", "Hba", "Mount", "RestorePort", "BackupServer", "Definition", "Destination",
    "TapeLibrary", "Placement", "FileSpec", "render_inspect", "path_status",
]

