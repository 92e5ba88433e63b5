"""san.fat.cache: the block device, a SAN volume as a file behind a write-back cache."""
from __future__ import annotations

import os

import numpy as np
import pytest

from san.errors import SanError
from san.fat.cache import ReadOnlyView

from .fat_support import KiB, MiB, Volume


def test_device_is_a_file():
    v = Volume(1 * MiB)
    v.data[:] = np.arange(MiB, dtype=np.uint64).astype(np.uint8)
    dev = v.device()
    assert dev.readable() and dev.writable() and dev.seekable()
    assert dev.seek(1000) == 1000 and dev.read(24) == v.data[1000:1024].tobytes()
    assert dev.tell() == 1024
    assert dev.seek(-10, os.SEEK_END) == MiB - 10
    assert dev.read(100) == v.data[-10:].tobytes()       # short at the end, like a file
    assert dev.read(100) == b""
    buf = bytearray(300)
    dev.seek(5)
    assert dev.readinto(buf) == 300 and bytes(buf) == v.data[5:305].tobytes()
    with pytest.raises(SanError) as err:
        dev.seek(MiB - 100)
        dev.write(b"x" * 200)
    assert err.value.code == "LBA_OUT_OF_RANGE"


def test_write_back_cache_hides_writes_until_flush():
    v = Volume(8 * MiB)
    dev = v.device()
    dev.seek(12345)
    dev.write(b"hello")                  # unaligned: a read-modify-write inside the cache
    dev.seek(3 * MiB)
    dev.write(bytes(range(256)) * 4096)   # 1 MiB, sector aligned: no read needed
    assert not v.data.any() and v.writes == []
    assert dev.dirty_bytes == 512 + MiB
    reads_before = len(v.reads)
    dev.seek(3 * MiB + 100)
    assert dev.read(10) == bytes(range(100, 110))         # served from the cache
    assert len(v.reads) == reads_before
    dev.flush()
    assert dev.dirty_bytes == 0
    assert v.data[12345:12350].tobytes() == b"hello"
    assert v.data[3 * MiB:4 * MiB].tobytes() == bytes(range(256)) * 4096
    # two write_fn calls: the one dirty sector, and the 1 MiB coalesced into one call
    assert sorted(v.writes) == [(12288, 512), (3 * MiB, MiB)]
    assert dev.stats["writes"] == 2 and dev.stats["bytes_written"] == MiB + 512
    dev.flush()
    assert len(v.writes) == 2                           # nothing dirty: nothing written


def test_flush_coalesces_into_4mib_calls():
    v = Volume(32 * MiB)
    dev = v.device()
    dev.seek(MiB)
    for _ in range(160):                  # 10 MiB in 64 KiB writes: 160 dirty blocks
        dev.write(b"\xab" * (64 * KiB))
    dev.flush()
    assert v.writes == [(MiB, 4 * MiB), (5 * MiB, 4 * MiB), (9 * MiB, 2 * MiB)]
    assert (v.data[MiB:11 * MiB] == 0xAB).all() and not v.data[11 * MiB:].any()


def test_flush_writes_only_dirty_runs():
    v = Volume(4 * MiB)
    v.data[:] = 7
    dev = v.device()
    for off in (0, 4096, 70000, 3 * MiB):
        dev.pwrite(off, b"\x01" * 10)     # partial sectors: read first, then patched
    dev.flush()
    assert sorted(v.writes) == [(0, 512), (4096, 512), (69632, 512), (3 * MiB, 512)]
    assert (v.data[10:512] == 7).all() and (v.data[:10] == 1).all()


def test_drop_cache_discards_dirty_and_stale_blocks():
    v = Volume(1 * MiB)
    dev = v.device()
    assert dev.pread(0, 4) == b"\0\0\0\0"
    v.data[:4] = [1, 2, 3, 4]                 # behind the device's back
    assert dev.pread(0, 4) == b"\0\0\0\0"     # still the cached view
    dev.pwrite(8192, b"z" * 512)
    dev.drop_cache()
    assert dev.dirty_bytes == 0
    assert dev.pread(0, 4) == b"\x01\x02\x03\x04"
    dev.flush()
    assert v.writes == [] and not v.data[8192:8704].any()   # the dirty block was discarded


def test_cache_is_bounded():
    v = Volume(64 * MiB)
    dev = v.device(max_dirty=4 * MiB, max_cached=8 * MiB)
    for off in range(0, 32 * MiB, MiB):
        dev.pwrite(off, b"\x05" * MiB)
        assert dev.dirty_bytes <= 4 * MiB
        assert dev.cached_bytes <= 8 * MiB + 64 * KiB
    dev.flush()
    assert (v.data[:32 * MiB] == 5).all()
    assert max(n for _, n in v.writes) <= 4 * MiB
    assert dev.pread_array(0, 32 * MiB).min() == 5      # a large read streams past the cache
    assert dev.cached_bytes <= 8 * MiB


def test_readonly_device_refuses_writes():
    v = Volume(1 * MiB)
    dev = v.readonly_device()
    assert not dev.writable()
    with pytest.raises(SanError) as err:
        dev.write(b"x")
    assert err.value.code == "READ_ONLY"
    dev.close()
    assert v.writes == []


def test_close_writes_back_but_garbage_collection_does_not():
    v = Volume(1 * MiB)
    dev = v.device()
    dev.pwrite(0, b"a" * 512)
    dev.close()
    assert v.data[0] == ord("a") and dev.closed
    dev2 = v.device()
    dev2.pwrite(512, b"b" * 512)
    del dev2                                  # a dropped device (a crashed host) writes nothing
    assert v.data[512] == 0


def test_readonly_view_reads_through_the_cache_and_is_not_writable():
    v = Volume(1 * MiB)
    dev = v.device()
    dev.pwrite(4096, b"cached!!" * 64)        # dirty in the cache, not on the volume
    view = ReadOnlyView(dev)
    assert view.readable() and view.seekable() and not view.writable()
    assert view.seek(4096) == 4096 and view.read(8) == b"cached!!" and view.tell() == 4104
    assert view.seek(-4, os.SEEK_END) == MiB - 4 and view.read(100) == b"\0" * 4
    buf = bytearray(16)
    view.seek(4096)
    assert view.readinto(buf) == 16 and bytes(buf) == b"cached!!" * 2
    assert view.tell() == 4112                # its own position, not the device's
    assert dev.tell() == 0
    del view                                  # dropping a view writes nothing
    assert v.writes == []
