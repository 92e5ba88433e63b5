"""The disk array: volumes, the LUN map, the SCSI target side, and the array's data services.

A `DiskArray` is the disk array control program of SPEC.md (Figs. 2, 7, 11, 17-19), in plain
Python; `san.actors` makes it an actor (I/O one command at a time, so a volume's writes apply
in the order sent; management calls and copies in their own threads).

Block path.  Volumes are thin, checksummed `VolumeStore`s under ``STATE_DIR/arrays/NAME/``.
An initiator (a host HBA, or another array's port) sends INQUIRY (standard data and the
device-identification VPD page 0x83 carrying the array's device ID), REPORT LUNS, READ
CAPACITY, READ, WRITE and UNMAP.  Target-side checks, in the contract's path order after the
fabric's own: ``NO_SUCH_PORT`` (no such port, or no volume at that LUN), ``LUN_NOT_MAPPED``
(the initiator's element is not among the LUN's hosts), ``LBA_OUT_OF_RANGE``, ``READ_ONLY``
(a snapshot, or the destination of a running copy).

Management (LAN) interface: the ``mgmt_*`` methods, each taking the caller's element name
first; only the array's `managers` may call them (``UNAUTHORIZED``).  They read the volume
list and the volume management table (Fig. 7), the copy-destination list of a port/LUN
(Fig. 8), record / read / delete a volume's 512-byte volume info (an opaque record, kept in
``vol-N.info`` beside the volume: it never changes the volume's data or capacity), order a
mirror, a restore, a snapshot and a volume copy, attach / detach a volume at a port and LUN,
and query or wait for a copy.

Copies.  A mirror, a restore and an intra-array volume copy are *copy jobs* run by a thread
of the array: the job copies only the granules where source and destination differ (their
stored checksums disagree: incremental resync, with no dirty-map to keep), in batches, while
hosts keep writing.  A host write to a granule that a running job from that volume has not
copied yet first copies that granule, so the destination ends equal to the source *as it was
when the job started* (the mirror's point-in-time promise).  While a job runs, its destination
is read-only to hosts and ``BUSY`` for other copies; its old volume info is deleted when the
job starts, so an interrupted copy never leaves a record claiming a complete backup.
Snapshots are copy-on-write (`san.snapshots`); they take the lowest volume number the array
has never used, and persist across restarts like everything else here.
"""
from __future__ import annotations

import itertools
import json
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SanError
from ..snapshots import GranulePool, SnapshotEngine
from ..storage import VolumeStore, granule_extents
from ..timemodel import Transfer
from ..units import BLOCK

VENDOR = "HITACHI"
PRODUCT = "SAN-SIM ARRAY"
REVISION = "0100"
GRANULE = 256 * 1024
INFO_SIZE = 512
BATCH = 16  # granules a copy job moves per turn of its lock (4 MiB at the default granule)


def _pad(text: str, width: int) -> bytes:
    return text.encode("ascii")[:width].ljust(width, b" ")


def standard_inquiry() -> bytes:
    """The 36-byte standard INQUIRY data of a direct-access block device (SPC-4)."""
    head = bytes([0x00, 0x00, 0x06, 0x02, 31, 0x00, 0x00, 0x02])
    return head + _pad(VENDOR, 8) + _pad(PRODUCT, 16) + _pad(REVISION, 4)


def device_identification(device_id: str, volume: int) -> bytes:
    """VPD page 0x83: a T10-vendor-ID designator for the LU and one for the target device.

    Each designator: code set 2 (ASCII), PIV 0, association (0 = logical unit,
    2 = target device), type 1 (T10 vendor ID), then 8 bytes of vendor and the identifier.
    The target-device designator's identifier is the array's device ID.
    """
    def designator(association: int, ident: str) -> bytes:
        body = _pad(VENDOR, 8) + ident.encode("ascii")
        return bytes([0x02, (association << 4) | 0x01, 0x00, len(body)]) + body

    page = designator(0, f"{device_id}.{volume:05d}") + designator(2, device_id)
    return bytes([0x00, 0x83]) + struct.pack(">H", len(page)) + page


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


