"""The thin Ray layer: each element class becomes an actor, and hosts drive the block path.

Element logic lives in plain classes (`san.elements.*`); this module only makes them actors
and adds what needs Ray: the initiator's I/O loop.  A host streams a transfer as commands of
at most one chunk each, `window` in flight, each chunk `ray.put` by the host and passed to the
array by reference, so the payload goes from the host's object store straight to the array.
The switch only grants the path (a `Route`); it never sees a byte of payload.

Arrays are sync actors (one call at a time), so the writes to a volume apply in the order
they were sent.  Hosts are threaded actors, so two steps of a `concurrent` can use one host.

Errors: a `SanError` raised inside an actor reaches the caller as itself (`get` unwraps Ray's
wrapper); a dead actor becomes ``ELEMENT_DOWN`` naming the element.
"""
from __future__ import annotations

from collections import deque

import numpy as np
import ray
from ray.exceptions import RayActorError, RayTaskError

from .elements.backup_server import BackupServer
from .elements.client_host import (ClientHost, blocks_of, chunks, parse_device_identification,
                                   parse_standard_inquiry)
from .elements.disk_array import DiskArray
from .elements.fc_switch import FcSwitch
from .elements.tape_library import TapeLibrary
from .errors import SanError
from .pattern import first_mismatch, pattern
from .timemodel import Transfer

try:  # newer Ray splits "unavailable" from "died"; both mean the element is not there
    from ray.exceptions import ActorUnavailableError
    _DOWN = (RayActorError, ActorUnavailableError)
except ImportError:  # pragma: no cover
    _DOWN = (RayActorError,)

INQUIRY_BYTES = 36


def get(refs, element: str = "an element"):
    """`ray.get` that re-raises a remote `SanError` as itself and a dead actor as ELEMENT_DOWN."""
    try:
        return ray.get(refs)
    except RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, SanError):
            raise cause from None
        if isinstance(cause, _DOWN):
            raise SanError("ELEMENT_DOWN", f"{element} is down") from None
        raise
    except _DOWN:
        raise SanError("ELEMENT_DOWN", f"{element} is down") from None


def lookup(name: str, namespace: str):
    """The live actor of element `name` in this SAN's namespace, or ELEMENT_DOWN."""
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        raise SanError("ELEMENT_DOWN", f"{name} is down") from None


