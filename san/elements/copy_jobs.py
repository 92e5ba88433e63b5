"""The copy engine of a disk array: mirrors, restores and volume copies as copy jobs.

Copies.  A mirror, a restore and an intra-array volume copy are *copy jobs* run by a thread
of the array: the job copies only the granules where source and destination differ (their
stored checksums disagree: incremental resync, with no dirty-map to keep), in batches, while
hosts keep writing.  A host write to a granule that a running job from that volume has not
copied yet first copies that granule (`CopyEngine.copy_owed`, called by the array before
every write), so the destination ends equal to the source *as it was when the job started*
(the mirror's point-in-time promise).  While a job runs, its destination is read-only to
hosts and ``BUSY`` for other copies; its old volume info is deleted when the job starts, so
an interrupted copy never leaves a record claiming a complete backup.

Planning (`CopyEngine._plan`) decides which granules a job moves and which destination
granules it reads only to check them (see there: rot on disk is what the map cannot know).
A job moves up to `BATCH` granules per turn of the array's lock (`CopyEngine.step`): the
source's data file mapped and its granules verified, however scattered (a resync's changed
granules are), one scattered write of those holding data from the mapping (no buffer in
between), and all-zero ones freed to keep the destination thin; `CopyEngine.finish` records
the volume info (a volume copy with ``with_info``) only once the data is complete, and the
job's modeled transfer on the array's copy engine.  A copy to another array over FC is a
`CopyJob` too, run by `san.flows.disk_array.ArrayInitiator`.

`CopyEngine` is a mixin of `san.elements.disk_array.DiskArray`, which provides what it uses:
`name`, `granule`, `stores`, `snaps`, `_lock`, `reader`, `size_of`, `read_volume`,
`_store_write`, `_store_zero`, `_check_not_busy`, `read_info`, `record_info` and
`delete_info`.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field

import numpy as np

from ..errors import InternalError, SanError
from ..fileio import write_replace
from ..granules import granule_extents, granules_nbytes, runs
from ..storage import VolumeStore, holds_data
from ..timemodel import Transfer
from ..tripwire import Tripwire
from ..units import MiB

__all__ = ["BATCH", "INLINE", "CopyJob", "CopyEngine", "JobIds"]

BATCH = 16  # granules a copy job moves per turn of its lock (4 MiB at the default granule)
INLINE = 16 * MiB   # a job moving at most this runs in the thread that orders it (see _launch)


@dataclass
class CopyJob:
    """A copy running (or run) inside the array: mirror, restore or volume copy."""
    id: int
    kind: str
    source: int
    dest: int
    pending: set
    order: list
    total: int
    copied: int = 0
    checked: int = 0                       # destination bytes read only to check them
    state: str = "running"
    error: SanError | None = None
    with_info: bool = False
    dest_array: str | None = None          # another array (a copy over FC), or None: this one
    transfers: list = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def status(self) -> dict:
        return {"job": self.id, "kind": self.kind, "source": self.source, "dest": self.dest,
                "dest_array": self.dest_array, "state": self.state, "copied": self.copied,
                "checked": self.checked, "total": self.total, "error": self.error.to_dict() if self.error else None}


class JobIds:
    """Copy job numbers, never given twice by an array, across its restarts (its jobs live in
    memory and die with it: a waiter holding a number from before must hear that, not
    another job's end).  Numbers are taken in blocks of `BLOCK`: the first number not yet
    taken is kept in the file `path` (the array's ``jobs``), written once at start and once
    per block, so the numbers stay small (a restarted array's first job is 1001, say) and
    ordering a job rarely writes a file."""

    BLOCK = 1000

    def __init__(self, path, array: str):
        self.path, self.array = path, array
        try:
            first = int(path.read_bytes().decode("ascii"))
        except FileNotFoundError:
            first = 1
        except (OSError, ValueError) as exc:
            raise SanError("INVALID_INPUT", f"{path} (the next copy job number of {array}) "
                                            f"cannot be read: {exc}") from None
        self.first = self._n = first          # this start's first number
        self._taken = first                   # numbers below it are taken (on disk)
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            if self._n >= self._taken:
                self._taken = self._n + self.BLOCK
                # not fsync-ed: a power loss ends every waiter too, and an array's start
                # (each SAN's) pays no fsync for it
                write_replace(self.path, str(self._taken).encode("ascii"), sync=False)
            self._n += 1
            return self._n - 1

    def lost(self, job: int) -> None:
        """ELEMENT_DOWN if `job` was given before this start (its job died with the array)."""
        if isinstance(job, int) and 1 <= job < self.first:
            raise SanError("ELEMENT_DOWN", f"{self.array} went down after copy job {job} was "
                                           f"ordered: the job is lost (its destination holds "
                                           f"whatever it had copied; order it again)")


class CopyEngine:
    """The array's copy jobs: planning, starting, stepping, finishing (a `DiskArray` mixin)."""

    def _init_copy_jobs(self) -> None:
        self.jobs: dict[int, CopyJob] = {}
        self._job_ids = JobIds(self.directory / "jobs", self.name)
        self._failing = threading.Lock()
        self.autostart = True  # tests turn it off and drive jobs with step() / finish()
        self.copies_go = threading.Event()   # cleared: copy jobs wait before their next batch
        self.copies_go.set()
        self.moved_bytes = 0                 # bytes every copy of this array has moved so far
        self._moved_lock = threading.Lock()  # copies over FC count outside the array's lock
        self.trip = Tripwire()
        # what a snapshot's batch is read into, under the lock: one buffer whose pages stay
        # mapped (a volume's granules are mapped from its file instead)
        self._copy_buf = np.empty(0, dtype=np.uint8)

    def _moved(self, nbytes: int) -> int:
        """Count `nbytes` more moved by a copy; the new total (``+=`` is not atomic, and a
        copy over FC counts in a thread of its own, outside the array's lock)."""
        with self._moved_lock:
            self.moved_bytes += nbytes
            return self.moved_bytes

    def mgmt_moved(self, caller: str) -> int:
        """Bytes this array's copies have moved so far (a counter that only grows: progress
        bars and `when:` faults read it as steps go).  Anyone may ask: it says nothing about
        the data."""
        return self.moved_bytes

    def trip_arm(self, at: int) -> None:
        """Stop the copy whose batch brings `mgmt_moved` to `at` or past it, before its next
        batch, until `trip_release` (a fault striking mid-copy: `san.tripwire`).  The
        simulator's own hand, like `hold_copies`: not a management command, so not on the LAN
        (the actor runs it beside the I/O thread all the same)."""
        self.trip.arm(at)

    def trip_release(self) -> None:
        self.trip.release()

    def _job(self, job: int) -> CopyJob:
        if job not in self.jobs:
            self._job_ids.lost(job)
            raise SanError("INVALID_INPUT", f"{self.name} has no copy job {job}")
        return self.jobs[job]

    def copy_owed(self, number: int, offset: int, length: int) -> None:
        """Before bytes [offset, offset+length) of volume `number` change: every running job
        from it copies the granules there that it still owes (the point-in-time promise)."""
        g0, g1 = offset // self.granule, (offset + length - 1) // self.granule
        for job in list(self.jobs.values()):
            if job.state == "running" and job.source == number and job.pending and job.dest_array is None:
                for g in range(g0, g1 + 1):
                    if g in job.pending:
                        self._copy_granule(job, g)

    def _running(self, number: int) -> CopyJob | None:
        """A running job that `number` is the destination or the source of, destinations first."""
        running = [j for j in list(self.jobs.values()) if j.state == "running"]
        return (next((j for j in running if j.dest == number and j.dest_array is None), None)
                or next((j for j in running if j.source == number), None))

    def _check_whole(self, source: int, kind: str) -> None:
        """BUSY while a copy into `source` runs (a restore onto it, a mirror or copy into it,
        here or over FC from another array): its bytes are half old, half new until it ends,
        and a `kind` from it (a copy, a snapshot) would keep that mix as if it were whole."""
        job = self._running(source)
        if job is not None and job.dest == source and job.dest_array is None:
            raise SanError("BUSY", f"{self.name} volume {source} is still being written by a "
                                   f"running {job.kind} from volume {job.source}")
        self._check_not_written_over_fc(source, kind)

    def _plan(self, source: int, dest: int, kind: str) -> tuple[list[int], int]:
        """(the granules to copy from `source` onto `dest`, in order; destination bytes read
        to check them).

        The stored checksums are collision-resistant, so granules whose checksums agree hold
        the same bytes as far as the map knows; what the map cannot know is rot on disk.  So:
        granules whose checksums differ are copied, and so are those the destination knows to
        be bad (found by a scrub or a read); a restore or volume copy, which promises a
        destination equal to its source byte for byte, also reads the destination's other
        granules and copies those that fail their checksum (rot nobody had seen).  A mirror
        does not pay that read: a bad granule it does not know of is reported by the next read.
        A source with known-bad granules is refused: its data there is lost, and no backup
        may claim to hold it.
        """
        src, dst = self.reader(source), self.stores[dest]
        bad = set(dst.bad_granules())
        exact = kind in ("restore", "copy")
        if isinstance(src, VolumeStore):
            self._refuse_known_rot(source, kind)
            differ, same = src.compare(dst, same=exact)
            copy = set(differ) | bad
            checked = []
            if exact:
                checked = sorted(set(same) - copy)
                copy.update(dst.verify(checked))
            return sorted(copy), self._nbytes(dest, checked)
        if self.snaps.source_of(source) == dest:
            # restoring a snapshot onto its own source: the granules written since the
            # snapshot are compared byte for byte; the others are *shared* by the two, so rot
            # there is rot in the backup itself, and the restore cannot repair it (known rot
            # there too: refused before anything moves, not by the batch that reaches it)
            plan = set(self.snaps.restore_plan(source))
            shared = sorted(g for g in self.snaps.shared_granules(source) if g not in plan)
            rotten = sorted(set(dst.verify([g for g in shared if g not in bad]))
                            | {g for g in shared if g in bad})
            copy = plan | bad
            if rotten:
                raise self._shared_rot(source, dest, rotten)
            return sorted(copy), self._nbytes(dest, shared)
        # any other snapshot: every granule either side holds is copied (and so read)
        self._refuse_known_rot(source, kind)
        return sorted(set(src.written_granules()) | set(dst.written_granules())), 0

    def _refuse_known_rot(self, source: int, kind: str) -> None:
        """CHECKSUM_MISMATCH, before anything moves, if `source` holds bytes known to fail
        their checksum (found by a scrub or a read): a volume's known-bad granules, or those a
        snapshot shares with its source that the source knows to be bad.  The data there is
        lost, and no backup may claim to hold it; refused at the start, the destination keeps
        its old backup and volume info, rather than losing them to a copy that fails midway."""
        if source in self.stores:
            bad = self.stores[source].bad_extents()
            if bad:
                start, length = bad[0]
                raise SanError("CHECKSUM_MISMATCH",
                               f"{self.name} volume {source}: bytes {start}..{start + length - 1} "
                               f"fail their checksum; it cannot be the source of a {kind}")
            return
        origin = self.snaps.source_of(source)
        known = set(self.stores[origin].bad_granules()) if origin in self.stores else set()
        lost = sorted(known.intersection(self.snaps.shared_granules(source))) if known else []
        if lost:
            raise self._shared_rot(source, origin, lost, f"; it cannot be the source of a {kind}")

    def _shared_rot(self, snap: int, origin: int, granules: list[int], why: str = "") -> SanError:
        """CHECKSUM_MISMATCH naming the first range of `granules` that snapshot `snap` shares
        with its source `origin` and that fail their checksum there."""
        start, length = granule_extents(granules, self.granule, lambda g: self._glen(origin, g))[0]
        return SanError("CHECKSUM_MISMATCH",
                        f"{self.name} volume {snap} (a snapshot of volume {origin}): bytes "
                        f"{start}..{start + length - 1} it shares with volume {origin} fail "
                        f"their checksum{why}")

    def _start(self, source: int, dest: int, kind: str, with_info: bool = False,
               expect: bytes | None = None) -> CopyJob:
        """Check and start a copy job from `source` to `dest` (the lock is held); `expect`,
        if given, is the volume info `source` must hold (`check_holds`)."""
        self.check_holds(source, expect)
        src = self.reader(source)
        if dest not in self.stores:
            self.reader(dest)
            raise SanError("READ_ONLY", f"{self.name} volume {dest} is a snapshot and cannot be "
                                        f"the destination of a {kind}")
        if source == dest:
            raise SanError("INVALID_INPUT", f"{self.name}: a {kind} needs two volumes (got {source} twice)")
        if src.size != self.stores[dest].size:
            raise SanError("CAPACITY_MISMATCH", f"{self.name}: volume {source} is {src.size} bytes "
                                                f"but volume {dest} is {self.stores[dest].size}")
        self._check_not_busy(dest, f"the destination of a {kind}")
        self._check_whole(source, kind)
        plan, checked = self._plan(source, dest, kind)
        # the destination's old backup, if it holds one, is being overwritten: its record
        # goes now, so an interrupted copy claims nothing; a restore writes none after (a
        # restored volume is no backup), but a target that held one (a mapped volume that is
        # also a copy destination) must not keep naming the old backup over the new bytes
        self.delete_info(dest)
        job = CopyJob(self._job_ids.next(), kind, source, dest, set(plan), plan[::-1],
                      total=self._nbytes(dest, plan), with_info=with_info,
                      checked=checked)
        self.jobs[job.id] = job
        return job

    def _launch(self, job: CopyJob) -> dict:
        """Run a job just started (the lock is *not* held) and return its status.

        A job of at most `INLINE` bytes runs here, in the thread that ordered it, unless
        copies are held: it is over when the order is answered (state ``done`` or
        ``failed``), with no thread to start; a caller that does not need its transfers or
        its error need not wait for it.  That keeps a resync of a few changed granules a small
        fraction of a full copy.  A larger job runs in a thread of its own."""
        if self.autostart:
            if job.total <= INLINE and self.copies_go.is_set():
                self._run(job, granules=max(BATCH, len(job.order)))    # one gather, one scatter
            else:
                threading.Thread(target=self._run, args=(job,), name=f"{self.name}-{job.kind}-{job.id}",
                                 daemon=True).start()
        return job.status()

    def _nbytes(self, number: int, gs) -> int:
        """Bytes of distinct granules `gs` (ascending) of a volume: only the last granule
        of the volume may be short (a plan of 4096 granules summed granule by granule took
        milliseconds, through a size lookup each)."""
        return granules_nbytes(gs, self.granule, lambda g: self._glen(number, g))

    def _glen(self, number: int, g: int) -> int:
        """Bytes of granule `g` of a volume (the last one of an odd-sized volume is short)."""
        return min(self.granule, self.size_of(number) - g * self.granule)

    def _extent(self, number: int, run: list[int]) -> tuple[int, int]:
        """(offset, length) of consecutive granules `run` of a volume."""
        return run[0] * self.granule, (run[-1] - run[0]) * self.granule + self._glen(number, run[-1])

    def _copy_granule(self, job: CopyJob, g: int) -> None:
        self._copy_granules(job, [g])

    def _copy_granules(self, job: CopyJob, gs: list[int]) -> None:
        """Copy granules `gs` (ascending, any spacing) of a job now (the lock is held): one
        read of them all, one write of those holding data; all-zero ones are freed on the
        destination, keeping the copy thin.

        From a volume, the read hands over the checksums it verified: zero granules are told
        by them and the destination stores them as they are, so each byte is hashed once."""
        for run in runs(gs):        # before anything is read
            self._before_write(job.dest, *self._extent(job.dest, run))
        with self._read_for_copy(job.source, gs) as (pieces, cs):
            nonzero = self._nonzero(pieces, cs)
            if all(nonzero):
                self.stores[job.dest].scatter(gs, pieces, cs)
            elif any(nonzero):
                keep = [i for i, full in enumerate(nonzero) if full]
                self.stores[job.dest].scatter([gs[i] for i in keep], self._kept(pieces, nonzero),
                                              None if cs is None else cs[keep])
            del pieces
        for run in runs(g for g, full in zip(gs, nonzero) if not full):
            self._store_zero(job.dest, *self._extent(job.dest, run))
        done = self._nbytes(job.dest, gs)
        job.pending.difference_update(gs)
        job.copied += done
        self._moved(done)

    def _kept(self, pieces: list[np.ndarray], keep: list[bool]) -> list[np.ndarray]:
        """The parts of `pieces` (granules laid end to end, as `_read_for_copy` gives them)
        holding the granules flagged in `keep`: views, nothing copied."""
        G, out, i = self.granule, [], 0
        for piece in pieces:
            n = -(-len(piece) // G)
            for run in runs(k for k in range(i, i + n) if keep[k]):
                out.append(piece[(run[0] - i) * G: min((run[-1] - i + 1) * G, len(piece))])
            i += n
        return out

    @contextlib.contextmanager
    def _read_for_copy(self, number: int, gs: list[int]):
        """(the bytes of granules `gs` of volume `number`, as pieces of consecutive granules
        laid end to end; their checksums, or None when the source is a snapshot, which is
        read as a host would), valid inside the ``with``.  Granules of a volume are its data
        file's pages mapped, verified (`VolumeStore.mapped_granules`, `mapped_gather`): the
        destination's ``pwrite`` copies each byte once."""
        G = self.granule
        if number in self.stores:
            store = self.stores[number]
            if gs and gs[-1] - gs[0] == len(gs) - 1:
                with store.mapped_granules(*self._extent(number, gs), verify=True) as (data, cs):
                    yield [data], cs
                    del data
            else:
                with store.mapped_gather(gs, verify=True) as got:
                    yield got
            return
        # a snapshot, read as a host would, into a reused buffer whose pages stay mapped
        if len(self._copy_buf) < len(gs) * G:
            self._copy_buf = np.empty(len(gs) * G, dtype=np.uint8)
        pieces, at = [], 0
        for run in runs(gs):
            offset, n = self._extent(number, run)
            piece = self._copy_buf[at: at + n]
            piece[:] = self.read_volume(number, offset, n)
            pieces.append(piece)
            at += n
        yield pieces, None

    def _nonzero(self, pieces: list[np.ndarray], cs) -> list[bool]:
        """Per granule of `pieces` (granules of a volume laid end to end, as `_read_for_copy`
        gives them): does it hold anything?"""
        G = self.granule
        if cs is not None:
            return holds_data(cs, sum(len(p) for p in pieces), G)
        flags: list[bool] = []
        for data in pieces:
            n, short = divmod(len(data), G)
            # 8 bytes at a time: a granule is a multiple of 512 bytes
            flags += data[:n * G].view(np.uint64).reshape(n, G // 8).any(axis=1).tolist()
            if short:
                flags.append(bool(data[n * G:].any()))
        return flags

    def hold_copies(self, hold: bool = True) -> None:
        """Hold every copy job of this array before its next batch (True), or let them go on:
        how tests and fault injection strike while a copy is known to be half done."""
        (self.copies_go.clear if hold else self.copies_go.set)()

    def step(self, job: CopyJob, granules: int = BATCH) -> bool:
        """Copy up to `granules` more granules of a job; False once it has none left."""
        self.copies_go.wait()
        with self._lock:
            batch = []
            while job.order and len(batch) < granules:
                g = job.order.pop()  # `order` is kept reversed: pop() takes the lowest
                if g in job.pending:
                    batch.append(g)
            if batch:
                self._copy_granules(job, batch)
            more = bool(job.pending)
        self.trip.passed(self.moved_bytes)      # outside the lock: a fault may need it
        return more

    def finish(self, job: CopyJob) -> None:
        """The end of a job whose granules are all copied: its volume info, its state."""
        with self._lock:
            if job.state == "failed":       # ended meanwhile (the array went down)
                return
            job.transfers = [Transfer((f"{self.name}/copy",), job.copied)]
            if job.checked:   # reading the destination to make sure: time, not payload
                job.transfers.append(Transfer((f"{self.name}/copy",), job.checked, counted=False))
            if job.with_info:
                info = self.read_info(job.source)
                if info is not None:
                    self.record_info(job.dest, info)
            job.state = "done"
        job.done.set()

    def fail(self, job: CopyJob, exc: Exception) -> None:
        with self._failing:             # the job's thread and an array going down, at once
            self._fail(job, exc)

    def _fail(self, job: CopyJob, exc: Exception) -> None:
        if job.state == "failed":       # the first failure is the one its waiter hears of
            return
        job.error = exc if isinstance(exc, SanError) else InternalError.of(
            f"the {job.kind} {job.source} -> {job.dest}", exc)
        # what it moved before it failed is charged to the step waiting for it (`SanError.
        # partial`): on the route a copy over FC set in `transfers`, else on the copy engine.
        # Not for an array going down: on Ray its process is gone, and no waiter hears a figure
        if job.copied and job.error.partial is None and job.error.code != "ELEMENT_DOWN":
            job.error.partial = {"transfers": list(job.transfers)
                                 or [Transfer((f"{self.name}/copy",), job.copied)]}
        job.state = "failed"
        job.done.set()

    def _run(self, job: CopyJob, granules: int = BATCH) -> None:
        try:
            while self.step(job, granules):
                pass
            self.finish(job)
        except Exception as exc:  # a failure (or a bug) must end the job and reach the waiter
            self.fail(job, exc)

    def end_jobs(self) -> None:
        """This array is going down: every running job fails ELEMENT_DOWN (its waiters hear it
        now) and a thread stopped at the tripwire goes on, to find the stores closed."""
        for job in list(self.jobs.values()):
            if job.state == "running":
                self.fail(job, SanError("ELEMENT_DOWN", f"{self.name} went down during the "
                                                        f"{job.kind} of volume {job.source}"))
        self.trip.release()

    def wait_all(self) -> None:
        for job in list(self.jobs.values()):
            job.done.wait()
