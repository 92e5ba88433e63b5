"""A disk array acting as an initiator: volume copies to another array over FC (Fig. 19).

`ArrayInitiator` is mixed into a `san.elements.disk_array.DiskArray` that is given `peers`
(`san.flows.peers`).  For a copy to another array, the source array: asks the fabric for a
path from the first of its ports zoned with the destination port; checks the destination
LUN (INQUIRY VPD 0x83 names the volume, READ CAPACITY its size); reserves the destination
volume on its array (read-only to others, BUSY for other copies) and deletes the old volume
info there; then, in a thread of its own, UNMAPs the destination and writes every written
extent of the source, `window` chunks in flight, each chunk a `Payload` the destination
receives by reference; only once the data is complete does it send the source's volume info
over the LAN.  The reservation is released whatever happens.  One path grant and one lookup
of the destination per copy attempt, never per chunk; but the array hears of fabric changes
as hosts do (`fabric_event`, an RSCN), and a copy under way takes a path again before its
next chunk when the fabric changed: another port's, or LINK_DOWN when none is left.

It also answers, and asks, whether a reservation is still held by a running copy: an array
that died or restarted while copying leaves its reservation behind, and the destination
releases it when a BUSY check finds it (`DiskArray._reservation`).
"""
from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from ..elements.client_host import chunks, first_granted
from ..elements.copy_jobs import CopyJob
from ..errors import SanError
from ..scsi import parse_device_identification
from ..storage import holds_data
from ..timemodel import Transfer
from ..units import BLOCK
from .lan import lan_transfer
from .peers import Payload, UnderWay, rerouted
from .state_lock import StateLock

HOLDER_TIMEOUT = 10.0     # seconds a reservation's holder has to say it still copies


