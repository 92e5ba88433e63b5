"""Topology and scenario files: strict loading into plain models, with located problems.

>>> from san.topology import load_topology
>>> load_topology("topologies/two-arrays.yaml").kind_of("array1")
'array'
"""
from san.topology.inspect import path_status, render_inspect
from san.topology.loader import (
    Problem, format_path, is_scenario_file, load_scenario, load_topology, validate_files,
)
from san.topology.schema import (
    ACTIONS, CATALOG_FIELDS, FAULT_KINDS, OPS, Array, ArrayPort, BackupServer, Definition,
    Destination, Fabric, FileSpec, Hba, Host, Isl, Lan, Mount, Placement, RestorePort,
    Scenario, Step, StepBase, Switch, TapeLibrary, Topology, Volume, Zone,
)

__all__ = [
    "load_topology", "load_scenario", "validate_files", "is_scenario_file", "format_path",
    "Problem", "Topology", "Scenario", "Step", "StepBase", "OPS", "ACTIONS", "FAULT_KINDS",
    "CATALOG_FIELDS", "Switch", "Isl", "Zone", "Fabric", "Lan", "Array", "ArrayPort", "Volume",
    "Host", "Hba", "Mount", "RestorePort", "BackupServer", "Definition", "Destination",
    "TapeLibrary", "Placement", "FileSpec", "render_inspect", "path_status",
]

