"""A thin, checksummed, persistent volume store: the bytes of one volume of a disk array.

Granules versus transfer chunks
-------------------------------
A *transfer chunk* is how much data one SCSI-like command carries over the links (default
4 MiB, ``--chunk-size``); it is a property of the I/O path and of modeled time.  A *granule*
is the unit of allocation and integrity inside this store (default 256 KiB): the store keeps
one checksum per written granule, allocates disk space granule by granule, and always reads
and writes a granule whole.  The two sizes are independent: a 4 MiB chunk covers 16 granules
(hashed one after the other straight from the caller's buffer, and ``pwrite``-n from it in one
call); a 512-byte write inside a granule is a read-modify-write of that granule.
Only granules that were written exist; everything else reads as zeros, so memory and disk
grow with the data written, never with the volume size (a 1 TiB volume opens instantly).

File layout (in ``directory``)
------------------------------
``NAME.data``
    A sparse file of exactly ``size`` bytes (created with ``ftruncate``).  Byte ``o`` of the
    volume is byte ``o`` of the file, for every granule at home (see "Two places").
    Unwritten granules are holes and take no disk.
``NAME.alt``
    The second place of every granule, laid out as ``NAME.data``; created by the first write
    that goes there.
``NAME.map``
    An append-only journal of 24-byte little-endian records.  The first record is a header
    ``b"SANMAP03"``, granule size (u64), volume size (u64).  Every later record is
    ``(index u64, lo u64, hi u64)``: "granule ``index`` now holds data whose XXH3-128 is
    ``hi << 64 | lo``", in ``NAME.alt`` when bit 61 of the index is set, else in
    ``NAME.data``.  A record whose index has bit 63 set marks granule
    ``index & ~(1 << 63)`` as discarded (unwritten again; checksum fields are 0).  A record
    whose index has bit 62 set is a snapshot-epoch marker (`VolumeStore.mark`): the records
    after it were written once the source's snapshot of epoch ``index & ~(1 << 62)`` existed
    (the snapshot engine checks its saves against them after a power loss).  A record whose
    index has bit 60 set is a doubt: granule ``index & ~(1 << 60)``
    is about to be overwritten in place (`VolumeStore._doubting`, see "Durability").  On open the
    journal is replayed and the last record of a granule wins; a torn trailing record (a crash
    in the middle of an append) is cut off.  When the journal holds more than ~4x as many
    records as live granules (plus `VolumeStore.COMPACT_MIN`), it is rewritten, one record per
    live granule, into ``NAME.map.tmp`` (fsync-ed) and moved over the journal with
    ``os.replace``.
``NAME.bad``
    The granules known to be bad (see "Bad granules"), only while there are any; its layout
    is `san.bad_granules`'s.

Two places
----------
Each granule has two places, its home (``NAME.data``) and its second place (``NAME.alt``), at
the same offset; the map says which one holds it now.  The snapshot engine may *pin* a place
(`pin`): it keeps a snapshot's bytes there, so no write or discard touches it, and a write of
that granule goes to the other place (redirect-on-write: the old bytes stay, the new ones move
nothing).  Pins live in memory; the engine sets them again from its journal when it opens.
`read_place` reads a pinned place back for the snapshot, against the checksum the engine
recorded.  Reads, copies, `scrub`, `digest` and `corrupt` follow each granule to where it is
now, so a volume offset means the same whatever the place.  A place given back keeps its
blocks (the next write there overwrites instead of filling a hole), as the snapshot pool's
free slots do.

The granule size of an existing store is fixed by its header: re-opening with another
``granule`` argument uses the stored one (the bytes on disk are laid out for it).  Re-opening
with another ``size`` raises ``INVALID_INPUT`` naming both sizes.

Version 2 maps (``b"SANMAP02"``, san 0.2 to 0.4) hold the same records, every granule at
home: opening one rewrites it once under the version-3 header.  Version 1 maps
(``b"SANMAP01"``, written by san 0.1) held a linear checksum pair per
granule; opening such a store converts it once (`san.storage_v1` says how, and what a crash
during the conversion leaves).  `VolumeStore.converted` and `VolumeStore.converted_bad` tell
what the conversion found.

Durability
----------
A write is durable (survives the death of the process, e.g. an actor that crashes and is
restarted, or read by a second process) once `VolumeStore.write` returns: the data has been
``pwrite``-n into ``NAME.data`` and its journal records appended with one ``os.write`` on an
``O_APPEND`` descriptor.  There is no ``fsync`` on that path (none per write: it would cost
more than the write); `VolumeStore.sync` is the barrier (the array calls it for a host's
SYNCHRONIZE CACHE and at the end of every step): the data files are fsync-ed, then the journal.
A power loss may lose the writes since the last barrier, never what one covered, and never
makes a read return data no write put there: a granule whose data and map record did not
both reach the disk fails its checksum (tests/unit/test_power_loss.py replays the recorded
calls cut at every point).  A process killed *during* a write may leave the granules it was writing with
their old checksum and new data; their next read raises ``CHECKSUM_MISMATCH`` (as a disk would
report a torn write) until they are written again.  So that nobody trusts such a stale
checksum (a mirror comparing checksums would skip the granule), a write first appends a doubt
record for each granule it overwrites that holds data; on open, a granule whose last record
is a doubt is verified, joins the bad set if it fails, and is recorded again as it stands
(`_settle_doubts`).  A write verifies the granules it only
partly covers before it writes anything, so a refused write changes nothing.  One process
writes a store at a time; others may read it (and `VolumeStore.corrupt` it).

Checksum
--------
Per granule, XXH3-128 of its bytes, kept as ``(lo, hi)`` 64-bit halves: collision-resistant,
so copies between stores trust "same stored checksum" as "same bytes", and fast enough for the
write path of every byte.  `san.checksums` gives the measurements behind the choice and what
it guarantees.  Every read of a written granule reads it whole and verifies it, with no
cache: bytes changed under the store by anyone are seen by the next read.

Bad granules
------------
A store remembers the granules it found bad (``NAME.bad``), so the array can repair and
report them; `san.bad_granules` says when a granule enters and leaves that set.  The set is a
record, not a gate: reads verify the bytes against the checksum and that alone decides whether
they fail.  ``CHECKSUM_MISMATCH`` names the store's label and the failing granule's byte
range: ``"array1 volume 0: bytes 262144..524287 (granule 1, 262144 bytes) fail their
checksum"``.

Digest
------
`VolumeStore.digest` is the contract's volume digest (``checkpoint`` op), defined in
`san.digest`; its cost follows the data written.

Where the rest lives
-------------------
The journal mechanics (header, torn tail, compaction) are `san.journal.Journal`'s, the file
I/O primitives `san.fileio`'s.  Names other modules import from here are re-exported from
their homes: `checksums` (`san.checksums`), `_pair_checksums` (`san.storage_v1`),
`DigestBuilder`, `digest_of`, `digest_extents`, `DIGEST_BLOCK` (`san.digest`),
`granule_extents` (`san.granules`), `BLOCK`, `DEFAULT_GRANULE` (`san.units`).
"""
from __future__ import annotations

import contextlib
import mmap
import os
import pathlib
import functools
import math
import struct
import threading

import numpy as np

from san.bad_granules import BadGranules, granule_list
from san.checksum_table import ChecksumTable
from san.checksums import checksums, checksums_each, granule_checksums
from san.digest import DIGEST_BLOCK, DigestBuilder, digest_extents, digest_of
from san.errors import SanError
from san.fileio import (FdOwner, allocate, as_bytes_array, close_fd, pread_into, punch_hole,
                        pwrite_all, sync_dir)
from san.granules import granule_extents, granules_nbytes, present, runs
from san.journal import Journal
from san.storage_v1 import MAGIC_V1, _pair_checksums, rechecksum
from san.units import BLOCK, DEFAULT_GRANULE, MiB, PiB

__all__ = ["VolumeStore", "MAX_SIZE", "VERIFY_RUN", "HOME", "ALT", "zero_checksum", "holds_data",
           # re-exported from their own modules, for the importers of san.storage
           "DigestBuilder", "digest_of", "digest_extents", "granule_extents", "DIGEST_BLOCK",
           "checksums", "_pair_checksums", "BLOCK", "DEFAULT_GRANULE"]

