"""Snapshots of the volumes of one disk array (SPEC "Embodiment 2: snapshot").

A snapshot is a read-only point-in-time image of an ordinary volume (its *source*).  Creating
one costs O(1) whatever the source's size: nothing is read or copied.  Afterwards, the first
write to a granule of the source keeps the granule's old content once, shared by every
snapshot that still needs it; later writes to that granule cost nothing until the next
snapshot of the source.

Redirect-on-write, copy-on-write
--------------------------------
Where the old content is kept: by default (``redirect=True``) it stays where it is, and the
write goes to the granule's other place in the source's store (`VolumeStore.pin`: each
granule has two, ``NAME.data`` and ``NAME.alt``), so keeping it moves no byte.  When the
other place is itself pinned (an older snapshot keeps another version there), the old content
is copied into the array's `GranulePool` (`san.pool`) first (copy-on-write), and the write
goes where the granule is; with ``redirect=False`` every save is such a copy.  An interval's
*slot* says where its content is: a pool slot (>= 0), ``ZERO``, or ``IN_HOME``/``IN_ALT`` (a
place of the source granule, with the checksum it had, `_Source.kept`).  The pool's capacity
counts both kinds (`GranulePool.hold`), so ``snapshot_pool`` caps what snapshots keep
wherever it is.

Epochs
------
Per source, an epoch counter ``E`` counts the snapshots ever taken of it; snapshot k gets epoch
``e = E`` just after the increment.  Per source granule ``g`` the engine keeps a list of saved
*intervals* ``(lo, hi, slot)``, sorted and disjoint: "the content of ``g`` seen by the snapshots
of epochs in ``(lo, hi]`` is pool slot ``slot``" (``ZERO``: it read as zeros, and takes no pool
space).  ``w(g)``, the epoch at the last saving write, is the ``hi`` of the last interval (0 when
there is none).  Snapshot ``e`` reads ``g`` from the interval holding ``e`` when ``w(g) >= e``,
else from the source itself.  A write to ``g`` with ``w(g) < E`` saves the old content as
``(w(g), E, slot)`` only if some live, unbroken snapshot has an epoch in ``(w(g), E]``.
Memory therefore grows with the granules written after snapshots, never with the volume size or
with the number of snapshots (1024 snapshots with no writes between them cost 1024 small
records).  An interval is dropped (its slot freed) as soon as no live unbroken snapshot has an
epoch in it; dropping never changes what any remaining snapshot reads.

Pool full
---------
When the pool has no room for a save (a slot, or a place to hold), the write still proceeds: every live snapshot that
needed the lost content (epoch in ``(w(g), E]``) becomes *broken* (persisted), reading it raises
``POOL_FULL``, and the pool slots only broken or deleted snapshots needed are freed at once.

Persistence
-----------
``directory/snapshots.log``: an append-only journal (`san.journal.Journal`: torn tails cut,
compaction atomic) of 64-byte records (8 little-endian int64: kind, 6 fields, CRC-32 of the
first 56 bytes, `san.journal.seal`): a header (``b"ANSSNP02"``, granule size), ``EPOCH``,
``CREATE``, ``COW`` (an interval saved in a pool slot, or ZERO), ``ROW_HOME``/``ROW_ALT``
(an interval kept in a place of the source granule: source, granule, lo, hi, and the two
halves of its checksum), ``BROKEN`` and ``DELETE``.  A version-1 journal (``ANSSNP01``, no
``ROW`` records) is rewritten under the new header when it is opened.  Freed slots are not journaled: they are a
deterministic consequence of ``BROKEN``/``DELETE``, and replay recomputes them.  Every record of a
`SnapshotEngine.before_write` is appended (``os.write`` on an ``O_APPEND`` descriptor) before it returns, i.e. before the
array writes the source; a pool slot is written before the record naming it, and a record that
drops a slot is appended before the slot is discarded.  On open the journal is replayed (a torn
or garbled last record is cut off), then the pool is reconciled with it: slots no interval names
(a crash between a save and its record, or between a drop and its discard) are freed, and the
snapshots of an interval whose slot is missing from the pool become broken.  The journal is
rewritten (compacted) when it holds more than ~4x the live records.  The places the intervals
name are then pinned in their stores (`_reconcile_places`); a place whose granule is there
now under another checksum was written over, and the snapshots that needed it break.

Power loss.  Nothing above is fsync-ed per write (the array's barriers are), so a disk may keep
a source write and drop the save made just before it.  `create` therefore appends a marker
with the snapshot's epoch to the source's map journal (`VolumeStore.mark`), and on open a
granule whose last write came in an epoch its saved intervals do not reach breaks the
snapshots that needed it (`_reconcile_epochs`).  A slot freed by a ``DELETE`` or ``BROKEN``
is reused only after the pool and then this journal are fsync-ed (`GranulePool.free`; also
for the first save after a reopen, when the last process may have freed slots by records it
never made durable), so a power loss that drops the record cannot bring back a snapshot
reading another granule in its slot, and no durable record names a slot before its bytes are.

Views hold their engine: after a new `SnapshotEngine` is opened on the directory, take new
views from it.

Locking: one lock per engine guards everything, including the reads of the source a view makes
(so that a concurrent ``before_write`` + write of the source cannot slip between a view's lookup
and its read).  The array calls ``before_write`` and then writes the store, never holding the
store's lock while calling the engine.
"""
from __future__ import annotations

