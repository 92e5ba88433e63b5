"""The client host: its HBAs, its port table (mounts) and the initiator side of SCSI.

A host reaches a volume through a mount of its port table (Fig. 3): mount point ->
(array port, LUN).  It sends I/O through the first of its HBAs, in listed order, that the
fabric grants a path from; when none does, the first HBA's failure is reported (so a dead
primary path says LINK_DOWN rather than whatever the spare HBA lacks).  This module is the
plain logic; `san.flows.client_host` runs the I/O loop (chunks, window, payloads).  What the
initiator parses (INQUIRY data, VPD page 0x83) and how it addresses blocks is `san.scsi`'s.
`PatternChunks` makes the `write` op's data, chunk after chunk, at the cost of stamping it.

Multipath.  The fabric tells a host of every state change that can touch its paths (as an
FC switch sends an RSCN): `Host.fabric_event` bumps the host's *fabric epoch*.  An `IoPath`
remembers the epoch it was granted at, so before each chunk the I/O loop knows, with one
comparison, whether the fabric changed since; then it takes a path again (the first HBA
granted, in listed order: failback once the preferred one is back) and resends, in order,
every chunk not yet acknowledged.  Each WRITE carries a number from its transfer's numbering
(`Sequencer`) that the array checks (`san.elements.sequences`), so a WRITE sent twice is applied once.
"""
from __future__ import annotations

import itertools
import secrets
import threading
import time
from contextlib import contextmanager

import numpy as np

from ..errors import SanError
from ..pattern import BASE, pattern
from ..timemodel import Transfer
from ..units import BLOCK
# The initiator's SCSI parsers and block addressing live in san.scsi beside the target's
# encoders; re-exported here for the modules that import them from this one.
from ..scsi import blocks_of, parse_device_identification, parse_standard_inquiry  # noqa: F401

__all__ = ["ClientHost", "Gate", "IoPath", "Sequencer", "first_granted", "chunks", "PatternChunks",
           "carry", "transfers_of", "blocks_of", "parse_device_identification",
           "parse_standard_inquiry"]


class ClientHost:
    """One host: mounts by mount point, HBAs in order."""

    def __init__(self, spec):
        self.spec = spec
        self.name = spec.name
        self.mounts = {m.mount_point: m for m in spec.mounts}
        self.hbas = [f"{spec.name}/{h.name}" for h in spec.hbas]
        self.hba_switch = {f"{spec.name}/{h.name}": h.switch for h in spec.hbas}

    def mount(self, mount_point: str):
        try:
            return self.mounts[mount_point]
        except KeyError:
            raise SanError("NO_SUCH_MOUNT", f"{self.name} has no mount {mount_point!r} "
                                            f"(mounts: {', '.join(sorted(self.mounts)) or 'none'})") from None

    def first_granted(self, grant):
        """The route of the first of this host's HBAs, in listed order, that `grant` accepts."""
        return first_granted(self.hbas, grant, self.name)

    @staticmethod
    def target(mount) -> tuple[str, str, int]:
        """(array, port, LUN) of a mount."""
        array, port = mount.port.split("/")
        return array, port, mount.lun


class IoPath:
    """Where one host call's I/O to a LUN goes: the granted `route`, the `array` (a peer), the
    `port` and `lun` there, the `target` port (`ARRAY/PORT`) and the fabric `epoch` the route
    was granted at.  It unpacks as (route, array, port, lun).  A transfer that finds the
    fabric changed moves it to the route granted now, in place, so the rest of the call
    follows it."""
    __slots__ = ("route", "array", "port", "lun", "target", "epoch")

    def __init__(self, route, array, port: str, lun: int, target: str, epoch: int):
        self.route, self.array, self.port, self.lun = route, array, port, lun
        self.target, self.epoch = target, epoch

    def _parts(self) -> tuple:
        return (self.route, self.array, self.port, self.lun)

    def __iter__(self):
        return iter(self._parts())

    def __getitem__(self, i):
        return self._parts()[i]

    def __len__(self) -> int:
        return 4


class Sequencer:
    """The numbers a host gives its WRITEs: per transfer (`transfer`), a session drawn for it
    and a count from 0, taken in the order the transfer sends them; a WRITE sent again keeps
    its number.  The array recognizes a WRITE it applied already, per session
    (`san.elements.sequences`); a session per transfer, not per host, so that two transfers
    to one LUN at once never make gaps in each other's numbers."""

    def transfer(self):
        """The numbering of one transfer: a function giving (session, number) for each next
        WRITE it sends."""
        session, numbers = secrets.randbits(63), itertools.count()
        return lambda: (session, next(numbers))