MAX_SIZE = PiB                          # the largest volume
VERIFY_RUN = 4 * MiB                    # bytes read at a time by scrub(), verify(), conversion
MAP_WINDOW = 1 << 40                    # the most `mapped_gather` maps at once (see there)
_MAGIC = b"SANMAP03"
_MAGIC_V2 = b"SANMAP02"                 # san 0.2-0.4: every granule at home (converted on open)
_HEADER = struct.Struct("<8sQQ")
_REC_DTYPE = np.dtype([("g", "<u8"), ("lo", "<u8"), ("hi", "<u8")])
_REC = _REC_DTYPE.itemsize              # 24 bytes, same as the header
_DELETED = np.uint64(1 << 63)
_MARK = np.uint64(1 << 62)              # a snapshot-epoch marker record (see `VolumeStore.mark`)
_ALT = np.uint64(1 << 61)               # the granule's bytes are in NAME.alt (see "Two places")
_DOUBT = np.uint64(1 << 60)             # the granule is about to be overwritten (`_doubting`)
HOME, ALT = 0, 1                        # the two places of a granule: NAME.data, NAME.alt
assert _HEADER.size == _REC


@functools.lru_cache(maxsize=16)
def zero_checksum(length: int) -> tuple[int, int]:
    """The checksum of `length` zero bytes: what a granule that reads as zeros would hold.

    Copies tell zero granules from data by it (no scan of the bytes): XXH3-128 is
    collision-resistant, so a granule with this checksum reads as zeros.
    """
    cs = checksums(np.zeros(length, dtype=np.uint8), length)[0]
    return int(cs[0]), int(cs[1])


def zero_checksums(n: int, nbytes: int, granule: int) -> np.ndarray:
    """The checksums, one (n, 2) row each, of `n` granules covering `nbytes` that read as
    zeros (the last one short when `nbytes` is not a multiple of `granule`)."""
    cs = np.empty((n, 2), dtype=np.uint64)
    cs[:] = zero_checksum(granule)
    if n and nbytes % granule:
        cs[-1] = zero_checksum(nbytes % granule)
    return cs


def holds_data(cs: np.ndarray, nbytes: int, granule: int) -> list[bool]:
    """Per granule of a `read_granules` answer covering `nbytes` (its last granule may be
    short): does it hold anything but zeros?  Told by the checksums, without a scan."""
    return (cs != zero_checksums(len(cs), nbytes, granule)).any(axis=1).tolist()