import bisect
import pathlib
import struct
import threading

import numpy as np

from san.errors import SanError
from san.granules import runs
from san.journal import Journal, seal, sealed
from san.pool import GranulePool
from san.snapshot_view import ZERO, SnapshotView, _hi, _Snap, _Source, place_slot, slot_place
from san.storage import VolumeStore, holds_data, zero_checksum

__all__ = ["SnapshotView", "SnapshotEngine", "ZERO",
           "GranulePool"]          # re-exported from san.pool, its home

# ====================================================================== journal records
_REC = struct.Struct("<7qQ")            # kind, 6 fields, crc32 of the first 56 bytes
_RECLEN = _REC.size                     # 64
_MAGIC = int.from_bytes(b"ANSSNP02", "little")  # the header's kind
_MAGIC_V1 = int.from_bytes(b"ANSSNP01", "little")   # san 0.4: no redirect-on-write records
_EPOCH, _CREATE, _COW, _BROKEN, _DELETE, _ROW_HOME, _ROW_ALT = 1, 2, 3, 4, 5, 6, 7
_KINDS = (_EPOCH, _CREATE, _COW, _BROKEN, _DELETE, _ROW_HOME, _ROW_ALT)
_U64 = (1 << 64) - 1


def _s64(v: int) -> int:
    """A u64 checksum half as the int64 a record field holds."""
    return v - (1 << 64) if v >> 63 else v


def _pack(kind: int, *fields: int) -> bytes:
    return seal(struct.pack("<7q", kind, *fields, *(0,) * (6 - len(fields))))




