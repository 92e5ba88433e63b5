"""The per-granule checksum of the array's volume stores: XXH3-128, and why.

Every granule a `VolumeStore` (`san.storage`) holds carries this checksum in its map; every
read verifies it (``CHECKSUM_MISMATCH``), and the array's copies (mirror, restore, volume
copy) compare two stores' checksums to move only the granules that differ.

Checksum
--------
Per granule, XXH3-128 (``xxhash.xxh3_128_intdigest``, seed 0) of its bytes, kept as
``(lo, hi)`` 64-bit halves.  Copies between stores trust "same stored checksum" as "same
bytes" (incremental resync compares checksums without reading data), so the checksum must be
collision-resistant, and it is on the write path of every byte, so it must be fast.  Measured
on this machine (``python benchmarks/checksums.py --store``: 256 KiB granules over 64 MiB of
random bytes, median of 5, three runs; a 2-core VM):

================  ===========  ==============================================
candidate         GB/s         notes
================  ===========  ==============================================
XXH3-128          13.6 - 14.0  128-bit, non-cryptographic; chosen
BLAKE3             5.3 -  5.8  256-bit, cryptographic (one thread)
old linear pair    6.1 -  7.7  ``_pair_checksums``: numpy sum + weighted sum
================  ===========  ==============================================

The store's own write path (1 GiB in 4 MiB pieces over written granules, into the page
cache) runs at ~4.3 GB/s with XXH3-128 against ~3.5 GB/s with the old pair (reads: ~4.8
against ~4.1 GB/s).  Hashing at 14 GB/s is ~30% of a write's time; BLAKE3 would be ~50% and
bring writes to ~3 GB/s, slower than before, for a strength (against deliberate collisions)
that integrity against rot and incremental copies do not need.

Guarantees: XXH3-128 is not linear, so no structured class of edits is invisible to it.  A
change to a granule's bytes (a flipped bit anywhere, a torn or zeroed sector, swapped words,
+1/-2/+1 on three adjacent words, which left both old sums unchanged) goes unseen only if the
new bytes collide by accident, with probability about 2**-128, which is also the chance that
two different contents in two stores show equal checksums.  It is no defense against someone *crafting*
collisions (it is neither keyed nor cryptographic); BLAKE3 would be, at the cost above.
Every read of a written granule reads it whole and verifies it, with no cache: bytes changed
under the store by anyone are seen by the next read.

The old pair of version-1 stores, which this checksum replaced, lives in `san.storage_v1`.
"""
from __future__ import annotations

import numpy as np
import xxhash

__all__ = ["checksums", "granule_checksums", "checksums_each"]

_M64 = (1 << 64) - 1


def checksums(data: np.ndarray, granule: int) -> np.ndarray:
    """Checksums of consecutive granules of `data` (uint8, length a multiple of `granule`).

    Returns a (n, 2) uint64 array: per granule (low 64 bits, high 64 bits) of its XXH3-128.
    Each granule is hashed in place (a memoryview slice, no copy).

    >>> d = xxhash.xxh3_128_intdigest(bytes(8))
    >>> checksums(np.zeros(16, np.uint8), 8).tolist() == [[d & _M64, d >> 64]] * 2
    True
    """
    n, rem = divmod(len(data), granule)
    if rem or granule <= 0:
        raise ValueError(f"checksums: {len(data)} bytes is not a whole number of {granule}-byte granules")
    mv = memoryview(data).cast("B")
    h = xxhash.xxh3_128_intdigest
    ds = [h(mv[i:i + granule]) for i in range(0, n * granule, granule)]
    out = np.empty((n, 2), dtype=np.uint64)
    out[:, 0] = [d & _M64 for d in ds]
    out[:, 1] = [d >> 64 for d in ds]
    return out


def granule_checksums(piece: np.ndarray, granule: int, fn=checksums) -> np.ndarray:
    """`fn` over the granules of `piece`, whose last granule may be short (end of volume)."""
    nfull = len(piece) // granule
    cs = fn(piece[: nfull * granule], granule) if nfull else np.empty((0, 2), np.uint64)
    if nfull * granule != len(piece):
        cs = np.concatenate([cs, fn(piece[nfull * granule:], len(piece) - nfull * granule)])
    return cs


def checksums_each(pieces) -> np.ndarray:
    """The checksum of each of `pieces` (uint8 arrays of any lengths, scattered granules
    say): one (lo, hi) row each, hashed in place.

    >>> d = xxhash.xxh3_128_intdigest(bytes(3))
    >>> checksums_each([np.zeros(3, np.uint8)]).tolist() == [[d & _M64, d >> 64]]
    True
    """
    h = xxhash.xxh3_128_intdigest
    ds = [h(memoryview(p).cast("B")) for p in pieces]
    out = np.empty((len(ds), 2), dtype=np.uint64)
    out[:, 0] = [d & _M64 for d in ds]
    out[:, 1] = [d >> 64 for d in ds]
    return out
