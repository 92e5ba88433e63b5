"""Version-1 volume stores (san 0.1): their linear checksum pair, and the conversion from it.

A state directory written by san 0.1 holds volume maps with the magic ``b"SANMAP01"``, whose
records carry a linear checksum pair per granule instead of XXH3-128 (`san.checksums`).
Opening such a `VolumeStore` (`san.storage`) *converts* it once: every written granule is
read and checked against its old pair (`rechecksum`); a good one gets its XXH3-128 recorded, a
bad one is put in the bad set and gets a checksum that cannot match its current bytes (its
XXH3-128 with the lowest bit flipped), so it keeps failing reads exactly as before.  The new
map is written to ``NAME.map.tmp``, fsync-ed and moved over the old one with ``os.replace``
(the bad set is written first), so a crash during conversion leaves the v1 map, converted
again on the next open.  `VolumeStore.converted` and `VolumeStore.converted_bad` tell what
the conversion found.

The old pair, kept as `_pair_checksums` to convert v1 stores (and as the checksum
benchmark's baseline), was a Fletcher-style pair over little-endian u64 words ``w``:
``(sum(w), sum((i+1) * w[i])) mod 2**64``.  It caught every change confined to one word, but
being linear it was blind to any edit whose deltas ``d[i]`` have ``sum(d) = sum(i * d[i]) =
0`` (e.g. +1, -2, +1 on three adjacent words).
"""
from __future__ import annotations

import numpy as np

from san.checksums import granule_checksums
from san.units import KiB

__all__ = ["MAGIC_V1", "rechecksum", "_pair_checksums"]

MAGIC_V1 = b"SANMAP01"                  # the header magic of a v1 volume map

_weights_cache: dict[int, np.ndarray] = {}


def _weights(words: int) -> np.ndarray:
    w = _weights_cache.get(words)
    if w is None:
        w = _weights_cache[words] = np.arange(1, words + 1, dtype=np.uint64)
        w.flags.writeable = False
    return w


def _pair_checksums(data: np.ndarray, granule: int) -> np.ndarray:
    """The version-1 checksums: per granule (sum of u64 words, index-weighted sum) mod 2**64.

    Linear, hence not collision-resistant; only kept to verify v1 stores while converting them
    (and as the benchmark's baseline).  `granule` must be a multiple of 8.

    >>> _pair_checksums(np.array([1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0], np.uint8), 16).tolist()
    [[3, 5]]
    """
    n, rem = divmod(len(data), granule)
    if rem or granule % 8:
        raise ValueError(f"_pair_checksums: {len(data)} bytes is not a whole number of {granule}-byte granules")
    words = data.view("<u8").reshape(n, granule // 8)
    out = np.empty((n, 2), dtype=np.uint64)
    if granule >= _SPLIT_MIN and (granule // 8) % _SPLIT == 0:
        _checksums_split(words, out)
        return out
    np.sum(words, axis=1, dtype=np.uint64, out=out[:, 0])
    out[:, 1] = np.einsum("ij,j->i", words, _weights(granule // 8))
    return out


# Large granules: word i = k * L + j is summed twice while the granule sits in the CPU's
# cache, as columns (vector adds over k) and rows (over j); then
#   sum((i+1) * w[i]) = L * sum(k * row[k]) + sum((j+1) * col[j])   (mod 2**64)
# which gives the same pair as the einsum at ~1.5x its speed on data fresh from memory.
_SPLIT, _SPLIT_MIN = 512, 64 * KiB      # L (words per row, not a sector), smallest granule


def _checksums_split(words: np.ndarray, out: np.ndarray) -> None:
    n, nwords = words.shape
    rows_of = nwords // _SPLIT
    row_w = np.arange(rows_of, dtype=np.uint64) * np.uint64(_SPLIT)
    col_w = _weights(_SPLIT)
    cols = np.empty((n, _SPLIT), dtype=np.uint64)
    rows = np.empty((n, rows_of), dtype=np.uint64)
    for g in range(n):
        grid = words[g].reshape(rows_of, _SPLIT)
        cols[g] = grid.sum(axis=0)
        rows[g] = grid.sum(axis=1)
    np.sum(cols, axis=1, dtype=np.uint64, out=out[:, 0])
    out[:, 1] = np.einsum("ij,j->i", rows, row_w) + np.einsum("ij,j->i", cols, col_w)


def rechecksum(piece: np.ndarray, granule: int, old: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Convert consecutive granules whose bytes are `piece` (the last may be short) and whose
    v1 pairs are the rows of `old`: (their XXH3-128 checksums as (n, 2) uint64, the positions
    in the run of those failing their old pair).  A failing granule's checksum has its lowest
    bit flipped: it can never match these bytes, so reads of it keep failing."""
    was = granule_checksums(piece, granule, _pair_checksums)
    new = granule_checksums(piece, granule)
    failed = np.flatnonzero((was != old).any(axis=1)).tolist()
    for i in failed:
        new[i, 0] ^= np.uint64(1)
    return new, failed