# ====================================================================== the engine
class SnapshotEngine:
    """Every snapshot of one array, persisted in ``directory/snapshots.log``.

    `stores` is the array's live dict volume number -> `VolumeStore` of its ordinary volumes
    (the sources); the engine looks sources up in it each time it needs one.
    """

    LOG = "snapshots.log"
    COMPACT_MIN = 1024       # journal records tolerated beyond 4x the live ones

    def __init__(self, directory: pathlib.Path, pool: GranulePool, stores: dict[int, VolumeStore],
                 array: str | None = None, redirect: bool = True):
        self.array = array             # names the snapshots in messages ("array1 volume 4")
        self.redirect = bool(redirect)  # False: every save is a copy into the pool
        self.directory = pathlib.Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.pool = pool
        self.granule = pool.granule
        self.stores = stores
        self.log_path = self.directory / self.LOG
        self._lock = threading.RLock()
        self._snaps: dict[int, _Snap] = {}
        self._sources: dict[int, _Source] = {}
        self._n_ivs = 0            # intervals held, all sources
        self._journal = Journal(self.log_path, _RECLEN)
        pool.reuse_barrier = self._durable           # see GranulePool.free
        self._live = False              # replaying: places are held in the stores once known
        self._given: dict[int, list[tuple[int, int]]] = {}   # source -> places `_unpin` gave back
        old = self._replay()
        self._reconcile()
        if old:                         # the same records under the new header
            self.compact()

    # ------------------------------------------------------------------ journal
    def _replay(self) -> bool:
        """Load the journal; True when it has the version-1 header."""
        header, body = self._journal.replay(_pack(_MAGIC, self.granule), check_header=self._check_header,
                                            valid=lambda rec: sealed(rec) and _REC.unpack(rec)[0] in _KINDS)
        for at in range(0, len(body), _RECLEN):
            self._apply(_REC.unpack_from(body, at))
        return _REC.unpack(header)[0] == _MAGIC_V1

    def _check_header(self, rec: bytes) -> None:
        vals = _REC.unpack(rec)
        if vals[0] not in (_MAGIC, _MAGIC_V1) or not sealed(rec):
            raise SanError("INVALID_INPUT", f"{self.log_path} is not a snapshot journal")
        if vals[1] != self.granule:
            raise SanError("INVALID_INPUT", f"{self.log_path} was written for {vals[1]}-byte granules, "
                                            f"the snapshot pool has {self.granule}-byte granules")

    def _apply(self, vals) -> list[int]:
        kind = vals[0]
        if kind == _EPOCH:
            src = self._source(vals[1])
            src.epoch = max(src.epoch, vals[2])
        elif kind == _CREATE:
            self._apply_create(vals[1], vals[2], vals[3], vals[4])
        elif kind == _COW:
            self._apply_cow(vals[1], vals[2], vals[3], vals[4], vals[5])
        elif kind == _BROKEN:
            return self._apply_break(vals[1])
        elif kind == _DELETE:
            return self._apply_delete(vals[1])
        elif kind in (_ROW_HOME, _ROW_ALT):
            self._apply_row(vals[1], vals[2], vals[3], vals[4], kind - _ROW_HOME,
                            (vals[5] & _U64, vals[6] & _U64))
        return []

    def _append(self, recs: list[bytes]) -> None:
        self._journal.append(b"".join(recs))

    def _maybe_compact(self) -> None:
        if self._journal.records > 4 * (len(self._sources) + len(self._snaps) + self._n_ivs) + self.COMPACT_MIN:
            self.compact()

    def compact(self) -> None:
        """Rewrite the journal with one record per live fact (atomically)."""
        with self._lock:
            recs = [_pack(_MAGIC, self.granule)]
            for number, src in sorted(self._sources.items()):
                recs.append(_pack(_EPOCH, number, src.epoch))
                for n in src.numbers:
                    s = self._snaps[n]
                    recs.append(_pack(_CREATE, n, s.source, s.epoch, s.size))
                    if s.broken:
                        recs.append(_pack(_BROKEN, n))
                for g in sorted(src.cow):
                    for lo, hi, slot in src.cow[g]:
                        place = slot_place(slot)
                        if place is None:
                            recs.append(_pack(_COW, number, g, lo, hi, slot))
                        else:
                            cs = src.kept[(g, place)]
                            recs.append(_pack(_ROW_HOME + place, number, g, lo, hi, _s64(cs[0]), _s64(cs[1])))
            self._journal.rewrite(recs[0], b"".join(recs[1:]))

    @property
    def journal_records(self) -> int:
        return self._journal.records

    # ------------------------------------------------------------------ state transitions (live and replay)
    def _source(self, number: int) -> _Source:
        src = self._sources.get(number)
        if src is None:
            src = self._sources[number] = _Source(number)
        return src

    def _apply_create(self, number: int, source: int, epoch: int, size: int) -> None:
        src = self._source(source)
        src.epoch = max(src.epoch, epoch)
        src.numbers.append(number)
        bisect.insort(src.live, epoch)
        self._snaps[number] = _Snap(number, source, epoch, size)

    def _apply_cow(self, source: int, g: int, lo: int, hi: int, slot: int) -> None:
        src = self._source(source)
        src.cow.setdefault(g, []).append((lo, hi, slot))
        self._n_ivs += 1
        if slot != ZERO:
            src.slots += 1

    def _apply_row(self, source: int, g: int, lo: int, hi: int, place: int, cs: tuple[int, int]) -> bool:
        """An interval kept where the source granule was (redirect-on-write); True when
        that place was not held before (the caller then holds it in the store and pool)."""
        src = self._source(source)
        src.cow.setdefault(g, []).append((lo, hi, place_slot(place)))
        self._n_ivs += 1
        src.slots += 1
        n = src.pins.get((g, place), 0)
        src.pins[(g, place)] = n + 1
        src.kept[(g, place)] = cs
        return n == 0

    def _unpin(self, src: _Source, g: int, place: int) -> None:
        """An interval naming a place of the source granule is gone: the last one gives the
        place back to the store and its granule of snapshot space to the pool."""
        n = src.pins[(g, place)] - 1
        if n:
            src.pins[(g, place)] = n
            return
        del src.pins[(g, place)], src.kept[(g, place)]
        if self._live:
            self._given.setdefault(src.number, []).append((g, place))
            self.pool.unhold()

    def _give_back(self) -> None:
        """Hand the places `_unpin` gave back to their stores, after the records that gave
        them back were appended (a store frees a place of a granule it no longer holds)."""
        given, self._given = self._given, {}
        for number, pairs in given.items():
            store = self.stores.get(number)
            if store is not None:
                store.unpin_many(pairs)

    def _apply_break(self, number: int) -> list[int]:
        snap = self._snaps[number]
        if snap.broken:
            return []
        snap.broken = True
        src = self._sources[snap.source]
        src.live.remove(snap.epoch)
        return self._release(src, snap.epoch)

    def _apply_delete(self, number: int) -> list[int]:
        freed = [] if self._snaps[number].broken else self._apply_break(number)
        snap = self._snaps.pop(number)
        self._sources[snap.source].numbers.remove(number)
        return freed

    def _release(self, src: _Source, e: int) -> list[int]:
        """Drop the intervals holding epoch `e` that no live unbroken snapshot needs; their slots."""
        freed: list[int] = []
        if not src.live:                       # nobody needs anything any more
            for g, ivs in src.cow.items():
                for _, _, slot in ivs:
                    self._drop(src, g, slot, freed)
                self._n_ivs -= len(ivs)
            src.cow.clear()
        else:
            for g in list(src.cow):
                ivs = src.cow[g]
                if ivs[-1][1] < e:
                    continue
                i = bisect.bisect_left(ivs, e, key=_hi)
                lo, hi, slot = ivs[i]
                if lo < e and not src.needed(lo, hi):
                    del ivs[i]
                    self._n_ivs -= 1
                    self._drop(src, g, slot, freed)
                    if not ivs:
                        del src.cow[g]
        return freed

    def _drop(self, src: _Source, g: int, slot: int, freed: list[int]) -> None:
        """An interval of granule `g` is gone: its pool slot goes to `freed` (the caller frees
        it), a place of the source granule it named is given back (`_unpin`)."""
        if slot == ZERO:
            return
        src.slots -= 1
        if slot >= 0:
            freed.append(slot)
        else:
            self._unpin(src, g, slot_place(slot))

    def _reconcile(self) -> None:
        """Make the pool and the replayed journal agree (see the module docstring)."""
        named: dict[int, tuple[int, int, int, int]] = {}   # slot -> (source, g, lo, hi)
        for number, src in self._sources.items():
            for g, ivs in src.cow.items():
                for lo, hi, slot in ivs:
                    if slot >= 0:
                        named[slot] = (number, g, lo, hi)
        used = set(self.pool.used_slots())
        for slot in sorted(used - set(named)):
            self.pool.free(slot)
        missing = sorted(set(named) - used)
        if missing:
            with self._lock:
                for slot in missing:
                    source, _, lo, hi = named[slot]
                    self._break_range(source, lo, hi)
        with self._lock:
            self._reconcile_places()
            self._reconcile_epochs()

    def _reconcile_places(self) -> None:
        """Hold in the stores (and in the pool's count) the places the replayed intervals
        name.  A place whose granule is there now under another checksum was written over
        (a power loss dropped the record that freed it, and kept a later write there): the
        snapshots that needed it break, as when a pool slot is missing."""
        for number, src in self._sources.items():
            store = self.stores.get(number)
            if store is None or not src.pins:
                continue
            keys = sorted(src.pins)
            states = store.granule_states([g for g, _ in keys])
            lost = [(g, place) for (g, place), (cs, cur, _) in zip(keys, states)
                    if cur == place and cs is not None and cs != src.kept[(g, place)]]
            for g, place in lost:
                for lo, hi, slot in list(src.cow.get(g, ())):
                    if slot == place_slot(place):
                        self._break_range(number, lo, hi)
        self._live = True
        for number, store in self.stores.items():
            src = self._sources.get(number)
            store.pin_many(src.pins if src else (), replace=True)
        self.pool.hold(sum(len(src.pins) for src in self._sources.values()), force=True)

    def _reconcile_epochs(self) -> None:
        """Break the snapshots a power loss left without a save they needed: a source granule
        whose last write came in epoch ``m`` (`VolumeStore.mark`) with no interval saved up to
        ``m`` (``w(g) < m``) was written over content the snapshots of epochs in ``(w(g), m]``
        still needed (their saves were dropped, the write kept)."""
        for number, store in list(self.stores.items()):
            epochs = store.take_replayed_epochs()
            src = self._sources.get(number)
            if src is None:
                continue
            store.compact_barrier = self._durable
            for g, m in epochs.items():
                ivs = src.cow.get(g)
                w = ivs[-1][1] if ivs else 0
                if w < m and src.needed(w, m):
                    self._break_range(number, w, m)

    def _break_range(self, source: int, lo: int, hi: int) -> None:
        """Break every live unbroken snapshot of `source` with an epoch in (lo, hi]; free what only they used."""
        src = self._sources[source]
        recs, freed = [], []
        for n in list(src.numbers):
            s = self._snaps[n]
            if not s.broken and lo < s.epoch <= hi:
                recs.append(_pack(_BROKEN, n))
                freed.extend(self._apply_break(n))
        self._append(recs)                     # durable before the slots are reused
        for slot in freed:
            self.pool.free(slot)
        self._give_back()

    # ------------------------------------------------------------------ lookups
    def _store(self, number: int) -> VolumeStore:
        store = self.stores.get(number)
        if store is None:
            raise SanError("NO_SUCH_VOLUME", f"source volume {number} of the snapshots does not exist")
        return store

    def _get(self, number) -> _Snap:
        snap = self._snaps.get(number)
        if snap is None:
            raise SanError("NO_SUCH_VOLUME", f"volume {number} is not a snapshot of this array")
        return snap

    def is_snapshot(self, number) -> bool:
        with self._lock:
            return number in self._snaps

    def source_of(self, number) -> int:
        with self._lock:
            return self._get(number).source

    def snapshots_of(self, source: int) -> list[int]:
        """The live snapshots (broken ones too) of `source`, in creation order."""
        with self._lock:
            src = self._sources.get(source)
            return list(src.numbers) if src else []

    def snapshots(self) -> list[int]:
        """Every live snapshot number of the array, ascending."""
        with self._lock:
            return sorted(self._snaps)

    def view(self, number) -> SnapshotView:
        with self._lock:
            return SnapshotView(self, self._get(number))

    def is_broken(self, number) -> bool:
        with self._lock:
            return self._get(number).broken

    def pool_bytes_of(self, source: int) -> int:
        """Bytes of pool held for the snapshots of `source`."""
        with self._lock:
            src = self._sources.get(source)
            return src.slots * self.granule if src else 0

    # ------------------------------------------------------------------ operations
    def create(self, source: int, number: int) -> SnapshotView:
        """A new snapshot `number` of ordinary volume `source`: O(1), nothing read or copied."""
        with self._lock:
            if number in self._snaps or number in self.stores:
                raise SanError("INVALID_INPUT", f"volume number {number} is already in use")
            if source in self._snaps:
                raise SanError("INVALID_INPUT", f"volume {source} is a snapshot: snapshots of snapshots are not supported")
            store = self.stores.get(source)
            if store is None:
                raise SanError("NO_SUCH_VOLUME", f"volume {source} does not exist: cannot snapshot it")
            if store.granule != self.granule:
                raise SanError("INVALID_INPUT", f"volume {source} has {store.granule}-byte granules, the snapshot "
                                                f"pool {self.granule}-byte ones")
            src = self._sources.get(source)
            epoch = (src.epoch if src else 0) + 1
            self._append([_pack(_CREATE, number, source, epoch, store.size)])
            self._apply_create(number, source, epoch, store.size)
            # the source's later writes are recorded after this marker (`VolumeStore.mark`)
            store.compact_barrier = self._durable
            store.mark(epoch)
            self._maybe_compact()
            return SnapshotView(self, self._snaps[number])

    def before_write(self, source: int, offset: int, length: int) -> int:
        """Save, once, the old content of each granule of [offset, offset+length) of `source` that a
        snapshot still needs.  MUST precede every write (or discard) of a source volume.

        Returns the pool bytes used (0 when nothing needed saving: no snapshot, or the granule was
        already saved since the last snapshot, or it read as zeros).  When the pool is full the
        snapshots needing a granule become broken instead, and this still succeeds.
        """
        offset, length = int(offset), int(length)
        with self._lock:
            src = self._sources.get(source)
            if src is None or not src.live or length <= 0:
                return 0
            store = self._store(source)
            if offset < 0 or offset + length > store.size:
                raise SanError("LBA_OUT_OF_RANGE", f"volume {source}: write at offset {offset}, length {length} "
                                                   f"is outside the volume of {store.size} bytes")
            G, E = self.granule, src.epoch
            g0, g1 = offset // G, (offset + length - 1) // G
            cow = src.cow
            todo: dict[int, int] = {}       # granule -> w(g), ascending
            for g in range(g0, g1 + 1):
                ivs = cow.get(g)
                w = ivs[-1][1] if ivs else 0
                if w < E and src.needed(w, E):
                    todo[g] = w
            if not todo:
                return 0
            saved = 0
            recs: list[bytes] = []
            pins: list[tuple[int, int]] = []    # places to hold in the store (one call)
            try:
                copy: dict[int, int] = {}       # the granules copied into the pool, -> w(g)
                for g, (cs, place, held) in zip(todo, store.granule_states(todo)):
                    w = todo[g]
                    if not self.redirect or cs is None or held & (1 << (1 - place)) or \
                            cs == zero_checksum(min(G, store.size - g * G)):
                        copy[g] = w     # zeros (kept as ZERO), or no other place to write
                        continue
                    if not src.needed(w, E):          # its snapshots broke earlier in this call
                        continue
                    # redirect-on-write: the bytes stay where they are, for the snapshots;
                    # the store writes the granule in its other place (`VolumeStore.pin`)
                    if src.pins.get((g, place), 0) == 0 and not self.pool.hold():
                        self._append(recs)            # snapshot space full: those snapshots lose
                        recs = []
                        store.pin_many(pins)          # held first: the break gives back its own
                        pins = []
                        self._break_range(source, w, E)
                        continue
                    if self._apply_row(source, g, w, E, place, cs):
                        pins.append((g, place))
                    recs.append(_pack(_ROW_HOME + place, source, g, w, E, _s64(cs[0]), _s64(cs[1])))
                    saved += G
                store.pin_many(pins)
                pins = []
                todo = copy
                for run in runs(todo):    # one source read per run of consecutive granules
                    start = run[0] * G
                    stop = min(run[-1] * G + G, store.size)
                    # as stored, unhashed: the pool keeps each granule under its stored
                    # checksum, so rot moves along and a read of the snapshot reports it;
                    # mapped, not read: the pool's pwrite copies each byte only once
                    with store.mapped_granules(start, stop - start) as (old, cs):
                        pieces = [old[g * G - start: min(g * G + G, store.size) - start] for g in run]
                        nonzero = holds_data(cs, stop - start, G)
                        keep = [i for i, nz in enumerate(nonzero) if nz]
                        slots = iter(self.pool.save_many([pieces[i] for i in keep], cs[keep]))
                        for i, (g, piece, nz) in enumerate(zip(run, pieces, nonzero)):
                            w = todo[g]
                            slot = next(slots) if nz else ZERO
                            if slot is None and src.needed(w, E):
                                slot = self.pool.save(piece, cs[i])   # a break earlier in this run may have made room
                                if slot is None:                  # pool full: those snapshots lose, the write wins
                                    self._append(recs)
                                    recs = []
                                    self._break_range(source, w, E)
                                    continue
                            elif slot is None:                    # its snapshots broke earlier in this call
                                continue
                            elif not src.needed(w, E):            # ditto, but it got a slot: give it back
                                if slot != ZERO:
                                    self.pool.free(slot)
                                continue
                            if slot != ZERO:
                                saved += G
                            self._apply_cow(source, g, w, E, slot)
                            recs.append(_pack(_COW, source, g, w, E, slot))
            finally:
                store.pin_many(pins)            # whatever was recorded is held, even on an error
                self._append(recs)
            self._maybe_compact()
            return saved

    def delete(self, number) -> None:
        """Delete snapshot `number`, freeing the pool slots no other live snapshot needs."""
        with self._lock:
            self._get(number)
            self._append([_pack(_DELETE, number)])
            freed = self._apply_delete(number)
            for slot in freed:
                self.pool.free(slot)
            self._give_back()
            self._maybe_compact()

    def shared_granules(self, number) -> list[int]:
        """Written granules of the source that snapshot `number` still shares with it (not
        written since the snapshot): one copy of their bytes serves both volumes."""
        with self._lock:
            snap = self._get(number)
            src = self._sources[snap.source]
            return [g for g in self._store(snap.source).written_granules() if src.w(g) < snap.epoch]

    def restore_plan(self, number, exact: bool = True) -> list[int]:
        """Granules where snapshot `number` now differs from its source, ascending.

        The candidates are the granules written in the source since the snapshot (metadata only);
        with `exact` (default) each is read on both sides and kept only if the bytes differ (so a
        second restore finds nothing to do).  POOL_FULL for a broken snapshot.
        """
        with self._lock:
            snap = self._get(number)
            view = SnapshotView(self, snap)
            view._snap()                             # POOL_FULL when broken
            src = self._sources[snap.source]
            cand = sorted(g for g in src.cow if src.locate(g, snap.epoch) is not None)
            if not exact:
                return cand
            store = self._store(snap.source)
            out = []
            for g in cand:
                slot = src.locate(g, snap.epoch)
                gs, ln = g * self.granule, min(self.granule, snap.size - g * self.granule)
                try:
                    cur = store.read(gs, ln)
                except SanError as exc:   # the source rotted there: the restore rewrites it
                    if exc.code != "CHECKSUM_MISMATCH":
                        raise
                    out.append(g)
                    continue
                if slot == ZERO:
                    differs = bool(cur.any())
                else:
                    differs = not np.array_equal(cur, SnapshotView(self, snap)._read_saved([(g, slot)])[0][:ln])
                if differs:
                    out.append(g)
            return out

    def sync(self) -> None:
        """A barrier: the pool's slots, then the journal naming them, survive a power loss
        (in that order, so no durable record names a slot that is not).  The slots freed
        before it may be reused from now on without another fsync (`GranulePool.free`)."""
        with self._lock:
            self._durable()
            self.pool.release_pending(synced=True)

    def _durable(self) -> None:
        """`sync`'s fsyncs, which every barrier of this journal runs (a reuse of freed slots,
        a store's compaction): the journal alone would let a record naming a reused slot
        reach the disk before the slot's new bytes, and a power loss then leaves the slot's
        old bytes under their old, valid checksum, read as the new snapshot's."""
        self.pool.sync()
        self._journal.sync()

    def close(self) -> None:
        with self._lock:
            self._journal.close()

    def __repr__(self) -> str:
        return f"SnapshotEngine({str(self.directory)!r}, snapshots={len(self._snaps)}, pool={self.pool.used_bytes})"
