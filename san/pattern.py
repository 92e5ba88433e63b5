"""The data the `write` op sends: a fixed, cheap function of (seed, offset).

Hosts generate it, arrays store it, tests and `verify` regenerate it to check every byte.
It must cost far less than moving it (the fabric runs near 1 GiB/s), so it is not a
stream cipher: each seed has one 1 MiB block of random bytes, laid end to end over the
volume, and every 512-byte sector is stamped with its own byte offset (first 8 bytes,
little-endian) and the seed (next 8 bytes).  So a sector written at the wrong place, or
from another seed, never looks right, and any chunk can be generated on its own.

>>> a = pattern(7, 4096, 1024); b = pattern(7, 0, 8192)
>>> bool((a == b[4096:5120]).all())
True
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .units import BLOCK

BASE = 1 << 20


@lru_cache(maxsize=16)
def _base(seed: int) -> np.ndarray:
    block = np.random.default_rng(seed).integers(0, 256, BASE, dtype=np.uint8)
    doubled = np.concatenate([block, block])
    doubled.flags.writeable = False
    return doubled


def pattern(seed: int, offset: int, size: int) -> np.ndarray:
    """The bytes a `write` with this seed puts at [offset, offset + size); both multiples of 512."""
    if offset % BLOCK or size % BLOCK or offset < 0 or size < 0:
        raise ValueError(f"pattern range must be 512-aligned (got offset {offset}, size {size})")
    base = _base(seed)
    out = np.empty(size, dtype=np.uint8)
    done = 0
    while done < size:
        start = (offset + done) % BASE
        piece = min(size - done, BASE)
        out[done:done + piece] = base[start:start + piece]
        done += piece
    sectors = out.view(np.uint64).reshape(-1, BLOCK // 8)
    sectors[:, 0] = np.arange(offset, offset + size, BLOCK, dtype=np.uint64)
    sectors[:, 1] = seed
    return out


def first_mismatch(data: np.ndarray, seed: int, offset: int) -> int | None:
    """The byte offset of the first byte of `data` (read from `offset`) that the pattern disagrees with."""
    expected = pattern(seed, offset, len(data))
    bad = np.flatnonzero(expected != data)
    return None if bad.size == 0 else offset + int(bad[0])
