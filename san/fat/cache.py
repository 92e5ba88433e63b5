"""The block device under a host's `fat` mount: a SAN volume as a file, with a write-back cache.

Nothing here knows FAT.  A volume is seen as a file (`BlockDevice`): its reads and writes are
SAN I/O, made through two callbacks the host provides (``read_fn`` / ``write_fn``), behind a
host-side write-back cache.  The filesystem (`san.fat.volume`) and mkfs (`san.fat.mkfs`) work
on it as on any file.

`BlockDevice` caches whole cache blocks (64 KiB by default) and tracks, per 512-byte sector,
which bytes it holds (*valid*) and which it changed (*dirty*), so a write of whole sectors
never reads the backing store first, and a write-back sends only changed sectors:
`BlockDevice.flush` writes every dirty run, adjacent runs coalesced into one ``write_fn``
call of at most 4 MiB.  Writes are not seen by the backing store until then, except that the
cache is bounded: past ``max_dirty`` dirty bytes (32 MiB) everything dirty is written back,
and past ``max_cached`` (64 MiB) the least recently used clean blocks are dropped.  A large
read (``>= 1 MiB``) of blocks the cache does not hold goes straight to the backing store
without filling the cache (file contents stream past it; metadata stays cached).
`BlockDevice.drop_cache` forgets everything, dirty blocks included (their data is lost): use it
after the volume changed behind the host's back.  A device dropped without `close` never writes
back from the garbage collector (like a host that crashed).

`ReadOnlyView` is a non-writable file object over a device (for readers that decide whether
they may write from ``fp.writable()``, as pyfatfs does).
"""
from __future__ import annotations

import io
import threading
from collections import OrderedDict

import numpy as np

from ..errors import SanError

SECTOR = 512
MAX_IO = 4 << 20            # the largest read_fn / write_fn call


def round_up(n: int, to: int) -> int:
    return -(-n // to) * to


def as_u8(data) -> np.ndarray:
    """What a ``read_fn`` returned (an array or bytes) as a flat uint8 array (no copy)."""
    arr = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
    return arr.reshape(-1).view(np.uint8)


class _PositionalFile(io.RawIOBase):
    """The file-object side of a volume: a position over ``pread(offset, length)`` and
    ``size``; reads past the end return short, as a file's do.  Thread-safe (one lock)."""

    size: int

    def __init__(self):
        super().__init__()
        self._pos = 0
        self._lock = threading.RLock()

    def pread(self, offset: int, length: int) -> bytes:
        raise NotImplementedError

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def read(self, size: int = -1) -> bytes:
        self._check_open()
        with self._lock:
            if size is None or size < 0:
                size = max(0, self.size - self._pos)
            data = self.pread(self._pos, size)
            self._pos += len(data)
            return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer) -> int:
        data = self.read(len(memoryview(buffer).cast("B")))
        memoryview(buffer).cast("B")[:len(data)] = data
        return len(data)

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"I/O operation on a closed {type(self).__name__}")

    def __del__(self):
        # io.IOBase.__del__ would close() and so write back: a dropped device must not write
        # (its cached view may be stale: the volume may have been restored behind its back).
        pass


class _Block:
    __slots__ = ("buf", "valid", "dirty", "full", "ndirty")

    def __init__(self, length: int):
        self.buf = np.zeros(length, dtype=np.uint8)
        nsec = length // SECTOR
        self.valid = np.zeros(nsec, dtype=bool)
        self.dirty = np.zeros(nsec, dtype=bool)
        self.full = False        # every sector valid
        self.ndirty = 0          # dirty sectors


