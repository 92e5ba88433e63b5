"""The snapshot pool of a disk array: where copy-on-write saves the granules snapshots keep.

One `GranulePool` per array holds, in *slots*, the old content of source granules that a
write would otherwise overwrite while a snapshot still needs them (`san.snapshots` decides
what to save, when to drop it, and journals which slot holds what).  The pool is a thin
`VolumeStore` named ``pool`` in the array's directory, so a saved granule is checksummed and
verified like any other stored data.  Slots are reused lowest first (a freed one once the
snapshot journal is synced: see `GranulePool.free`), and a freed slot keeps
its disk blocks (like the pool volume of a real array, the pool holds the space it ever
needed, its high-water mark): the next save there overwrites allocated blocks instead of
filling a hole, which is what lets the first write after a snapshot cost about what any
write costs once a pool has been used (a slot never used before is new space).  A pool may
be capped (`capacity`, the topology's ``snapshot_pool``), which caps that space too; when it is full `save` says so (None) instead of failing, so that the snapshot engine can
break the snapshots that needed the granule and let the host's write go on.  The cap counts
what snapshots keep outside the pool as well (redirect-on-write leaves old granules in their
volume's files: `hold`), so it means "what snapshots may keep", however it is kept.
"""
from __future__ import annotations

import errno
import heapq
import pathlib
import threading

import numpy as np

from san.checksums import granule_checksums
from san.errors import SanError
from san.granules import runs
from san.storage import MAX_SIZE, VolumeStore
from san.units import BLOCK, MiB, TiB

__all__ = ["GranulePool"]


def _adjacent(pieces: list, G: int) -> np.ndarray | None:
    """One array over `pieces` when they are whole granules lying end to end in one buffer
    (slices of one source read): the pool then writes straight from it, without a copy."""
    first = pieces[0]
    if not all(isinstance(p, np.ndarray) and p.dtype == np.uint8 and p.ndim == 1 and len(p) == G
               and p.flags.c_contiguous for p in pieces):
        return None
    base = first.base if first.base is not None else first
    start = first.__array_interface__["data"][0]
    for k, p in enumerate(pieces):
        if p.__array_interface__["data"][0] != start + k * G or (p.base if p.base is not None else p) is not base:
            return None
    if not isinstance(base, np.ndarray):
        return None
    b0 = base.__array_interface__["data"][0]
    if base.dtype != np.uint8 or base.ndim != 1 or not base.flags.c_contiguous or \
            start < b0 or start + len(pieces) * G > b0 + len(base):
        return None
    off = start - b0
    return base[off: off + len(pieces) * G]


