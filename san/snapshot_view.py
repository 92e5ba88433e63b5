"""What a snapshot is: its state in the engine, and the read-only view hosts and copies read.

`san.snapshots` keeps, per source volume, the intervals of saved granules (`_Source`) and the
snapshots taken of it (`_Snap`); a `SnapshotView` reads a snapshot as the source held it
when the snapshot was taken: from the pool where a granule was saved (copy-on-write), from
the source where it was not written since.  See `san.snapshots` for the epochs and intervals.
"""
from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

import numpy as np

from san.digest import digest_extents
from san.errors import SanError
from san.granules import granule_extents, present, runs
from san.storage import VERIFY_RUN
from san.units import BLOCK

if TYPE_CHECKING:   # the engine imports this module
    from san.snapshots import SnapshotEngine

__all__ = ["ZERO", "IN_HOME", "IN_ALT", "SnapshotView"]

ZERO = -1                               # interval slot: the saved content is all zeros
# interval slots naming a place of the source granule itself (redirect-on-write): its bytes
# stay where they were, in NAME.data (home) or NAME.alt, and the write went to the other place
IN_HOME, IN_ALT = -2, -3


def place_slot(place: int) -> int:
    """The interval slot of a source granule's `place` (`san.storage.HOME` or ``ALT``)."""
    return IN_HOME - place


def slot_place(slot: int) -> int | None:
    """The place an interval slot names, or None (a pool slot, or ZERO)."""
    return IN_HOME - slot if slot in (IN_HOME, IN_ALT) else None


def _hi(iv: tuple[int, int, int]) -> int:
    return iv[1]


def _fails_checksum(read, *args) -> bool:
    """Does `read(*args)` fail CHECKSUM_MISMATCH?  (Any other error is raised.)"""
    try:
        read(*args)
    except SanError as exc:
        if exc.code != "CHECKSUM_MISMATCH":
            raise
        return True
    return False


# ====================================================================== engine state
class _Snap:
    __slots__ = ("number", "source", "epoch", "size", "broken")

    def __init__(self, number: int, source: int, epoch: int, size: int):
        self.number, self.source, self.epoch, self.size = number, source, epoch, size
        self.broken = False


class _Source:
    __slots__ = ("number", "epoch", "numbers", "live", "cow", "slots", "kept", "pins")

    def __init__(self, number: int) -> None:
        self.number = number
        self.epoch = 0                  # snapshots ever taken of this source
        self.numbers: list[int] = []    # its snapshots (broken ones too), creation order
        self.live: list[int] = []       # epochs of its live unbroken snapshots, sorted
        self.cow: dict[int, list[tuple[int, int, int]]] = {}   # granule -> intervals (lo, hi, slot)
        self.slots = 0                  # granules of snapshot space its intervals hold
        # redirect-on-write: (granule, place) -> the checksum of the bytes kept there, and how
        # many intervals name that place (more than one only after a crash: see before_write)
        self.kept: dict[tuple[int, int], tuple[int, int]] = {}
        self.pins: dict[tuple[int, int], int] = {}

    def needed(self, lo: int, hi: int) -> bool:
        """Does a live unbroken snapshot have an epoch in (lo, hi]?"""
        i = bisect.bisect_right(self.live, lo)
        return i < len(self.live) and self.live[i] <= hi

    def w(self, g: int) -> int:
        ivs = self.cow.get(g)
        return ivs[-1][1] if ivs else 0

    def locate(self, g: int, e: int) -> int | None:
        """The slot holding granule `g` as snapshot `e` saw it, or None: read the source."""
        ivs = self.cow.get(g)
        if not ivs or ivs[-1][1] < e:
            return None
        i = bisect.bisect_left(ivs, e, key=_hi)
        if ivs[i][0] < e:
            return ivs[i][2]
        raise SanError("POOL_FULL", f"granule {g} of snapshot epoch {e} was not kept")   # never for a live unbroken one


