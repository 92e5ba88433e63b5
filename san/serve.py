"""`san serve`: host mounts as network block devices, for standard tools, through the fabric.

The NBD protocol is `san.nbd`'s, which knows nothing of the SAN.  This module is the SAN's
side of it: a `MountExport` per served mount turns each client request into that host's own
I/O, so a client's READ goes host -> switch -> array like any READ of the host: zoning,
masking, read-only volumes, link and element faults and checksums all apply, and a failure
comes back as an NBD error (`errno_of`).  The driver (`san serve` in `san.cli`) holds the
exports; the host actor does the I/O.

Small requests travel together.  Clients such as ``nbdcopy`` keep many 256 KiB requests in
flight, and Ray moves payloads of 100 KiB-1 MiB slowly: an export queues the requests the
server hands it (in the order they arrived) and sends requests of one kind that follow each
other on the volume as one host call of up to ``batch`` bytes, with at most ``window`` calls
in flight (the host splits a call into commands of its chunk size, as for any transfer).
Each host call costs a round trip to the host and one to the array (its checks) before data
moves, so larger calls go faster: with nbdcopy's 4 MiB requests, calls of up to 32 MiB moved
about 320 MiB/s here against 260 MiB/s for one call per request.  A request never passes an earlier one it overlaps (a write waits for every
earlier request on its bytes, a read for earlier writes), so writes apply in the order the
client sent them.

Modeled time: a serve session is one concurrent step.  Each export's host calls are one
chain of transfers (their bytes per route, `san.elements.client_host.carry`); the session's
modeled time is those chains simulated together on the SAN's links, and the simulated clock
(``STATE_DIR/clock``) is the session's start plus that, saved at every flush and at the end.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import errno
import socket
import threading
import time
from collections import deque

import numpy as np

from .elements.client_host import carry, transfers_of
from .errors import SanError
from .flows.peers import Payload
from .nbd import STATE_HOLE, STATE_ZERO, Export, ExportError
from .timemodel import simulate

__all__ = ["choose_exports", "export_name", "errno_of", "MountExport", "Session"]

# What a SAN error becomes for an NBD client: a write the array refuses as read-only is
# EPERM (as the protocol says for a read-only export), a range past the end EINVAL; whatever
# else failed (a link or element down, a checksum mismatch, zoning, a read of a snapshot
# broken by a full pool: POOL_FULL, its data lost) is an I/O error.  A write is never refused
# for a full pool: the array breaks the snapshots that needed the old data instead.
CLOSE_GRACE = 30.0   # s the requests under way get at exit, before their clients are cut off

_ERRNO = {"READ_ONLY": errno.EPERM, "LBA_OUT_OF_RANGE": errno.EINVAL, "INVALID_INPUT": errno.EINVAL}


def errno_of(exc: SanError) -> int:
    return _ERRNO.get(exc.code, errno.EIO)


def export_name(host: str, mount_point: str) -> str:
    """The NBD export name of a host mount: ``HOST:MOUNT`` (``host1:/db``)."""
    return f"{host}:{mount_point}"


def choose_exports(topology, wanted: list[str] | None) -> list[tuple[str, str]]:
    """The (host, mount point) pairs to serve: those `wanted` names as ``HOST:MOUNT``, in the
    order given, or every mount of every host in topology order.  INVALID_INPUT names every
    unknown or repeated one at once, with the exports there are."""
    every = [(h.name, m.mount_point) for h in topology.hosts for m in h.mounts]
    if not wanted:
        return every
    known = {export_name(h, m): (h, m) for h, m in every}
    chosen, bad, seen = [], [], set()
    for name in wanted:
        if name not in known:
            bad.append(f"{name!r} is not a mount of a host")
        elif name in seen:
            bad.append(f"{name!r} is given twice")
        else:
            seen.add(name)
            chosen.append(known[name])
    if bad:
        raise SanError("INVALID_INPUT", f"--export: {'; '.join(bad)} (exports: "
                                        f"{', '.join(known) or 'none'})")
    return chosen


class Session:
    """What one serve session did, for its report and modeled time.

    `clock` is the SAN's `san.runner.Clock`; `capacity` the link capacities of the topology
    (`san.links.capacities`).  Thread-safe: exports charge it from the driver's I/O threads."""

    def __init__(self, clock, capacity: dict, wall=time.perf_counter):
        self.clock = clock
        self.capacity = capacity
        self.started_at: dt.datetime = clock.now
        self._wall = wall
        self._wall0 = wall()
        self._lock = threading.Lock()
        self._saving = threading.Lock()           # one clock save at a time (`checkpoint`)
        self.exports: dict[str, dict] = {}        # name -> counters
        self._carried: dict[str, dict] = {}       # name -> (toward target, resources) -> bytes

    def add(self, name: str, host: str, mount_point: str, size: int, read_only: bool) -> None:
        self.exports[name] = {"host": host, "mount": mount_point, "size": size,
                              "read_only": read_only, "read_bytes": 0, "written_bytes": 0,
                              "trimmed_bytes": 0, "requests": 0, "host_calls": 0, "flushes": 0,
                              "errors": 0, "last_error": None, "refused": 0}
        self._carried[name] = {}

    def count(self, name: str, **add) -> None:
        with self._lock:
            row = self.exports[name]
            for key, n in add.items():
                row[key] += n

    def charge(self, name: str, transfers, toward_target: bool) -> None:
        """Add a host call's transfers to the export's chain."""
        with self._lock:
            carry(self._carried[name], transfers, toward_target)

    def failed(self, name: str, exc: SanError) -> None:
        with self._lock:
            row = self.exports[name]
            row["errors"] += 1
            row["last_error"] = exc.to_dict()

    def modeled_s(self) -> float:
        """The session's modeled time so far: every export's transfers, as one concurrent step."""
        with self._lock:
            chains = [transfers_of(c) for c in self._carried.values()]
        chains = [c for c in chains if c]
        return simulate(chains, self.capacity).end if chains else 0.0

    def checkpoint(self) -> None:
        """Save the clock: the session's start plus its modeled time so far.  FLUSHes of
        several connections save at once: one at a time (they shared the clock file's
        staging copy, and a FLUSH whose save lost the race failed), each computing its time
        in turn, so the saved clock never goes back."""
        with self._saving:
            self.clock.set(self.started_at + dt.timedelta(seconds=self.modeled_s()))

    def report(self) -> dict:
        modeled = self.modeled_s()
        with self._lock:
            exports = {name: dict(row) for name, row in self.exports.items()}
        return {"op": "serve", "exports": exports,
                "bytes": sum(r["read_bytes"] + r["written_bytes"] for r in exports.values()),
                "modeled_s": round(modeled, 6), "wall_s": round(self._wall() - self._wall0, 4),
                "clock": {"start": self.started_at.isoformat(),
                          "end": (self.started_at + dt.timedelta(seconds=modeled)).isoformat()}}