class GranulePool:
    """Where saved (copy-on-write) granules live: one per array.

    A thin `VolumeStore` named ``pool`` in `directory`; a *slot* is a granule index of that store.
    Free slots are reused lowest first.  `capacity` (bytes, or None for no cap) limits the slots
    to ``capacity // granule``; the store itself is created as large as the file system allows
    (1 PiB, else ~16 TiB, else 1 TiB: it is sparse, so size costs nothing), so a pool re-opened with
    another capacity keeps its slots.  On re-open the used slots are the store's written granules.
    """

    NAME = "pool"

    def __init__(self, directory: pathlib.Path, granule: int, capacity: int | None,
                 label: str | None = None):
        if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer))
                                     or capacity < 0):
            raise SanError("INVALID_INPUT", f"snapshot pool capacity {capacity!r} must be a byte count >= 0 or None")
        if isinstance(granule, bool) or not isinstance(granule, (int, np.integer)) or granule <= 0 or granule % BLOCK:
            raise SanError("INVALID_INPUT", f"snapshot pool granule {granule!r} must be a positive multiple of {BLOCK}")
        self.directory = pathlib.Path(directory)
        self.capacity = None if capacity is None else int(capacity)
        self.label = label or f"snapshot pool in {self.directory}"
        self._lock = threading.RLock()
        data = self.directory / f"{self.NAME}.data"
        reopened = data.exists() and data.stat().st_size > 0
        if reopened:
            self._store = VolumeStore(self.directory, self.NAME, data.stat().st_size, int(granule),
                                      label=self.label)
        else:
            self._store = self._create(int(granule))
        self.granule = self._store.granule
        slots = self._store.size // self.granule
        self._limit = slots if self.capacity is None else min(slots, self.capacity // self.granule)   # slots in use at most
        used = self._store.written_granules()
        self._used: set[int] = set(used)
        self._high = used[-1] + 1 if used else 0       # slots >= _high were never used
        self._free = [s for s in range(self._high) if s not in self._used]   # sorted: a heap
        self._pending: list[int] = []      # freed, not reusable before `reuse_barrier`
        self._held = 0                     # granules kept outside the pool (see `hold`)
        self.reuse_barrier = None          # set by the snapshot engine: see `free`
        # reopened: a slot free now may have been freed by a record the last process wrote
        # but did not make durable (it died before a barrier), so the first save runs the
        # barrier too (the free list and the never-used slots above `_high` alike)
        self._reopened = reopened

    def _create(self, granule: int) -> VolumeStore:
        last: OSError | None = None
        for size in (MAX_SIZE, 16 * TiB - 16 * MiB, TiB):
            size -= size % granule
            try:
                return VolumeStore(self.directory, self.NAME, size, granule, label=self.label)
            except OSError as e:             # EFBIG: the file system caps file sizes (ext4: 16 TiB)
                if e.errno not in (errno.EFBIG, errno.EINVAL):
                    raise
                last = e
        raise SanError("NO_SPACE", f"cannot create the snapshot pool in {self.directory}: {last}")

    @property
    def slots(self) -> int:
        """How many slots the pool may hold (its capacity in granules)."""
        return self._limit

    @property
    def used_bytes(self) -> int:
        """Snapshot space in use: the slots, and the granules `hold` counts."""
        with self._lock:
            return (len(self._used) + self._held) * self.granule

    def hold(self, n: int = 1, force: bool = False) -> bool:
        """Count `n` granules a snapshot keeps outside the pool (redirect-on-write leaves
        them in their volume) against the capacity, as if they took slots: False (and
        nothing counted) when they do not fit, unless `force` (re-opening an engine whose
        granules are already kept)."""
        with self._lock:
            if not force and len(self._used) + self._held + n > self._limit:
                return False
            self._held += n
            return True

    def unhold(self) -> None:
        """A granule `hold` counted is no longer kept."""
        with self._lock:
            self._held -= 1

    def used_slots(self) -> list[int]:
        with self._lock:
            return sorted(self._used)

    def save(self, data, checksum: np.ndarray | None = None) -> int | None:
        """Store one granule (`data`: at most `granule` bytes, zero-padded); its slot, or None
        when full.  `checksum`: its stored one, as `save_many` takes them."""
        return self.save_many([self._fitting(data)],
                              None if checksum is None else np.asarray(checksum).reshape(1, 2))[0]

    def _carried(self, buf: np.ndarray, pieces: list, checksums: np.ndarray | None,
                 first: int) -> np.ndarray | None:
        """The checksums of slots `buf` (pieces zero-padded to whole granules, so not their
        stored ones): fresh, except that a piece failing its stored checksum (`checksums`
        row `first + k`) gets one its slot fails too.  Rot travels with its checksum: a
        fresh one would make a rotten granule valid data in the snapshot, which scrub could
        then no longer find.  None (hash on write) when no stored checksums came."""
        if checksums is None:
            return None
        G = self.granule
        sums = granule_checksums(buf, G)
        for k, piece in enumerate(pieces):
            if not np.array_equal(granule_checksums(self._fitting(piece), G)[0], checksums[first + k]):
                sums[k] = ~sums[k]
        return sums

    def _fitting(self, data) -> np.ndarray:
        """`data` as a 1-D uint8 array, if it fits one granule (else INVALID_INPUT)."""
        arr = np.asarray(data, dtype=np.uint8).reshape(-1)
        if len(arr) > self.granule:
            raise SanError("INVALID_INPUT",
                           f"snapshot pool: {len(arr)} bytes do not fit one {self.granule}-byte granule")
        return arr

    def save_many(self, pieces: list[np.ndarray], checksums: np.ndarray | None = None) -> list[int | None]:
        """`save` for several granules at once: one store write per run of consecutive slots.

        Slots go lowest first; when the pool fills up, the remaining pieces get None.
        `checksums` (one row per piece, as `VolumeStore.read_granules` gave them with these
        bytes) spare hashing whole granules again.
        """
        G = self.granule
        with self._lock:
            if self._reopened:
                if self.reuse_barrier is not None:
                    self.reuse_barrier()
                self._reopened = False
            slots: list[int | None] = []
            for _ in pieces:
                if len(self._used) + self._held + len(slots) >= self._limit:
                    break
                if not self._free and self._pending:
                    self.release_pending()
                if self._free:
                    slots.append(heapq.heappop(self._free))
                elif self._high < self._store.size // G:
                    slots.append(self._high)
                    self._high += 1
                else:
                    break
            done = 0
            try:
                for run in runs(slots):
                    end = done + len(run)
                    buf = _adjacent(pieces[done:end], G)
                    if buf is not None and checksums is not None:
                        self._store.write(run[0] * G, buf, checksums[done:end])
                    elif buf is None:
                        buf = np.zeros(len(run) * G, dtype=np.uint8)
                        for k in range(done, end):
                            arr = self._fitting(pieces[k])
                            buf[(k - done) * G: (k - done) * G + len(arr)] = arr
                        self._store.write(run[0] * G, buf, self._carried(buf, pieces[done:end],
                                                                         checksums, done))
                    else:
                        self._store.write(run[0] * G, buf)
                    self._used.update(run)
                    done = end
            except BaseException:
                for slot in slots[done:]:
                    heapq.heappush(self._free, slot)
                raise
            return slots + [None] * (len(pieces) - len(slots))

    def read_many(self, slots: list[int]) -> list[np.ndarray]:
        """`read` for several slots: one store read per run of consecutive slots."""
        G = self.granule
        out: list[np.ndarray] = []
        with self._lock:
            for slot in slots:
                if slot not in self._used:
                    raise SanError("INVALID_INPUT", f"snapshot pool slot {slot} is not in use")
            for run in runs(slots):
                buf = self._store.read(run[0] * G, len(run) * G)
                out.extend(buf[k * G:(k + 1) * G] for k in range(len(run)))
        return out

    def read(self, slot: int) -> np.ndarray:
        """The granule saved in `slot` (checksum verified by the store)."""
        with self._lock:
            if slot not in self._used:
                raise SanError("INVALID_INPUT", f"snapshot pool slot {slot} is not in use")
            return self._store.read(slot * self.granule, self.granule)

    def free(self, slot: int) -> None:
        """Give `slot` back; freeing a free slot does nothing.  Its disk space stays with the
        pool (see the module docstring).

        A freed slot is reused only after `reuse_barrier` (the snapshot engine's barrier: this
        pool, then its journal, fsync-ed) has run: the record that freed it (a snapshot deleted or broken) must reach
        the disk before another granule does in its place, or a power loss that kept the new
        granule and dropped the record would bring the snapshot back reading the new one."""
        with self._lock:
            if slot not in self._used:
                return
            self._store.discard(slot * self.granule, self.granule, keep_space=True)
            self._used.discard(slot)
            self._pending.append(slot)

    def release_pending(self, synced: bool = False) -> None:
        """Make the slots freed so far reusable: after `reuse_barrier`, unless the caller has
        just `synced` the snapshot journal itself (a barrier)."""
        with self._lock:
            if not self._pending:
                return
            if not synced and self.reuse_barrier is not None:
                self.reuse_barrier()
            for slot in self._pending:
                heapq.heappush(self._free, slot)
            self._pending.clear()

    def sync(self) -> None:
        """A barrier: the saved granules survive a power loss (`VolumeStore.sync`)."""
        self._store.sync()

    def close(self) -> None:
        self._store.close()

    def __repr__(self) -> str:
        return f"GranulePool({str(self.directory)!r}, granule={self.granule}, capacity={self.capacity}, used={self.used_bytes})"
