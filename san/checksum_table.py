"""A volume store's checksums as numpy tables: what makes comparing two volumes cheap.

An incremental copy (a mirror's resync, a restore) starts by comparing the stored checksums
of its two volumes granule by granule (`san.storage.VolumeStore.compare`).  The store's map
is a dict of granule -> (lo, hi), one tuple and two integers per written granule spread over
the heap: comparing two maps of 4,096 granules walked ~1 MiB of objects and took 1.2-3.5 ms
here, most of it touching memory that had not been used for seconds (on this VM such memory
is slow to touch again).  `ChecksumTable` keeps the same checksums, in the store's lock, as
dense tables of `CHUNK` granules (16 bytes of checksum and a byte of "written" each), created
for the stretches of the volume that were ever written: comparing two 1 GiB volumes reads
their 68 KiB and costs a few numpy calls, and a thin 1 PiB volume costs a table only where
it holds data.

The dict stays the store's map (every read looks granules up in it); the table follows each
change of it (`set`, `clear`) and answers one question, `compare`.
"""
from __future__ import annotations

import numpy as np

__all__ = ["CHUNK", "ChecksumTable"]

CHUNK = 4096   # granules per table: 1 GiB of 256 KiB granules, 68 KiB of table


class ChecksumTable:
    """The checksums of a volume's written granules, in tables of `CHUNK` granules.

    >>> t, u = ChecksumTable(), ChecksumTable()
    >>> t.set(np.array([1, 2, 5]), np.array([[1, 1], [2, 2], [5, 5]], np.uint64))
    >>> u.set(np.array([2, 5, 9]), np.array([[2, 2], [6, 6], [9, 9]], np.uint64))
    >>> t.compare(u)
    ([1, 5, 9], [2])
    """

    def __init__(self) -> None:
        self._sums: dict[int, np.ndarray] = {}      # chunk -> (CHUNK, 2) uint64
        self._held: dict[int, np.ndarray] = {}      # chunk -> (CHUNK,) bool

    def _chunk(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        if c not in self._sums:
            self._sums[c] = np.zeros((CHUNK, 2), dtype=np.uint64)
            self._held[c] = np.zeros(CHUNK, dtype=bool)
        return self._sums[c], self._held[c]

    def set(self, gs: np.ndarray, cs: np.ndarray) -> None:
        """Granules `gs` (distinct) now hold data with checksums `cs`, one (lo, hi) row each."""
        gs = np.asarray(gs, dtype=np.int64)
        if not len(gs):
            return
        c0, c1 = int(gs.min()) // CHUNK, int(gs.max()) // CHUNK
        if c0 == c1:            # a write's granules: nearly always one table
            sums, held = self._chunk(c0)
            sums[gs - c0 * CHUNK] = cs
            held[gs - c0 * CHUNK] = True
            return
        cs = np.asarray(cs)
        for c, at in _by_chunk(gs):
            sums, held = self._chunk(c)
            sums[gs[at] - c * CHUNK] = cs[at]
            held[gs[at] - c * CHUNK] = True

    def clear(self, gs) -> None:
        """Granules `gs` hold nothing any more (their checksums stay, unread)."""
        gs = np.asarray(gs, dtype=np.int64)
        for c, at in _by_chunk(gs):
            if c in self._held:
                self._held[c][gs[at] - c * CHUNK] = False

    def compare(self, other: "ChecksumTable", same: bool = True,
                zeros: tuple | None = None) -> tuple[list[int], list[int]]:
        """(granules written on one side only or with different checksums, granules written
        on both with equal checksums), each ascending; the second list is left empty unless
        `same` (a mirror needs only the first: listing the thousands of equal granules of a
        resync cost more than finding the few that differ).

        With `zeros` = (checksum of a granule of zeros, index of the last granule, checksum
        of it as zeros), a granule written with zeros holds what an unwritten one does: it
        differs from neither, and the second list also has `other`'s such granules where
        this table has none (their bytes are `other`'s to check).  A copy frees a granule of
        zeros on its destination rather than writing it: without `zeros`, its source's
        written zeros differed from it on every resync."""
        differ: list[np.ndarray] = []
        equals: list[np.ndarray] = []
        none = np.zeros(CHUNK, dtype=bool)
        for c in sorted(self._held.keys() | other._held.keys()):
            mine, theirs = self._held.get(c, none), other._held.get(c, none)
            both = mine & theirs
            if both.any():
                equal = (self._sums[c] == other._sums[c]).all(axis=1) & both
            else:
                equal = none
            if zeros is not None:
                mine_zero = _zeros(mine, self._sums.get(c), c, zeros)
                theirs_zero = _zeros(theirs, other._sums.get(c), c, zeros)
                equal = equal | (mine_zero & ~theirs) | (theirs_zero & ~mine)
            differ.append(np.flatnonzero((mine | theirs) & ~equal) + c * CHUNK)
            if same:
                kept = equal & theirs           # the other side's bytes: what there is to check
                equals.append(np.flatnonzero(kept) + c * CHUNK)
        return ((np.concatenate(differ).tolist() if differ else []),
                (np.concatenate(equals).tolist() if equals else []))

    def snapshot(self) -> "ChecksumTable":
        """A copy, to compare outside the lock of the store it belongs to."""
        copy = ChecksumTable()
        copy._sums = {c: t.copy() for c, t in self._sums.items()}
        copy._held = {c: t.copy() for c, t in self._held.items()}
        return copy


def _zeros(held: np.ndarray, sums: np.ndarray | None, c: int, zeros: tuple) -> np.ndarray:
    """Which granules of table `c` are written with zeros (`compare`)."""
    if sums is None or not held.any():
        return np.zeros(CHUNK, dtype=bool)
    full, last, last_sum = zeros
    zero = (sums == np.asarray(full, dtype=np.uint64)).all(axis=1)
    if c * CHUNK <= last < (c + 1) * CHUNK:
        zero[last - c * CHUNK] = bool((sums[last - c * CHUNK] == np.asarray(last_sum, np.uint64)).all())
    return held & zero


def _by_chunk(gs: np.ndarray):
    """(table, indexes into `gs` of its granules) per table `gs` touches: one sort, so a
    replay of a 1 TiB map (4 million granules, 1,024 tables) is not 1,024 passes over it."""
    if not len(gs):
        return
    order = np.argsort(gs // CHUNK, kind="stable")
    chunks = gs[order] // CHUNK
    cuts = np.flatnonzero(np.diff(chunks)) + 1
    for part in np.split(order, cuts):
        yield int(gs[part[0]] // CHUNK), part
