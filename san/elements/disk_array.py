"""The disk array: volumes, the LUN map, the SCSI target side, and the array's data services.

A `DiskArray` is the disk array control program of the patent (docs/method.md; Figs. 2, 7, 11, 17-19), in plain
Python; `san.actors` makes it an actor (I/O one command at a time, so a volume's writes apply
in the order sent; management calls and copies in their own threads).

Block path.  Volumes are thin, checksummed `VolumeStore`s under ``STATE_DIR/arrays/NAME/``.
An initiator (a host HBA, or another array's port) sends INQUIRY (standard data and the
device-identification VPD page 0x83 carrying the array's device ID; both encoded by
`san.scsi`), REPORT LUNS, READ CAPACITY, READ, WRITE and UNMAP.  Target-side checks, in the contract's path order after the
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

Copies.  A mirror, a restore and an intra-array volume copy are *copy jobs*, run by the
copy engine this class mixes in (`san.elements.copy_jobs.CopyEngine`): incremental (only the
granules whose checksums differ move), point-in-time (a host write first copies what a running
job still owes), with the destination read-only to hosts and ``BUSY`` for other copies while
the job runs, and its old volume info gone when the job starts.
Snapshots are copy-on-write (`san.snapshots`); they take the lowest volume number the array
has never used, and persist across restarts like everything else here.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np

from ..errors import SanError
from ..fileio import sync_dir
from ..granules import granule_extents
from ..pool import GranulePool
from ..scsi import (VPD_DEVICE_IDENTIFICATION, VPD_SUPPORTED_PAGES, data_buffer,
                    device_identification, read_capacity_data, standard_inquiry,
                    supported_vpd_pages)
from ..snapshots import SnapshotEngine
from ..storage import VolumeStore
from ..units import BLOCK, DEFAULT_GRANULE as GRANULE
from ..volume_info import SIZE as INFO_SIZE    # the patent's 512-byte record (not a block)
from ..volume_info import IDENTITY as INFO_IDENTITY     # its bytes that name the backup
from .copy_jobs import BATCH, CopyEngine, CopyJob  # noqa: F401  (CopyJob, BATCH: re-exported)
from .sequences import WriteSequences

__all__ = ["DiskArray", "GRANULE", "INFO_SIZE", "CopyJob", "BATCH"]


def _ranges(numbers: set[int]) -> list:
    """`numbers` for table.json, short whatever their count (so that saving the table after
    each of thousands of snapshots costs the same): runs of consecutive numbers as
    ``[first, last]``, lone numbers as they are."""
    out: list = []
    for n in sorted(numbers):
        last = out[-1] if out else None
        if isinstance(last, list) and last[1] == n - 1:
            last[1] = n
        elif isinstance(last, int) and last == n - 1:
            out[-1] = [last, n]
        else:
            out.append(n)
    return out


def _expand(entries: list) -> set[int]:
    """The numbers of `_ranges`' form (a plain list of numbers, the older form, reads too)."""
    out: set[int] = set()
    for e in entries:
        if isinstance(e, list):
            out.update(range(int(e[0]), int(e[1]) + 1))
        else:
            out.add(int(e))
    return out