class Gate:
    """The door application writes to one mount pass through (pre/post `quiesce`, `resume`).

    `quiesce` closes the door and waits until the writes already inside have finished (as
    fsfreeze does), so what follows (a flush, a backup) sees no write half done; writes that
    arrive while it is closed wait until `resume` (at most `timeout` seconds, then BUSY).

    A quiesce may name its `owner` (a backup server's flow: ``(server, session)``).  A write
    kept waiting asks `alive(owner)` every `check_every` seconds about each owner holding the
    door, and a quiesce whose owner has died (the server killed mid-flow: its `resume` will
    never come) is dropped, as an agent on a real host gives up on a dead backup server.  The
    asking is done with the door's lock released: it may be a remote call.
    """

    def __init__(self, name: str, timeout: float = 600.0, alive=None, check_every: float = 2.0):
        self.name = name
        self.timeout = timeout
        self.alive = alive
        self.check_every = check_every
        self._cond = threading.Condition()
        self._holders: list = []        # one owner (or None) per quiesce not yet resumed
        self._inside = 0

    @contextmanager
    def write(self):
        deadline = time.monotonic() + self.timeout
        with self._cond:
            while not self._open:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SanError("BUSY", f"{self.name} stayed quiesced for {self.timeout:.0f} s "
                                           "(a quiesce without its resume?)")
                if not self._cond.wait(min(left, self.check_every)):
                    self._drop_dead_owners()
            self._inside += 1
        try:
            yield
        finally:
            with self._cond:
                self._inside -= 1
                self._cond.notify_all()

    def _drop_dead_owners(self) -> None:
        """Drop the quiesces whose owner is dead (the condition's lock is held on entry and
        on return, released while the owners are asked)."""
        owners = {o for o in self._holders if o is not None}
        if not owners or self.alive is None:
            return
        self._cond.release()
        try:
            dead = {o for o in owners if not self.alive(o)}
        finally:
            self._cond.acquire()
        if dead:
            self._holders = [o for o in self._holders if o not in dead]
            self._cond.notify_all()

    def quiesce(self, owner=None) -> None:
        """Close the door (counted: two overlapping backups each quiesce and resume once)."""
        with self._cond:
            self._holders.append(owner)
            self._cond.wait_for(lambda: self._inside == 0)

    def resume(self, owner=None) -> None:
        """Reopen the door once for `owner`: its own quiesce, nobody else's (a resume whose
        quiesce never came, or was dropped as its owner's flow died, does nothing)."""
        with self._cond:
            if owner in self._holders:
                self._holders.remove(owner)
                self._cond.notify_all()

    @property
    def _open(self) -> bool:
        return not self._holders

    @property
    def quiesced(self) -> bool:
        return not self._open


def first_granted(ports, grant, owner: str):
    """The route of the first port, in listed order, that `grant(port)` gives a path from.

    `grant` raises a `SanError` for a port without a path; when every port fails, the first
    failure of a port zoned with the target is raised (path order: the primary path's reason
    is the useful one, and a port that is not zoned with the target was never a path to it:
    with each HBA zoned to one port, a dead link is LINK_DOWN, not the other HBA's
    ZONING_DENIED), else the first failure.  The switch says whether a pair is zoned
    (``SanError.zoned``) whatever failed first.  Hosts use it over their HBAs, arrays over
    their FC ports when they act as initiators.
    """
    failures = []
    for port in ports:
        try:
            return grant(port)
        except SanError as exc:
            failures.append(exc)
    if not failures:
        raise SanError("LINK_DOWN", f"{owner} has no FC port")
    raise next((e for e in failures if getattr(e, "zoned", True)), failures[0])


def chunks(offset: int, size: int, chunk: int):
    """(offset, length) pieces of at most `chunk` bytes covering [offset, offset + size)."""
    end = offset + size
    while offset < end:
        length = min(chunk, end - offset)
        yield offset, length
        offset += length


def carry(carried: dict, transfers: list[Transfer], toward_target: bool) -> None:
    """Add the bytes of `transfers` (block I/O of one direction) to `carried`, a dict of
    (toward target, link resources) -> bytes."""
    for t in transfers:
        key = (toward_target, t.resources)
        carried[key] = carried.get(key, 0) + t.nbytes


def transfers_of(carried: dict, before: dict | None = None) -> list[Transfer]:
    """The transfers of what `carried` holds beyond `before`: writes first, then reads, each
    on its routes in the order they were first used."""
    before = before or {}
    moved = [(key, n - before.get(key, 0)) for key, n in carried.items()]
    return [Transfer(resources, n) for toward in (True, False)
            for (way, resources), n in moved if way == toward and n]


class PatternChunks:
    """`pattern(seed, offset, length)` for the chunks of one transfer, made in reused buffers.

    The pattern is the seed's block laid end to end, each 512-byte sector stamped with its
    offset and the seed; two chunks of one length whose offsets are the same distance past
    a multiple of the block (their phase) differ only in the offset stamps.  So a buffer is
    filled once per (length, phase), and each later chunk of that kind only re-stamps its
    8-byte offsets (1/64 of its bytes).  Chunks of 4 MiB from a 1 MiB-aligned offset all have
    one phase; 256 KiB chunks have four.  Buffers of at most `KEEP` bytes in all are kept
    (or the last one, if larger).  The array returned is only valid until the next call:
    callers send it at once (a `Payload` is put into Ray's object store, or consumed, by
    `start`).
    """

    KEEP = 32 << 20

    def __init__(self, seed: int):
        self.seed = seed
        self._buffers: dict[tuple[int, int], tuple] = {}   # (length, phase) -> buffer, stamps, steps
        self._kept = 0

    def __call__(self, offset: int, length: int) -> np.ndarray:
        if offset % BLOCK or length % BLOCK or offset < 0 or length <= 0:
            return pattern(self.seed, offset, length)    # its checks, its error
        key = (length, offset % BASE)
        held = self._buffers.get(key)
        if held is None:
            buf = pattern(self.seed, offset, length)
            if self._kept + length > self.KEEP:        # the newest is kept whatever its size
                self._buffers.clear()
                self._kept = 0
            stamps = buf.view(np.uint64)[::BLOCK // 8]      # the first 8 bytes of each sector
            self._buffers[key] = (buf, stamps, np.arange(0, length, BLOCK, dtype=np.uint64))
            self._kept += length
            return buf
        buf, stamps, steps = held
        np.add(steps, np.uint64(offset), out=stamps)
        return buf
