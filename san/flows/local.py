"""A whole SAN in this process, without Ray: the plain elements wired by `LocalPeers`.

`LocalSan` builds one plain object per element of a topology (the registry of kinds,
`san.kinds`, lists them), gives each `LocalPeers` for reaching the others, and offers what
the scenario runner needs of a SAN (`call`, `kind`, faults, the simulated time), like
`san.fabric.San` does with actors.  Every flow of the method therefore runs, with real bytes
and real state directories, in unit tests that never start Ray.  It is a test bench, not a
second simulator: modeled time, errors and results are the same, only nothing runs in
another process (a call is a method call; a "killed" element's object is dropped, the calls
it was running stop at their next chunk or call, ELEMENT_DOWN, as a killed actor's would
(its `close`), and a restart builds a new one from the state directory).
"""
from __future__ import annotations

from pathlib import Path

from ..elements.disk_array import DiskArray
from ..elements.fc_switch import FcSwitch, rscn_arrays, rscn_hosts
from ..elements.tape_library import TapeLibrary
from ..errors import SanError
from ..kinds import KINDS, specs
from ..units import DEFAULT_CHUNK, DEFAULT_GRANULE
from .backup_server import Server
from .client_host import Host
from .disk_array import ArrayInitiator
from .peers import WINDOW, LocalPeers
from .tape_library import LibraryPuller

__all__ = ["LocalSan"]


class LocalArray(ArrayInitiator, DiskArray):
    def __init__(self, spec, state_dir, granule, peers, chunk_size, window):
        super().__init__(spec, state_dir, granule)
        self.peers, self.chunk_size, self.window = peers, chunk_size, window


class LocalLibrary(LibraryPuller, TapeLibrary):
    def __init__(self, spec, state_dir, peers):
        super().__init__(spec, state_dir)
        self.peers = peers


class LocalSan:
    """The SAN of `topology` as plain objects; `call(name, method, *args)` reaches them."""

    def __init__(self, topology, state_dir: Path, chunk_size: int = DEFAULT_CHUNK,
                 granule: int = DEFAULT_GRANULE, window: int = WINDOW):
        self.topology = topology
        self.state_dir = Path(state_dir)
        self.chunk_size, self.granule, self.window = chunk_size, granule, window
        self.peers = LocalPeers()
        self.kinds: dict[str, str] = {}
        self.specs: dict[str, object] = {}
        for kind in KINDS:
            for spec in specs(topology, kind):
                self.kinds[spec.name] = kind.name
                self.specs[spec.name] = spec
        self.links_down: set[str] = set()

    @property
    def down(self) -> set[str]:
        return self.peers.down

    #: how each kind of `san.kinds.KINDS` is built here: (the class, its arguments from the
    #: spec and this SAN); the class is the kind's `element` with what its actor adds
    BUILD = {
        "switch": (FcSwitch, lambda spec, s: (spec.name, s.topology)),
        "array": (LocalArray, lambda spec, s: (spec, s.state_dir, s.granule, s.peers,
                                               s.chunk_size, s.window)),
        "host": (Host, lambda spec, s: (spec, s.peers, s.chunk_size, s.window,
                                        {a.device_id: a.name for a in s.topology.arrays},
                                        s.topology.start)),
        "backup_server": (Server, lambda spec, s: (spec, s.topology, s.state_dir, s.peers)),
        "tape_library": (LocalLibrary, lambda spec, s: (spec, s.state_dir, s.peers)),
    }

    def _build(self, name: str):
        cls, args = self.BUILD[self.kinds[name]]
        return cls(*args(self.specs[name], self))

    def start(self) -> "LocalSan":
        for name in self.kinds:
            self.peers.add(name, self._build(name))
        self.formatted = {n: self.element(n).format_blank() for n, k in self.kinds.items() if k == "host"}
        return self

    def shutdown(self) -> None:
        for name, obj in list(self.peers.elements.items()):
            if hasattr(obj, "wait_all"):
                obj.wait_all()
            if hasattr(obj, "close"):
                obj.close()
        self.peers.elements.clear()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.shutdown()

    # -- reaching elements ---------------------------------------------------------------------
    def element(self, name: str):
        """The plain object of a live element (tests look inside it)."""
        if name not in self.kinds:
            raise SanError("INVALID_INPUT", f"no element named {name!r}")
        if name in self.down:
            raise SanError("ELEMENT_DOWN", f"{name} is down")
        return self.peers.elements[name]

    def call(self, name: str, method: str, *args):
        return getattr(self.element(name), method)(*args)

    def kind(self, name: str) -> str | None:
        return self.kinds.get(name)

    def set_time(self, now) -> None:
        for name, kind in self.kinds.items():
            if kind == "host" and name not in self.down:
                self.peers.elements[name].set_time(now)

    # -- faults -------------------------------------------------------------------------------
    def _tell_switches(self, name: str, up: bool) -> None:
        """Every switch learns the change, then the hosts whose paths it can touch (RSCN)."""
        for other, kind in self.kinds.items():
            if kind == "switch" and other not in self.down:
                self.peers.elements[other].set_up(name, up)
        for element in rscn_hosts(name, self.kinds) + rscn_arrays(name, self.kinds):
            if element not in self.down:
                self.peers.elements[element].fabric_event(name, up)

    def kill(self, name: str) -> None:
        """The element stops answering (ELEMENT_DOWN) and loses what it held in memory."""
        obj = self.element(name)
        self.down.add(name)
        self._tell_switches(name, False)
        if hasattr(obj, "close"):
            obj.close()

    def restart(self, name: str) -> None:
        if name not in self.kinds:
            raise SanError("INVALID_INPUT", f"no element named {name!r}")
        if name not in self.down:
            raise SanError("INVALID_INPUT", f"{name} is not down; only a killed element restarts")
        obj = self._build(name)
        self.peers.add(name, obj)
        self.down.discard(name)
        if self.kinds[name] == "switch":
            for other in self.down | self.links_down:
                obj.set_up(other, False)
        self._tell_switches(name, True)

    def set_link(self, name: str, up: bool) -> None:
        (self.links_down.discard if up else self.links_down.add)(name)
        self._tell_switches(name, up)