class SnapshotView:
    """A read-only point-in-time image; duck-types the read side of `VolumeStore`."""

    def __init__(self, engine: "SnapshotEngine", snap: _Snap):
        self._engine = engine
        self.number = snap.number
        self.source = snap.source
        self.size = snap.size
        self.granule = engine.granule
        self.name = f"snapshot{snap.number}"
        self.label = f"{engine.array} volume {snap.number}" if engine.array else f"snapshot volume {snap.number}"

    # ------------------------------------------------------------------ helpers
    def _snap(self) -> _Snap:
        snap = self._engine._snaps.get(self.number)
        if snap is None:
            raise SanError("NO_SUCH_VOLUME", f"snapshot volume {self.number} no longer exists")
        if snap.broken:
            raise SanError("POOL_FULL", f"snapshot volume {self.number} of volume {self.source} is broken: "
                                        f"the snapshot pool was full when data it needed was overwritten")
        return snap

    def _glen(self, g: int) -> int:
        return min(self.granule, self.size - g * self.granule)

    @property
    def n_granules(self) -> int:
        return -(-self.size // self.granule)

    # ------------------------------------------------------------------ read side
    def read(self, offset: int, length: int) -> np.ndarray:
        """`length` bytes at `offset` as the source held them when the snapshot was taken."""
        offset, length = int(offset), int(length)
        eng = self._engine
        with eng._lock:
            snap = self._snap()
            if offset % BLOCK or length % BLOCK:
                raise SanError("INVALID_INPUT", f"snapshot volume {self.number}: read at offset {offset}, "
                                                f"length {length} is not aligned to {BLOCK} bytes")
            if offset < 0 or length < 0 or offset + length > self.size:
                raise SanError("LBA_OUT_OF_RANGE", f"snapshot volume {self.number}: read at offset {offset}, "
                                                   f"length {length} is outside the volume of {self.size} bytes")
            if not length:
                return np.zeros(0, dtype=np.uint8)
            src = eng._sources[snap.source]
            store = eng._store(snap.source)
            G, e, end = self.granule, snap.epoch, offset + length
            g0, g1 = offset // G, (end - 1) // G
            saved = [(g, slot) for g in present(src.cow, g0, g1 + 1) if (slot := src.locate(g, e)) is not None]
            if not saved:
                return store.read(offset, length)
            kept = iter(self._read_saved(saved))
            out = np.empty(length, dtype=np.uint8)
            pos = offset
            for g, slot in saved:
                gs = g * G
                lo, hi = max(offset, gs), min(end, gs + self._glen(g))
                if pos < lo:
                    out[pos - offset: lo - offset] = store.read(pos, lo - pos)
                if slot == ZERO:
                    out[lo - offset: hi - offset] = 0
                else:
                    out[lo - offset: hi - offset] = next(kept)[lo - gs: hi - gs]
                pos = hi
            if pos < end:
                out[pos - offset:] = store.read(pos, end - pos)
            return out

    def _read_saved(self, saved: list[tuple[int, int]]) -> list[np.ndarray]:
        """The kept bytes of `saved` (granule, slot) pairs, ZERO ones left out: from the pool,
        or from the place of the source granule a redirected write left them in.  Rot there
        is reported as rot in this snapshot's bytes, which is what the reader asked for."""
        pooled = iter(self._read_pool([(g, slot) for g, slot in saved if slot >= 0]))
        return [next(pooled) if slot >= 0 else self._read_place(g, slot)
                for g, slot in saved if slot != ZERO]

    def _read_pool(self, kept: list[tuple[int, int]]) -> list[np.ndarray]:
        """The pool slots of `kept` (granule, slot) pairs, one store read per run of slots."""
        pool = self._engine.pool
        try:
            return pool.read_many([slot for _, slot in kept])
        except SanError as exc:
            if exc.code != "CHECKSUM_MISMATCH":
                raise
        for g, slot in kept:   # which one: slot by slot
            if _fails_checksum(pool.read, slot):
                start = g * self.granule
                raise SanError("CHECKSUM_MISMATCH",
                               f"{self.label} (a snapshot of volume {self.source}): bytes {start}.."
                               f"{start + self._glen(g) - 1} (granule {g}, kept in pool slot {slot}) "
                               f"fail their checksum") from None
        return pool.read_many([slot for _, slot in kept])

    def _read_place(self, g: int, slot: int) -> np.ndarray:
        eng = self._engine
        place = slot_place(slot)
        src = eng._sources[self.source]
        try:
            return eng._store(self.source).read_place(g, place, src.kept[(g, place)])
        except SanError as exc:
            if exc.code != "CHECKSUM_MISMATCH":
                raise
            start = g * self.granule
            raise SanError("CHECKSUM_MISMATCH",
                           f"{self.label} (a snapshot of volume {self.source}): bytes {start}.."
                           f"{start + self._glen(g) - 1} (granule {g}, kept where the source "
                           f"had it) fail their checksum") from None

    def scrub(self, piece: int = VERIFY_RUN) -> tuple[int, list[int]]:
        """Read and verify every granule of the image: (bytes checked, bad granules).  A bad
        granule shared with the source is rot in the source too, and is remembered there; one
        kept in the pool is remembered by the pool.  Finding bad granules is not an error."""
        eng, G = self._engine, self.granule
        per = max(1, piece // G)
        checked, bad = 0, []
        with eng._lock:
            for run in runs(self.written_granules(), per):
                start = run[0] * G
                length = run[-1] * G + self._glen(run[-1]) - start
                checked += length
                if _fails_checksum(self.read, start, length):
                    bad.extend(g for g in run if _fails_checksum(self.read, g * G, self._glen(g)))
        return checked, bad

    def written_granules(self) -> list[int]:
        """Granules holding data in the image: those written in the source at snapshot time,
        except any whose content was all zeros when it was saved (they read as zeros anyway)."""
        eng = self._engine
        with eng._lock:
            snap = self._snap()
            src = eng._sources[snap.source]
            e = snap.epoch
            base = [g for g in eng._store(snap.source).written_granules() if src.w(g) < e]
            mine = [g for g in src.cow if (slot := src.locate(g, e)) is not None and slot != ZERO]
            return sorted(base + mine)

    def extents(self) -> list[tuple[int, int]]:
        """Merged (offset, length) byte ranges of the written granules, in order."""
        return granule_extents(self.written_granules(), self.granule, self._glen)

    @property
    def bytes_stored(self) -> int:
        """Bytes of the image's written granules (what a full copy of it would store)."""
        return sum(ln for _, ln in self.extents())

    def digest(self) -> str:
        """`VolumeStore.digest` of the image; cost follows its written data, not its size."""
        return digest_extents(self.extents(), self.size, self.read)

    # ------------------------------------------------------------------ write side: refused
    def write(self, offset: int, data) -> None:
        raise SanError("READ_ONLY", f"volume {self.number} is a snapshot of volume {self.source} and is read-only")

    def discard(self, offset: int, length: int) -> int:
        raise SanError("READ_ONLY", f"volume {self.number} is a snapshot of volume {self.source} and is read-only")

    def __repr__(self) -> str:
        return f"SnapshotView(number={self.number}, source={self.source}, size={self.size})"
