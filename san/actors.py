"""The Ray actors, one thin class per YAML kind: a plain element given peers over Ray.

Everything an element does is plain Python (`san.elements.*`, and `san.flows.*` for what an
element does by talking to the others); an actor class here only gives it `RayPeers` (its
peers as actors of the SAN's namespace) and what Ray needs to run it: arrays run their I/O
one call at a time (so a volume's writes apply in the order they were sent) and their
management calls in a concurrency group of their own threads, copies in threads of the
array; hosts, backup servers, libraries and switches are threaded actors.  The options of
each are in the registry of kinds (`san.kinds`).
"""
from __future__ import annotations

import ray

from .elements.disk_array import DiskArray
from .elements.fc_switch import FcSwitch
from .elements.tape_library import TapeLibrary
from .flows.backup_server import Server
from .flows.client_host import Host
from .flows.disk_array import ArrayInitiator
from .flows.tape_library import LibraryPuller
from .remote import RayPeers


class SwitchNode(FcSwitch):
    def ping(self) -> str:
        return self.name


class ArrayNode(ArrayInitiator, DiskArray):
    """A disk array, with the initiator side it needs for a volume copy to another array."""

    def __init__(self, spec, state_dir, granule, namespace: str, chunk_size: int, window: int,
                 known: list):
        super().__init__(spec, state_dir, granule)
        self.peers = RayPeers(namespace, known)
        self.chunk_size = chunk_size
        self.window = window

    def ping(self) -> str:
        return self.name


MGMT_METHODS = [name for name in dir(ArrayNode) if name.startswith("mgmt_")]
for _name in MGMT_METHODS:  # management calls run beside the I/O thread, in their own group
    setattr(ArrayNode, _name, ray.method(concurrency_group="mgmt")(getattr(ArrayNode, _name)))


class HostNode(Host):
    def __init__(self, spec, namespace: str, chunk_size: int, window: int, arrays_by_device: dict,
                 now, known: list):
        super().__init__(spec, RayPeers(namespace, known), chunk_size, window, arrays_by_device, now)


class ServerNode(Server):
    def __init__(self, spec, topology, state_dir, namespace: str, known: list):
        super().__init__(spec, topology, state_dir, RayPeers(namespace, known))


class LibraryNode(LibraryPuller, TapeLibrary):
    """A tape library that pulls a volume image from a host, chunk by chunk, onto a drive."""

    def __init__(self, spec, state_dir, namespace: str, known: list):
        super().__init__(spec, state_dir)
        self.peers = RayPeers(namespace, known)

    def ping(self) -> str:
        return self.name


__all__ = ["SwitchNode", "ArrayNode", "HostNode", "ServerNode", "LibraryNode", "MGMT_METHODS"]
