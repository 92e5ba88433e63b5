"""The registry of element kinds: one entry per YAML kind, the one list of them all.

A kind says where its elements are in a topology (`collection`), which plain class does its
work (`element`), which actor class runs it on Ray and with which options (`actor`,
`options`), and how the actor is constructed from a spec and the SAN being built (`args`).
The builder (`san.fabric`), the links of modeled time (`san.links`) and the in-process SAN
of the unit tests (`san.flows.local`) all read it.  A new kind is an entry here, its actor
class (`san.actors`) and its in-process build (`san.flows.local.LocalSan.BUILD`), both made
of its `element`; tests/unit/test_kinds.py checks that the three agree.

Classes are named by dotted path and resolved only where they are used (`resolve`), so
importing this module (as `san validate` does) imports neither Ray nor the elements.

An actor is given its spec (and, for switches and servers, the topology) as `plain` data:
the same fields as attributes, without pydantic, so an element's process never imports the
topology models (a third of a second per process) just to read its own spec.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["Kind", "KINDS", "kind_of", "specs", "resolve", "Plain", "plain"]


@dataclass(frozen=True)
class Kind:
    name: str                      # as the contract names it: "array", "host", ...
    collection: tuple[str, ...]    # attribute path in a Topology: ("fabric", "switches")
    element: str                   # dotted path of the plain class
    actor: str                     # dotted path of the actor class (san.actors)
    args: Callable                 # (plain spec, site) -> the actor's constructor arguments
                                   # (site: the San; its topology made plain: plain_topology)
    options: dict = field(default_factory=dict)        # Ray actor options
    concurrency_groups: dict = field(default_factory=dict)


class Plain:
    """A model's fields as plain attributes (what `plain` makes of a topology model)."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def __eq__(self, other):
        return type(other) is Plain and other.__dict__ == self.__dict__

    __hash__ = None

    def __repr__(self) -> str:
        return "Plain(" + ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items()) + ")"


def plain(value):
    """`value` with every pydantic model in it (a topology, a spec) made `Plain`: its fields
    as attributes, lists and dicts copied, every other value (str, int, float, datetime, a
    `san.units.Schedule`) as it is.  Elements only read their specs' fields, so they run on
    either; a model's methods (`Topology.array`, ...) are not carried."""
    fields = getattr(type(value), "model_fields", None)
    if fields is not None:
        return Plain(**{name: plain(getattr(value, name)) for name in fields})
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def _known(site) -> list:
    return sorted(site.names)


KINDS: tuple[Kind, ...] = (
    Kind("switch", ("fabric", "switches"), "san.elements.fc_switch.FcSwitch", "san.actors.SwitchNode",
         lambda spec, site: (spec.name, site.plain_topology), {"max_concurrency": 8}),
    Kind("array", ("arrays",), "san.elements.disk_array.DiskArray", "san.actors.ArrayNode",
         lambda spec, site: (spec, site.state_dir, site.granule, site.namespace, site.chunk_size,
                             site.window, _known(site)),
         concurrency_groups={"mgmt": 8}),
    Kind("host", ("hosts",), "san.flows.client_host.Host", "san.actors.HostNode",
         lambda spec, site: (spec, site.namespace, site.chunk_size, site.window,
                             {a.device_id: a.name for a in site.plain_topology.arrays},
                             site.plain_topology.start, _known(site)),
         {"max_concurrency": 16}),
    Kind("backup_server", ("backup_servers",), "san.flows.backup_server.Server", "san.actors.ServerNode",
         lambda spec, site: (spec, site.plain_topology, site.state_dir, site.namespace, _known(site)),
         {"max_concurrency": 8}),
    Kind("tape_library", ("tape_libraries",), "san.elements.tape_library.TapeLibrary",
         "san.actors.LibraryNode",
         lambda spec, site: (spec, site.state_dir, site.namespace, _known(site)),
         {"max_concurrency": 8}),
)
_BY_NAME = {k.name: k for k in KINDS}


def kind_of(name: str) -> Kind:
    return _BY_NAME[name]


def specs(topology, kind: Kind) -> list:
    """The specs of one kind's elements in `topology`, in file order."""
    value = topology
    for attr in kind.collection:
        value = getattr(value, attr)
    return list(value)


def resolve(dotted: str):
    """The class a dotted path names (imported now)."""
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)
