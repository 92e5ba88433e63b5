"""The granules a volume store knows to be bad: what an array repairs and reports.

Bad granules
------------
A store (`san.storage.VolumeStore`) remembers which granules it found bad, in ``NAME.bad``,
so the array can repair them (a mirror rewrites them) and report them
(`VolumeStore.bad_extents`, a ``scrub``).  Any read that finds a granule failing its checksum
(`read`, the read-modify-write of a partial `write`, `digest`, `scrub`, `verify`) records
it; `mark_bad` records granules the array learned of elsewhere; the conversion of a v1 store
records what failed its old pair.  A write covering a granule whole, or a discard of it,
removes it (its data is new); `scrub` replaces the entries of the written granules with what
it finds.  The set is a record, not a gate: reads verify the bytes against the checksum and
that alone decides whether they fail.  `corrupt` marks nothing: rot is unseen until read.
``CHECKSUM_MISMATCH`` names the store's label and the failing granule's byte range:
``"array1 volume 0: bytes 262144..524287 (granule 1, 262144 bytes) fail their checksum"``.

``NAME.bad`` exists only while there are bad granules: ``b"SANBAD01"`` then their sorted
indexes as u64 little-endian.  It is rewritten whole (``NAME.bad.tmp``, fsync,
``os.replace``) only when the set changes, and removed when the set becomes empty.
"""
from __future__ import annotations

import operator
import pathlib

import numpy as np

from san.errors import SanError
from san.fileio import tmp_path_of, write_replace

__all__ = ["BadGranules", "granule_list"]

_MAGIC = b"SANBAD01"


class BadGranules:
    """The bad granules of one store, persisted in `path`; `label` names the store in errors.

    Loaded when made (a leftover ``.tmp`` of a rewrite that died is deleted); every change
    that alters the set rewrites the file.  The store's lock guards it.
    """

    def __init__(self, path: pathlib.Path, label: str, n_granules: int):
        self.path = pathlib.Path(path)
        self.label = label
        self._set: set[int] = set()
        tmp = tmp_path_of(self.path)
        if tmp.exists():        # a rewrite that died before its os.replace
            tmp.unlink()
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        if raw[:8] != _MAGIC or len(raw) % 8:
            raise SanError("INVALID_INPUT",
                           f"{label}: {self.path} is not a bad-granule list "
                           f"(header {raw[:8]!r}, {len(raw)} bytes; expected {_MAGIC!r} + u64 indexes)")
        gs = np.frombuffer(raw, dtype="<u8", offset=8)
        if len(gs) and int(gs.max()) >= n_granules:
            raise SanError("INVALID_INPUT",
                           f"{label}: {self.path} names granule {int(gs.max())} "
                           f"beyond the volume's {n_granules} granules")
        self._set = set(gs.tolist())

    def __bool__(self) -> bool:
        return bool(self._set)

    def __contains__(self, g) -> bool:
        return g in self._set

    def sorted(self) -> list[int]:
        return sorted(self._set)

    def _save(self) -> None:
        if self._set:
            write_replace(self.path, _MAGIC + np.array(sorted(self._set), dtype="<u8").tobytes())
        elif self.path.exists():
            self.path.unlink()

    def add(self, gs) -> None:
        """Record granules `gs` as bad."""
        new = set(gs) - self._set
        if new:
            self._set |= new
            self._save()

    def clear(self, g0: int, g1: int) -> None:
        """Forget bad granules in [g0, g1): their data was just replaced or discarded."""
        if not self._set:       # the common case costs one test
            return
        gone = [g for g in self._set if g0 <= g < g1]
        if gone:
            self._set.difference_update(gone)
            self._save()

    def settle(self, checked, bad) -> None:
        """The granules `checked` were just verified and `bad` (among them) failed: their
        entries become exactly that."""
        now_bad = set(bad)
        healed = [g for g in checked if g in self._set and g not in now_bad]
        if healed or not now_bad <= self._set:
            self._set.difference_update(healed)
            self._set |= now_bad
            self._save()


def granule_list(label: str, what: str, granules, n_granules: int, granule: int) -> list[int]:
    """`granules` (an index, or an iterable / array of them) as sorted distinct ints, each a
    granule of a volume of `n_granules` granules of `granule` bytes (else INVALID_INPUT)."""
    if isinstance(granules, (int, np.integer)):
        granules = [granules]
    vals = granules.reshape(-1).tolist() if isinstance(granules, np.ndarray) else list(granules)
    try:
        out = sorted({operator.index(g) for g in vals})
    except TypeError:
        bad = next(g for g in vals if not isinstance(g, (int, np.integer)))
        raise SanError("INVALID_INPUT",
                       f"{label}: {what} granule {bad!r} is not an integer index") from None
    if out and (out[0] < 0 or out[-1] >= n_granules):
        badg = out[0] if out[0] < 0 else out[-1]
        raise SanError("INVALID_INPUT",
                       f"{label}: {what} granule {badg} is outside the volume's "
                       f"{n_granules} granules of {granule} bytes")
    return out