class BlockDevice(_PositionalFile):
    """A volume as a file: reads and writes go through ``read_fn(offset, length) ->
    np.ndarray | bytes`` and ``write_fn(offset, data: np.ndarray)`` (both 512-byte aligned, any
    multiple of 512 up to 4 MiB), behind a write-back cache of whole cache blocks.

    ``size`` is the volume's size (a multiple of 512).  ``readonly`` (or no ``write_fn``) makes
    `writable` false and every write a ``READ_ONLY`` error.  ``max_dirty`` / ``max_cached``
    bound the cache (see the module doc).  `stats` counts ``read_fn`` / ``write_fn`` calls and
    their bytes: ``reads``, ``writes``, ``bytes_read``, ``bytes_written``, ``bytes`` (both).
    Reads past the end return short (as a file does); writes past it are
    ``LBA_OUT_OF_RANGE``.  Thread-safe (one lock).
    """

    def __init__(self, size: int, read_fn, write_fn=None, cache_block: int = 64 * 1024,
                 readonly: bool = False, *, name: str = "the volume",
                 max_dirty: int = 32 << 20, max_cached: int = 64 << 20):
        super().__init__()
        if size < 0 or size % SECTOR:
            raise ValueError(f"device size must be a non-negative multiple of 512 (got {size})")
        if cache_block <= 0 or cache_block % SECTOR or cache_block > MAX_IO:
            raise ValueError(f"cache_block must be a multiple of 512 up to 4 MiB (got {cache_block})")
        self.size = int(size)
        self.name = name
        self._read_fn = read_fn
        self._write_fn = write_fn
        self._readonly = bool(readonly) or write_fn is None
        self.cache_block = int(cache_block)
        self.max_dirty = max(int(max_dirty), self.cache_block)
        self.max_cached = max(int(max_cached), 2 * self.cache_block)
        self._blocks: OrderedDict[int, _Block] = OrderedDict()
        self._dirty_blocks: set[int] = set()
        self._dirty_sectors = 0
        self.stats = {"reads": 0, "writes": 0, "bytes_read": 0, "bytes_written": 0, "bytes": 0}

    # -- io.RawIOBase ---------------------------------------------------------------------------
    def writable(self) -> bool:
        return not self._readonly

    def write(self, data) -> int:
        self._check_open()
        with self._lock:
            n = self.pwrite(self._pos, data)
            self._pos += n
            return n

    def truncate(self, size=None):
        raise io.UnsupportedOperation("a volume cannot change its size")

    def flush(self) -> None:
        """Write back every dirty sector, adjacent runs coalesced into calls of <= 4 MiB."""
        if self.closed:
            return
        with self._lock:
            self._write_back()

    def close(self) -> None:
        """Write back what is dirty, then close (the callbacks are not called any more)."""
        if self.closed:
            return
        with self._lock:
            try:
                if not self._readonly:
                    self._write_back()
            finally:
                self._forget()
                super().close()

    # -- the cache ----------------------------------------------------------------------------
    @property
    def dirty_bytes(self) -> int:
        """Bytes written into the cache and not yet written back."""
        return self._dirty_sectors * SECTOR

    @property
    def cached_bytes(self) -> int:
        return sum(len(b.buf) for b in self._blocks.values())

    def drop_cache(self) -> None:
        """Forget every cached block.  Dirty blocks are discarded too (their data is lost):
        call `flush` first to keep them.  Use after the volume changed behind this device."""
        with self._lock:
            self._forget()

    def _forget(self) -> None:
        self._blocks.clear()
        self._dirty_blocks.clear()
        self._dirty_sectors = 0

    def _block_len(self, index: int) -> int:
        return min(self.cache_block, self.size - index * self.cache_block)

    def _backing_read(self, offset: int, length: int) -> np.ndarray:
        """Read [offset, offset + length) (512-aligned) from the backing store, <= 4 MiB a call."""
        out = np.empty(length, dtype=np.uint8)
        done = 0
        while done < length:
            n = min(MAX_IO, length - done)
            arr = as_u8(self._read_fn(offset + done, n))
            if len(arr) != n:
                raise SanError("MEDIA_ERROR", f"{self.name}: read of {n} bytes at {offset + done} "
                                              f"returned {len(arr)}")
            out[done:done + n] = arr
            self.stats["reads"] += 1
            self.stats["bytes_read"] += n
            self.stats["bytes"] += n
            done += n
        return out

    def _fill(self, index: int, blk: _Block) -> None:
        """Make a cached block fully valid: read it and keep the sectors it already holds."""
        if blk.full:
            return
        data = self._backing_read(index * self.cache_block, len(blk.buf))
        invalid = np.repeat(~blk.valid, SECTOR)
        blk.buf[invalid] = data[invalid]
        blk.valid[:] = True
        blk.full = True

    def _touch(self, index: int) -> _Block | None:
        blk = self._blocks.get(index)
        if blk is not None:
            self._blocks.move_to_end(index)
        return blk

    def pread(self, offset: int, length: int) -> bytes:
        """The bytes at [offset, offset + length) (short at the end of the volume)."""
        return self.pread_array(offset, length).tobytes()

    def pread_array(self, offset: int, length: int) -> np.ndarray:
        """`pread` as a numpy array (no copy to bytes)."""
        self._check_open()
        with self._lock:
            if offset < 0 or length < 0:
                raise ValueError(f"bad read range ({offset}, {length})")
            end = min(offset + length, self.size)
            if end <= offset:
                return np.empty(0, dtype=np.uint8)
            out = np.empty(end - offset, dtype=np.uint8)
            bs = self.cache_block
            keep = (end - offset) < (1 << 20)      # small reads fill the cache, large ones stream
            first, last = offset // bs, (end - 1) // bs
            index = first
            while index <= last:
                blk = self._touch(index)
                bstart = index * bs
                lo, hi = max(offset, bstart), min(end, bstart + self._block_len(index))
                s0, s1 = (lo - bstart) // SECTOR, round_up(hi - bstart, SECTOR) // SECTOR
                if blk is not None and (blk.full or blk.valid[s0:s1].all()):
                    out[lo - offset:hi - offset] = blk.buf[lo - bstart:hi - bstart]
                    index += 1
                    continue
                if blk is not None or keep:
                    # one block, kept in the cache (its own valid sectors win over the store)
                    if blk is None:
                        blk = self._new_block(index)
                    self._fill(index, blk)
                    out[lo - offset:hi - offset] = blk.buf[lo - bstart:hi - bstart]
                    index += 1
                    continue
                # a run of blocks the cache does not hold: straight from the store
                run_end = index
                while (run_end + 1 <= last and run_end + 1 not in self._blocks
                       and (run_end + 1 - index + 1) * bs <= MAX_IO):
                    run_end += 1
                rlo = lo - (lo % SECTOR)
                rhi = min(round_up(min(end, (run_end + 1) * bs), SECTOR), self.size)
                data = self._backing_read(rlo, rhi - rlo)
                hi = min(end, (run_end + 1) * bs)
                out[lo - offset:hi - offset] = data[lo - rlo:hi - rlo]
                index = run_end + 1
            self._evict()
            return out

    def _new_block(self, index: int) -> _Block:
        blk = _Block(self._block_len(index))
        self._blocks[index] = blk
        return blk

    def pwrite(self, offset: int, data) -> int:
        """Write `data` at `offset` into the cache (written back by `flush`)."""
        self._check_open()
        if self._readonly:
            raise SanError("READ_ONLY", f"{self.name} is mounted read-only")
        arr = data if isinstance(data, np.ndarray) else np.frombuffer(memoryview(data).cast("B"),
                                                                     dtype=np.uint8)
        arr = arr.reshape(-1).view(np.uint8)
        n = len(arr)
        if n == 0:
            return 0
        if offset < 0 or offset + n > self.size:
            raise SanError("LBA_OUT_OF_RANGE", f"write of {n} bytes at {offset} is past the end "
                                               f"of {self.name} ({self.size} bytes)")
        with self._lock:
            bs = self.cache_block
            end = offset + n
            for index in range(offset // bs, (end - 1) // bs + 1):
                bstart = index * bs
                lo, hi = max(offset, bstart), min(end, bstart + bs)
                blk = self._touch(index)
                if blk is None:
                    blk = self._new_block(index)
                s0, s1 = (lo - bstart) // SECTOR, round_up(hi - bstart, SECTOR) // SECTOR
                partial_head = (lo - bstart) % SECTOR and not blk.valid[s0]
                partial_tail = (hi - bstart) % SECTOR and not blk.valid[s1 - 1]
                if partial_head or partial_tail:
                    self._fill(index, blk)      # read-modify-write of a partial sector
                # sectors the cache holds as the volume does: only those the write changes
                # become dirty (pyfatfs rewrites a whole FAT for a one-entry change)
                clean = blk.valid[s0:s1] & ~blk.dirty[s0:s1]
                before = blk.buf[s0 * SECTOR:s1 * SECTOR].copy() if clean.any() else None
                blk.buf[lo - bstart:hi - bstart] = arr[lo - offset:hi - offset]
                if not blk.full:
                    blk.valid[s0:s1] = True
                    blk.full = bool(blk.valid.all())
                mark = np.ones(s1 - s0, dtype=bool)
                if before is not None:
                    same = (before.reshape(-1, SECTOR)
                            == blk.buf[s0 * SECTOR:s1 * SECTOR].reshape(-1, SECTOR)).all(axis=1)
                    mark &= ~(clean & same)
                mark &= ~blk.dirty[s0:s1]
                newly = int(np.count_nonzero(mark))
                if newly:
                    blk.dirty[s0:s1] |= mark
                    blk.ndirty += newly
                    self._dirty_sectors += newly
                    self._dirty_blocks.add(index)
            if self._dirty_sectors * SECTOR > self.max_dirty:
                self._write_back()
            self._evict()
            return n

    def _write_back(self) -> None:
        if not self._dirty_blocks:
            return
        bs = self.cache_block
        extents: list[list] = []     # [start, end, [(index, s0, s1), ...]]
        for index in sorted(self._dirty_blocks):
            blk = self._blocks[index]
            dirty = blk.dirty
            edges = np.flatnonzero(np.diff(np.concatenate(([False], dirty, [False])).astype(np.int8)))
            for s0, s1 in zip(edges[0::2], edges[1::2]):
                start, stop = index * bs + int(s0) * SECTOR, index * bs + int(s1) * SECTOR
                while start < stop:        # pieces of at most MAX_IO
                    if extents and extents[-1][1] == start and extents[-1][1] - extents[-1][0] < MAX_IO:
                        take = min(stop - start, MAX_IO - (extents[-1][1] - extents[-1][0]))
                        ext = extents[-1]
                    else:
                        take = min(stop - start, MAX_IO)
                        ext = [start, start, []]
                        extents.append(ext)
                    a = (start - index * bs) // SECTOR
                    ext[2].append((index, a, a + take // SECTOR))
                    ext[1] = start + take
                    start += take
        for start, stop, parts in extents:
            if len(parts) == 1:
                index, a, b = parts[0]
                data = self._blocks[index].buf[a * SECTOR:b * SECTOR]
            else:
                data = np.concatenate([self._blocks[i].buf[a * SECTOR:b * SECTOR] for i, a, b in parts])
            self._write_fn(start, data)
            self.stats["writes"] += 1
            self.stats["bytes_written"] += stop - start
            self.stats["bytes"] += stop - start
            for index, a, b in parts:          # clean only once it is on the store
                blk = self._blocks[index]
                cleared = int(np.count_nonzero(blk.dirty[a:b]))
                blk.dirty[a:b] = False
                blk.ndirty -= cleared
                self._dirty_sectors -= cleared
                if blk.ndirty == 0:
                    self._dirty_blocks.discard(index)

    def _evict(self) -> None:
        if len(self._blocks) * self.cache_block <= self.max_cached:
            return
        target = self.max_cached // 2
        for index in list(self._blocks):
            if len(self._blocks) * self.cache_block <= target:
                break
            if self._blocks[index].ndirty == 0:
                del self._blocks[index]


class ReadOnlyView(_PositionalFile):
    """A non-writable file object over a device (its reads go through the device's cache)."""

    def __init__(self, device: BlockDevice):
        super().__init__()
        self._device = device

    @property
    def size(self) -> int:
        return self._device.size

    def writable(self) -> bool:
        return False

    def pread(self, offset: int, length: int) -> bytes:
        return self._device.pread(offset, length)