class VolumeStore(FdOwner):
    """One volume of `size` bytes stored thinly in `directory/NAME.data` + `NAME.map`.

    `label` names the store in error messages (default ``"volume store NAME"``; a disk array
    passes e.g. ``"array1 volume 0"``).  `read` returns a new, writable uint8 array owned by
    the caller.  Methods are thread-safe (one lock per store).  After opening, `converted`
    tells whether a version-1 map was converted and `converted_bad` which granules failed
    their old checksum then.  See the module docstring for the layout and guarantees.
    """

    COMPACT_MIN = 256   # journal records tolerated beyond 4x the live granules

    def __init__(self, directory: pathlib.Path, name: str, size: int, granule: int = DEFAULT_GRANULE,
                 label: str | None = None):
        name = str(name)
        self.label = str(label) if label is not None else f"volume store {name}"
        if not name or "/" in name or name in (".", "..") or "\0" in name:
            raise SanError("INVALID_INPUT", f"store name {name!r} cannot be a file name")
        if not isinstance(size, (int, np.integer)) or not 0 < size <= MAX_SIZE or size % BLOCK:
            raise SanError("INVALID_INPUT",
                           f"{self.label}: size {size!r} must be a multiple of {BLOCK} in (0, 1 PiB]")
        if not isinstance(granule, (int, np.integer)) or granule <= 0 or granule % BLOCK:
            raise SanError("INVALID_INPUT", f"{self.label}: granule {granule!r} must be a positive multiple of {BLOCK}")
        self.name = name
        self.size = int(size)
        self.granule = int(granule)
        self.directory = pathlib.Path(directory)
        self.data_path = self.directory / f"{name}.data"
        self.map_path = self.directory / f"{name}.map"
        self.bad_path = self.directory / f"{name}.bad"
        self.alt_path = self.directory / f"{name}.alt"
        self._lock = threading.RLock()
        self._map: dict[int, tuple[int, int]] = {}
        self._table = ChecksumTable()      # the map's checksums again, dense: see `compare`
        self._bad: BadGranules | None = None    # loaded once the map fixes the granule size
        self._data_fd = -1
        self._alt_fd = -1               # NAME.alt, opened once it exists
        self._alt: set[int] = set()     # written granules whose bytes are in NAME.alt
        self._pinned: dict[int, int] = {}   # granule -> mask of places held (1 << HOME, 1 << ALT)
        self._map_journal = Journal(self.map_path, _REC)
        self._last_mark = 0             # the epoch of the last marker appended or replayed
        self.replayed_epochs: dict[int, int] = {}   # see `mark`
        self.compact_barrier = None     # see `mark`
        self.converted = False
        self.converted_bad: list[int] = []
        self._in_doubt: list[int] = []  # see `_settle_doubts`
        self.doubted_bad: list[int] = []    # what `_settle_doubts` found on opening
        self.directory.mkdir(parents=True, exist_ok=True)
        self._open()

    # ------------------------------------------------------------------ opening, journal
    def _open(self) -> None:
        fd = os.open(self.data_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            have = os.fstat(fd).st_size
            map_exists = self.map_path.exists() and self.map_path.stat().st_size >= _REC
            if have == 0 and not map_exists:
                os.ftruncate(fd, self.size)
            elif have != self.size:
                raise SanError("INVALID_INPUT",
                               f"{self.label}: stored with size {have} bytes in {self.data_path}, "
                               f"opened with size {self.size} bytes")
        except BaseException:
            os.close(fd)
            raise
        self._data_fd = fd
        try:
            if self.alt_path.exists():
                self._open_alt()
            magic = self._replay()          # fixes the granule size, hence the granule count
            self._bad = BadGranules(self.bad_path, self.label, self.n_granules)
            self._settle_doubts()
            if magic == MAGIC_V1:
                self._convert_v1()
            elif magic == _MAGIC_V2:        # the same records, none in NAME.alt: a new header
                self._write_map()
            if not self._last_mark:
                # a journal with snapshot-epoch markers compacts later, behind the snapshot
                # engine's barrier (`mark`), which does not exist yet: compacted now, durably,
                # it would forget the epochs of writes whose saves the engine has not yet made
                # durable, and a power loss before its next barrier would let a snapshot read
                # newer data without seeing it
                self._maybe_compact()
        except BaseException:
            self.close()
            raise

    def _replay(self) -> bytes:
        """Load the journal into `_map`; returns its magic (v1 maps still hold the old pair)."""
        header, body = self._map_journal.replay(_HEADER.pack(_MAGIC, self.granule, self.size),
                                                check_header=self._check_header)
        magic, granule, _ = _HEADER.unpack(header)
        self.granule = int(granule)
        recs = np.frombuffer(body, dtype=_REC_DTYPE)
        if magic != _MAGIC and len(recs) and ((recs["g"] & _ALT) != 0).any():
            raise SanError("INVALID_INPUT", f"{self.label}: {self.map_path} has a {magic!r} header "
                                            f"and records only {_MAGIC!r} maps hold")
        marks = (recs["g"] & _MARK) != 0
        doubts = (recs["g"] & _DOUBT) != 0
        self._in_doubt = []
        if doubts.any():
            # a granule whose last record is a doubt was being overwritten when its writer
            # died: `_settle_doubts` checks it once the map is loaded
            keep_recs = ~marks
            g_all = recs["g"][keep_recs] & ~(_DELETED | _ALT | _DOUBT)
            _, first_rev = np.unique(g_all[::-1], return_index=True)
            last_all = len(g_all) - 1 - first_rev
            self._in_doubt = sorted(g_all[last_all][(recs["g"][keep_recs][last_all] & _DOUBT) != 0].tolist())
            recs = recs[~doubts]
            marks = marks[~doubts]
        epochs = None
        if marks.any():
            # the epoch in force at each record: the latest marker before it
            epoch_at = np.maximum.accumulate(np.where(marks, recs["g"] & ~_MARK, np.uint64(0)))
            self._last_mark = int(epoch_at[-1])
            recs, epochs = recs[~marks], epoch_at[~marks]
        nrec = len(recs)
        live: dict[int, tuple[int, int]] = {}
        if nrec:
            g = recs["g"] & ~(_DELETED | _ALT)
            # last record per granule wins: first occurrence in the reversed journal
            _, first_rev = np.unique(g[::-1], return_index=True)
            last = nrec - 1 - first_rev
            if epochs is not None:
                written = epochs[last] > 0
                self.replayed_epochs = dict(zip(g[last][written].tolist(), epochs[last][written].tolist()))
            keep = last[(recs["g"][last] & _DELETED) == 0]
            keep.sort()
            kg = recs["g"][keep] & ~_ALT
            self._alt = set(kg[(recs["g"][keep] & _ALT) != 0].tolist())
            if self._alt and self._alt_fd < 0:
                raise SanError("INVALID_INPUT", f"{self.label}: {self.map_path} puts "
                                                f"{len(self._alt)} granules in {self.alt_path}, "
                                                f"which is missing")
            if len(kg) and int(kg.max()) >= self.n_granules:
                raise SanError("INVALID_INPUT",
                               f"{self.label}: {self.map_path} names granule {int(kg.max())} "
                               f"beyond the volume's {self.n_granules} granules")
            live = dict(zip(kg.tolist(), zip(recs["lo"][keep].tolist(), recs["hi"][keep].tolist())))
            self._table.set(kg, np.stack([recs["lo"][keep], recs["hi"][keep]], axis=1))
        self._map = live
        return magic

    def _check_header(self, header: bytes) -> None:
        magic, granule, size = _HEADER.unpack(header)
        if magic not in (_MAGIC, _MAGIC_V2, MAGIC_V1) or granule <= 0 or granule % BLOCK:
            raise SanError("INVALID_INPUT",
                           f"{self.label}: {self.map_path} is not a volume map (header {magic!r}, "
                           f"granule {granule}; expected {_MAGIC!r}, {_MAGIC_V2!r} or {MAGIC_V1!r} and a "
                           f"multiple of {BLOCK})")
        if size != self.size:
            raise SanError("INVALID_INPUT",
                           f"{self.label}: stored with size {size} bytes in {self.map_path}, "
                           f"opened with size {self.size} bytes")

    def _convert_v1(self) -> None:
        """Re-checksum a v1 store with XXH3-128, trusting only granules that pass the old pair."""
        buf = np.empty(max(VERIFY_RUN, self.granule), dtype=np.uint8)
        bad: list[int] = []
        for run in self._runs(sorted(self._map)):
            piece = self._pread_run(run, buf)
            old = np.array([self._map[g] for g in run], dtype=np.uint64)
            new, failed = rechecksum(piece, self.granule, old)
            bad.extend(run[i] for i in failed)
            self._map.update(zip(run, zip(new[:, 0].tolist(), new[:, 1].tolist())))
            self._table.set(np.asarray(run), new)
        # the bad set first: a crash before the map's os.replace converts again from v1
        self._bad.add(bad)
        self._write_map()
        self.converted = True
        self.converted_bad = sorted(bad)

    def _settle_doubts(self) -> None:
        """The granules a writer was overwriting in place when it died (`_doubting`): each that
        fails its checksum now (new bytes under the old checksum, or some of each) joins the
        bad set, so reads keep failing CHECKSUM_MISMATCH as they would have, `scrub` lists it,
        and the next mirror, restore or copy onto this volume rewrites it instead of trusting
        its stale checksum.  Each is then recorded as it stands, settling the doubt."""
        doubted = [g for g in self._in_doubt if g in self._map]
        self._in_doubt = []
        self.doubted_bad = self._settle(doubted)

    def _settle(self, doubted: list[int]) -> list[int]:
        """Verify granules in doubt (written ones, sorted), add those failing to the bad set,
        record each as it stands (ending the doubt); the failing ones."""
        if not doubted:
            return []
        bad = self._verify_granules(doubted)
        self._bad.add(bad)
        recs = np.empty(len(doubted), dtype=_REC_DTYPE)
        recs["g"] = doubted
        recs["g"][[g in self._alt for g in doubted]] |= _ALT
        recs["lo"] = [self._map[g][0] for g in doubted]
        recs["hi"] = [self._map[g][1] for g in doubted]
        self._map_journal.append(recs)
        return bad

    @contextlib.contextmanager
    def _doubting(self, gs):
        """Around an overwrite of granules `gs` (the lock held): before it, a doubt record for
        each that holds data (a granule never written has no checksum to go stale: a torn
        write into it is a hole by the map), appended without compaction, which would drop
        it.  If the write fails in a process that lives on (no space, an I/O error), its
        granules are settled at once: left in doubt, they would be settled at the next open,
        after any snapshot marker appended since, and so dated in a later epoch."""
        held = sorted(g for g in gs if g in self._map)
        if held:
            recs = np.zeros(len(held), dtype=_REC_DTYPE)
            recs["g"] = np.asarray(held, dtype=np.uint64) | _DOUBT
            self._map_journal.append(recs)
        try:
            yield
        except Exception:
            self._settle([g for g in held if g in self._map])
            raise

    def _journal(self, recs: np.ndarray) -> None:
        self._map_journal.append(recs)
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        if self._map_journal.records > 4 * len(self._map) + self.COMPACT_MIN:
            self.compact()

    def _write_map(self) -> None:
        """Replace the journal by one record per live granule (the version-3 header), atomically."""
        gs = sorted(self._map)
        recs = np.empty(len(gs), dtype=_REC_DTYPE)
        recs["g"] = gs
        if self._alt:
            recs["g"] |= np.where(np.isin(recs["g"], np.fromiter(self._alt, np.uint64)), _ALT, np.uint64(0))
        recs["lo"] = [self._map[g][0] for g in gs]
        recs["hi"] = [self._map[g][1] for g in gs]
        if self._last_mark:             # later writes are still in the current epoch
            recs = np.concatenate([recs, np.array([(int(_MARK) | self._last_mark, 0, 0)],
                                                  dtype=_REC_DTYPE)])
        self._map_journal.rewrite(_HEADER.pack(_MAGIC, self.granule, self.size), recs)

    def compact(self) -> None:
        """Rewrite the journal with one record per live granule (atomically).  The markers
        between the records go, so `compact_barrier` runs first (see `mark`)."""
        with self._lock:
            self._check_open()
            if self.compact_barrier is not None:
                self.compact_barrier()
            self._write_map()

    def mark(self, epoch: int) -> None:
        """Append a snapshot-epoch marker: the writes recorded after it were made once the
        source's snapshot of `epoch` existed.

        Copy-on-write saves a granule (its record in the snapshot journal) before the write
        that overwrites it, with no fsync between (none per write).  A power loss that keeps
        the write's map record and drops the save would let a snapshot read the new data; the
        markers let the snapshot engine see it when the array opens again: `replayed_epochs`
        maps each granule whose last record follows a marker to that marker's epoch, and a
        granule written in an epoch its saves do not reach breaks the snapshots that needed
        it (`san.snapshots.SnapshotEngine`).  Compaction drops the markers, so the engine sets
        `compact_barrier` to make its journal durable first: then every save it would have
        checked is on disk."""
        epoch = int(epoch)
        if epoch <= 0 or epoch >= 1 << 62:
            raise SanError("INVALID_INPUT", f"{self.label}: snapshot epoch {epoch} is not in [1, 2**62)")
        with self._lock:
            self._check_open()
            self._map_journal.append(np.array([(int(_MARK) | epoch, 0, 0)], dtype=_REC_DTYPE))
            self._last_mark = epoch     # before a compaction this sets off: it keeps the marker
            self._maybe_compact()

    def take_replayed_epochs(self) -> dict[int, int]:
        """`replayed_epochs`, handed over once (the store keeps no copy)."""
        with self._lock:
            got, self.replayed_epochs = self.replayed_epochs, {}
            return got

    @property
    def journal_records(self) -> int:
        """Records in the journal after its header (for tests and diagnostics)."""
        return self._map_journal.records

    # ------------------------------------------------------------------ the bad set
    def bad_granules(self) -> list[int]:
        """The granules known to be bad (found by a read, scrub, verify, conversion or
        `mark_bad`, and not rewritten or discarded since), sorted."""
        with self._lock:
            return self._bad.sorted()

    def bad_extents(self) -> list[tuple[int, int]]:
        """Merged (offset, length) byte ranges of `bad_granules`."""
        return granule_extents(self.bad_granules(), self.granule, self._glen)

    def mark_bad(self, granules) -> None:
        """Add `granules` (indexes of this volume) to the bad set, persistently."""
        with self._lock:
            self._check_open()
            self._bad.add(granule_list(self.label, "mark_bad", granules, self.n_granules, self.granule))

    def verify(self, granules) -> list[int]:
        """Read and verify `granules` (unwritten ones hold no data and are skipped); record the
        ones failing their checksum in the bad set and return them, sorted.  Never raises
        CHECKSUM_MISMATCH: finding bad granules is the result."""
        with self._lock:
            self._check_open()
            gs = granule_list(self.label, "verify", granules, self.n_granules, self.granule)
            gs = [g for g in gs if g in self._map]
            bad = self._verify_granules(gs)
            self._bad.add(bad)
            return bad

    def scrub(self) -> tuple[int, list[int]]:
        """Read and verify every written granule; returns (bytes checked, sorted bad granules).

        The bad set's entries for written granules become what this scrub found (entries of
        unwritten granules, from `mark_bad`, stay).  The lock is taken per run of up to 4 MiB,
        so writes go on during a long scrub; a granule written meanwhile is checked as it is
        when its run is read.  Never raises CHECKSUM_MISMATCH.
        """
        with self._lock:
            self._check_open()
            todo = sorted(self._map)
        checked = 0
        found: list[int] = []
        buf = np.empty(max(VERIFY_RUN, self.granule), dtype=np.uint8)
        for run in self._runs(todo):
            with self._lock:
                self._check_open()
                run = [g for g in run if g in self._map]     # discarded since the list was made
                bad = self._verify_granules(run, buf)
                checked += sum(self._glen(g) for g in run)
                self._bad.settle(run, bad)
                found.extend(bad)
        return checked, sorted(found)

    def _runs(self, gs: list[int]):
        """Sorted granules `gs` cut into runs of consecutive indexes of at most `VERIFY_RUN` bytes."""
        return runs(gs, max(1, VERIFY_RUN // self.granule))

    def _pread_run(self, run: list[int], buf: np.ndarray) -> np.ndarray:
        """The bytes of consecutive granules `run`, read into the front of `buf`: one pread
        per stretch of granules in the same place."""
        G = self.granule
        start = run[0] * G
        stop = run[-1] * G + self._glen(run[-1])
        piece = buf[: stop - start]
        if not self._alt or self._alt.isdisjoint(run):
            pread_into(self._data_fd, piece, start)
            return piece
        for place, a, b in self._place_runs(run):
            lo, hi = a * G - start, min(b * G, self.size) - start
            pread_into(self._fd(place), piece[lo:hi], a * G)
        return piece

    # ------------------------------------------------------------------ two places
    def _fd(self, place: int) -> int:
        return self._alt_fd if place == ALT else self._data_fd

    def _place(self, g: int) -> int:
        """Where written granule `g`'s bytes are now (an unwritten one is at home)."""
        return ALT if g in self._alt else HOME

    def _place_runs(self, gs, place_of=None):
        """(place, first, end) per stretch of consecutive granules of ascending `gs` in one
        place (`place_of(g)`, by default where each one is now)."""
        place_of = place_of or self._place
        out: list[tuple[int, int, int]] = []
        for g in gs:
            p = place_of(g)
            if out and out[-1][0] == p and out[-1][2] == g:
                out[-1] = (p, out[-1][1], g + 1)
            else:
                out.append((p, g, g + 1))
        return out

    def _target(self, g: int) -> int:
        """Where a write of granule `g` goes: where it is, unless a snapshot holds that place."""
        cur = self._place(g)
        held = self._pinned.get(g, 0)
        if not held & (1 << cur):
            return cur
        if held & (1 << (1 - cur)):
            raise SanError("INVALID_INPUT", f"{self.label}: granule {g} has both its places "
                                            f"held for snapshots, nowhere to write it")
        return 1 - cur

    def _open_alt(self) -> None:
        """Open NAME.alt, creating it (as sparse as NAME.data) the first time it is needed."""
        new = not self.alt_path.exists()
        fd = os.open(self.alt_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            have = os.fstat(fd).st_size
            if new or have == 0:
                os.ftruncate(fd, self.size)
                if new:                     # the name is durable before a record needs it
                    sync_dir(self.directory)
            elif have != self.size:
                raise SanError("INVALID_INPUT", f"{self.label}: {self.alt_path} holds "
                                                f"{have} bytes, the volume {self.size}")
        except BaseException:
            os.close(fd)
            raise
        self._alt_fd = fd

    def place(self, g: int) -> int:
        """Where written granule `g`'s bytes are now: `HOME` (``NAME.data``) or `ALT`
        (``NAME.alt``, where redirect-on-write puts a granule whose home a snapshot holds)."""
        with self._lock:
            return self._place(int(g))

    def granule_states(self, gs) -> list[tuple[tuple[int, int] | None, int, int]]:
        """Per granule of `gs`: (its checksum or None, its place, the mask of places held)."""
        with self._lock:
            return [(self._map.get(g), self._place(g), self._pinned.get(g, 0)) for g in gs]

    def pin(self, g: int, place: int) -> None:
        """Hold `place` of granule `g` for a snapshot: no write or discard changes its bytes
        until `unpin` (a write of the granule goes to its other place)."""
        self.pin_many([(g, place)])

    def pin_many(self, pairs, replace: bool = False) -> None:
        """`pin` for each (granule, place) of `pairs`, under one lock; with `replace`, these
        become the only places held (a snapshot engine opening sets them from its journal)."""
        with self._lock:
            if replace:
                self._pinned = {}
            pinned = self._pinned
            for g, place in pairs:
                pinned[g] = pinned.get(g, 0) | 1 << place

    def unpin(self, g: int, place: int) -> None:
        """Give `place` of granule `g` back (see `unpin_many`)."""
        self.unpin_many([(g, place)])

    def unpin_many(self, pairs) -> None:
        """Give back each (granule, place) of `pairs` that a snapshot held.

        A place of a granule the volume no longer holds (the host unmapped it while a snapshot
        needed its bytes) is freed now, one hole per run: nothing reaches those bytes any
        more, and the volume is thin again.  A place the granule was redirected away from
        keeps its blocks, unreachable: the next write redirected there (after the next
        snapshot) overwrites allocated space instead of filling a hole, and each granule has
        only two places, so that is at most one granule more per granule written."""
        with self._lock:
            unreached: dict[int, list[int]] = {HOME: [], ALT: []}
            for g, place in pairs:
                g = int(g)
                held = self._pinned.get(g, 0) & ~(1 << place)
                if held:
                    self._pinned[g] = held
                else:
                    self._pinned.pop(g, None)
                if g not in self._map and not held & (1 << place):
                    unreached[place].append(g)
            for place, gs in unreached.items():     # (a closed store frees nothing)
                fd = self._fd(place) if gs else -1
                if fd >= 0:
                    for start, length in granule_extents(sorted(set(gs)), self.granule, self._glen):
                        self._free_space(fd, start, length)

    def read_place(self, g: int, place: int, checksum: tuple[int, int]) -> np.ndarray:
        """The bytes of granule `g` in `place`, verified against `checksum` (what a snapshot
        recorded when it took that place): CHECKSUM_MISMATCH if they differ."""
        g = int(g)
        with self._lock:
            self._check_open()
            buf = np.empty(self._glen(g), dtype=np.uint8)
            fd = self._fd(place)
            if fd < 0:
                buf[:] = 0
            else:
                pread_into(fd, buf, g * self.granule)
            got = checksums(buf, len(buf))[0]
            if (int(got[0]), int(got[1])) != tuple(checksum):
                start = g * self.granule
                raise SanError("CHECKSUM_MISMATCH",
                               f"{self.label}: bytes {start}..{start + len(buf) - 1} (granule {g}) "
                               f"as kept in {self.alt_path if place == ALT else self.data_path} "
                               f"fail their checksum")
            return buf

    def _verify_granules(self, gs: list[int], buf: np.ndarray | None = None) -> list[int]:
        """The written granules among sorted `gs` that fail their checksum (records nothing)."""
        if buf is None:
            buf = np.empty(max(VERIFY_RUN, self.granule), dtype=np.uint8)
        bad: list[int] = []
        for run in self._runs(gs):
            piece = self._pread_run(run, buf)
            bad.extend(self._failing(run, piece))
        return bad

    def _failing(self, run: list[int], piece: np.ndarray) -> list[int]:
        """The granules of consecutive `run` whose bytes `piece` fail their stored checksum."""
        return self._checked(run, piece)[1]

    def _checked(self, run: list[int], piece: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """(the checksums of `piece`'s granules, the granules of consecutive `run` failing theirs)."""
        cs = granule_checksums(piece, self.granule)
        want = np.array([self._map[g] for g in run], dtype=np.uint64)
        return cs, [run[i] for i in np.flatnonzero((cs != want).any(axis=1)).tolist()]

    # ------------------------------------------------------------------ geometry
    @property
    def n_granules(self) -> int:
        return -(-self.size // self.granule)

    def _glen(self, g: int) -> int:
        return min(self.granule, self.size - g * self.granule)

    def _check_range(self, what: str, offset: int, length: int) -> None:
        if offset % BLOCK or length % BLOCK:
            raise SanError("INVALID_INPUT",
                           f"{self.label}: {what} at offset {offset}, length {length} is not "
                           f"aligned to {BLOCK} bytes")
        if offset < 0 or length < 0 or offset + length > self.size:
            raise SanError("LBA_OUT_OF_RANGE",
                           f"{self.label}: {what} at offset {offset}, length {length} is outside "
                           f"the volume of {self.size} bytes")

    def _check_open(self) -> None:
        if self._data_fd < 0:
            raise SanError("INVALID_INPUT", f"{self.label}: store is closed")

    def _mismatch(self, bad: list[int]) -> SanError:
        """Record `bad` (granules a read found failing) and the error naming the first."""
        self._bad.add(bad)
        g = bad[0]
        start, length = g * self.granule, self._glen(g)
        return SanError("CHECKSUM_MISMATCH",
                        f"{self.label}: bytes {start}..{start + length - 1} (granule {g}, {length} bytes) "
                        f"fail their checksum")

    # ------------------------------------------------------------------ granule I/O
    def _read_granule(self, g: int) -> np.ndarray:
        """The verified content of written granule `g` (a new array)."""
        buf = np.empty(self._glen(g), dtype=np.uint8)
        pread_into(self._fd(self._place(g)), buf, g * self.granule)
        if self._failing([g], buf):
            raise self._mismatch([g])
        return buf

    # ------------------------------------------------------------------ public API
    def write(self, offset: int, data, checksums: np.ndarray | None = None) -> None:
        """Store `data` (uint8 array, bytes or memoryview; 512-byte multiple) at `offset`.

        Granules the write covers whole are written from `data` as they are (and leave the bad
        set); granules it covers in part are read and verified first (CHECKSUM_MISMATCH if one
        fails, before anything is written).

        `checksums`, when given, are the granules' checksums as `read_granules` returned them
        with these very bytes (a copy moving verified data): the write then covers whole
        granules only and does not hash again.  A wrong value cannot make a read return wrong
        data: the next read of that granule fails with CHECKSUM_MISMATCH.
        """
        arr = as_bytes_array(data)
        offset = int(offset)
        length = len(arr)
        with self._lock:
            self._check_open()
            self._check_range("write", offset, length)
            if not length:
                return
            G = self.granule
            end = offset + length
            g0, g1 = offset // G, (end - 1) // G          # granules touched, inclusive
            # whole-granule run [f0, f1): granules covered entirely by the write
            f0 = g0 if offset == g0 * G else g0 + 1
            f1 = g1 + 1 if end == g1 * G + self._glen(g1) else g1
            if checksums is not None:
                cs = np.asarray(checksums, dtype=np.uint64)
                if (f0, f1) != (g0, g1 + 1) or cs.shape != (f1 - f0, 2):
                    raise SanError("INVALID_INPUT",
                                   f"{self.label}: a write with checksums covers whole granules, one "
                                   f"checksum each (offset {offset}, length {length}, checksums "
                                   f"{cs.shape})")
                with self._doubting(range(f0, f1)):
                    self._journal(self._write_whole(f0, f1, arr, cs))
                self._bad.clear(f0, f1)
                return
            # read (and verify) both partial granules before writing anything: a refused write
            # must not leave one of them with new bytes under its old checksum
            old = {g: self._read_granule(g) if g in self._map else np.zeros(self._glen(g), dtype=np.uint8)
                   for g in ((g0, g1) if g1 != g0 else (g0,)) if not f0 <= g < f1}
            with self._doubting(present(self._map, g0, g1 + 1)):
                recs = [self._rmw(g, buf, offset, arr) for g, buf in old.items()]
                if f1 > f0:
                    recs.append(self._write_whole(f0, f1, arr[f0 * G - offset: min(f1 * G, self.size) - offset]))
                self._journal(np.concatenate(recs) if len(recs) > 1 else recs[0])
            if f1 > f0:
                self._bad.clear(f0, f1)

    def _rmw(self, g: int, buf: np.ndarray, offset: int, arr: np.ndarray) -> np.ndarray:
        """Write granule `g`, whose old bytes are `buf`, partly overwritten by `arr` at `offset`."""
        gstart = g * self.granule
        lo = max(offset, gstart)
        hi = min(offset + len(arr), gstart + len(buf))
        buf[lo - gstart: hi - gstart] = arr[lo - offset: hi - offset]
        cs = checksums(buf, len(buf))
        place = self._target(g)
        pwrite_all(self._writable(place), buf, gstart)
        return self._commit(g, cs, place)

    def _write_whole(self, f0: int, f1: int, piece: np.ndarray, cs: np.ndarray | None = None) -> np.ndarray:
        """Write granules [f0, f1) from `piece` (their exact bytes) directly from the buffer;
        `cs` are their checksums when the caller has them, else they are computed."""
        G = self.granule
        if cs is None:
            cs = granule_checksums(piece, G)
        if not self._alt and not self._pinned:          # every granule stays at home
            self._write_home(f0, f1, piece)
            return self._commit(np.arange(f0, f1, dtype=np.uint64), cs)
        places = np.empty(f1 - f0, dtype=np.uint8)
        for place, a, b in self._place_runs(range(f0, f1), self._target):
            part = piece[(a - f0) * G: min(b * G, self.size) - f0 * G]
            moved = any((g in self._alt) != (place == ALT) for g in range(a, b))
            if moved or len(present(self._map, a, b)) < b - a:
                allocate(self._writable(place), a * G, len(part))
            pwrite_all(self._writable(place), part, a * G)
            places[a - f0: b - f0] = place
        return self._commit(np.arange(f0, f1, dtype=np.uint64), cs, places)

    def _write_home(self, f0: int, f1: int, piece: np.ndarray) -> None:
        """pwrite granules [f0, f1) at home (nothing relocated or pinned); the map is the
        caller's to update."""
        if len(present(self._map, f0, f1)) < f1 - f0:
            # some granules are new: their blocks are found in one go (see fileio.allocate)
            allocate(self._data_fd, f0 * self.granule, len(piece))
        pwrite_all(self._data_fd, piece, f0 * self.granule)

    def _writable(self, place: int) -> int:
        """The descriptor of `place`, NAME.alt created the first time a write goes there."""
        if place == ALT and self._alt_fd < 0:
            self._open_alt()
        return self._fd(place)

    def _commit(self, gs, cs: np.ndarray, places=HOME) -> np.ndarray:
        """The map records of granules `gs` now holding data with checksums `cs`, in
        `places` (one, or one per granule); `_map` and the set in NAME.alt follow."""
        gs = np.atleast_1d(np.asarray(gs, dtype=np.uint64))
        recs = np.empty(len(gs), dtype=_REC_DTYPE)
        recs["g"] = gs
        recs["lo"] = cs[:, 0]
        recs["hi"] = cs[:, 1]
        glist = gs.tolist()
        self._map.update(zip(glist, zip(cs[:, 0].tolist(), cs[:, 1].tolist())))
        self._table.set(gs, cs)
        places = np.broadcast_to(np.asarray(places, dtype=np.uint8), (len(gs),))
        if places.any():
            recs["g"][places == ALT] |= _ALT
            self._alt.update(g for g, p in zip(glist, places.tolist()) if p == ALT)
        if self._alt and not places.all():
            self._alt.difference_update(g for g, p in zip(glist, places.tolist()) if p == HOME)
        return recs

    def read(self, offset: int, length: int) -> np.ndarray:
        """`length` bytes at `offset` as a new writable uint8 array; verifies every granule read."""
        offset, length = int(offset), int(length)
        with self._lock:
            self._check_open()
            self._check_range("read", offset, length)
            if not length or not self._map:
                return np.zeros(length, dtype=np.uint8)
            G = self.granule
            end = offset + length
            g0, g1 = offset // G, (end - 1) // G
            touched = present(self._map, g0, g1 + 1)
            # zero-filling 4 MiB costs a third of reading it: only when some granule is a hole
            full = len(touched) == g1 - g0 + 1
            out = np.empty(length, dtype=np.uint8) if full else np.zeros(length, dtype=np.uint8)
            run: list[int] = []        # consecutive written granules wholly inside the read
            for g in touched:
                gstart = g * G
                glen = self._glen(g)
                if gstart >= offset and gstart + glen <= end:
                    if run and run[-1] != g - 1:
                        self._read_run(run, offset, out)
                        run = []
                    run.append(g)
                    continue
                buf = self._read_granule(g)
                lo, hi = max(offset, gstart), min(end, gstart + glen)
                out[lo - offset: hi - offset] = buf[lo - gstart: hi - gstart]
            if run:
                self._read_run(run, offset, out)
            return out

    def read_granules(self, offset: int, length: int, verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(`length` bytes at `offset`, verified; their per-granule checksums), for copies.

        The range covers whole granules (`offset` on a granule boundary, its end on one or at
        the end of the volume).  The checksums are an (n, 2) uint64 array, one row per granule
        as `checksum` gives it; a granule never written reads as zeros and has
        `zero_checksum`.  Handing both to another store's `write` moves the bytes without
        hashing them twice; comparing a row with `zero_checksum` tells zeros without a scan.

        With `verify=False` the bytes are returned as stored, with their stored checksums,
        unhashed: for moving granules into a store that keeps them under those checksums (the
        snapshot pool saving what a write will overwrite), where rot travels with its
        checksum and is found by whoever reads it there.  No caller hands such bytes out.
        """
        offset, length, end = self._whole_granules("read_granules", offset, length)
        with self._lock:
            self._check_open()
            self._check_range("read", offset, length)
            return self._gather(range(offset // self.granule, -(-end // self.granule)), verify)

    def _whole_granules(self, what: str, offset, length) -> tuple[int, int, int]:
        """(offset, length, end) of a range that must cover whole granules (its end may be
        the end of the volume), else INVALID_INPUT naming it."""
        offset, length = int(offset), int(length)
        if not self.covers_whole_granules(offset, length):
            raise SanError("INVALID_INPUT",
                           f"{self.label}: {what} at offset {offset}, length {length} "
                           f"does not cover whole {self.granule}-byte granules")
        return offset, length, offset + length

    def covers_whole_granules(self, offset: int, length: int) -> bool:
        """Does [offset, offset+length) cover whole granules (its end may be the volume's)?
        What `read_granules` and `mapped_granules` take."""
        G, end = self.granule, offset + length
        return length >= 0 and offset % G == 0 and (end % G == 0 or end == self.size)

    @contextlib.contextmanager
    def mapped_granules(self, offset: int, length: int, verify: bool = False):
        """`read_granules(offset, length, verify)` without reading: (bytes, checksums), the
        bytes a read-only view of the data file's own pages, valid inside the ``with``.

        What moves granules to another file needs: handing the view to the other store's
        ``pwrite`` copies each byte once, from the page cache to the page cache, where a read
        into a buffer first copies it twice (about 0.11 s less per GiB here).  Copy-on-write
        moves old granules into the snapshot pool so, unverified (rot travels with its
        checksum); a copy job moves a volume's granules so, verified (``CHECKSUM_MISMATCH``
        before anything is handed out, as `read_granules` raises it).
        The store's lock is held inside the ``with``, so no write changes the bytes meanwhile;
        views still held when it ends keep the mapping until they go.
        The data file is exactly the volume's size, so no page of the view lies past its end.
        The bytes of a granule never written are whatever its file holds there (a place a
        snapshot keeps, say): tell such granules by their checksum (`holds_data`).
        """
        offset, length, end = self._whole_granules("mapped_granules", offset, length)
        if not length:          # nothing to map (mmap refuses a length of 0)
            raise SanError("INVALID_INPUT", f"{self.label}: mapped_granules at offset {offset}, "
                                            "length 0 maps nothing")
        G = self.granule
        with self._lock:
            self._check_open()
            self._check_range("read", offset, length)
            gs = range(offset // G, -(-end // G))
            places = {self._place(g) for g in gs if g in self._map} if self._alt else {HOME}
            if len(places) > 1:         # some granules at home, some not: no one mapping
                data, cs = self._gather(gs, verify)
                yield data, cs
                return
            page = offset - offset % mmap.ALLOCATIONGRANULARITY
            view = mmap.mmap(self._fd(places.pop() if places else HOME), end - page,
                             mmap.MAP_SHARED | mmap.MAP_POPULATE, mmap.PROT_READ, offset=page)
            try:
                cs, _ = self._stored_checksums(gs, length)
                data = np.frombuffer(view, dtype=np.uint8, count=length, offset=offset - page)
                if verify:
                    bad: list[int] = []
                    for run in self._runs([g for g in gs if g in self._map]):
                        at = (run[0] - gs.start) * G
                        bad += self._failing(run, data[at: at + (len(run) - 1) * G + self._glen(run[-1])])
                    if bad:
                        raise self._mismatch(bad)
                yield data, cs
                del data
            finally:
                try:
                    view.close()
                except BufferError:
                    pass    # a caller still holds a view: unmapped when the last one goes

    def _stored_checksums(self, gs, nbytes: int) -> tuple[np.ndarray, list[int]]:
        """(the checksums of granules `gs`, covering `nbytes`, as the map holds them, a
        zero granule's for those never written; the indexes in `gs` of the written ones)."""
        cs = zero_checksums(len(gs), nbytes, self.granule)
        at = [i for i, g in enumerate(gs) if g in self._map]
        if at:
            cs[at] = [self._map[gs[i]] for i in at]
        return cs, at

    @contextlib.contextmanager
    def mapped_gather(self, gs, verify: bool = True):
        """`gather` without reading: (pieces, checksums), valid inside the ``with``.  Each
        piece is a read-only view of the data file's pages holding consecutive granules of
        `gs` (ascending, any spacing), in order: laid end to end they are what `gather`
        returns.  One mapping per file and `MAP_WINDOW` of it (a process has 128 TiB of
        address space, a volume may be 1 PiB), no buffer.

        What a resync needs: its changed granules are scattered, and gathering them into a
        buffer first copies each byte once more, into pages of the array's process that sat
        unused since the last resync.  Such pages are slow to touch again on this machine
        (10 MiB of them took 11 ms after half a second unused, 42-47 ms after 3-5 s; the
        data file's pages were just written and are not), so a resync of 41 scattered
        granules through a buffer took 25-40 ms in plain Python, and 10-14 ms from the
        mapping.  With `verify`, every written granule is checked first, as `gather` does
        (``CHECKSUM_MISMATCH`` naming the first failing one, every one recorded).  Bytes of
        granules never written are whatever the file holds there, as in `mapped_granules`:
        tell them by their checksums (`holds_data`).  The store's lock is held inside the
        ``with``."""
        gs = self._granule_list("mapped_gather", gs)
        G = self.granule
        with self._lock:
            self._check_open()
            maps: dict[tuple[int, int], mmap.mmap] = {}
            pieces: list[np.ndarray] = []
            held: list[np.ndarray] = []     # the written granules' bytes, to verify
            # windows of whole granules that start on a page: a stretch is cut where one ends
            step = G * mmap.ALLOCATIONGRANULARITY // math.gcd(G, mmap.ALLOCATIONGRANULARITY)
            span = max(1, MAP_WINDOW // step) * step // G      # granules per window
            try:
                for run in runs(gs):
                    stretches = (self._place_runs(run) if self._alt and not self._alt.isdisjoint(run)
                                 else [(HOME, run[0], run[-1] + 1)])
                    for place, a, end in stretches:
                        while a < end:
                            w = a // span
                            b = min(end, (w + 1) * span)
                            if (place, w) not in maps:  # the file is exactly the volume's size
                                start = w * span * G
                                maps[place, w] = mmap.mmap(self._fd(place), min(span * G, self.size - start),
                                                           mmap.MAP_SHARED, mmap.PROT_READ, offset=start)
                            piece = np.frombuffer(maps[place, w], dtype=np.uint8,
                                                  count=min(b * G, self.size) - a * G,
                                                  offset=(a - w * span) * G)
                            pieces.append(piece)
                            if verify:
                                held += [piece[(g - a) * G: (g - a) * G + self._glen(g)]
                                         for g in range(a, b) if g in self._map]
                            a = b
                cs, at = self._stored_checksums(gs, granules_nbytes(gs, G, self._glen))
                if held:    # checked in one pass: per granule, the numpy calls cost more
                    got = checksums_each(held)
                    failing = np.flatnonzero((got != cs[at]).any(axis=1)).tolist()
                    if failing:     # every failing granule is recorded, the first named
                        raise self._mismatch([gs[at[i]] for i in failing])
                yield pieces, cs
            finally:
                pieces.clear()
                held.clear()
                piece = None        # noqa: F841 (the last view goes too, so the maps can close)
                for view in maps.values():
                    try:
                        view.close()
                    except BufferError:
                        pass    # a caller still holds a view: unmapped when the last one goes

    def gather(self, gs, verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """`read_granules` for granules `gs` (ascending, any spacing): their bytes one after
        the other (each granule `granule` bytes, the volume's short last one shorter) and
        their checksums, one row each, in one call, with one ``pread`` per stretch of
        consecutive written granules.  (A copy job maps them instead: `mapped_gather`.)"""
        gs = self._granule_list("gather", gs)
        with self._lock:
            self._check_open()
            return self._gather(gs, verify)

    def _gather(self, gs, verify: bool) -> tuple[np.ndarray, np.ndarray]:
        G, n = self.granule, len(gs)
        held = [g for g in gs if g in self._map]
        total = granules_nbytes(gs, G, self._glen)
        full = len(held) == n
        out = np.empty(total, dtype=np.uint8) if full else np.zeros(total, dtype=np.uint8)
        cs = np.empty((n, 2), dtype=np.uint64) if full else zero_checksums(n, total, G)
        # `gs` ascends without repeats, so granules consecutive on disk are neighbours in it
        where = {g: i for i, g in enumerate(gs)} if not isinstance(gs, range) else None
        for run in runs(held, max(1, VERIFY_RUN // G)):
            i = run[0] - gs.start if where is None else where[run[0]]
            self._pread_run(run, out[i * G:])
        if not held:
            return out, cs
        # checked once for all the granules read: per run, the numpy calls cost more than
        # the hashing of a resync's scattered 256 KiB granules
        at = (np.arange(n) if full else
              np.fromiter((where[g] if where is not None else g - gs.start for g in held),
                          dtype=np.intp, count=len(held)))
        want = np.array([self._map[g] for g in held], dtype=np.uint64)
        if verify:
            got = granule_checksums(out, G)[at]
            failing = np.flatnonzero((got != want).any(axis=1))
            if len(failing):    # every failing granule is recorded, the first is named
                raise self._mismatch([held[i] for i in failing.tolist()])
        cs[at] = want
        return out, cs

    def scatter(self, gs, data, checksums=None) -> None:
        """Store whole granules `gs` (ascending, any spacing) from `data`: their bytes one
        after the other, as `gather` gives them, or a list of pieces laid end to end, each
        holding consecutive granules of `gs` (as `mapped_gather` gives them).  A copy's
        scattered granules are written in one call, one ``pwrite`` per stretch of
        consecutive granules (or per piece) and one journal append.
        With `checksums` (one row each, as `gather` gave them with these very bytes) nothing
        is hashed; as with `write`, a wrong checksum can only make a later read fail."""
        gs = self._granule_list("scatter", gs)
        stretches = self._stretches(gs, data)
        G = self.granule
        if checksums is None and stretches is not None:
            checksums = (np.concatenate([granule_checksums(p, G) for _, _, p in stretches])
                         if stretches else np.empty((0, 2), dtype=np.uint64))
        cs = np.asarray(checksums if checksums is not None else (), dtype=np.uint64)
        if stretches is None or cs.shape != (len(gs), 2):
            pieces = isinstance(data, (list, tuple))
            given = sum(len(as_bytes_array(p)) for p in data) if pieces else len(as_bytes_array(data))
            raise SanError("INVALID_INPUT",
                           f"{self.label}: scatter of {len(gs)} granules needs "
                           f"{granules_nbytes(gs, G, self._glen)} bytes and {len(gs)} checksums "
                           f"(got {given} bytes{f' in {len(data)} pieces' if pieces else ''}, "
                           f"checksums {cs.shape})"
                           + ("; each piece holds whole consecutive granules" if pieces else ""))
        with self._lock:
            self._check_open()
            if not gs:
                return
            with self._doubting(gs):
                recs, i = [], 0
                home = not self._alt and not self._pinned      # every granule stays at home
                for f0, f1, piece in stretches:
                    j = i + f1 - f0
                    if home:        # the map updated once, below
                        self._write_home(f0, f1, piece)
                    else:
                        recs.append(self._write_whole(f0, f1, piece, cs[i:j]))
                    self._bad.clear(f0, f1)
                    i = j
                if home:
                    recs.append(self._commit(np.asarray(gs, dtype=np.uint64), cs))
                self._journal(np.concatenate(recs) if len(recs) > 1 else recs[0])

    def _stretches(self, gs: list[int], data) -> list[tuple[int, int, np.ndarray]] | None:
        """`data` for granules `gs` as (first, end, bytes) per stretch of consecutive
        granules, or None if it does not fit them (a piece too short or long, or spanning
        a gap between granules)."""
        G = self.granule
        if not isinstance(data, (list, tuple)):
            arr = as_bytes_array(data)
            if len(arr) != granules_nbytes(gs, G, self._glen):
                return None
            out, i = [], 0
            for run in runs(gs):
                n = (len(run) - 1) * G + self._glen(run[-1])
                out.append((run[0], run[-1] + 1, arr[i: i + n]))
                i += n
            return out
        out, k = [], 0
        for p in data:
            arr = as_bytes_array(p)
            if k >= len(gs):
                return None
            # the granules of this piece: consecutive ones from gs[k] on, as many as it holds
            f0, n = gs[k], -(-len(arr) // G)
            if (not len(arr) or k + n > len(gs) or gs[k + n - 1] != f0 + n - 1
                    or len(arr) != (n - 1) * G + self._glen(f0 + n - 1)):
                return None
            out.append((f0, f0 + n, arr))
            k += n
        return out if k == len(gs) else None

    def _granule_list(self, what: str, gs) -> list[int]:
        """`gs` as a list of ints, checked: ascending, unique, inside the volume."""
        gs = [int(g) for g in gs]
        if any(b <= a for a, b in zip(gs, gs[1:])) or (gs and (gs[0] < 0 or gs[-1] >= self.n_granules)):
            raise SanError("INVALID_INPUT",
                           f"{self.label}: {what} needs ascending granules in [0, "
                           f"{self.n_granules}) (got {gs[:8]}{' ...' if len(gs) > 8 else ''})")
        return gs

    def _read_run(self, run: list[int], offset: int, out: np.ndarray) -> None:
        """Read consecutive whole granules `run` straight into `out` (which starts at `offset`)."""
        start = run[0] * self.granule
        piece = self._pread_run(run, out[start - offset:])
        bad = self._failing(run, piece)
        if bad:     # every failing granule of the run is recorded, the first is named
            raise self._mismatch(bad)

    def discard(self, offset: int, length: int, keep_space: bool = False) -> int:
        """Un-write the granules lying wholly inside [offset, offset+length); returns how many.

        They read as zeros again and leave the bad set.  Their disk space is given back (hole
        punched, or zeros written where holes cannot be punched), unless `keep_space`: then
        the old bytes stay on disk, unreachable (the map says unwritten), and the next write
        there overwrites allocated blocks instead of filling a hole (the snapshot pool's
        free slots).  Granules only partly inside are left as they are.
        """
        offset, length = int(offset), int(length)
        with self._lock:
            self._check_open()
            self._check_range("discard", offset, length)
            G = self.granule
            end = offset + length
            f0 = -(-offset // G)
            f1 = end // G
            if end == self.size and length:
                f1 = self.n_granules
            gone = present(self._map, f0, f1)
            if gone:
                pinned = {g: self._pinned.get(g, 0) for g in gone}
                for g in gone:
                    self._alt.discard(g)
                    del self._map[g]
                self._table.clear(gone)
                # the records first: a writer killed while freeing leaves bytes nobody reaches,
                # never zeros under a granule's old checksum (which a mirror would trust)
                recs = np.zeros(len(gone), dtype=_REC_DTYPE)
                recs["g"] = np.asarray(gone, dtype=np.uint64) | _DELETED
                self._journal(recs)
                if not keep_space:      # (the pool's free slots keep their blocks)
                    # both places of each granule are freed, but one a snapshot holds; one
                    # hole per run: 4096 granule-sized holes left ext4's free space so that
                    # writing new space there ran 5x slower than after one hole of 1 GiB
                    for place in (HOME, ALT) if self._alt_fd >= 0 else (HOME,):
                        free = [g for g in gone if not pinned[g] & (1 << place)]
                        for start, length in granule_extents(free, G, self._glen):
                            self._free_space(self._fd(place), start, length)
            # after the journal: a crash in between leaves a stale entry, never a lost one
            self._bad.clear(f0, f1)
            return len(gone)

    @staticmethod
    def _free_space(fd: int, start: int, length: int) -> None:
        """Give [start, start+length) of a data file back (a hole, or zeros where holes
        cannot be punched)."""
        if punch_hole(fd, start, length):
            return
        zeros = np.zeros(min(length, VERIFY_RUN), np.uint8)
        for at in range(start, start + length, len(zeros)):
            pwrite_all(fd, zeros[: min(len(zeros), start + length - at)], at)

    def checksum(self, g: int) -> tuple[int, int] | None:
        """The stored checksum of granule `g`: (low, high) 64-bit halves of its XXH3-128, or
        None if it was never written.

        Two stores with the same granule size hold the same bytes in `g` exactly when their
        checksums agree (up to a ~2**-128 chance of an accidental collision): copies compare
        these to move only the granules that differ (incremental resync), without reading any
        data.  A granule that failed its old checksum when its
        store was converted from v1 has a value no content hashes to, so it differs from every
        good copy.
        """
        with self._lock:
            return self._map.get(int(g))

    def compare(self, other: "VolumeStore", same: bool = True) -> tuple[list[int], list[int]]:
        """(granules whose checksums differ here and in `other`, granules of `other` holding
        what this store holds), each ascending: what an incremental copy from this store onto
        `other` (same size and granule) moves, and what it may skip once `other`'s bytes there
        are checked (listed only if `same`).  A granule written with zeros holds what an
        unwritten one does (`ChecksumTable.compare`).
        Metadata only, no data read: the stores' dense tables (`san.checksum_table`), not
        their maps."""
        if other.granule != self.granule:
            raise SanError("INVALID_INPUT", f"{self.label} has {self.granule}-byte granules, "
                                            f"{other.label} {other.granule}-byte ones")
        last = self.n_granules - 1
        zeros = (zero_checksum(self.granule), last, zero_checksum(self._glen(last)))
        with other._lock:       # one lock at a time: no lock order to keep with anyone
            theirs = other._table.snapshot()
        with self._lock:
            return self._table.compare(theirs, same, zeros)

    def written_granules(self) -> list[int]:
        with self._lock:
            return sorted(self._map)

    def extents(self) -> list[tuple[int, int]]:
        """Merged (offset, length) byte ranges of the written granules, in order."""
        return granule_extents(self.written_granules(), self.granule, self._glen)

    @property
    def bytes_stored(self) -> int:
        """Bytes of the written granules (what the store holds on disk, thinly)."""
        with self._lock:
            n = len(self._map) * self.granule
            last = self.n_granules - 1
            if last in self._map:
                n -= self.granule - self._glen(last)
            return n

    def digest(self) -> str:
        """The contract's volume digest (see module docstring); reads verify checksums."""
        with self._lock:
            self._check_open()
            return digest_extents(self.extents(), self.size, self.read)

    def corrupt(self, offset: int, nbytes: int) -> int:
        """Flip every bit of the stored bytes in [offset, offset+nbytes) in the .data file.

        The map and the bad set are not touched (rot is unseen until read), so the next read of
        an affected granule raises CHECKSUM_MISMATCH.  Only bytes of written granules are
        flipped (unwritten regions hold no data and read as zeros whatever the file holds);
        returns how many bytes were flipped.  Any offset and length inside the volume are
        allowed (no 512-byte alignment needed).
        """
        offset, nbytes = int(offset), int(nbytes)
        with self._lock:
            self._check_open()
            if offset < 0 or nbytes < 0 or offset + nbytes > self.size:
                raise SanError("LBA_OUT_OF_RANGE",
                               f"{self.label}: corrupt at offset {offset}, length {nbytes} is "
                               f"outside the volume of {self.size} bytes")
            flipped = 0
            end = offset + nbytes
            G = self.granule
            written = present(self._map, offset // G, -(-end // G)) if nbytes else []
            for place, a, b in self._place_runs(written):   # the bytes where each granule is
                lo, hi = max(offset, a * G), min(end, b * G, self.size)
                if lo >= hi:
                    continue
                buf = np.empty(hi - lo, dtype=np.uint8)
                pread_into(self._fd(place), buf, lo)
                np.bitwise_xor(buf, 0xFF, out=buf)
                pwrite_all(self._fd(place), buf, lo)
                flipped += hi - lo
            return flipped

    def sync(self) -> None:
        """A barrier (what SYNCHRONIZE CACHE asks of an array): every write that has returned
        survives a power loss from now on.  The data file is fsync-ed before the map journal,
        so that no durable map record names data that is not durable yet."""
        with self._lock:
            self._check_open()
            os.fsync(self._data_fd)
            if self._alt_fd >= 0:
                os.fsync(self._alt_fd)
            self._map_journal.sync()

    def close(self) -> None:
        with self._lock:
            fd, self._data_fd = self._data_fd, -1
            close_fd(fd)
            fd, self._alt_fd = self._alt_fd, -1
            close_fd(fd)
            self._map_journal.close()

    def __repr__(self) -> str:
        return (f"VolumeStore({str(self.directory)!r}, {self.name!r}, size={self.size}, "
                f"granule={self.granule}, stored={self.bytes_stored}, label={self.label!r})")
