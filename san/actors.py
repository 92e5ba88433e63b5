"""The Ray actors, one class per YAML kind, and their options.

Element logic lives in plain classes (`san.elements.*`); this module makes them actors and
adds what needs Ray: an array's initiator side for a volume copy to another array.  Arrays
run their I/O one call at a time (so a volume's writes apply in the order they were sent) and
their management calls in a group of their own threads; copies run in threads of the array.
Hosts (`san.client`) and backup servers (`san.server`) are threaded actors.
"""
from __future__ import annotations

import threading
from collections import deque

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError

from .client import HostNode
from .elements.client_host import chunks, first_granted, parse_device_identification
from .elements.disk_array import CopyJob, DiskArray
from .elements.fc_switch import FcSwitch
from .elements.tape_library import TapeLibrary
from .errors import SanError
from .remote import get, lan_transfer, lookup, manage
from .server import ServerNode
from .timemodel import Transfer


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

    def mgmt_copying_into(self, caller: str, number: int) -> bool:
        """Asked by array `caller` that this array holds a reservation of: is a copy from
        here into its volume `number` still running?  (Not a manager's call: any array may ask
        about its own volumes.)"""
        return any(job.state == "running" and job.dest_array == caller and job.dest == number
                   for job in list(self.jobs.values()))

    def copy_holder_active(self, holder: str, number: int) -> bool:
        """The holder of a reservation is asked; one that is down, or restarted and so runs no
        copy, has left the reservation behind.  An answer that does not come within 10 s
        counts as "still copying": a slow array must not lose its destination."""
        try:
            return bool(ray.get(lookup(holder, self.namespace).mgmt_copying_into.remote(self.name, number),
                                timeout=10))
        except GetTimeoutError:
            return True
        except (SanError, RayActorError, ActorUnavailableError):
            return False
        except RayTaskError as exc:
            if isinstance(exc.cause, (RayActorError, ActorUnavailableError)):
                return False
            raise

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
        get(dest.prepare.remote(me, dest_port, dest_lun, 0, size // 512, True), dest_array)
        get(dest.mgmt_reserve.remote(self.name, dest_volume), dest_array)
        try:
            return self._start_remote(source, size, dest, dest_array, dest_volume, dest_port,
                                      dest_lun, route, with_info)
        except BaseException:
            self._release(dest, dest_array, dest_volume)
            raise

    def _release(self, dest, dest_array: str, dest_volume: int) -> None:
        try:
            get(dest.mgmt_release.remote(self.name, dest_volume), dest_array)
        except SanError:
            pass   # the destination is down: its reservation went with it

    def _start_remote(self, source, size, dest, dest_array, dest_volume, dest_port, dest_lun,
                      route, with_info) -> dict:
        with self._lock:   # no remote call under the lock: the other array may be calling us
            self._check_not_busy_source(source)
            extents = self.extents(source)
            job = CopyJob(next(self._job_ids), "copy", source, dest_volume, set(), [],
                          total=sum(length for _, length in extents), with_info=with_info,
                          dest_array=dest_array)
            self.jobs[job.id] = job
        try:
            get(dest.mgmt_delete_info.remote(self.name, dest_volume), dest_array)
        except SanError as exc:
            self.fail(job, exc)
            raise
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
                self.copies_go.wait()
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
            self._release(dest, job.dest_array, job.dest)
            job.state = "done"
            job.done.set()
        except Exception as exc:  # a failure (or a bug) must end the job and reach the waiter
            self._release(dest, job.dest_array, job.dest)
            self.fail(job, exc)


MGMT_METHODS = [name for name in dir(ArrayNode) if name.startswith("mgmt_")]
for _name in MGMT_METHODS:  # management calls run beside the I/O thread, in their own group
    setattr(ArrayNode, _name, ray.method(concurrency_group="mgmt")(getattr(ArrayNode, _name)))


class LibraryNode(TapeLibrary):
    """A tape library that pulls a volume image from a host, chunk by chunk, onto a drive."""

    def __init__(self, spec, state_dir, namespace: str, chunk_size: int, window: int = 4):
        super().__init__(spec, state_dir)
        self.namespace = namespace
        self.chunk_size = chunk_size
        self.window = window

    def ping(self) -> str:
        return self.name

    def write_from_host(self, media: str, row: dict, host: str, port_ref: str, lun: int) -> dict:
        """Append the image of the volume `host` reaches at port/LUN (its written extents)."""
        self.medium(media)
        node = lookup(host, self.namespace)
        size, extents = get([node.capacity_at.remote(port_ref, lun),
                             node.extents_at.remote(port_ref, lun)], host)
        def pull():
            stream = node.stream_extents.options(num_returns="streaming").remote(port_ref, lun, extents)
            for ref in stream:
                yield get(ref, host)

        return self.write_image(media, row, size, extents, pull())


# Ray actor classes, one per YAML kind, and their actor options.
ACTORS = {
    "switch": (ray.remote(SwitchNode), {"max_concurrency": 8}),
    "array": (ray.remote(concurrency_groups={"mgmt": 8})(ArrayNode), {}),
    "host": (ray.remote(HostNode), {"max_concurrency": 16}),
    "backup_server": (ray.remote(ServerNode), {"max_concurrency": 8}),
    "tape_library": (ray.remote(LibraryNode), {"max_concurrency": 8}),
}

__all__ = ["ACTORS", "get", "lookup", "manage", "HostNode", "ServerNode"]
