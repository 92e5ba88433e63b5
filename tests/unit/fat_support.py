"""Test doubles shared by the tests/unit/test_fat_*.py files (no tests of their own).

No Ray: the "volume" is a numpy array (or a sparse memmapped file) behind read / write
callbacks that check alignment and count their calls.
"""
from __future__ import annotations

import hashlib
import os
import sys

import numpy as np
import pytest

from san.fat import BlockDevice, FatVolume, format_volume, fsck, fsck_binary, image_to_file
from san.pattern import pattern

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

FSCK = fsck_binary()
if FSCK is None:
    print("test_fat_*: fsck.fat not found (install dosfstools: apt-get install dosfstools);"
          " the fsck tests are skipped" + (" - but CI is set, so they fail" if os.environ.get("CI")
                                           else ""), file=sys.stderr)
# Skipped only when the binary is truly missing, and never in CI (which installs dosfstools).
needs_fsck = pytest.mark.skipif(FSCK is None and not os.environ.get("CI"),
                                reason="fsck.fat is not installed (apt-get install dosfstools)")


class Volume:
    """An in-memory (or memmapped) volume with SAN-like callbacks that count their calls."""

    def __init__(self, size: int, backing=None):
        self.size = size
        self.data = backing if backing is not None else np.zeros(size, dtype=np.uint8)
        self.reads: list[tuple[int, int]] = []
        self.writes: list[tuple[int, int]] = []

    def read(self, offset: int, length: int):
        assert offset % 512 == 0 and length % 512 == 0, (offset, length)
        assert 0 < length <= 4 * MiB and offset + length <= self.size, (offset, length)
        self.reads.append((offset, length))
        return np.array(self.data[offset:offset + length])

    def write(self, offset: int, data: np.ndarray):
        assert isinstance(data, np.ndarray) and data.dtype == np.uint8
        assert offset % 512 == 0 and len(data) % 512 == 0, (offset, len(data))
        assert 0 < len(data) <= 4 * MiB and offset + len(data) <= self.size, (offset, len(data))
        self.writes.append((offset, len(data)))
        self.data[offset:offset + len(data)] = data

    def device(self, **kw) -> BlockDevice:
        return BlockDevice(self.size, self.read, self.write, **kw)

    def readonly_device(self) -> BlockDevice:
        return BlockDevice(self.size, self.read, None, readonly=True)

    def extents(self) -> list[tuple[int, int]]:
        return sorted(set(self.writes))

    def image(self, path, extents=None) -> str:
        image_to_file(self.read, self.size, extents if extents is not None else [(0, self.size)],
                      str(path))
        return str(path)


def sparse_volume(tmp_path, size: int) -> Volume:
    path = tmp_path / "thin.data"
    with open(path, "wb") as f:
        f.truncate(size)
    return Volume(size, np.memmap(path, dtype=np.uint8, mode="r+", shape=(size,)))


def content(size: int, seed: int) -> bytes:
    return pattern(seed, 0, -(-size // 512) * 512)[:size].tobytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def vol64():
    """A formatted 64 MiB volume, mounted."""
    v = Volume(64 * MiB)
    dev = v.device()
    format_volume(dev, "test")
    fs = FatVolume(dev)
    yield v, dev, fs


def assert_fsck_clean(v: Volume, tmp_path, name="img"):
    ok, out = fsck(v.image(tmp_path / name))
    assert ok, out
    return out