class ArrayInitiator:
    """Copies to other arrays; needs `peers`, `chunk_size` and `window` on the array.

    It also keeps the array's part of the state dir to this generation of the array
    (`san.flows.state_lock`): taken before the array opens anything there, released when it
    closes or its process ends."""

    def __init__(self, spec, state_dir, *args, **kwargs):
        self.fabric_epoch = 0           # fabric changes heard of so far (`fabric_event`)
        # copies over FC ordered, by (destination array, volume), until their job is
        # registered (`mgmt_copy_remote`)
        self._ordering = UnderWay()
        self._state_lock = StateLock.holding(
            Path(state_dir) / "arrays" / spec.name, spec.name,
            lambda: super(ArrayInitiator, self).__init__(spec, state_dir, *args, **kwargs))

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._state_lock.release()

    def fabric_event(self, name: str, up: bool) -> None:
        """The fabric changed (an RSCN): a copy over FC under way takes a path again before
        its next chunk."""
        self.fabric_epoch += 1

    def _route_to(self, target: str):
        """The route from the first of this array's ports the fabric grants a path to
        `target` (``ARRAY/PORT``); the first port's refusal when none is granted."""
        def grant(port):
            return self.peers.element(self.ports[port].switch).call("grant", f"{self.name}/{port}", target)
        return first_granted([p.name for p in self.spec.ports], grant, self.name)

    def mgmt_copying_into(self, caller: str, number: int) -> bool:
        """Asked by array `caller` that this array holds a reservation of: is a copy from
        here into its volume `number` still running?  (Not a manager's call: any array may ask
        about its own volumes.)"""
        if self._ordering.others((caller, number)):     # the other's job, not yet registered
            return True
        return any(job.state == "running" and job.dest_array == caller and job.dest == number
                   for job in list(self.jobs.values()))

    def copy_holder_active(self, holder: str, number: int) -> bool:
        """The holder of a reservation is asked; one that is down, or restarted and so runs no
        copy, has left the reservation behind.  An answer that does not come within
        `HOLDER_TIMEOUT` counts as "still copying": a slow array must not lose its destination."""
        return self._holder_says(holder, "mgmt_copying_into", self.name, number)

    def attachment_holder_active(self, host: str, port: str, lun: int) -> bool:
        """The host an attachment was made for is asked; one that is down, or whose flow died
        (restarted since, or its server did), has left it behind.  No answer within
        `HOLDER_TIMEOUT` counts as "still held"."""
        return self._holder_says(host, "holds_attachment", self.name, port, lun)

    def _holder_says(self, holder: str, method: str, *args) -> bool:
        """Ask `holder` whether it still holds something: its answer, False if it is down,
        True if it does not answer within `HOLDER_TIMEOUT` (slow is not gone)."""
        try:
            asked = self.peers.element(holder).start(method, *args)
            return bool(asked.result(timeout=HOLDER_TIMEOUT))
        except TimeoutError:
            return True
        except SanError as exc:
            if exc.code == "ELEMENT_DOWN":
                return False
            raise

    def mgmt_copy_remote(self, caller: str, source: int, dest_array: str, dest_volume: int,
                         dest_port: str, dest_lun: int, with_info: bool = True,
                         expect: bytes | None = None) -> dict:
        """Volume copy to another array (Fig. 19): this array writes the data over FC from
        the first of its ports zoned with the destination port, then sends the source's volume
        info over the LAN to the destination array (only if the data copy succeeded).  `expect`:
        the volume info `source` must hold (`check_holds`), checked before anything moves."""
        self.authorize(caller)
        if dest_array == self.name:
            return self.mgmt_copy(caller, source, dest_volume, with_info, expect)
        self._settle_reservations(source)
        with self._lock:    # before the destination is touched (prepared, its info deleted)
            self.check_holds(source, expect)
            self.reader(source)
            self._refuse_known_rot(source, "copy")
        size = self.size_of(source)
        target = f"{dest_array}/{dest_port}"
        epoch = self.fabric_epoch       # read first: a change while granting is seen later
        route = self._route_to(target)
        dest = self.peers.element(dest_array)
        me = route.initiator
        last, block = dest.call("read_capacity", me, dest_port, dest_lun)
        ident = parse_device_identification(dest.call("inquiry", me, dest_port, dest_lun, 0x83))
        if not ident["lu"].endswith(f".{dest_volume:05d}"):
            raise SanError("INVALID_INPUT", f"{target} LUN {dest_lun} is {ident['lu']}, "
                                            f"not volume {dest_volume} of {dest_array}")
        if (last + 1) * block != size:
            raise SanError("CAPACITY_MISMATCH", f"{self.name} volume {source} is {size} bytes but "
                                                f"{dest_array} volume {dest_volume} is {(last + 1) * block}")
        dest.call("prepare", me, dest_port, dest_lun, 0, size // BLOCK, True)
        # under way until its job is registered: asked meanwhile about the reservation (a
        # second copy from here onto the volume reserving it), this array said no copy ran,
        # the destination granted it again, and both copies wrote into it and succeeded
        with self._ordering.holding((dest_array, dest_volume)):
            dest.call("mgmt_reserve", self.name, dest_volume)
            try:
                return self._start_remote(source, dest, dest_volume, dest_port, dest_lun, route,
                                          with_info, expect, epoch)
            except BaseException:
                self._release_remote(dest, dest_volume)
                raise

    def _release_remote(self, dest, dest_volume: int) -> None:
        try:
            dest.call("mgmt_release", self.name, dest_volume)
        except SanError:
            pass   # the destination is down: its reservation went with it

    def _start_remote(self, source, dest, dest_volume, dest_port, dest_lun, route, with_info,
                      expect, epoch: int) -> dict:
        with self._lock:   # no remote call under the lock: the other array may be calling us
            self.check_holds(source, expect)    # again: the lock was let go since
            self._check_whole(source, "copy")
            self._refuse_known_rot(source, "copy")      # again: a read may have found rot since
            extents = self.extents(source)
            job = CopyJob(self._job_ids.next(), "copy", source, dest_volume, set(), [],
                          total=sum(length for _, length in extents), with_info=with_info,
                          dest_array=dest.name)
            self.jobs[job.id] = job
        try:
            dest.call("mgmt_delete_info", self.name, dest_volume)
        except SanError as exc:
            self.fail(job, exc)
            raise
        threading.Thread(target=self._run_remote, daemon=True, name=f"{self.name}-copy-{job.id}",
                         args=(job, route, dest, dest_port, dest_lun, extents, epoch)).start()
        return job.status()

    @contextlib.contextmanager
    def _outgoing(self, number: int, offset: int, length: int):
        """The bytes of a volume a copy over FC sends, valid inside the ``with``: whole written
        granules of a volume are its data file's pages mapped and verified, so putting them
        into the object store is their one copy (a read into a buffer first copied them
        twice); anything else (a snapshot, a granule unwritten or all zeros) is read."""
        store = self.stores.get(number)
        if store is not None and store.covers_whole_granules(offset, length):
            with store.mapped_granules(offset, length, verify=True) as (data, cs):
                if all(holds_data(cs, length, self.granule)):
                    yield data
                    return
        yield self.read_volume(number, offset, length)

    @staticmethod
    def _still_running(job) -> None:
        """Stop a copy over FC whose job failed meanwhile (its array went down: in one
        process the thread outlives it, and would write on and label the destination)."""
        if job.state == "failed":
            raise job.error

    def _run_remote(self, job, route, dest, port, lun, extents, epoch: int) -> None:
        """Run a copy over FC on `route`, granted at fabric epoch `epoch`: a change since
        (heard while the destination was prepared, say) takes a path again first."""
        size = self.size_of(job.source)
        path = {"route": route, "epoch": epoch}
        carried: dict = {}          # route -> bytes the destination acknowledged through it
        try:
            dest.call("unmap", route.initiator, port, lun, 0, size // BLOCK)

            def submit(piece, tag):
                off, length = piece
                self.copies_go.wait()
                self._still_running(job)
                with self._outgoing(job.source, off, length) as data:
                    # the payload is put into the object store here, while `data` is valid
                    return tag, dest.start("write", path["route"].initiator, port, lun,
                                           off // BLOCK, Payload(data))

            def consume(piece, written, used):
                job.copied += written
                carried[used] = carried.get(used, 0) + written
                self.trip.passed(self._moved(written))

            def reroute():
                path["epoch"] = self.fabric_epoch       # read first: a change meanwhile is seen
                path["route"] = self._route_to(f"{job.dest_array}/{port}")
                return path["route"]

            pieces = [piece for off, length in extents for piece in chunks(off, length, self.chunk_size)]
            rerouted(pieces, submit, consume, self.window, route,
                     lambda: path["epoch"] != self.fabric_epoch, reroute)
            job.transfers = ([Transfer(r.resources(True), n) for r, n in carried.items()]
                             or [Transfer(route.resources(True), 0)])
            if job.with_info:
                self._still_running(job)
                info = self.read_info(job.source)
                if info is not None:
                    dest.call("mgmt_record_info", self.name, job.dest, info)
                    job.transfers.append(lan_transfer(self.name, job.dest_array, len(info)))
            self._release_remote(dest, job.dest)
            with self._failing:
                if job.state != "failed":       # failed meanwhile: its waiter heard that
                    job.state = "done"
            job.done.set()
        except Exception as exc:  # a failure (or a bug) must end the job and reach the waiter
            if not job.transfers:       # what reached the destination, on the routes it took
                job.transfers = [Transfer(r.resources(True), n) for r, n in carried.items()]
            self._release_remote(dest, job.dest)
            self.fail(job, exc)
