"""The contract's volume digest of a volume image.

A ``checkpoint`` step records a volume's digest and ``verify`` compares it; every holder of a
volume image computes the same value: a `VolumeStore` (`san.storage`), a snapshot's view
(`san.snapshots`), a volume image on tape (`san.elements.tape_library`), and a test's numpy
reference image (`digest_of`).

Hex SHA-256 over, for each 256 KiB block (`DIGEST_BLOCK`, whatever the granule) that is not
all zeros, in block order, the block index as 8-byte little-endian followed by the 32-byte
SHA-256 of the block (the last block of a volume whose size is not a multiple of 256 KiB is
the shorter remainder).  All-zero blocks contribute nothing, so a thin image is digested in
time that follows its data: `digest_extents` reads only the blocks its written extents
(`san.granules.granule_extents`) touch.  `digest_of` computes the same for an in-memory image
and `DigestBuilder` is the incremental form both use.
"""
from __future__ import annotations

import hashlib
import struct

import numpy as np

from san.errors import SanError
from san.fileio import as_bytes_array
from san.granules import runs
from san.units import KiB

__all__ = ["DIGEST_BLOCK", "DigestBuilder", "digest_of", "digest_extents"]

DIGEST_BLOCK = 256 * KiB                # fixed by the contract, whatever the granule
_DIGEST_PIECE = 64 * DIGEST_BLOCK       # 16 MiB read at a time by digest_extents()


def digest_extents(extents, size: int, read) -> str:
    """The volume digest of an image whose data lies in `extents` (elsewhere zeros), reading
    with `read(offset, length)`: every 256 KiB block an extent touches, in pieces of up to
    `_DIGEST_PIECE` consecutive blocks, so the cost follows the data, not the size."""
    blocks: list[int] = []
    for start, ln in extents:
        b0, b1 = start // DIGEST_BLOCK, (start + ln - 1) // DIGEST_BLOCK
        if blocks and blocks[-1] >= b0:
            b0 = blocks[-1] + 1
        blocks.extend(range(b0, b1 + 1))
    builder = DigestBuilder()
    for piece in runs(blocks, _DIGEST_PIECE // DIGEST_BLOCK):
        start = piece[0] * DIGEST_BLOCK
        stop = min(piece[-1] * DIGEST_BLOCK + DIGEST_BLOCK, size)
        builder.add(start, read(start, stop - start))
    return builder.hexdigest()


class DigestBuilder:
    """The contract's volume digest, fed with pieces of the volume in increasing order.

    `add(offset, data)`: `offset` a multiple of 256 KiB, not before the end of the previous
    piece (gaps read as zeros, i.e. contribute nothing); `data` a whole number of 256 KiB
    blocks, except for the last piece of a volume, which may end with a shorter block.
    All-zero blocks are skipped.

    >>> b = DigestBuilder(); b.add(0, np.zeros(DIGEST_BLOCK, np.uint8)); b.hexdigest() == hashlib.sha256().hexdigest()
    True
    """

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._next = 0          # lowest offset the next piece may start at
        self._short = False     # a short (final) block was added: nothing may follow

    def add(self, offset: int, data) -> None:
        arr = as_bytes_array(data)
        if offset % DIGEST_BLOCK or offset < self._next or self._short:
            raise SanError("INVALID_INPUT",
                           f"digest piece at offset {offset} must be 256 KiB aligned and follow the "
                           f"previous piece (next allowed offset {self._next})")
        full, rem = divmod(len(arr), DIGEST_BLOCK)
        first = offset // DIGEST_BLOCK
        if full:
            body = arr[: full * DIGEST_BLOCK]
            nonzero = np.flatnonzero(body.view("<u8").reshape(full, DIGEST_BLOCK // 8).any(axis=1))
            for i in nonzero.tolist():
                self._block(first + i, body[i * DIGEST_BLOCK:(i + 1) * DIGEST_BLOCK])
        if rem:
            tail = arr[full * DIGEST_BLOCK:]
            if tail.any():
                self._block(first + full, tail)
            self._short = True
        self._next = offset + len(arr)

    def _block(self, index: int, block: np.ndarray) -> None:
        self._h.update(struct.pack("<Q", index))
        self._h.update(hashlib.sha256(memoryview(block)).digest())

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def digest_of(array) -> str:
    """The volume digest of an in-memory volume image (1-D uint8 array or bytes)."""
    b = DigestBuilder()
    b.add(0, array)
    return b.hexdigest()
