"""The Ray actors, one thin class per YAML kind: a plain element given peers over Ray.

Everything an element does is plain Python (`san.elements.*`, and `san.flows.*` for what an
element does by talking to the others); an actor class here only gives it `RayPeers` (its
peers as actors of the SAN's namespace) and what Ray needs to run it: arrays run their I/O
one call at a time (so a volume's writes apply in the order they were sent) and their
management calls in a concurrency group of their own threads, copies in threads of the
array; hosts, backup servers, libraries and switches are threaded actors.  The options of
each are in the registry of kinds (`san.kinds`).

Each class is built the first time it is named (``san.actors.ArrayNode``), importing only
its own kind's modules: an actor's process, which Ray makes import this module to find its
class, then imports what its element needs and nothing of the other kinds (numpy, the FAT
code, the catalog...), which is most of the time an element takes to start.
"""
from __future__ import annotations

import gc
import threading

import ray


def started() -> None:
    """Called at the end of each element actor's ``__init__``: what its process holds now
    (Ray's modules and state, the element's own tables, reloaded from the state dir) lives
    as long as it does, so it goes out of the cyclic garbage collector's sight.

    A full ("gen 2") collection walks every object that collector tracks: 11-17 ms in a new
    array's process, 39-48 ms in one that had served `san bench`'s rows, a pause that falls
    on whichever call made the allocation that set it off (a resync takes 9 ms).  Objects
    made later are still collected."""
    gc.freeze()


def _switch():
    from .elements.fc_switch import FcSwitch

    class SwitchNode(FcSwitch):
        def __init__(self, name: str, topology):
            super().__init__(name, topology)
            started()

        def ping(self) -> str:
            return self.name

    return SwitchNode


def _array():
    from .elements.disk_array import DiskArray
    from .flows.disk_array import ArrayInitiator
    from .remote import RayPeers

    class ArrayNode(ArrayInitiator, DiskArray):
        """A disk array, with the initiator side it needs for a volume copy to another array."""

        def __init__(self, spec, state_dir, granule, namespace: str, chunk_size: int,
                     window: int, known: list):
            super().__init__(spec, state_dir, granule)
            self.peers = RayPeers(namespace, known)
            self.chunk_size = chunk_size
            self.window = window
            started()

        def ping(self) -> str:
            return self.name

    # management calls, and the tripwire of a fault striking mid-copy, run beside the I/O thread
    for name in _mgmt_methods(ArrayNode) + ["trip_arm", "trip_release"]:
        setattr(ArrayNode, name, ray.method(concurrency_group="mgmt")(getattr(ArrayNode, name)))
    return ArrayNode


def _mgmt_methods(cls) -> list[str]:
    return [name for name in dir(cls) if name.startswith("mgmt_")]


def _host():
    from .flows.client_host import Host
    from .remote import RayPeers

    class HostNode(Host):
        def __init__(self, spec, namespace: str, chunk_size: int, window: int,
                     arrays_by_device: dict, now, known: list):
            super().__init__(spec, RayPeers(namespace, known), chunk_size, window,
                             arrays_by_device, now)
            started()

    return HostNode


def _server():
    from .flows.backup_server import Server
    from .remote import RayPeers

    class ServerNode(Server):
        def __init__(self, spec, topology, state_dir, namespace: str, known: list):
            super().__init__(spec, topology, state_dir, RayPeers(namespace, known))
            # what it holds is not walked again and again during a catalog rebuild's rows
            started()

    return ServerNode


def _library():
    from .elements.tape_library import TapeLibrary
    from .flows.tape_library import LibraryPuller
    from .remote import RayPeers

    class LibraryNode(LibraryPuller, TapeLibrary):
        """A tape library that pulls a volume image from a host, chunk by chunk, onto a drive."""

        def __init__(self, spec, state_dir, namespace: str, known: list):
            super().__init__(spec, state_dir)
            self.peers = RayPeers(namespace, known)
            started()

        def ping(self) -> str:
            return self.name

    return LibraryNode


_BUILDERS = {"SwitchNode": _switch, "ArrayNode": _array, "HostNode": _host,
             "ServerNode": _server, "LibraryNode": _library}
_LOCK = threading.Lock()
__all__ = list(_BUILDERS)   # each built by __getattr__, as is MGMT_METHODS
__all__.append("MGMT_METHODS")


def __getattr__(name: str):
    """`SwitchNode` ... `LibraryNode`, built (once) when first named; `MGMT_METHODS`, the
    array's management methods."""
    if name == "MGMT_METHODS":
        return _mgmt_methods(__getattr__("ArrayNode"))
    builder = _BUILDERS.get(name)
    if builder is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _LOCK:
        cls = globals().get(name)
        if cls is None:
            cls = builder()
            # a module-level name, so pickle (and Ray, which ships the class by reference)
            # finds it here
            cls.__module__, cls.__qualname__ = __name__, name
            globals()[name] = cls
    return cls
