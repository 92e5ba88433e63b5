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

import threading
from collections import deque

import numpy as np
import ray
from ray.exceptions import RayActorError, RayTaskError

from .elements.backup_server import BackupServer
from .elements.client_host import (ClientHost, blocks_of, chunks, first_granted,
                                   parse_device_identification, parse_standard_inquiry)
from .elements.disk_array import CopyJob, DiskArray
from .elements.fc_switch import FcSwitch
from .elements.tape_library import TapeLibrary
from .errors import SanError
from .pattern import first_mismatch, pattern
from .timemodel import Transfer

MGMT_REQUEST = 256  # bytes a management command and its answer carry besides their payload

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


def lan_transfer(sender: str, receiver: str, nbytes: int) -> Transfer:
    """A message over the management LAN, from one element's NIC to another's."""
    return Transfer((f"{sender}/lan:tx", f"{receiver}/lan:rx"), MGMT_REQUEST + nbytes)


def _payload(value) -> int:
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, (list, tuple)):
        return sum(_payload(v) for v in value) + 8 * len(value)
    if isinstance(value, dict):
        return sum(_payload(v) + 16 for v in value.values())
    return 8


def manage(caller: str, namespace: str, array: str, method: str, *args):
    """A management (LAN) call from element `caller` to `array`: (answer, transfers).

    The array checks that `caller` is one of its managers (UNAUTHORIZED otherwise); the
    request and the answer are charged on both NICs."""
    answer = get(getattr(lookup(array, namespace), f"mgmt_{method}").remote(caller, *args), array)
    transfers = [lan_transfer(caller, array, _payload(args)), lan_transfer(array, caller, _payload(answer))]
    return answer, transfers


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

    def manage(self, array: str, method: str, *args):
        """A management (LAN) call from this host to an array: (answer, transfers)."""
        return manage(self.name, self.namespace, array, method, *args)

    def digest(self, mount_point: str) -> str:
        """The volume digest of a mount, computed by the array behind the granted path."""
        route, array, port, lun = self._path(mount_point)
        return get(array.digest_lun.remote(route.initiator, port, lun), route.target)


class SwitchNode(FcSwitch):
    def ping(self) -> str:
        return self.name


class ArrayNode(DiskArray):
    """A disk array with the initiator side it needs for a volume copy to another array."""

    def __init__(self, spec, state_dir, granule, namespace: str, chunk_size: int, window: int = 8):
        super().__init__(spec, state_dir, granule)
        self.namespace = namespace
        self.chunk_size = chunk_size
        self.window = window

    def ping(self) -> str:
        return self.name

    def mgmt_copy_remote(self, caller: str, source: int, dest_array: str, dest_volume: int,
                         dest_port: str, dest_lun: int, with_info: bool = True) -> dict:
        """Volume copy to another array (Fig. 19): this array writes the data over FC from
        the first of its ports zoned with the destination port, then sends the source's volume
        info over the LAN to the destination array (only if the data copy succeeded)."""
        self.authorize(caller)
        if dest_array == self.name:
            return self.mgmt_copy(caller, source, dest_volume, with_info)
        size = self.size_of(source)
        target = f"{dest_array}/{dest_port}"

        def grant(port):
            switch = self.ports[port].switch
            return get(lookup(switch, self.namespace).grant.remote(f"{self.name}/{port}", target), switch)

        route = first_granted([p.name for p in self.spec.ports], grant, self.name)
        dest = lookup(dest_array, self.namespace)
        me = route.initiator
        last, block = get(dest.read_capacity.remote(me, dest_port, dest_lun), dest_array)
        ident = parse_device_identification(
            get(dest.inquiry.remote(me, dest_port, dest_lun, 0x83), dest_array))
        if not ident["lu"].endswith(f".{dest_volume:05d}"):
            raise SanError("INVALID_INPUT", f"{target} LUN {dest_lun} is {ident['lu']}, "
                                            f"not volume {dest_volume} of {dest_array}")
        if (last + 1) * block != size:
            raise SanError("CAPACITY_MISMATCH", f"{self.name} volume {source} is {size} bytes but "
                                                f"{dest_array} volume {dest_volume} is {(last + 1) * block}")
        with self._lock:
            self._check_not_busy_source(source)
            get(dest.prepare.remote(me, dest_port, dest_lun, 0, size // 512, True), dest_array)
            get(dest.mgmt_delete_info.remote(self.name, dest_volume), dest_array)
            extents = self.extents(source)
            job = CopyJob(next(self._job_ids), "copy", source, dest_volume, set(), [],
                          total=sum(length for _, length in extents), with_info=with_info,
                          dest_array=dest_array)
            self.jobs[job.id] = job
        threading.Thread(target=self._run_remote, daemon=True, name=f"{self.name}-copy-{job.id}",
                         args=(job, route, dest, dest_port, dest_lun, extents)).start()
        return job.status()

    def _check_not_busy_source(self, source: int) -> None:
        job = self._running(source)
        if job is not None and job.dest == source and job.dest_array is None:
            raise SanError("BUSY", f"{self.name} volume {source} is still being written by a "
                                   f"running {job.kind} from volume {job.source}")

    def _run_remote(self, job, route, dest, port, lun, extents) -> None:
        me, size = route.initiator, self.size_of(job.source)
        try:
            get(dest.unmap.remote(me, port, lun, 0, size // 512), job.dest_array)
            pieces = [piece for off, length in extents for piece in chunks(off, length, self.chunk_size)]
            inflight: deque = deque()
            for off, length in pieces:
                if len(inflight) >= self.window:
                    job.copied += get(inflight.popleft(), job.dest_array)
                ref = ray.put(self.read_volume(job.source, off, length))
                inflight.append(dest.write.remote(me, port, lun, off // 512, ref))
            while inflight:
                job.copied += get(inflight.popleft(), job.dest_array)
            job.transfers = [Transfer(route.resources(True), job.copied)]
            if job.with_info:
                info = self.read_info(job.source)
                if info is not None:
                    get(dest.mgmt_record_info.remote(self.name, job.dest, info), job.dest_array)
                    job.transfers.append(lan_transfer(self.name, job.dest_array, len(info)))
            job.state = "done"
            job.done.set()
        except Exception as exc:  # a failure (or a bug) must end the job and reach the waiter
            self.fail(job, exc)


MGMT_METHODS = [name for name in dir(ArrayNode) if name.startswith("mgmt_")]
for _name in MGMT_METHODS:  # management calls run beside the I/O thread, in their own group
    setattr(ArrayNode, _name, ray.method(concurrency_group="mgmt")(getattr(ArrayNode, _name)))


class ServerNode(BackupServer):
    def ping(self) -> str:
        return self.name


class LibraryNode(TapeLibrary):
    def ping(self) -> str:
        return self.name


# Ray actor classes, one per YAML kind, and their actor options.
ACTORS = {
    "switch": (ray.remote(SwitchNode), {"max_concurrency": 8}),
    "array": (ray.remote(concurrency_groups={"mgmt": 8})(ArrayNode), {}),
    "host": (ray.remote(HostNode), {"max_concurrency": 16}),
    "backup_server": (ray.remote(ServerNode), {}),
    "tape_library": (ray.remote(LibraryNode), {}),
}

__all__ = ["ACTORS", "get", "lookup", "HostNode"]