class _Request:
    __slots__ = ("kind", "offset", "length", "data", "future")

    def __init__(self, kind: str, offset: int, length: int, data, future):
        self.kind, self.offset, self.length, self.data, self.future = kind, offset, length, data, future

    @property
    def end(self) -> int:
        return self.offset + self.length


class MountExport(Export):
    """One host mount as an NBD export (`san.nbd.Export`), its I/O done by the host.

    `peer()` looks the host element up (`san.flows.peers.Peer`; looked up again after an
    ELEMENT_DOWN, in case it was restarted); `blocking(fn, *args)`
    runs a blocking call off the event loop and returns an awaitable (the driver's thread
    pool).  `info` is the host's `export_info` of the mount.  Every connection to it shares
    it (its queue, and so its merging), so a write through one connection is what a read
    through another sees, and a flush covers them all: `multi_conn`."""

    multi_conn = True

    def __init__(self, host: str, mount_point: str, info: dict, peer, blocking, session: Session,
                 batch: int = 32 << 20, window: int = 4):
        self.host, self.mount = host, mount_point
        self.name = export_name(host, mount_point)
        self.size = int(info["size"])
        self.read_only = not info["writable"]
        self.description = f"{host} mount {mount_point}"
        self._lookup = peer
        self._peer = None
        self._blocking = blocking
        self.session = session
        self.batch, self.window = batch, window
        self._queue: deque[_Request] = deque()
        self._inflight: list[_Request] = []        # of the host calls under way
        self._calls = 0
        self._tasks: set[asyncio.Task] = set()     # the loop keeps only weak references
        session.add(self.name, host, mount_point, self.size, self.read_only)

    # -- the host, called off the event loop ----------------------------------------------------
    async def _host(self, method: str, *args, counted: bool = True):
        """Call the host; a SAN error is the client's `ExportError` (and, if `counted`, one
        of the session's errors)."""
        def call():
            try:
                if self._peer is None:
                    self._peer = self._lookup()
                return self._peer.call(method, *args)
            except SanError as exc:
                if exc.code == "ELEMENT_DOWN":
                    self._peer = None
                if counted:
                    self.session.failed(self.name, exc)
                raise ExportError(errno_of(exc), str(exc)) from None
        return await self._blocking(call)

    # -- requests, queued and sent together ------------------------------------------------------
    def _enqueue(self, kind: str, offset: int, length: int, data=None) -> asyncio.Future:
        """Queue a request now (its place is taken before the caller first awaits: the NBD
        server starts each request's coroutine in the order the client sent them); its
        answer's future."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(kind, offset, length, data, future))
        self._pump()
        return future

    async def _submit(self, kind: str, offset: int, length: int, data=None):
        return await self._enqueue(kind, offset, length, data)

    def _blocked(self, req: _Request) -> bool:
        """Does `req` overlap a request under way, one of the two changing the volume (a
        write or an unmap)?  Two reads may pass each other."""
        for other in self._inflight:
            if other.offset < req.end and req.offset < other.end and \
                    (req.kind != "read" or other.kind != "read"):
                return True
        return False

    def _pump(self) -> None:
        """Send what may go now: the oldest queued requests first, never one past an earlier
        one it overlaps, adjacent requests of one kind in one call."""
        while self._queue and self._calls < self.window:
            head = self._queue[0]
            if self._blocked(head):
                return
            batch = [self._queue.popleft()]
            total = head.length
            while self._queue and head.kind != "unmap":
                nxt = self._queue[0]
                if nxt.kind != head.kind or nxt.offset != batch[-1].end or \
                        total + nxt.length > self.batch or self._blocked(nxt):
                    break
                batch.append(self._queue.popleft())
                total += nxt.length
            self._calls += 1
            self._inflight.extend(batch)
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Request]) -> None:
        try:
            if batch[0].kind == "read":
                try:
                    result = await self._read_call(batch[0].offset, batch[-1].end - batch[0].offset,
                                                   counted=len(batch) == 1)
                except ExportError:
                    if len(batch) == 1:
                        raise
                    # each request alone: only those that touch what failed (a granule that
                    # fails its checksum, say) get the error, and a client's message names
                    # the right offset, not the start of the merged read
                    await self._each_alone(batch)
                    return
                for req in batch:
                    if not req.future.done():
                        at = req.offset - batch[0].offset
                        req.future.set_result(result[at:at + req.length])
            elif batch[0].kind == "unmap":
                await self._unmap_call(batch[0].offset, batch[0].length)
                if not batch[0].future.done():
                    batch[0].future.set_result(None)
            else:
                await self._write_call(batch)
                for req in batch:
                    if not req.future.done():
                        req.future.set_result(None)
        except BaseException as exc:             # each request of the call gets its error
            for req in batch:
                if not req.future.done():
                    req.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._calls -= 1
            for req in batch:
                self._inflight.remove(req)
            self._pump()

    async def _each_alone(self, batch: list[_Request]) -> None:
        """Read each request of a merged read that failed on its own, in turn."""
        for req in batch:
            try:
                data = await self._read_call(req.offset, req.length)
            except ExportError as exc:
                if not req.future.done():
                    req.future.set_exception(exc)
                continue
            if not req.future.done():
                req.future.set_result(data)

    async def _read_call(self, offset: int, length: int, counted: bool = True) -> np.ndarray:
        data, transfers = await self._host("read", self.mount, offset, length, counted=counted)
        self.session.charge(self.name, transfers, False)
        self.session.count(self.name, read_bytes=length, host_calls=1)
        return data

    async def _write_call(self, batch: list[_Request]) -> None:
        if len(batch) == 1:
            data = batch[0].data
        else:
            data = np.concatenate([np.frombuffer(r.data, dtype=np.uint8) for r in batch])
        transfers = await self._host("write_data", self.mount, batch[0].offset, Payload(data))
        self.session.charge(self.name, transfers, True)
        self.session.count(self.name, written_bytes=len(data), host_calls=1)

    # -- the `san.nbd.Export` interface --------------------------------------------------------
    async def read(self, offset: int, length: int):
        self.session.count(self.name, requests=1)
        return await self._submit("read", offset, length)

    async def write(self, offset: int, data) -> None:
        self.session.count(self.name, requests=1)
        arr = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
        await self._submit("write", offset, len(arr), arr)

    async def _drain(self) -> None:
        """Wait until every request queued or sent so far is answered."""
        waiting = [r.future for r in list(self._queue) + self._inflight]
        if waiting:
            await asyncio.gather(*waiting, return_exceptions=True)

    async def flush(self) -> None:
        """SYNCHRONIZE CACHE on the mount's LUN once earlier writes are done; saves the clock."""
        self.session.count(self.name, requests=1)
        await self._drain()
        await self._host("synchronize_cache", self.mount)
        self.session.count(self.name, flushes=1)
        await self._blocking(self.session.checkpoint)

    async def trim(self, offset: int, length: int) -> None:
        self.session.count(self.name, requests=1)
        await self._submit("unmap", offset, length)

    async def _unmap_call(self, offset: int, length: int) -> None:
        """UNMAP through the queue, as a write: it waits for the earlier requests it overlaps,
        and the later ones overlapping it wait for it (a write sent after a trim lands after
        it)."""
        await self._host("unmap", self.mount, offset, length)
        self.session.count(self.name, trimmed_bytes=length)

    async def zero(self, offset: int, length: int, may_trim: bool) -> None:
        """WRITE_ZEROES: UNMAP when the client lets the range become a hole (a thin volume
        reads zeros there), else zeros written as data, `batch` bytes at a time."""
        self.session.count(self.name, requests=1)
        if may_trim:
            await self._submit("unmap", offset, length)
            return
        step = self.batch
        zeros = np.zeros(min(step, length), dtype=np.uint8)
        # queued here, all of them, before any later request (coroutines handed to gather
        # would only be queued once it runs them, behind requests sent after this one)
        writes = [self._enqueue("write", at, min(step, offset + length - at),
                                zeros[:min(step, offset + length - at)])
                  for at in range(offset, offset + length, step)]
        await asyncio.gather(*writes)

    def refused(self, command: str, errno_value: int, message: str) -> None:
        """A request the NBD server refused by itself (unaligned, past the end, a write to a
        read-only export): counted as a request, and as `refused`, not as a SAN error."""
        self.session.count(self.name, requests=1, refused=1)

    async def block_status(self, offset: int, length: int) -> list[tuple[int, int]]:
        """(length, flags) extents from `offset`: the array's data ranges (GET LBA STATUS, once
        this export's earlier requests are answered) and, between them, holes that read as
        zeros.  Asked of the array every time, never remembered: whatever else writes the
        volume (another export of it, through another host; a copy job; a write that failed
        half-way) changes them, and a client such as `qemu-img convert` skips what is
        reported as zeros."""
        self.session.count(self.name, requests=1)
        await self._drain()
        extents = [tuple(e) for e in await self._host("lba_status", self.mount)]
        return status_extents(extents, offset, length)


