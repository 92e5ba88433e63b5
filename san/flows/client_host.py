"""The client host's programs, in plain Python: its I/O loop, its filesystems, the backup client.

A `Host` is what runs on a client host of the patent (docs/method.md; Figs. 1, 2a): it streams a transfer as
commands of at most one chunk each, `window` in flight, each chunk a `Payload` the array
receives by reference (the switch only grants the path); it keeps a FAT filesystem
(`san.fat`) over each ``fat`` mount, behind a write-back cache; its application writes
pass the mount's `Gate` (`quiesce` / `resume`); and its backup client program (the
``client_*`` methods, Figs. 8-19) is ordered by the backup server over the LAN and orders the
arrays in turn.  Each returns the transfers it caused, for modeled time.

It reaches every other element through `Peers` (`san.flows.peers`): one path grant and one
lookup of the array per host call, before any byte moves, never per chunk.  `san.actors`
makes it an actor (threaded: two steps of a `concurrent` can use one host); unit tests run it
on in-process elements.

Multipath (`san.elements.client_host`): the SAN tells the host of every fabric change that
can touch its paths (`fabric_event`); a transfer checks, before each chunk and without a
call, whether one came since its path was granted, and if so takes a path again over its
HBAs in listed order and resends what was not acknowledged (`san.flows.peers.rerouted`).  A
chunk that fails LINK_DOWN or ELEMENT_DOWN is retried the same way, on the same path if its
array is back.  WRITEs carry sequence numbers, so the array applies each once.  The
transfers a call returns charge each route the bytes it carried.

`write_files` puts file data on the array at once but leaves the filesystem marked in use
until a `flush` (or `unmount`) writes it back clean; the end of a run unmounts every fat mount
(`unmount_all`), as a host that shuts down does.  A host that dies before leaves it
marked, and what its cache held unwritten (a directory entry, a FAT chain) undone: the
`repair` action runs ``fsck.fat -a`` on the volume and writes back what that changed.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading

import numpy as np

from ..elements.client_host import (ClientHost, Gate, IoPath, PatternChunks, Sequencer, carry,
                                    chunks, transfers_of)
from ..actions import ACTIONS
from ..errors import SanError
from ..fileio import pwrite_all
from ..fat import (FAT_EPOCH, BlockDevice, FatVolume, changed_ranges, format_volume, fsck,
                   fsck_repair, normalize)
from ..scsi import (READ_CAPACITY_16_BYTES, REPORT_LUNS_HEADER, blocks_of,
                    parse_device_identification, parse_standard_inquiry)
from ..timemodel import Transfer
from ..tripwire import Tripwire
from ..units import BLOCK
from .backup_client import BackupClient
from .lan import manage
from .peers import WINDOW, Payload, UnderWay, rerouted


# what fsck.fat -a says besides what it found and fixed
_FSCK_BOOKKEEPING = frozenset({"*** Filesystem was changed ***", "Writing changes.",
                               "Performing changes.", "Leaving filesystem unchanged."})


class Host(BackupClient, ClientHost):
    """A client host: initiator, filesystems, backup client; its peers reached by `peers`."""

    def __init__(self, spec, peers, chunk_size: int, window: int = WINDOW,
                 arrays_by_device: dict | None = None, now=None):
        super().__init__(spec)
        self.now = now or FAT_EPOCH      # the simulated clock, as the runner last told it
        self.peers = peers
        self.moved_bytes = 0
        self._moved_lock = threading.Lock()
        # (array, port, LUN) -> who holds an attachment made through this host: None (its own
        # file restore) or (server, its session) for a server's copy to tape
        self.attached: dict[tuple, tuple | None] = {}
        self.attaching = UnderWay()      # attaches under way, by (array, port, LUN)
        self.trip = Tripwire()
        self.alive = True                # False once killed (`close`): its calls stop
        self.chunk_size = chunk_size
        self.window = window
        self.arrays_by_device = dict(arrays_by_device or {})   # the LAN directory
        self.gates = {m: Gate(f"{self.name}:{m}", alive=self._flow_alive) for m in self.mounts}
        self.fs: dict[str, object] = {}
        self.fs_locks = {m: threading.RLock() for m in self.mounts}
        self.fs_paths: dict[str, IoPath] = {}   # the path of the host call running on a fat mount
        # the bytes each mount's filesystem moved: (toward target, link resources) -> bytes
        self.fs_carried: dict[str, dict] = {m: {} for m in self.mounts}
        self.sequencer = Sequencer()
        self.fabric_epoch = 0             # fabric changes heard of so far (`fabric_event`)
        self._epoch_lock = threading.Lock()

    def ping(self) -> str:
        return self.name

    def set_time(self, now) -> None:
        """The simulated time (a datetime): what this host stamps on the files it writes."""
        self.now = now

    # -- paths --------------------------------------------------------------------------------
    def fabric_event(self, name: str, up: bool) -> None:
        """The fabric changed: element, port or ISL `name` went down or came up (what an FC
        switch's RSCN tells a host).  Transfers under way take a path again before their next
        chunk; new ones are granted afresh anyway."""
        with self._epoch_lock:
            self.fabric_epoch += 1

    def _check_alive(self) -> None:
        """ELEMENT_DOWN once this host is killed: what a killed host was doing stops there."""
        if not self.alive:
            raise SanError("ELEMENT_DOWN", f"{self.name} went down")

    def _grant(self, port_ref: str):
        """The route of the first HBA the fabric grants a path to `port_ref` from."""
        self._check_alive()

        def grant(hba):
            return self.peers.element(self.hba_switch[hba]).call("grant", hba, port_ref)
        return self.first_granted(grant)

    def _target(self, port_ref: str, lun: int) -> IoPath:
        """The path (route, array actor, port, LUN) to any array port and LUN."""
        epoch = self.fabric_epoch          # read first: a change while granting is seen later
        route = self._grant(port_ref)
        array, port = port_ref.split("/")
        return IoPath(route, self.peers.element(array), port, lun, port_ref, epoch)

    def _reroute(self, path: IoPath):
        """Take `path` again (the fabric changed, or a command got no answer): the first HBA
        granted now, and the array as it is now (restarted, maybe); returns the route."""
        epoch = self.fabric_epoch
        route = self._grant(path.target)
        path.array = self.peers.element(path.target.split("/")[0])
        path.route, path.epoch = route, epoch
        return route

    def _fresh(self, path: IoPath) -> IoPath:
        """`path`, taken again if the fabric changed since it was (a filesystem's path is kept
        for a whole host call)."""
        if path.epoch != self.fabric_epoch:
            self._reroute(path)
        return path

    def _stream(self, path: IoPath, pieces, send, consume, sequenced: bool,
                toward_target: bool | None = None) -> dict:
        """Send one command per piece, `window` in flight, following `path` as the fabric
        changes (`rerouted`); `send(piece, seq)` starts a piece's command on `path` now.  WRITEs
        (`sequenced`) take their numbers from this transfer's own numbering.  Returns
        {route: bytes it carried}, routes in the order they were first used.  With
        `toward_target` (the direction of the payload), a `SanError` on the way carries what
        the answered commands moved (`SanError.partial`): only flows whose step is charged
        exactly this stream's transfers ask for it (a raw write, a restore from tape)."""
        carried: dict = {}

        if sequenced:
            take = self.sequencer.transfer()

            def submit(piece, seq):
                if seq is None:
                    seq = take()
                return seq, send(piece, seq)
        else:
            def submit(piece, seq):
                return None, send(piece, None)

        def counted(piece, answer, route):
            carried[route] = carried.get(route, 0) + piece[1]
            consume(piece, answer)

        try:
            rerouted(pieces, submit, counted, self.window, path.route,
                     lambda: path.epoch != self.fabric_epoch, lambda: self._reroute(path))
        except SanError as exc:
            if carried and exc.partial is None and toward_target is not None:
                exc.partial = {"transfers": [Transfer(route.resources(toward_target), n)
                                             for route, n in carried.items()]}
            raise
        return carried

    @staticmethod
    def _transfers(carried: dict, path: IoPath, size: int, toward_target: bool) -> list[Transfer]:
        """One transfer per route, in order, of the bytes it carried (a transfer that moved
        nothing is charged on its path as it was granted)."""
        if not carried:
            return [Transfer(path.route.resources(toward_target), size)]
        return [Transfer(route.resources(toward_target), n) for route, n in carried.items()]

    def _path(self, mount_point: str):
        mount = self.mount(mount_point)
        return self._target(mount.port, mount.lun)

    # -- block I/O ----------------------------------------------------------------------------
    def _moved(self, nbytes: int) -> int:
        """Count `nbytes` more moved; the new total.  Up to 16 of the actor's threads count
        at once (streams, image reads), and ``+=`` on an attribute is not atomic: an update
        lost would put off a ``when: after`` fault."""
        with self._moved_lock:
            self.moved_bytes += nbytes
            return self.moved_bytes

    def _count(self, piece, answer) -> None:
        # a chunk the array acknowledged (or answered)
        self.trip.passed(self._moved(piece[1]))
        self._check_alive()              # killed meanwhile: no further chunk is sent

    def bytes_moved(self) -> int:
        """Payload bytes this host's FC transfers have had acknowledged so far (a counter that
        only grows: progress bars and `when:` faults read it as steps go)."""
        return self.moved_bytes

    def trip_arm(self, at: int) -> None:
        """Stop the thread whose acknowledged chunk brings `bytes_moved` to `at` or past it,
        until `trip_release` (a fault striking mid-step: `san.tripwire`)."""
        self.trip.arm(at)

    def trip_release(self) -> None:
        self.trip.release()

    def close(self) -> None:
        """Going down (an in-process SAN's kill, where no process dies): every call it is
        running fails ELEMENT_DOWN at its next chunk, path or management call, as a killed
        actor's would have stopped, and a thread stopped at the tripwire goes on to find
        that.  What it held in memory (its filesystems' caches) is dropped with it."""
        self.alive = False
        self.trip.release()

    def _write_to(self, path: IoPath, offset: int, size: int, piece_of,
                  partial: bool = False) -> list[Transfer]:
        route, array, port, lun = self._fresh(path)
        lba, blocks = blocks_of(offset, size)
        array.call("prepare", route.initiator, port, lun, lba, blocks, True)

        def send(piece, seq):
            off, length = piece
            return path.array.start("write", path.route.initiator, port, lun, off // BLOCK,
                                    Payload(piece_of(off, length)), seq)

        carried = self._stream(path, chunks(offset, size, self.chunk_size), send, self._count,
                               True, True if partial else None)
        return self._transfers(carried, path, size, True)

    def _read_from(self, path: IoPath, offset: int, size: int, consume) -> list[Transfer]:
        route, array, port, lun = self._fresh(path)
        lba, blocks = blocks_of(offset, size)
        array.call("prepare", route.initiator, port, lun, lba, blocks, False)

        def send(piece, _):
            off, length = piece
            return path.array.start("read", path.route.initiator, port, lun, off // BLOCK,
                                    length // BLOCK)

        def counted(piece, data):
            self._count(piece, data)
            if consume:
                consume(piece, data)

        carried = self._stream(path, chunks(offset, size, self.chunk_size), send, counted, False)
        return self._transfers(carried, path, size, False)

    def write(self, mount_point: str, offset: int, size: int, seed: int) -> list[Transfer]:
        """WRITE the pattern of (seed, offset) over [offset, offset + size) of a mount (the
        `write` op: an application write, so it waits while the mount is quiesced)."""
        with self.gate(mount_point).write():
            # a filesystem's view is written back and unmounted first, marked clean, as a
            # host's own writes under a mounted filesystem would be: dropped unflushed, its
            # dirty mark stayed on the volume, and the next mount took it for a crash's
            before = self.unmount(mount_point)["transfers"]
            try:
                return before + self._write_to(self._path(mount_point), offset, size,
                                               PatternChunks(seed), partial=True)
            except SanError as exc:     # the write-back happened: the step is charged it too
                if before:
                    done = exc.partial or {}
                    exc.partial = {**done, "transfers": before + list(done.get("transfers", []))}
                raise
            finally:    # raw writes under a filesystem, even cut short: its cached view is stale
                self._drop_fs(mount_point)

    def write_data(self, mount_point: str, offset: int, data) -> list[Transfer]:
        """WRITE the given bytes (the filesystem's device and tests use it)."""
        data = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
        return self._write_to(self._path(mount_point), offset, len(data),
                              lambda off, length: data[off - offset:off - offset + length])

    def read(self, mount_point: str, offset: int, size: int) -> tuple[np.ndarray, list[Transfer]]:
        """READ [offset, offset + size) of a mount; returns the bytes and the transfers."""
        return self._read_into(self._path(mount_point), offset, size)

    def _read_into(self, path, offset: int, size: int):
        out = np.empty(size, dtype=np.uint8)

        def consume(piece, data):
            off, length = piece
            out[off - offset:off - offset + length] = data

        return out, self._read_from(path, offset, size, consume)

    def read_discard(self, mount_point: str, offset: int, size: int) -> list[Transfer]:
        """READ a range and drop the data (what a benchmark of the read path needs)."""
        return self._read_from(self._path(mount_point), offset, size, None)

    def read_compare(self, mount_point: str, offset: int, size: int, seed: int) -> dict:
        """READ a range and compare every byte with the `write` pattern of `seed`."""
        bad: list[int] = []
        expected = PatternChunks(seed)

        def consume(piece, data):
            off, length = piece
            where = np.flatnonzero(expected(off, length) != data)
            if where.size:
                bad.append(off + int(where[0]))

        transfers = self._read_from(self._path(mount_point), offset, size, consume)
        return {"bytes": size, "first_mismatch": min(bad) if bad else None,
                "transfers": transfers}

    # -- SCSI control commands ----------------------------------------------------------------
    def scsi_identify(self, mount_point: str) -> dict:
        """INQUIRY (standard and VPD 0x83), READ CAPACITY and REPORT LUNS for a mount."""
        route, array, port, lun = self._path(mount_point)
        std, vpd, (last_lba, block), luns = [f.result() for f in (
            array.start("inquiry", route.initiator, port, lun),
            array.start("inquiry", route.initiator, port, lun, 0x83),
            array.start("read_capacity", route.initiator, port, lun),
            array.start("report_luns", route.initiator, port))]
        ident = parse_device_identification(vpd)
        info = parse_standard_inquiry(std)
        return {**info, "device_id": ident["target"], "lu_id": ident["lu"],
                "capacity": (last_lba + 1) * block, "block_size": block, "luns": luns,
                "hba": route.initiator, "transfers": [
                    Transfer(route.resources(False), len(std) + len(vpd) + READ_CAPACITY_16_BYTES
                             + REPORT_LUNS_HEADER + 8 * len(luns))]}

    def digest(self, mount_point: str) -> str:
        """The volume digest of a mount, computed by the array behind the granted path."""
        route, array, port, lun = self._path(mount_point)
        return array.call("digest_lun", route.initiator, port, lun)

    def manage(self, array: str, method: str, *args):
        """A management (LAN) call from this host to an array: (answer, transfers)."""
        self._check_alive()
        return manage(self.name, self.peers, array, method, *args)

    # -- filesystems --------------------------------------------------------------------------
    def gate(self, mount_point: str) -> Gate:
        self.mount(mount_point)
        return self.gates[mount_point]

    def _fat(self, mount_point: str):
        mount = self.mount(mount_point)
        if mount.filesystem != "fat":
            raise SanError("INVALID_INPUT", f"{self.name}:{mount_point} is a raw mount "
                                            "(filesystem: none); file operations need a fat mount")
        return mount

    def _device(self, path, size: int, carried: dict | None, name: str, readonly: bool = False):
        """A block device over `path`, called `name` in its errors; the bytes it moves are
        added to `carried` (see `_carry`) when one is given."""
        def read_fn(offset, length):
            data, transfers = self._read_into(path, offset, length)
            if carried is not None:
                carry(carried, transfers, False)
            return data

        def write_fn(offset, data):
            transfers = self._write_to(path, offset, len(data),
                                       lambda off, n: data[off - offset:off - offset + n])
            if carried is not None:
                carry(carried, transfers, True)

        return BlockDevice(size, read_fn, None if readonly else write_fn, readonly=readonly,
                           name=name)

    def _capacity(self, path) -> int:
        route, array, port, lun = path
        last, block = array.call("read_capacity", route.initiator, port, lun)
        return (last + 1) * block

    def _mount_device(self, mount_point: str, size: int):
        """The block device under a fat mount: its I/O takes the path of the host call in
        progress (`fs_paths`), never the one the mount was made with, so a link that went down
        and up, or an array restarted, is seen by the next call."""
        carried = self.fs_carried[mount_point]

        def read_fn(offset, length):
            data, transfers = self._read_into(self.fs_paths[mount_point], offset, length)
            carry(carried, transfers, False)
            return data

        def write_fn(offset, data):
            carry(carried, self._write_to(self.fs_paths[mount_point], offset, len(data),
                                           lambda off, n: data[off - offset:off - offset + n]), True)

        return BlockDevice(size, read_fn, write_fn, name=f"{self.name}:{mount_point}")

    def filesystem(self, mount_point: str):
        """The mounted FAT filesystem of a fat mount (mounting it on first use).

        Each host call on a fat mount starts here (under the mount's lock): one path grant and
        one actor lookup for the whole call, before any byte moves, so a call refused with
        LINK_DOWN or ELEMENT_DOWN changes nothing on the array.  A call that fails midway
        keeps the mount's cache (files already acknowledged stay); the next call takes a fresh
        path and writes back what is still dirty."""
        self._fat(mount_point)
        with self.fs_locks[mount_point]:
            path = self.fs_paths[mount_point] = self._path(mount_point)
            if mount_point not in self.fs:
                device = self._mount_device(mount_point, self._capacity(path))
                try:
                    self.fs[mount_point] = FatVolume(device, now=lambda: self.now)
                except SanError:
                    raise
                except Exception as exc:
                    raise SanError("FSCK_FAILED", f"{self.name}:{mount_point} holds no readable "
                                                  f"FAT filesystem ({exc})") from None
            return self.fs[mount_point]

    def format_blank(self) -> list[str]:
        """Format every blank fat mount: one whose volume holds no data at all (never written,
        or wholly unmapped).  Asked at every start of the SAN, so it must never touch a volume
        holding anything: one whose first sectors a client zeroed (over NBD, say) but that
        holds data further on is left as it is, and a mount of it fails FSCK_FAILED."""
        done = []
        for mount_point, mount in self.mounts.items():
            if mount.filesystem != "fat":
                continue
            try:
                route, array, port, lun = path = self._path(mount_point)
                held = array.call("lba_status", route.initiator, port, lun)
            except SanError:
                continue   # a path the SAN denies: its I/O fails later, with its code
            if held:
                continue
            label = (mount_point.strip("/").replace("/", "_") or "ROOT")[:11].upper()
            format_volume(self._device(path, self._capacity(path), None, f"{self.name}:{mount_point}"),
                          label, now=self.now)
            done.append(mount_point)
        return done

    def _drop_fs(self, mount_point: str) -> None:
        """Forget the cached view of a filesystem (its volume changed behind its back)."""
        with self.fs_locks[mount_point]:
            self.fs.pop(mount_point, None)

    def _fs_mark(self, mount_point: str) -> dict:
        """What a mount's filesystem has moved so far (for `_fs_transfers`)."""
        return dict(self.fs_carried[mount_point])

    def _fs_transfers(self, mount_point: str, before: dict) -> list[Transfer]:
        """The filesystem's transfers since `before` (`_fs_mark`): what it wrote, then what it
        read, each on the routes its bytes took."""
        return transfers_of(self.fs_carried[mount_point], before)

    def write_files(self, mount_point: str, files: dict) -> dict:
        """Write files {path: (size, seed)} into a fat mount; data reaches the array now, the
        filesystem stays marked in use until a flush (an application write: gated)."""
        self._fat(mount_point)
        paths = {normalize(p): spec for p, spec in files.items()}
        with self.gate(mount_point).write(), self.fs_locks[mount_point]:
            before = self._fs_mark(mount_point)
            fs = self.filesystem(mount_point)
            written = sum(fs.write_file(p, size, seed) for p, (size, seed) in paths.items())
            fs.device.flush()
            return {"files": sorted(paths), "bytes": written,
                    "transfers": self._fs_transfers(mount_point, before)}

    def remove_files(self, mount_point: str, files: list) -> dict:
        self._fat(mount_point)
        paths = [normalize(p) for p in files]
        with self.gate(mount_point).write(), self.fs_locks[mount_point]:
            before = self._fs_mark(mount_point)
            fs = self.filesystem(mount_point)
            for p in paths:
                fs.remove_file(p)
            fs.device.flush()
            return {"files": paths, "transfers": self._fs_transfers(mount_point, before)}

    def files(self, mount_point: str) -> dict:
        """{path: [size, sha256]} of a fat mount, as this host sees it (its cache included)."""
        with self.fs_locks[mount_point]:
            return {p: list(v) for p, v in self.filesystem(mount_point).files().items()}

    # -- pre / post processing ----------------------------------------------------------------
    def actions(self, mount_point: str, names: list, owner=None) -> list[Transfer]:
        """Run pre- or post-processing actions on a mount, in order, for `owner`: a backup
        server's flow, ``(server, session)``, when the server orders them (None: this host's
        own), so that a quiesce whose server dies does not hold the mount for ever."""
        transfers: list[Transfer] = []
        for name in names:
            transfers += self.action(mount_point, name, owner)
        return transfers

    def action(self, mount_point: str, name: str, owner=None) -> list[Transfer]:
        mount = self.mount(mount_point)
        if name not in ACTIONS:     # a closed vocabulary, on raw mounts too: never a command
            raise SanError("INVALID_INPUT", f"unknown action {name!r}")
        if name == "quiesce":
            self.gates[mount_point].quiesce(None if owner is None else tuple(owner))
            return []
        if name == "resume":
            self.gates[mount_point].resume(None if owner is None else tuple(owner))
            return []
        if mount.filesystem != "fat":
            if name == "flush":     # mount, unmount, fsck and repair do nothing on a raw mount
                self.synchronize_cache(mount_point)
            return []
        with self.fs_locks[mount_point]:
            before = self._fs_mark(mount_point)
            if name == "flush":
                if mount_point in self.fs:
                    self.filesystem(mount_point).flush()
                self.synchronize_cache(mount_point)
            elif name == "unmount":
                if not self.unmount(mount_point)["unmounted"]:
                    self.synchronize_cache(mount_point)
            elif name == "mount":
                self.filesystem(mount_point)
            elif name == "fsck":    # its reads take time on the links, and move no payload
                report = self.fsck(mount_point)
                if not report["clean"]:
                    raise SanError("FSCK_FAILED", f"fsck.fat found problems on {self.name}:"
                                                  f"{mount_point}: {report['summary']}")
                return self._fs_transfers(mount_point, before) + report["transfers"]
            elif name == "repair":
                return self._fs_transfers(mount_point, before) + self.repair(mount_point)["transfers"]
            else:
                raise SanError("INVALID_INPUT", f"unknown action {name!r}")
            return self._fs_transfers(mount_point, before)

    def unmount(self, mount_point: str) -> dict:
        """Unmount a fat mount's filesystem, as a host that shuts down does: its cache written
        back with the filesystem marked clean (`FatVolume.flush`: pyfatfs' two marks, FAT[1]'s
        clean-shutdown bit and the boot sector's dirty bit, FAT32's backup boot sector too),
        SYNCHRONIZE CACHE, and its view dropped; the next call on the mount mounts it again.
        A filesystem that was marked dirty when mounted stays marked (``left_dirty``), as
        Linux leaves it: what its last writer left undone is for the `repair` action.

        A no-op for a raw mount or a fat mount with no view now (``unmounted`` false).  If
        the write-back fails (the array or the path is down: ELEMENT_DOWN, LINK_DOWN...), it
        raises and the view is kept, so a later call still writes back what it holds.
        Returns {"mount", "unmounted", "left_dirty", "bytes_written", "transfers"}."""
        mount = self.mount(mount_point)
        idle = {"mount": mount_point, "unmounted": False, "left_dirty": False,
                "bytes_written": 0, "transfers": []}
        if mount.filesystem != "fat":
            return idle
        with self.fs_locks[mount_point]:
            if mount_point not in self.fs:
                return idle
            before = self._fs_mark(mount_point)
            fs = self.filesystem(mount_point)        # this call's path, granted before any I/O
            fs.flush()
            self.fs.pop(mount_point).close()        # flushed: nothing is left to write
            self.synchronize_cache(mount_point)
            written = sum(n - before.get(key, 0)
                          for key, n in self.fs_carried[mount_point].items() if key[0])
            return {"mount": mount_point, "unmounted": True, "left_dirty": fs.found_dirty,
                    "bytes_written": written,
                    "transfers": self._fs_transfers(mount_point, before)}

    def unmount_all(self) -> list[dict]:
        """`unmount` every fat mount that has a view, in listed order (the end of a run).  A
        mount whose unmount fails is reported as {"mount", "error": {"code", "message"}} and
        the others are still unmounted; what each other one did is `unmount`'s answer."""
        done = []
        for mount_point, mount in self.mounts.items():
            if mount.filesystem != "fat" or mount_point not in self.fs:
                continue
            try:
                done.append(self.unmount(mount_point))
            except SanError as exc:
                done.append({"mount": mount_point, "error": exc.to_dict()})
        return done

    def synchronize_cache(self, mount_point: str) -> None:
        """SCSI SYNCHRONIZE CACHE to the mount's LUN: once it returns, every write this host
        had acknowledged there survives a power loss of the array (a barrier)."""
        route, array, port, lun = self._path(mount_point)
        array.call("synchronize_cache", route.initiator, port, lun)

    # -- a mount served to block-device clients (`san serve`) -----------------------------------
    def export_info(self, mount_point: str) -> dict:
        """What a block-device client of a mount is told: {"size": bytes, "writable": bool}.

        Asked over the host's FC path like any command, so a mount the host cannot reach
        (zoning, masking, a port or element down) raises what the fabric or the array says,
        and a volume the array refuses writes to (READ_ONLY: a snapshot, a copy destination,
        a `read_only` volume) is not writable."""
        route, array, port, lun = path = self._path(mount_point)
        size = self._capacity(path)
        try:
            array.call("prepare", route.initiator, port, lun, 0, 0, True)
        except SanError as exc:
            if exc.code != "READ_ONLY":
                raise
            return {"size": size, "writable": False}
        return {"size": size, "writable": True}

    def lba_status(self, mount_point: str) -> list[tuple[int, int]]:
        """GET LBA STATUS of a mount's LUN: the (offset, length) byte ranges holding data."""
        route, array, port, lun = self._path(mount_point)
        return array.call("lba_status", route.initiator, port, lun)

    def unmap(self, mount_point: str, offset: int, length: int) -> int:
        """UNMAP [offset, offset + length) of a mount (whole blocks): it reads as zeros again,
        and the array frees the whole granules in it.  Returns the bytes unmapped."""
        route, array, port, lun = self._path(mount_point)
        lba, blocks = blocks_of(offset, length)
        return array.call("unmap", route.initiator, port, lun, lba, blocks)

    def _image(self, path, files: tuple[str, ...]) -> list[Transfer]:
        """Write the volume at `path`, as the array holds it (not this host's cache), into
        each of `files`, sparse: only its written extents are read.  Returns the reads'
        transfers, on the routes they took."""
        route, array, port, lun = path
        size = self._capacity(path)
        extents = array.call("lba_status", route.initiator, port, lun)
        with contextlib.ExitStack() as stack:
            fds = []
            for f in files:
                fds.append(os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
                stack.callback(os.close, fds[-1])
                os.ftruncate(fds[-1], size)

            def consume(piece, data):   # chunk by chunk: an extent may be gigabytes
                for fd in fds:
                    pwrite_all(fd, data, piece[0])
            transfers = []
            for offset, length in extents:
                transfers += self._read_from(path, offset, length, consume)
        return transfers

    def fsck(self, mount_point: str, port_ref: str | None = None, lun: int | None = None) -> dict:
        """`fsck.fat -n` on the volume's image as the array holds it (what is on the SAN,
        not this host's cache): its written extents are read into a sparse image file."""
        if port_ref is None:
            mount = self.mount(mount_point)
            port_ref, lun = mount.port, mount.lun
        with tempfile.TemporaryDirectory(prefix="san-fsck-") as tmp:
            image = os.path.join(tmp, "volume.img")
            read = self._image(self._target(port_ref, lun), (image,))
            clean, output = fsck(image)
        lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
        return {"clean": clean, "output": output,
                "summary": "; ".join(lines[-3:]) if lines else "no output",
                "transfers": [Transfer(t.resources, t.nbytes, counted=False) for t in read]}

    def repair(self, mount_point: str) -> dict:
        """The `repair` action: ``fsck.fat -a`` on a fat mount's volume as the array holds it,
        and what it changed written back through the FC path.  What a host killed while it
        wrote its filesystem leaves needs it: the dirty bit, entries and FAT chains its cache
        had not written back.  A mounted filesystem is unmounted first, its cache written back
        as it is (not marked clean: fsck.fat sees whether it was); the next call mounts the
        repaired one.

        Returns {"mount", "repaired": the lines in which fsck.fat said what it found and did
        ([] if the filesystem was clean), "bytes_written" (back onto the volume), "output"
        (fsck.fat's, the image named after the mount), "transfers"}.  FSCK_FAILED if the
        volume is still not clean afterwards (e.g. it holds no FAT filesystem); nothing is
        written back then.  A raw mount has nothing to repair."""
        where, mount = f"{self.name}:{mount_point}", self.mount(mount_point)
        if mount.filesystem != "fat":
            return {"mount": mount_point, "repaired": [], "bytes_written": 0, "output": "",
                    "transfers": []}
        with self.fs_locks[mount_point]:
            path = self._target(mount.port, mount.lun)
            if mount_point in self.fs:
                self.fs_paths[mount_point] = path
                fs = self.fs.pop(mount_point)
                fs.device.flush()
                fs.discard()
            with tempfile.TemporaryDirectory(prefix="san-repair-") as tmp:
                before, image = os.path.join(tmp, "before.img"), os.path.join(tmp, "volume.img")
                read = self._image(path, (before, image))
                moved = []
                status, output = fsck_repair(image)
                output = output.replace(image, where)
                clean, again = fsck(image)
                if status not in (0, 1) or not clean:
                    lines = [ln.strip() for ln in again.replace(image, where).splitlines()[1:]
                             if ln.strip()]
                    raise SanError("FSCK_FAILED", f"fsck.fat -a could not repair {where}: "
                                                  + ("; ".join(lines[-3:]) or f"exit status {status}"))
                written = 0
                with open(image, "rb") as repaired:
                    for offset, length in changed_ranges(before, image):
                        data = np.frombuffer(os.pread(repaired.fileno(), length, offset), dtype=np.uint8)
                        moved += self._write_to(
                            path, offset, length,
                            lambda off, n, data=data, at=offset: data[off - at:off - at + n])
                        written += length
        lines = [ln.strip() for ln in output.splitlines()[1:] if ln.strip()]   # [0]: its version
        repaired = [] if status == 0 else [
            ln for ln in lines if not ln.startswith(f"{where}:") and ln not in _FSCK_BOOKKEEPING]
        reads, writes = {}, {}          # each on the routes it took, one transfer per route
        carry(reads, read, False)
        carry(writes, moved, True)
        transfers = transfers_of(reads) + transfers_of(writes)
        return {"mount": mount_point, "repaired": repaired, "bytes_written": written,
                "output": output, "transfers": transfers}