class DiskArray(CopyEngine):
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
        self.snaps = SnapshotEngine(self.directory, self.pool, self.stores, array=self.name,
                                    redirect=spec.snapshot_mode == "redirect-on-write")
        self.read_only: set[int] = set()
        self.reserved: dict[int, str] = {}   # volume -> the array copying into it over FC
        self.sequences = WriteSequences(self.directory, self.name)   # hosts' WRITEs applied
        self._lock = threading.RLock()
        self._init_copy_jobs()
        table = self._load_table()
        self.ever_used: set[int] = _expand(table["ever_used"]) | set(self.volumes)
        self._lowest_unused = 0          # only grows: a number once used is never free again
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
        raw = self._table_path.read_bytes()
        try:
            table = json.loads(raw)
        except ValueError as exc:       # also bytes that are not UTF-8
            raise SanError("INVALID_INPUT", f"{self._table_path} holds no volume table "
                                            f"({type(exc).__name__}: {exc}; starts {raw[:40]!r})") from None
        if not isinstance(table, dict):
            raise SanError("INVALID_INPUT", f"{self._table_path} holds no volume table "
                                            f"(a JSON {type(table).__name__}, not an object)")
        return {**empty, **table}

    def _save_table(self) -> None:
        data = {"ever_used": _ranges(self.ever_used), "attachments": self.attachments,
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

    def size_of(self, number: int) -> int:
        return self.reader(number).size

    # -- target-side checks -------------------------------------------------------------
    def lookup(self, initiator: str, port: str, lun: int) -> int:
        """The volume number behind (port, LUN) for this initiator, or the coded refusal."""
        number, hosts = self._lun_entry(port, lun)
        element = initiator.split("/")[0]
        if element not in hosts:
            raise SanError("LUN_NOT_MAPPED", f"{self.name}/{port} LUN {lun} (volume {number}) "
                                             f"is not mapped to {element}")
        return number

    def check_range(self, number: int, lba: int, blocks: int) -> None:
        """LBA_OUT_OF_RANGE unless blocks [lba, lba+blocks) are the volume's; a transfer of
        no blocks too if `lba` is past the last block (SBC: a zero length is no error, an
        LBA beyond the capacity still is)."""
        size = self.size_of(number)
        if lba < 0 or blocks < 0 or (lba + blocks) * BLOCK > size or lba * BLOCK >= size:
            what = f"blocks {lba}..{lba + blocks - 1}" if blocks > 0 else f"block {lba}"
            raise SanError("LBA_OUT_OF_RANGE",
                           f"{self.name} volume {number}: {what} "
                           f"(bytes {lba * BLOCK}+{blocks * BLOCK}) are past its end "
                           f"({size} bytes, {size // BLOCK} blocks)")

    def copy_holder_active(self, holder: str, number: int) -> bool:
        """Is array `holder` still copying into our volume `number`?  The plain array cannot
        ask another element, so it trusts the reservation; the Ray layer asks the holder."""
        return True

    def _settle_reservations(self, number: int | None, initiator: str | None = None) -> None:
        """Release the reservation of volume `number` (if it has one; None: nothing to do) if
        its holder runs no copy into it any more (it died or restarted).  An `initiator` that
        is the holder itself is not asked about.

        Called *before* the lock is taken: asking a holder is a remote call that may wait
        `HOLDER_TIMEOUT`, and the holder may be calling this array meanwhile (a lock held
        across it stalled every I/O and management call here).  The checks made under the
        lock then trust the reservations left; one that goes stale in between is settled by
        the next call."""
        holder = None if number is None else self.reserved.get(number)
        if holder is None or (initiator is not None and initiator.split("/")[0] == holder):
            return
        if not self.copy_holder_active(holder, number):
            with self._lock:
                if self.reserved.get(number) == holder:
                    del self.reserved[number]

    def _settle_for_overwrite(self, number: int | None) -> None:
        """`_settle_reservations` of a volume about to be written or deleted by an order, and
        the drop of its attachments whose flow died (`_settle_attachment`): an attachment
        makes it BUSY for that (`_check_not_busy`).  Before the lock, likewise."""
        if number is None:
            return
        for found in [a for a in list(self.attachments) if a["number"] == number]:
            self._settle_attachment(found["port"], found["lun"])
        self._settle_reservations(number)

    def _peek_volume_at(self, port: str, lun: int) -> int | None:
        """The volume at port/LUN now, read without the lock (None if none): which
        reservation to settle before the lock is taken; the checks under it look again."""
        entry = self.luns.get((port, lun))
        return None if entry is None else entry[0]

    def _settle_for_write(self, initiator: str, port: str, lun: int) -> None:
        """`_settle_reservations` of the volume a write at port/LUN goes to (before the lock;
        nothing to do, and no lookup, while nothing is reserved)."""
        if self.reserved:
            entry = self.luns.get((port, lun))
            if entry is not None:
                self._settle_reservations(entry[0], initiator)

    def check_writable(self, number: int, initiator: str | None = None) -> None:
        """READ_ONLY unless the volume may be written now (by `initiator`, if given); the
        reservations are trusted as they are (see `_settle_reservations`)."""
        holder = self.reserved.get(number)
        if holder is not None and (initiator is None or initiator.split("/")[0] != holder):
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
        if write:
            self._settle_for_write(initiator, port, lun)
        with self._lock:   # jobs and snapshots change in management threads
            return self._target(initiator, port, lun, lba, blocks, write)

    def _target(self, initiator: str, port: str, lun: int, lba: int, blocks: int,
                write: bool) -> int:
        """`prepare`'s checks, the lock held (and, for a write, reservations settled)."""
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
        if page == VPD_DEVICE_IDENTIFICATION:
            return device_identification(self.device_id, number)
        if page == VPD_SUPPORTED_PAGES:
            return supported_vpd_pages()
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
        return read_capacity_data(self.size_of(number))

    def read(self, initiator: str, port: str, lun: int, lba: int, blocks: int) -> np.ndarray:
        """Apply one READ: the verified bytes, as a data buffer (returned in pieces over Ray)."""
        number = self.prepare(initiator, port, lun, lba, blocks, write=False)
        return data_buffer(self.read_volume(number, lba * BLOCK, blocks * BLOCK))

    def read_volume(self, number: int, offset: int, length: int) -> np.ndarray:
        """Read any volume; a snapshot under the lock, so no copy-on-write happens mid-read."""
        if number in self.stores:
            return self.stores[number].read(offset, length)
        with self._lock:
            return self.reader(number).read(offset, length)

    def write(self, initiator: str, port: str, lun: int, lba: int, data, seq=None) -> int:
        """Apply one WRITE; returns the bytes written.  `data` is a uint8 array of whole blocks.

        `seq`, a host's (session, number) for this WRITE (`san.elements.sequences`), makes a
        retry idempotent: a WRITE already applied is acknowledged and not applied again, one
        from the past that never was is refused."""
        if len(data) % BLOCK:
            raise SanError("INVALID_INPUT", f"{self.name}: write of {len(data)} bytes is not "
                                            f"a whole number of {BLOCK}-byte blocks")
        self._settle_for_write(initiator, port, lun)
        with self._lock:
            number = self._target(initiator, port, lun, lba, len(data) // BLOCK, write=True)
            if seq is None:
                self._store_write(number, lba * BLOCK, data)
            else:
                key = (initiator.split("/")[0], port, lun)
                if self.sequences.admit(key, *seq):
                    self._store_write(number, lba * BLOCK, data)
                    self.sequences.applied(key, *seq)
        return len(data)

    def lba_status(self, initiator: str, port: str, lun: int) -> list[tuple[int, int]]:
        """GET LBA STATUS: the (offset, length) byte ranges that hold data (the rest reads as
        zeros), so an initiator can copy or check a thin volume in time that follows its data."""
        number = self.lookup(initiator, port, lun)
        return self.extents(number)

    def unmap(self, initiator: str, port: str, lun: int, lba: int, blocks: int) -> int:
        """UNMAP: the blocks read as zeros again (whole granules are freed); returns bytes."""
        self._settle_for_write(initiator, port, lun)
        with self._lock:
            number = self._target(initiator, port, lun, lba, blocks, write=True)
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
        end = offset + length
        inner0 = -(-offset // G) * G
        # a range to the volume's end holds its last granule whole, even a short one
        inner1 = max(inner0, end if end == store.size else end // G * G)
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
        self.copy_owed(number, offset, length)
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
        return self._lun_entry(port, lun)[0]

    def _lun_entry(self, port: str, lun: int) -> tuple[int, frozenset]:
        """(volume number, hosts) mapped at port/LUN, or NO_SUCH_PORT."""
        if port not in self.ports:
            raise SanError("NO_SUCH_PORT", f"{self.name} has no port {port!r}")
        entry = self.luns.get((port, lun))
        if entry is None:
            raise SanError("NO_SUCH_PORT", f"{self.name}/{port} has no volume at LUN {lun}")
        return entry

    def mgmt_record_info(self, caller: str, number: int, record: bytes) -> None:
        self.authorize(caller)
        self.record_info(number, record)

    def mgmt_read_info(self, caller: str, number: int) -> bytes | None:
        self.authorize(caller)
        self.reader(number)
        return self.read_info(number)

    def mgmt_read_infos(self, caller: str, numbers: list[int] | None = None) -> dict:
        """The volume list and device ID with each listed volume's volume info, in one call
        (what a catalog rebuild reads of an array, Fig. 15): ``{"device_id", "volumes":
        [N, ...], "records": [bytes | None, ...]}``, records in the order of volumes.
        `numbers` defaults to every volume, snapshots included (`mgmt_volumes`); a number
        the array does not have is NO_SUCH_VOLUME."""
        self.authorize(caller)
        if numbers is None:
            numbers = self.numbers()
        else:
            numbers = [int(n) for n in numbers]
            for number in numbers:
                self.reader(number)
        return {"device_id": self.device_id, "volumes": numbers, "records": self.read_infos(numbers)}

    def mgmt_delete_info(self, caller: str, number: int) -> None:
        self.authorize(caller)
        self.reader(number)
        self.delete_info(number)

    def _info_path(self, number: int) -> Path:
        return self.directory / self._info_name(number)

    @staticmethod
    def _info_name(number: int) -> str:
        return f"vol-{number}.info"

    def record_info(self, number: int, record: bytes) -> None:
        """Keep a volume's volume info (opaque bytes, exactly 512) beside it."""
        self.reader(number)
        self._write_info(number, self._info_bytes(record, f"{self.name} volume {number}"))

    @staticmethod
    def _info_bytes(record, of: str) -> bytes:
        """`record` as bytes if it is a volume info's exact size; else INVALID_INPUT."""
        record = bytes(record)
        if len(record) != INFO_SIZE:
            raise SanError("INVALID_INPUT", f"volume info for {of} must be {INFO_SIZE} bytes "
                                            f"(got {len(record)})")
        return record

    def _write_info(self, number: int, record: bytes) -> None:
        # in the array's lock: two callers recording at once shared vol-N.tmp, so one could
        # move the other's half-written record into place or find its own gone
        with self._lock:
            tmp = self._info_path(number).with_suffix(".tmp")
            tmp.write_bytes(bytes(record))
            os.replace(tmp, self._info_path(number))

    def read_info(self, number: int) -> bytes | None:
        return self.read_infos([number])[0]

    def read_infos(self, numbers) -> list[bytes | None]:
        """The volume info of each of `numbers` (None where none is recorded), read with
        the bare system calls, by name in the array's open folder (a catalog rebuild reads
        thousands: this is three times quicker than `open(path).read()` each)."""
        records = []
        folder = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for number in numbers:
                try:
                    fd = os.open(self._info_name(number), os.O_RDONLY, dir_fd=folder)
                except FileNotFoundError:
                    records.append(None)
                    continue
                try:
                    record = os.read(fd, INFO_SIZE + 1)     # a record is 512 bytes: one read
                    if len(record) > INFO_SIZE:             # (a short read of a file is its
                        chunks = [record]                   # end); a longer one is read whole
                        while chunks[-1]:
                            chunks.append(os.read(fd, 1 << 16))
                        record = b"".join(chunks)
                finally:
                    os.close(fd)
                records.append(record)
        finally:
            os.close(folder)
        return records

    def delete_info(self, number: int) -> None:
        self._info_path(number).unlink(missing_ok=True)

    def check_holds(self, number: int, expect: bytes | None) -> None:
        """NO_SUCH_BACKUP unless volume `number` holds the volume info `expect` (None: no check).

        Why: an order by catalog row names a backup by where it lives, and that volume may
        hold another backup now (another server's mirror overwrote it, or its record was
        deleted), whose bytes a restore would bring back as if they were the row's.  The
        record is compared byte for byte, as the array keeps it, all but its reserved tail
        (`san.volume_info.IDENTITY`: a later version's extension there names no other
        backup).  Checked first, before the volume is looked up: a snapshot deleted since is
        no backup either."""
        if expect is None:
            return
        if number not in self.stores and not self.snaps.is_snapshot(number):
            raise SanError("NO_SUCH_BACKUP", f"{self.name} has no volume {number} now (a snapshot "
                                             "deleted since?), so not the backup the order names")
        held = self.read_info(number)
        if held is None or held[:INFO_IDENTITY] != bytes(expect[:INFO_IDENTITY]):
            what = "no backup (no volume info)" if held is None else "another backup's volume info"
            raise SanError("NO_SUCH_BACKUP", f"{self.name} volume {number} holds {what} now, "
                                             "not the backup the order names")

    def mgmt_mirror(self, caller: str, port: str, lun: int, secondary: int) -> dict:
        """Order a mirror of the volume at port/LUN onto `secondary` (Figs. 9-10)."""
        self.authorize(caller)
        self._settle_for_overwrite(secondary)
        self._settle_reservations(self._peek_volume_at(port, lun))
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
            if self.mirror_source.get(secondary) != primary:   # a resync changes nothing here
                self.mirror_source[secondary] = primary
                self._save_table()
        return self._launch(job)

    def mgmt_restore(self, caller: str, backup: int, port: str, lun: int,
                     expect: bytes | None = None) -> dict:
        """Copy backup volume `backup` (a mirror secondary, a snapshot or a copy) onto the
        volume at port/LUN, normally its primary (Fig. 12); only differing granules move.
        The target's volume info is never written, and one it held is deleted (its backup is
        overwritten; a restored volume is no backup).  `expect`: see `check_holds`."""
        self.authorize(caller)
        self._settle_reservations(backup)
        self._settle_for_overwrite(self._peek_volume_at(port, lun))
        with self._lock:
            job = self._start(backup, self._volume_at(port, lun), "restore", expect=expect)
        return self._launch(job)

    def mgmt_snapshot(self, caller: str, port: str, lun: int, record: bytes | None = None) -> dict:
        """Take a snapshot of the volume at port/LUN; returns its new volume number (Fig. 18).
        `record`: its volume info, kept with it from the moment it exists (`snapshot`)."""
        self.authorize(caller)
        with self._lock:
            return {"volume": self.snapshot(self._volume_at(port, lun), record)}

    def snapshot(self, source: int, record: bytes | None = None) -> int:
        """A new snapshot of volume `source`; its number.  With `record`, its volume info is
        written first: a snapshot backup's data is whole the moment it exists, and if the
        element that ordered it dies before anyone learns its number, the record still
        names it, so a catalog rebuild finds it (and `delete_backup` can free its space)."""
        with self._lock:
            if source not in self.volumes:
                self.reader(source)
                raise SanError("INVALID_INPUT", f"{self.name} volume {source} is a snapshot; "
                                                "snapshots are taken of volumes")
            if record is not None:
                record = self._info_bytes(record, f"a snapshot of {self.name} volume {source}")
            self._check_whole(source, "snapshot")
            while self._lowest_unused in self.ever_used:
                self._lowest_unused += 1
            number = self._lowest_unused
            self.ever_used.add(number)
            self._save_table()          # before the snapshot exists: a number is never reused
            if record is not None:      # before it too: a death in between leaves a record of
                self._write_info(number, record)    # a number no volume has, read by no one
            try:
                self.snaps.create(source, number)
            except BaseException:
                if not self.snaps.is_snapshot(number):  # it failed after the snapshot was
                    self.delete_info(number)            # made (a compaction): it keeps its label
                raise
            return number

    def mgmt_delete_snapshot(self, caller: str, number: int) -> None:
        self.authorize(caller)
        self._settle_for_overwrite(number)
        self.delete_snapshot(number)

    def delete_snapshot(self, number: int) -> None:
        with self._lock:
            if not self.snaps.is_snapshot(number):
                self.reader(number)
                raise SanError("INVALID_INPUT", f"{self.name} volume {number} is not a snapshot")
            self._check_not_busy(number, "deleted")     # attached: a reader would lose it
            self.snaps.delete(number)
            self.delete_info(number)

    def mgmt_delete_backup(self, caller: str, number: int, expect: bytes | None = None) -> None:
        """Fig. 14: forget a backup volume's volume info; a snapshot is deleted outright (a
        mirror secondary keeps its data until the next mirror overwrites it).  `expect`:
        see `check_holds` (another backup there now is left alone)."""
        self.authorize(caller)
        self._settle_for_overwrite(number)
        with self._lock:
            self.check_holds(number, expect)
            self.reader(number)
            if self.snaps.is_snapshot(number):
                self.delete_snapshot(number)
            else:
                self.reader(number)
                self._check_not_busy(number, "deleted")
                self.delete_info(number)

    def mgmt_copy(self, caller: str, source: int, dest: int, with_info: bool = True,
                  expect: bytes | None = None) -> dict:
        """Volume copy inside this array (Fig. 19): data, then (if `with_info`) the source's
        volume info, recorded only once the data copy has succeeded.  `expect`: see
        `check_holds`."""
        self.authorize(caller)
        self._settle_reservations(source)
        self._settle_for_overwrite(dest)
        with self._lock:
            job = self._start(source, dest, "copy", with_info=with_info, expect=expect)
        return self._launch(job)

    def mgmt_attach(self, caller: str, number: int, port: str, lun: int, host: str,
                    expect: bytes | None = None) -> None:
        """Map volume `number` at port/LUN for `host` (file restore, Fig. 13).  `expect`:
        see `check_holds`."""
        self.authorize(caller)
        self._settle_attachment(port, lun)
        self._settle_reservations(number)
        with self._lock:
            self.check_holds(number, expect)
            self.reader(number)
            # what is attached is read by a file restore or a copy to tape
            self._check_not_written_over_fc(number, "file restore or copy to tape")
            if port not in self.ports:
                raise SanError("NO_SUCH_PORT", f"{self.name} has no port {port!r}")
            if (port, lun) in self.luns:
                raise SanError("BUSY", f"{self.name}/{port} LUN {lun} already holds volume "
                                       f"{self.luns[(port, lun)][0]}")
            self.attachments.append({"number": number, "port": port, "lun": lun, "hosts": [host]})
            self._save_table()
            self._rebuild_luns()

    def _settle_attachment(self, port: str, lun: int) -> None:
        """Drop the attachment at port/LUN if the flow that made it died (its host says it
        holds it no more, or is down).  Called before the lock is taken, as
        `_settle_reservations` is, and for the same reason: the host is asked remotely."""
        found = next((a for a in list(self.attachments) if (a["port"], a["lun"]) == (port, lun)), None)
        if found is None or self.attachment_holder_active(found["hosts"][0], port, lun):
            return
        with self._lock:
            if any(a is found for a in self.attachments):
                self.attachments = [a for a in self.attachments if a is not found]
                self._save_table()
                self._rebuild_luns()

    def attachment_holder_active(self, host: str, port: str, lun: int) -> bool:
        """Does `host` still hold what is attached for it at port/LUN?  The plain array cannot
        ask another element, so it trusts the attachment; the Ray layer asks the host."""
        return True

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
        self._settle_for_overwrite(number)
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

    # -- busy volumes: reservations and running copy jobs -------------------------------------
    def _check_not_written_over_fc(self, source: int, kind: str) -> None:
        """BUSY if another array is copying into `source` over FC (it holds its reservation):
        its bytes are half old, half new until that copy ends, and a copy from it then (a
        restore of the backup that was there, say) would carry that mix away."""
        holder = self.reserved.get(source)
        if holder is not None:
            raise SanError("BUSY", f"{self.name} volume {source} is still being written by a "
                                   f"copy over FC from {holder}; it cannot be the source of a "
                                   f"{kind} until that ends")

    def _check_not_busy(self, number: int, what: str) -> None:
        """BUSY unless `number` may be `what` now: no copy over FC holds it, no job runs on it,
        it is attached for no host (a file restore or a copy to tape is reading it: a mirror
        onto it meanwhile would hand that reader half of another backup)."""
        if number in self.reserved:     # trusted as it is (see `_settle_reservations`)
            raise SanError("BUSY", f"{self.name} volume {number} cannot be {what}: it is the "
                                   f"destination of a running copy from {self.reserved[number]}")
        attached = next((a for a in self.attachments if a["number"] == number), None)
        if attached is not None:        # trusted as it is, likewise
            raise SanError("BUSY", f"{self.name} volume {number} cannot be {what}: it is attached "
                                   f"at {attached['port']} LUN {attached['lun']} for "
                                   f"{attached['hosts'][0]} (a file restore or a copy to tape "
                                   "reads it)")
        job = self._running(number)
        if job is not None:
            raise SanError("BUSY", f"{self.name} volume {number} cannot be {what}: it is in a "
                                   f"running {job.kind} ({job.source} -> {job.dest})")

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

    def corrupt(self, number: int, offset: int, nbytes: int = 1) -> int:
        """Flip stored bytes behind the array's back (the `corrupt` fault); how many were
        flipped (0 where the volume holds no data: nothing is stored there to rot)."""
        store = self.reader(number)
        if not isinstance(store, VolumeStore):
            raise SanError("INVALID_INPUT", f"{self.name} volume {number} is a snapshot: corrupt "
                                            f"its source volume {self.snaps.source_of(number)}")
        if offset < 0 or offset + nbytes > store.size:
            raise SanError("LBA_OUT_OF_RANGE", f"{self.name} volume {number}: offset {offset} "
                                               f"is past its end ({store.size} bytes)")
        return store.corrupt(offset, nbytes)

    def sync(self) -> None:
        """A barrier: every write this array has acknowledged survives a power loss from now
        on (a host's SYNCHRONIZE CACHE, and the end of every step).  Saved copy-on-write
        granules and their journal go first, then the volumes: what a snapshot needs is
        durable before the writes that made it need it."""
        with self._lock:
            self.snaps.sync()
            for store in self.stores.values():
                store.sync()
            self.sequences.sync()      # after the volumes whose WRITEs it records
            # table.json and the volume info records are replaced by rename (ext4 writes a
            # replacing file's data before the rename commits): the directory makes them stay
            sync_dir(self.directory)

    def synchronize_cache(self, initiator: str, port: str, lun: int) -> None:
        """SCSI SYNCHRONIZE CACHE from a host: checked as any command to that LUN, then a
        barrier for the whole array (a superset of that LUN's writes)."""
        self.lookup(initiator, port, lun)
        self.sync()

    def close(self) -> None:
        # the jobs first: a copy thread between two batches then meets closed stores as a
        # job already failed ELEMENT_DOWN, not with their "store is closed" for its waiter
        self.end_jobs()
        for store in self.stores.values():
            store.close()
        self.sequences.close()