def status_extents(data: list[tuple[int, int]], offset: int, length: int) -> list[tuple[int, int]]:
    """`data` (sorted, disjoint (offset, length) ranges holding data) as NBD block status
    extents covering [offset, offset + length): (length, 0) for data, (length, HOLE | ZERO)
    between.  Adjacent extents of one kind are merged."""
    out: list[list[int]] = []
    hole = STATE_HOLE | STATE_ZERO

    def add(n: int, flags: int) -> None:
        if n <= 0:
            return
        if out and out[-1][1] == flags:
            out[-1][0] += n
        else:
            out.append([n, flags])

    at, end = offset, offset + length
    for start, n in data:
        stop = start + n
        if stop <= at:
            continue
        if start >= end:
            break
        add(min(start, end) - at, hole)
        at = max(at, start)
        add(min(stop, end) - at, 0)
        at = min(stop, end)
    add(end - at, hole)
    return [tuple(e) for e in out]


class Serving:
    """A serve session: the chosen mounts of a started SAN served over NBD until `stop`.

    `san` is a started `san.fabric.San` (or an in-process `san.flows.local.LocalSan`): the
    session reaches hosts through `san.peers`, the driver's way to the elements.  `exports`
    is `choose_exports`' list; `listen` a (host, port), port 0 for a free one; `warn(line)`
    is told of each mount not exported and each element down at the end.

    `start` makes each mount ready: a fat mount is unmounted by its host first (its cache
    written back, the filesystem marked clean, its view dropped: from now on the client's
    writes are the truth, and the host does not write its view back over them), then asked
    its size and whether the host may write it; a mount the host cannot reach now (zoning,
    masking, a link or element down) is not exported.  The NBD server runs on an event loop
    of its own thread; host calls run in a thread pool, so a slow array does not stall the
    other exports.  `stop` closes the server (requests under way finish), makes every array
    that is up sync what it acknowledged (the end of a step is a barrier, contract
    "Durability"), saves the clock and unmounts every host cleanly; it returns the report.
    """

    def __init__(self, san, state_dir, exports: list[tuple[str, str]], listen=("127.0.0.1", 10809),
                 warn=None, batch: int = 32 << 20, window: int = 4, threads: int = 16):
        from .links import capacities
        from .runner import Clock
        self.san = san
        self.topology = san.topology
        self.chosen = list(exports)
        self.listen = (listen[0], int(listen[1]))
        self.warn = warn or (lambda line: None)
        self.batch = batch
        self.window = window
        self.threads = threads
        self.session = Session(Clock(state_dir, self.topology.start), capacities(self.topology))
        self.exports: dict[str, MountExport] = {}
        self.address: tuple[str, int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pool = None
        self._server = None

    # -- life cycle ---------------------------------------------------------------------------
    def _prepare(self, host: str, mount_point: str) -> dict | None:
        name = export_name(host, mount_point)
        try:
            self.san.call(host, "unmount", mount_point)     # a no-op but for a fat mount's view
            return self.san.call(host, "export_info", mount_point)
        except SanError as exc:
            self.warn(f"warning: {name} is not exported: {exc}")
            return None

    def start(self) -> list[str]:
        """Serve; returns the URI of each export, in order.  INVALID_INPUT when no mount can
        be exported or the listening address cannot be bound (a port in use)."""
        from concurrent.futures import ThreadPoolExecutor
        from .nbd import NbdServer
        self.san.set_time(self.session.clock.now)
        peers = self.san.peers
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="san-serve")
        self._loop = asyncio.new_event_loop()

        def blocking(fn, *args):
            return self._loop.run_in_executor(self._pool, fn, *args)

        for host, mount_point in self.chosen:
            info = self._prepare(host, mount_point)
            if info is not None:
                export = MountExport(host, mount_point, info, lambda h=host: peers.element(h),
                                     blocking, self.session, self.batch, self.window)
                self.exports[export.name] = export
        if not self.exports:
            self._close_loop()
            raise SanError("INVALID_INPUT", "no mount can be exported (each one's reason is above)")
        self._server = NbdServer(self.exports, host=self.listen[0], port=self.listen[1])
        self._thread = threading.Thread(target=self._loop.run_forever, name="san-serve-loop",
                                        daemon=True)
        self._thread.start()
        try:
            self.address = asyncio.run_coroutine_threadsafe(self._server.start(), self._loop).result()
        except OSError as exc:
            self._close_loop()
            raise SanError("INVALID_INPUT", f"--listen {self.listen[0]}:{self.listen[1]}: cannot "
                                            f"listen there ({exc.strerror or exc})") from None
        return self.uris()

    def uris(self) -> list[str]:
        from .nbd import export_uri
        host, port = self.address[:2]
        if host in ("0.0.0.0", "::", ""):   # every address: name this machine, not "any"
            host = socket.gethostname()
        return [export_uri(host, port, name) for name in self.exports]

    def _close_loop(self) -> None:
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._thread = None
        if self._loop is not None:
            self._loop.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def stop(self) -> dict:
        """End the session (see the class docstring); its report."""
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.close(timeout=CLOSE_GRACE),
                                             self._loop).result()
            self._server = None
        self._close_loop()
        self._barrier()
        self.session.checkpoint()
        self._unmount_all()
        return self.session.report()

    def _barrier(self) -> None:
        for array in self.topology.arrays:
            if array.name in self.san.down:
                self.warn(f"warning: {array.name} is down: what it acknowledged since its last "
                          "sync is not made durable")
                continue
            try:
                self.san.call(array.name, "sync")
            except SanError as exc:
                self.warn(f"warning: {array.name}: {exc}")

    def _unmount_all(self) -> None:
        from .runner import unmount_hosts
        for line in unmount_hosts(self.san):
            self.warn(line)

    def __enter__(self) -> "Serving":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