class DiskArray:
    """One disk array: volumes, LUN map, SCSI target, management interface and copies."""

    def __init__(self, spec, state_dir: Path, granule: int = GRANULE):
        self.spec = spec
        self.name = spec.name
        self.device_id = spec.device_id
        self.granule = granule
        self.directory = Path(state_dir) / "arrays" / spec.name
        self.directory.mkdir(parents=True, exist_ok=True)
        self.managers = frozenset(spec.managers)
        self.ports = {p.name: p for p in spec.ports}
        self.volumes = {v.number: v for v in spec.volumes}
        self.stores = {v.number: VolumeStore(self.directory, f"vol-{v.number}", v.size, granule,
                                             label=f"{self.name} volume {v.number}")
                       for v in spec.volumes}
        self.pool = GranulePool(self.directory, granule, spec.snapshot_pool,
                                label=f"{self.name} snapshot pool")
        self.snaps = SnapshotEngine(self.directory, self.pool, self.stores, array=self.name)
        self.read_only: set[int] = set()
        self.reserved: dict[int, str] = {}   # volume -> the array copying into it over FC
        self.jobs: dict[int, CopyJob] = {}
        self._job_ids = itertools.count(1)
        self._lock = threading.RLock()
        self.autostart = True  # tests turn it off and drive jobs with step() / finish()
        self.copies_go = threading.Event()   # cleared: copy jobs wait before their next batch
        self.copies_go.set()
        table = self._load_table()
        self.ever_used: set[int] = set(table["ever_used"]) | set(self.volumes)
        # An attachment lives as long as the file restore or tape copy that made it; an array
        # that (re)starts has none running, so one found in the table was left by a crash and
        # would keep its LUN BUSY forever.  Reservations are never persisted, for the same reason.
        self.attachments: list[dict] = []
        self.mirror_source: dict[int, int] = {int(k): v for k, v in table["mirror_source"].items()}
        if table["attachments"]:
            self._save_table()
        self._rebuild_luns()

    # -- the volume management table (Fig. 7), persisted -------------------------------------
    @property
    def _table_path(self) -> Path:
        return self.directory / "table.json"

    def _load_table(self) -> dict:
        empty = {"ever_used": [], "attachments": [], "mirror_source": {}}
        if not self._table_path.exists():
            return empty
        return {**empty, **json.loads(self._table_path.read_text())}

    def _save_table(self) -> None:
        data = {"ever_used": sorted(self.ever_used), "attachments": self.attachments,
                "mirror_source": {str(k): v for k, v in sorted(self.mirror_source.items())}}
        tmp = self._table_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, self._table_path)

    def _rebuild_luns(self) -> None:
        self.luns: dict[tuple[str, int], tuple[int, frozenset]] = {
            (v.port, v.lun): (v.number, frozenset(v.hosts)) for v in self.spec.volumes if v.port is not None}
        for a in self.attachments:
            self.luns[(a["port"], a["lun"])] = (a["number"], frozenset(a["hosts"]))

    def volume_table(self) -> list[dict]:
        """Fig. 7: one row per volume (snapshots included), with its volume info if any."""
        rows = []
        for number in self.numbers():
            mapped = [(p, l) for (p, l), (n, _) in sorted(self.luns.items()) if n == number]
            port, lun = mapped[0] if mapped else (None, None)
            info = self.read_info(number)
            rows.append({
                "volume": number, "size": self.size_of(number),
                "fc_interface": self.ports[port].number if port else None,
                "port_address": self.ports[port].wwpn if port else None, "port": port, "lun": lun,
                "copy_destinations": list(self.volumes[number].copy_destinations) if number in self.volumes else [],
                "snapshots": self.snaps.snapshots_of(number) if number in self.volumes else [],
                "snapshot_of": self.snaps.source_of(number) if self.snaps.is_snapshot(number) else None,
                "volume_info": info.hex() if info else None})
        return rows

    # -- volumes --------------------------------------------------------------------------------
    def numbers(self) -> list[int]:
        with self._lock:
            return sorted(set(self.stores) | {n for n in self.ever_used if self.snaps.is_snapshot(n)})

    def reader(self, number: int):
        """The readable content of a volume: its store, or a snapshot's view."""
        if number in self.stores:
            return self.stores[number]
        if self.snaps.is_snapshot(number):
            return self.snaps.view(number)
        raise SanError("NO_SUCH_VOLUME", f"{self.name} has no volume {number} "
                                         f"(volumes: {self.numbers()})")

    def volume(self, number: int) -> VolumeStore:
        return self.reader(number)

    def size_of(self, number: int) -> int:
        return self.reader(number).size

    # -- target-side checks -------------------------------------------------------------
    def lookup(self, initiator: str, port: str, lun: int) -> int:
        """The volume number behind (port, LUN) for this initiator, or the coded refusal."""
        if port not in self.ports:
            raise SanError("NO_SUCH_PORT", f"{self.name} has no port {port!r}")
        entry = self.luns.get((port, lun))
        if entry is None:
            raise SanError("NO_SUCH_PORT", f"{self.name}/{port} has no volume at LUN {lun}")
        number, hosts = entry
        element = initiator.split("/")[0]
        if element not in hosts:
            raise SanError("LUN_NOT_MAPPED", f"{self.name}/{port} LUN {lun} (volume {number}) "
                                             f"is not mapped to {element}")
        return number

    def check_range(self, number: int, lba: int, blocks: int) -> None:
        size = self.size_of(number)
        if lba < 0 or blocks < 0 or (lba + blocks) * BLOCK > size:
            raise SanError("LBA_OUT_OF_RANGE",
                           f"{self.name} volume {number}: blocks {lba}..{lba + blocks - 1} "
                           f"(bytes {lba * BLOCK}+{blocks * BLOCK}) are past its end "
                           f"({size} bytes, {size // BLOCK} blocks)")

    def copy_holder_active(self, holder: str, number: int) -> bool:
        """Is array `holder` still copying into our volume `number`?  The plain array cannot
        ask another element, so it trusts the reservation; the Ray layer asks the holder."""
        return True

    def _reservation(self, number: int) -> str | None:
        """The array holding a reservation of `number`, or None; a reservation whose holder
        died or restarted (and so runs no copy into it) is released here."""
        holder = self.reserved.get(number)
        if holder is not None and not self.copy_holder_active(holder, number):
            if self.reserved.get(number) == holder:
                del self.reserved[number]
            return None
        return holder

    def check_writable(self, number: int, initiator: str | None = None) -> None:
        holder = self.reserved.get(number)
        if holder is not None and (initiator is None or initiator.split("/")[0] != holder) \
                and self._reservation(number) is not None:
            raise SanError("READ_ONLY", f"{self.name} volume {number} is the destination of a "
                                        f"running copy from {holder}")
        if self.snaps.is_snapshot(number):
            raise SanError("READ_ONLY", f"{self.name} volume {number} is a snapshot of volume "
                                        f"{self.snaps.source_of(number)}")
        for job in list(self.jobs.values()):
            if job.state == "running" and job.dest == number and job.dest_array is None:
                raise SanError("READ_ONLY", f"{self.name} volume {number} is the destination of a "
                                            f"running {job.kind} from volume {job.source}")
        if number in self.read_only:
            raise SanError("READ_ONLY", f"{self.name} volume {number} is read-only")

    def prepare(self, initiator: str, port: str, lun: int, lba: int, blocks: int,
                write: bool) -> int:
        """All target checks for an I/O of `blocks` at `lba`, before any data moves."""
        with self._lock:   # jobs and snapshots change in management threads
            number = self.lookup(initiator, port, lun)
            self.check_range(number, lba, blocks)
            if write:
                self.check_writable(number, initiator)
            return number

    # -- SCSI commands --------------------------------------------------------------------
    def inquiry(self, initiator: str, port: str, lun: int, page: int | None = None) -> bytes:
        number = self.lookup(initiator, port, lun)
        if page is None:
            return standard_inquiry()
        if page == 0x83:
            return device_identification(self.device_id, number)
        raise SanError("INVALID_INPUT", f"{self.name}: INQUIRY VPD page {page:#04x} is not supported")

    def report_luns(self, initiator: str, port: str) -> list[int]:
        if port not in self.ports:
            raise SanError("NO_SUCH_PORT", f"{self.name} has no port {port!r}")
        element = initiator.split("/")[0]
        return sorted(lun for (p, lun), (_, hosts) in self.luns.items()
                      if p == port and element in hosts)

    def read_capacity(self, initiator: str, port: str, lun: int) -> tuple[int, int]:
        """(last LBA, block length), as READ CAPACITY (16) reports them."""
        number = self.lookup(initiator, port, lun)
        return self.size_of(number) // BLOCK - 1, BLOCK

    def read(self, initiator: str, port: str, lun: int, lba: int, blocks: int) -> np.ndarray:
        number = self.prepare(initiator, port, lun, lba, blocks, write=False)
        return self.read_volume(number, lba * BLOCK, blocks * BLOCK)

    def read_volume(self, number: int, offset: int, length: int) -> np.ndarray:
        """Read any volume; a snapshot under the lock, so no copy-on-write happens mid-read."""
        if number in self.stores:
            return self.stores[number].read(offset, length)
        with self._lock:
            return self.reader(number).read(offset, length)

    def write(self, initiator: str, port: str, lun: int, lba: int, data) -> int:
        """Apply one WRITE; returns the bytes written.  `data` is a uint8 array of whole blocks."""
        if len(data) % BLOCK:
            raise SanError("INVALID_INPUT", f"{self.name}: write of {len(data)} bytes is not "
                                            f"a whole number of {BLOCK}-byte blocks")
        with self._lock:
            number = self.prepare(initiator, port, lun, lba, len(data) // BLOCK, write=True)
            self._store_write(number, lba * BLOCK, data)
        return len(data)

    def lba_status(self, initiator: str, port: str, lun: int) -> list[tuple[int, int]]:
        """GET LBA STATUS: the (offset, length) byte ranges that hold data (the rest reads as
        zeros), so an initiator can copy or check a thin volume in time that follows its data."""
        number = self.lookup(initiator, port, lun)
        return self.extents(number)

    def unmap(self, initiator: str, port: str, lun: int, lba: int, blocks: int) -> int:
        """UNMAP: the blocks read as zeros again (whole granules are freed); returns bytes."""
        with self._lock:
            number = self.prepare(initiator, port, lun, lba, blocks, write=True)
            self._store_zero(number, lba * BLOCK, blocks * BLOCK)
        return blocks * BLOCK

    def _store_write(self, number: int, offset: int, data) -> None:
        """Every write to a volume's store goes here: copy-before-write, then the write."""
        self._before_write(number, offset, len(data))
        self.stores[number].write(offset, data)

    def _store_zero(self, number: int, offset: int, length: int) -> None:
        """Make [offset, offset+length) read as zeros: free whole granules, zero the edges."""
        if not length:
            return
        self._before_write(number, offset, length)
        store, G = self.stores[number], self.granule
        inner0 = -(-offset // G) * G
        inner1 = max(inner0, (offset + length) // G * G)
        if inner1 > inner0:
            store.discard(inner0, inner1 - inner0)
        for lo, hi in ((offset, min(inner0, offset + length)), (max(inner1, offset), offset + length)):
            if hi > lo and any(store.checksum(g) is not None for g in range(lo // G, (hi - 1) // G + 1)):
                store.write(lo, np.zeros(hi - lo, dtype=np.uint8))

    def _before_write(self, number: int, offset: int, length: int) -> None:
        """What must happen before bytes of volume `number` change: a running job from it
        copies the old granules it still owes, and its snapshots save what they need."""
        if not length:
            return
        g0, g1 = offset // self.granule, (offset + length - 1) // self.granule
        for job in list(self.jobs.values()):
            if job.state == "running" and job.source == number and job.pending and job.dest_array is None:
                for g in range(g0, g1 + 1):
                    if g in job.pending:
                        self._copy_granule(job, g)
        if self.snaps.snapshots_of(number):
            self.snaps.before_write(number, offset, length)

    # -- management interface ----------------------------------------------------------------
    def authorize(self, caller: str) -> None:
        if caller not in self.managers:
            raise SanError("UNAUTHORIZED", f"{caller} may not manage {self.name} "
                                           f"(managers: {', '.join(sorted(self.managers)) or 'none'})")

    def mgmt_volumes(self, caller: str) -> dict:
        """The volume list and device ID (Fig. 15)."""
        self.authorize(caller)
        return {"device_id": self.device_id, "volumes": self.numbers()}

    def mgmt_volume_table(self, caller: str) -> list[dict]:
        self.authorize(caller)
        return self.volume_table()

    def mgmt_copy_destinations(self, caller: str, port: str, lun: int) -> dict:
        """The copy-destination list of the volume at port/LUN, and the device ID (Fig. 8)."""
        self.authorize(caller)
        number = self._volume_at(port, lun)
        dests = list(self.volumes[number].copy_destinations) if number in self.volumes else []
        return {"device_id": self.device_id, "volume": number, "destinations": dests}

    def _volume_at(self, port: str, lun: int) -> int:
        if port not in self.ports:
            raise SanError("NO_SUCH_PORT", f"{self.name} has no port {port!r}")
        entry = self.luns.get((port, lun))
        if entry is None:
            raise SanError("NO_SUCH_PORT", f"{self.name}/{port} has no volume at LUN {lun}")
        return entry[0]

    def mgmt_record_info(self, caller: str, number: int, record: bytes) -> None:
        self.authorize(caller)
        self.record_info(number, record)

    def mgmt_read_info(self, caller: str, number: int) -> bytes | None:
        self.authorize(caller)
        self.reader(number)
        return self.read_info(number)

    def mgmt_delete_info(self, caller: str, number: int) -> None:
        self.authorize(caller)
        self.reader(number)
        self.delete_info(number)

    def _info_path(self, number: int) -> Path:
        return self.directory / f"vol-{number}.info"

    def record_info(self, number: int, record: bytes) -> None:
        """Keep a volume's volume info (opaque bytes, exactly 512) beside it."""
        self.reader(number)
        record = bytes(record)
        if len(record) != INFO_SIZE:
            raise SanError("INVALID_INPUT", f"volume info for {self.name} volume {number} must be "
                                            f"{INFO_SIZE} bytes (got {len(record)})")
        tmp = self._info_path(number).with_suffix(".tmp")
        tmp.write_bytes(record)
        os.replace(tmp, self._info_path(number))

    def read_info(self, number: int) -> bytes | None:
        path = self._info_path(number)
        return path.read_bytes() if path.exists() else None

    def delete_info(self, number: int) -> None:
        self._info_path(number).unlink(missing_ok=True)

    def mgmt_mirror(self, caller: str, port: str, lun: int, secondary: int) -> dict:
        """Order a mirror of the volume at port/LUN onto `secondary` (Figs. 9-10)."""
        self.authorize(caller)
        with self._lock:
            primary = self._volume_at(port, lun)
            if primary not in self.volumes:
                raise SanError("INVALID_INPUT", f"{self.name} volume {primary} is a snapshot; "
                                                "only a volume can be mirrored")
            if secondary not in self.volumes[primary].copy_destinations:
                self.reader(secondary)
                raise SanError("NOT_A_COPY_DESTINATION",
                               f"{self.name} volume {secondary} is not a copy destination of volume "
                               f"{primary} (destinations: {list(self.volumes[primary].copy_destinations)})")
            job = self._start(primary, secondary, "mirror")
            self.mirror_source[secondary] = primary
            self._save_table()
            return job.status()

    def mgmt_restore(self, caller: str, backup: int, port: str, lun: int) -> dict:
        """Copy backup volume `backup` (a mirror secondary, a snapshot or a copy) onto the
        volume at port/LUN, normally its primary (Fig. 12); only differing granules move.
        The target's volume info is never written."""
        self.authorize(caller)
        with self._lock:
            target = self._volume_at(port, lun)
            return self._start(backup, target, "restore").status()

    def mgmt_snapshot(self, caller: str, port: str, lun: int) -> dict:
        """Take a snapshot of the volume at port/LUN; returns its new volume number (Fig. 18)."""
        self.authorize(caller)
        with self._lock:
            return {"volume": self.snapshot(self._volume_at(port, lun))}

    def snapshot(self, source: int) -> int:
        with self._lock:
            if source not in self.volumes:
                self.reader(source)
                raise SanError("INVALID_INPUT", f"{self.name} volume {source} is a snapshot; "
                                                "snapshots are taken of volumes")
            number = next(n for n in itertools.count() if n not in self.ever_used)
            self.ever_used.add(number)
            self._save_table()          # before the snapshot exists: a number is never reused
            self.snaps.create(source, number)
            return number

    def mgmt_delete_snapshot(self, caller: str, number: int) -> None:
        self.authorize(caller)
        self.delete_snapshot(number)

    def delete_snapshot(self, number: int) -> None:
        with self._lock:
            if not self.snaps.is_snapshot(number):
                self.reader(number)
                raise SanError("INVALID_INPUT", f"{self.name} volume {number} is not a snapshot")
            self._check_not_busy(number, "deleted")
            self.attachments = [a for a in self.attachments if a["number"] != number]
            self._save_table()
            self._rebuild_luns()
            self.snaps.delete(number)
            self.delete_info(number)

    def mgmt_delete_backup(self, caller: str, number: int) -> None:
        """Fig. 14: forget a backup volume's volume info; a snapshot is deleted outright (a
        mirror secondary keeps its data until the next mirror overwrites it)."""
        self.authorize(caller)
        with self._lock:
            if self.snaps.is_snapshot(number):
                self.delete_snapshot(number)
            else:
                self.reader(number)
                self._check_not_busy(number, "deleted")
                self.delete_info(number)

    def mgmt_copy(self, caller: str, source: int, dest: int, with_info: bool = True) -> dict:
        """Volume copy inside this array (Fig. 19): data, then (if `with_info`) the source's
        volume info, recorded only once the data copy has succeeded."""
        self.authorize(caller)
        with self._lock:
            return self._start(source, dest, "copy", with_info=with_info).status()

    def mgmt_attach(self, caller: str, number: int, port: str, lun: int, host: str) -> None:
        """Map volume `number` at port/LUN for `host` (file restore, Fig. 13)."""
        self.authorize(caller)
        with self._lock:
            self.reader(number)
            if port not in self.ports:
                raise SanError("NO_SUCH_PORT", f"{self.name} has no port {port!r}")
            if (port, lun) in self.luns:
                raise SanError("BUSY", f"{self.name}/{port} LUN {lun} already holds volume "
                                       f"{self.luns[(port, lun)][0]}")
            self.attachments.append({"number": number, "port": port, "lun": lun, "hosts": [host]})
            self._save_table()
            self._rebuild_luns()

    def mgmt_detach(self, caller: str, port: str, lun: int) -> None:
        self.authorize(caller)
        with self._lock:
            kept = [a for a in self.attachments if (a["port"], a["lun"]) != (port, lun)]
            if len(kept) == len(self.attachments):
                raise SanError("NO_SUCH_PORT", f"{self.name}/{port} LUN {lun} has no attached volume")
            self.attachments = kept
            self._save_table()
            self._rebuild_luns()

    def mgmt_reserve(self, caller: str, number: int) -> None:
        """Another array (the caller) is about to copy into `number` over FC: until it
        releases it, the volume is read-only to everyone else and BUSY for other copies."""
        self.authorize(caller)
        with self._lock:
            self.reader(number)
            self._check_not_busy(number, "the destination of a copy")
            if number not in self.stores:
                raise SanError("READ_ONLY", f"{self.name} volume {number} is a snapshot")
            self.reserved[number] = caller

    def mgmt_release(self, caller: str, number: int) -> None:
        self.authorize(caller)
        with self._lock:
            if self.reserved.get(number) == caller:
                del self.reserved[number]

    def mgmt_job(self, caller: str, job: int) -> dict:
        """Progress of a copy job."""
        self.authorize(caller)
        return self._job(job).status()

    def mgmt_wait(self, caller: str, job: int) -> dict:
        """Wait until a copy job ends; its final status (a failed job raises its error)."""
        self.authorize(caller)
        found = self._job(job)
        found.done.wait()
        if found.error is not None:
            raise found.error
        return {**found.status(), "transfers": found.transfers}

    def _job(self, job: int) -> CopyJob:
        if job not in self.jobs:
            raise SanError("INVALID_INPUT", f"{self.name} has no copy job {job}")
        return self.jobs[job]

    # -- copy jobs ----------------------------------------------------------------------------
    def _running(self, number: int) -> CopyJob | None:
        """A running job that `number` is the destination or the source of, destinations first."""
        running = [j for j in list(self.jobs.values()) if j.state == "running"]
        return (next((j for j in running if j.dest == number and j.dest_array is None), None)
                or next((j for j in running if j.source == number), None))

    def _check_not_busy(self, number: int, what: str) -> None:
        if number in self.reserved and self._reservation(number) is not None:
            raise SanError("BUSY", f"{self.name} volume {number} cannot be {what}: it is the "
                                   f"destination of a running copy from {self.reserved[number]}")
        job = self._running(number)
        if job is not None:
            raise SanError("BUSY", f"{self.name} volume {number} cannot be {what}: it is in a "
                                   f"running {job.kind} ({job.source} -> {job.dest})")

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
        if isinstance(src, VolumeStore) and src.bad_granules():
            start, length = src.bad_extents()[0]
            raise SanError("CHECKSUM_MISMATCH",
                           f"{self.name} volume {source}: bytes {start}..{start + length - 1} fail "
                           f"their checksum; it cannot be the source of a {kind}")
        bad = set(dst.bad_granules())
        exact = kind in ("restore", "copy")
        if isinstance(src, VolumeStore):
            union = set(src.written_granules()) | set(dst.written_granules())
            copy = {g for g in union if src.checksum(g) != dst.checksum(g)} | bad
            checked = []
            if exact:
                checked = sorted(g for g in union - copy if dst.checksum(g) is not None)
                copy.update(dst.verify(checked))
            return sorted(copy), sum(self._glen(dest, g) for g in checked)
        if self.snaps.source_of(source) == dest:
            # restoring a snapshot onto its own source: the granules written since the
            # snapshot are compared byte for byte; the others are *shared* by the two, so rot
            # there is rot in the backup itself, and the restore cannot repair it
            copy = set(self.snaps.restore_plan(source)) | bad
            shared = sorted(g for g in self.snaps.shared_granules(source) if g not in copy)
            rotten = dst.verify(shared)
            if rotten:
                start, length = granule_extents(rotten, self.granule, lambda g: self._glen(dest, g))[0]
                raise SanError("CHECKSUM_MISMATCH",
                               f"{self.name} volume {source} (a snapshot of volume {dest}): bytes "
                               f"{start}..{start + length - 1} it shares with volume {dest} fail "
                               f"their checksum")
            return sorted(copy), sum(self._glen(dest, g) for g in shared)
        # any other snapshot: every granule either side holds is copied (and so read)
        return sorted(set(src.written_granules()) | set(dst.written_granules())), 0

    def _start(self, source: int, dest: int, kind: str, with_info: bool = False) -> CopyJob:
        """Check and start a copy job from `source` to `dest` (the lock is held)."""
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
        job = self._running(source)
        if job is not None and job.dest == source:
            raise SanError("BUSY", f"{self.name} volume {source} is still being written by a "
                                   f"running {job.kind} from volume {job.source}")
        plan, checked = self._plan(source, dest, kind)
        if kind != "restore":   # the destination's old backup is being overwritten: its
            self.delete_info(dest)   # record goes now, so an interrupted copy claims nothing
        job = CopyJob(next(self._job_ids), kind, source, dest, set(plan), plan[::-1],
                      total=sum(self._glen(dest, g) for g in plan), with_info=with_info,
                      checked=checked)
        self.jobs[job.id] = job
        if self.autostart:
            threading.Thread(target=self._run, args=(job,), name=f"{self.name}-{kind}-{job.id}",
                             daemon=True).start()
        return job

    def _glen(self, number: int, g: int) -> int:
        """Bytes of granule `g` of a volume (the last one of an odd-sized volume is short)."""
        return min(self.granule, self.size_of(number) - g * self.granule)

    def _copy_granule(self, job: CopyJob, g: int) -> None:
        self._copy_run(job, [g])

    def _copy_run(self, job: CopyJob, run: list[int]) -> None:
        """Copy consecutive granules of a job now (the lock is held): one read, then one
        write per stretch of data (all-zero stretches are freed, keeping the copy thin)."""
        G = self.granule
        offset = run[0] * G
        end = min((run[-1] + 1) * G, self.size_of(job.dest))
        data = self.read_volume(job.source, offset, end - offset)
        nonzero = [bool(data[i * G:(i + 1) * G].any()) for i in range(len(run))]
        i = 0
        while i < len(run):
            j = i
            while j + 1 < len(run) and nonzero[j + 1] == nonzero[i]:
                j += 1
            lo, hi = offset + i * G, min(offset + (j + 1) * G, end)
            if nonzero[i]:
                self._store_write(job.dest, lo, data[lo - offset:hi - offset])
            else:
                self._store_zero(job.dest, lo, hi - lo)
            i = j + 1
        job.pending.difference_update(run)
        job.copied += end - offset

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
            run: list[int] = []
            for g in batch:
                if run and g != run[-1] + 1:
                    self._copy_run(job, run)
                    run = []
                run.append(g)
            if run:
                self._copy_run(job, run)
            return bool(job.pending)

    def finish(self, job: CopyJob) -> None:
        """The end of a job whose granules are all copied: its volume info, its state."""
        with self._lock:
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
        job.error = exc if isinstance(exc, SanError) else SanError(
            "INVALID_INPUT", f"{job.kind} {job.source} -> {job.dest} failed: {exc!r}")
        job.state = "failed"
        job.done.set()

    def _run(self, job: CopyJob) -> None:
        try:
            while self.step(job):
                pass
            self.finish(job)
        except Exception as exc:  # a failure (or a bug) must end the job and reach the waiter
            self.fail(job, exc)

    def wait_all(self) -> None:
        for job in list(self.jobs.values()):
            job.done.wait()

    # -- whole-volume services --------------------------------------------------------------
    def digest_volume(self, number: int) -> str:
        """The contract's volume digest, read from the stored data (checksums apply)."""
        if number in self.stores:
            return self.stores[number].digest()
        with self._lock:
            return self.reader(number).digest()

    def digest_lun(self, initiator: str, port: str, lun: int) -> str:
        return self.digest_volume(self.lookup(initiator, port, lun))

    def extents(self, number: int) -> list[tuple[int, int]]:
        if number in self.stores:
            return self.stores[number].extents()
        with self._lock:
            return self.reader(number).extents()

    def scrub(self, number: int | None = None) -> dict:
        """Read and verify every written granule of volume `number` (default: every volume,
        snapshots included); the bad ones are remembered in the state dir (the next copy onto
        a volume rewrites them).  Finding bad granules is a result, not an error:
        ``{"checked_bytes": N, "bad": [{"volume", "offset", "length"}, ...]}``, adjacent bad
        granules merged, volumes in number order."""
        numbers = self.numbers() if number is None else [number]
        checked, bad = 0, []
        for n in numbers:
            reader = self.reader(n)
            if number is None and self.snaps.is_snapshot(n) and self.snaps.is_broken(n):
                continue   # a broken snapshot holds nothing left to check (reading it: POOL_FULL)
            if isinstance(reader, VolumeStore):
                nbytes, granules = reader.scrub()
            else:
                with self._lock:   # no copy-on-write between a snapshot's lookups and reads
                    nbytes, granules = reader.scrub()
            checked += nbytes
            bad += [{"volume": n, "offset": off, "length": ln}
                    for off, ln in granule_extents(granules, self.granule, reader._glen)]
        return {"checked_bytes": checked, "bad": bad}

    def corrupt(self, number: int, offset: int, nbytes: int = 1) -> None:
        """Flip stored bytes behind the array's back (the `corrupt` fault)."""
        store = self.reader(number)
        if not isinstance(store, VolumeStore):
            raise SanError("INVALID_INPUT", f"{self.name} volume {number} is a snapshot: corrupt "
                                            f"its source volume {self.snaps.source_of(number)}")
        if offset < 0 or offset + nbytes > store.size:
            raise SanError("LBA_OUT_OF_RANGE", f"{self.name} volume {number}: offset {offset} "
                                               f"is past its end ({store.size} bytes)")
        store.corrupt(offset, nbytes)

    def close(self) -> None:
        for store in self.stores.values():
            store.close()