class HostNode(ClientHost):
    """A client host with its initiator I/O loop (the actor class)."""

    def __init__(self, spec, namespace: str, chunk_size: int, window: int = 8):
        super().__init__(spec)
        self.namespace = namespace
        self.chunk_size = chunk_size
        self.window = window

    def ping(self) -> str:
        return self.name

    # -- path ---------------------------------------------------------------------------------
    def _path(self, mount_point: str):
        """(route, array actor, port, LUN) for a mount: the first HBA the fabric grants."""
        mount = self.mount(mount_point)
        array, port, lun = self.target(mount)

        def grant(hba):
            switch = self.hba_switch[hba]
            return get(lookup(switch, self.namespace).grant.remote(hba, mount.port), switch)

        route = self.first_granted(grant)
        return route, lookup(array, self.namespace), port, lun

    def _stream(self, submit, pieces, element: str, consume=None) -> None:
        """Submit one command per piece, at most `window` in flight, oldest answered first."""
        inflight: deque = deque()
        for piece in pieces:
            if len(inflight) >= self.window:
                done_piece, ref = inflight.popleft()
                result = get(ref, element)
                if consume:
                    consume(done_piece, result)
            inflight.append((piece, submit(piece)))
        while inflight:
            done_piece, ref = inflight.popleft()
            result = get(ref, element)
            if consume:
                consume(done_piece, result)

    # -- block I/O ----------------------------------------------------------------------------
    def write(self, mount_point: str, offset: int, size: int, seed: int) -> list[Transfer]:
        """WRITE the pattern of (seed, offset) over [offset, offset + size) of a mount."""
        lba, blocks = blocks_of(offset, size)
        route, array, port, lun = self._path(mount_point)
        get(array.prepare.remote(route.initiator, port, lun, lba, blocks, True), route.target)

        def submit(piece):
            off, length = piece
            ref = ray.put(pattern(seed, off, length))
            return array.write.remote(route.initiator, port, lun, off // 512, ref)

        self._stream(submit, chunks(offset, size, self.chunk_size), route.target)
        return [Transfer(route.resources(True), size)]

    def write_data(self, mount_point: str, offset: int, data: np.ndarray) -> list[Transfer]:
        """WRITE the given bytes (used by file systems and tests)."""
        data = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
        lba, blocks = blocks_of(offset, len(data))
        route, array, port, lun = self._path(mount_point)
        get(array.prepare.remote(route.initiator, port, lun, lba, blocks, True), route.target)

        def submit(piece):
            off, length = piece
            ref = ray.put(data[off - offset:off - offset + length])
            return array.write.remote(route.initiator, port, lun, off // 512, ref)

        self._stream(submit, chunks(offset, len(data), self.chunk_size), route.target)
        return [Transfer(route.resources(True), len(data))]

    def _read_stream(self, mount_point: str, offset: int, size: int, consume):
        lba, blocks = blocks_of(offset, size)
        route, array, port, lun = self._path(mount_point)
        get(array.prepare.remote(route.initiator, port, lun, lba, blocks, False), route.target)

        def submit(piece):
            off, length = piece
            return array.read.remote(route.initiator, port, lun, off // 512, length // 512)

        self._stream(submit, chunks(offset, size, self.chunk_size), route.target, consume)
        return [Transfer(route.resources(False), size)]

    def read(self, mount_point: str, offset: int, size: int) -> tuple[np.ndarray, list[Transfer]]:
        """READ [offset, offset + size) of a mount; returns the bytes and the transfers."""
        out = np.empty(size, dtype=np.uint8)

        def consume(piece, data):
            off, length = piece
            out[off - offset:off - offset + length] = data

        return out, self._read_stream(mount_point, offset, size, consume)

    def read_discard(self, mount_point: str, offset: int, size: int) -> list[Transfer]:
        """READ a range and drop the data (what a benchmark of the read path needs)."""
        return self._read_stream(mount_point, offset, size, None)

    def read_compare(self, mount_point: str, offset: int, size: int, seed: int) -> dict:
        """READ a range and compare every byte with the `write` pattern of `seed`."""
        bad: list[int] = []

        def consume(piece, data):
            where = first_mismatch(data, seed, piece[0])
            if where is not None:
                bad.append(where)

        transfers = self._read_stream(mount_point, offset, size, consume)
        return {"bytes": size, "first_mismatch": min(bad) if bad else None,
                "transfers": transfers}

    # -- SCSI control commands ----------------------------------------------------------------
    def scsi_identify(self, mount_point: str) -> dict:
        """INQUIRY (standard and VPD 0x83), READ CAPACITY and REPORT LUNS for a mount."""
        route, array, port, lun = self._path(mount_point)
        std, vpd, (last_lba, block), luns = get([
            array.inquiry.remote(route.initiator, port, lun),
            array.inquiry.remote(route.initiator, port, lun, 0x83),
            array.read_capacity.remote(route.initiator, port, lun),
            array.report_luns.remote(route.initiator, port)], route.target)
        ident = parse_device_identification(vpd)
        info = parse_standard_inquiry(std)
        return {**info, "device_id": ident["target"], "lu_id": ident["lu"],
                "capacity": (last_lba + 1) * block, "block_size": block, "luns": luns,
                "hba": route.initiator, "transfers": [
                    Transfer(route.resources(False), len(std) + len(vpd) + 32 + 8 * len(luns))]}

    def digest(self, mount_point: str) -> str:
        """The volume digest of a mount, computed by the array behind the granted path."""
        route, array, port, lun = self._path(mount_point)
        return get(array.digest_lun.remote(route.initiator, port, lun), route.target)


class SwitchNode(FcSwitch):
    def ping(self) -> str:
        return self.name


class ArrayNode(DiskArray):
    def ping(self) -> str:
        return self.name


class ServerNode(BackupServer):
    def ping(self) -> str:
        return self.name


class LibraryNode(TapeLibrary):
    def ping(self) -> str:
        return self.name


# Ray actor classes, one per YAML kind, and their actor options.
ACTORS = {
    "switch": (ray.remote(SwitchNode), {"max_concurrency": 8}),
    "array": (ray.remote(ArrayNode), {}),
    "host": (ray.remote(HostNode), {"max_concurrency": 16}),
    "backup_server": (ray.remote(ServerNode), {}),
    "tape_library": (ray.remote(LibraryNode), {}),
}

__all__ = ["ACTORS", "get", "lookup", "HostNode"]
