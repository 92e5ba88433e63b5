"""Granule geometry: runs of consecutive granules, and the byte extents they cover.

An array does its I/O granule by granule but never one granule at a time when it can help
it: the volume store reads and verifies runs of consecutive granules with one ``pread``, the
snapshot engine saves a run of granules with one read of the source and one write into the
pool, a copy job copies a batch run by run, and the volume digest reads consecutive 256 KiB
blocks in pieces.  `runs` cuts a list of indexes into such runs; `granule_extents` turns
sorted granule indexes into the merged ``(offset, length)`` byte ranges they cover (what
``GET LBA STATUS``, a copy over FC, a tape image and the digest work from); `present` finds
the granules of a range that a thin map holds, in time that follows the smaller of the two;
`granules_nbytes` counts the bytes of a list of granules.
"""
from __future__ import annotations

from typing import Iterable, Iterator

__all__ = ["runs", "granule_extents", "present", "granules_nbytes"]


def runs(indexes: Iterable[int], most: int | None = None) -> Iterator[list[int]]:
    """`indexes`, in their order, cut into runs of consecutive values (each one more than the
    one before), of at most `most` each (no limit when None).

    >>> list(runs([1, 2, 3, 5, 6, 9])), list(runs(range(5), 2))
    ([[1, 2, 3], [5, 6], [9]], [[0, 1], [2, 3], [4]])
    """
    run: list[int] = []
    for g in indexes:
        if run and (g != run[-1] + 1 or len(run) == most):
            yield run
            run = []
        run.append(g)
    if run:
        yield run


def granule_extents(granules, granule: int, length_of) -> list[tuple[int, int]]:
    """Merged (offset, length) byte ranges of sorted granule indexes (`length_of(g)` is the
    byte length of granule g: the last granule of an odd-sized volume is short)."""
    out: list[tuple[int, int]] = []
    for g in granules:
        start, ln = g * granule, length_of(g)
        if out and out[-1][0] + out[-1][1] == start:
            out[-1] = (out[-1][0], out[-1][1] + ln)
        else:
            out.append((start, ln))
    return out


def granules_nbytes(granules, granule: int, length_of) -> int:
    """Bytes of distinct ascending granule indexes: whole granules, but for the last one,
    which may be the short last granule of its volume (`length_of(g)`, as above).

    >>> granules_nbytes([0, 3, 7], 4, lambda g: 2 if g == 7 else 4), granules_nbytes([], 4, len)
    (10, 0)
    """
    return (len(granules) - 1) * granule + length_of(granules[-1]) if len(granules) else 0


def present(held, lo: int, hi: int) -> list[int]:
    """The granules of [lo, hi) that `held` (a dict or set of granule indexes) holds, sorted:
    by probing the range or by scanning `held`, whichever is shorter (a 4 MiB read of a thin
    1 TiB volume costs neither a pass over its map nor one over its 4 million granules).

    >>> present({1: "a", 5: "b", 9: "c"}, 2, 9), present({1, 5, 9}, 0, 10**12)
    ([5], [1, 5, 9])
    """
    if hi - lo <= len(held):
        return [g for g in range(lo, hi) if g in held]
    return sorted(g for g in held if lo <= g < hi)
