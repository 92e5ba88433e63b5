"""FAT filesystems on SAN volumes: a host's `fat` mount (plain Python, no Ray).

A volume is seen as a file (`BlockDevice`): its reads and writes are SAN I/O, made through two
callbacks the host provides, behind a host-side write-back cache.  On it, `pyfatfs` keeps a
FAT filesystem (`FatVolume`); `write_files`, `remove_files`, `restore_files` and checkpoints
of files work on its real files, and `fsck` runs dosfstools' ``fsck.fat -n`` on an image.

The block device
----------------
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

The filesystem
--------------
`format_volume` runs pyfatfs' ``mkfs`` on a sparse temporary file of the device's size and
copies what it wrote onto the device.  The FAT type follows the size (pyfatfs' cluster tables):

=====================  ======  ======================================================
volume size            type    notes
=====================  ======  ======================================================
< 4.1 MiB (8400 sect)  FAT12   512 B - 2 KiB clusters
4.1 MiB .. 2 GiB       FAT16   1 KiB (<= 16 MiB) .. 32 KiB clusters (> 1 GiB); at 2 GiB the
                               filesystem stops 96 KiB short of the end, so that it keeps
                               the 65524 clusters FAT16 allows (``fsck.fat`` refuses more)
> 2 GiB .. 32 GiB      FAT32   4 KiB (<= 8 GiB) .. 16 KiB clusters; bigger volumes get a
                               32 GiB filesystem (the rest of the volume is left unused)
=====================  ======  ======================================================

Known pyfatfs 1.1.0 pitfalls, and what this module does about each:

* ``mkfs`` wants a file name, not a file object: it runs on a temporary sparse file; the
  metadata area (boot sector, FATs, root directory) is then copied whole and the data blocks
  it wrote (the FAT32 root directory cluster) when they are not zero.
* The default label ``NO NAME`` fails ``fsck.fat -n`` (the root directory entry becomes
  ``NONAME``): labels are upper-cased, limited to 8 characters of ``[A-Z0-9_-]`` (pyfatfs
  turns longer ones into an 8.3 name that differs from the boot sector's).
* ``mkfs`` makes a 2 GiB FAT16 with 65527 clusters, which ``fsck.fat`` rejects: the
  filesystem is shrunk until it has at most 65524 (and pyfatfs agrees on its type).
* pyfatfs marks the filesystem dirty on mount and only cleans it on close: here a mount
  writes nothing, the first change marks it dirty (as Linux does), and `FatVolume.flush`
  marks it clean and writes everything back, so ``fsck.fat -n`` passes while still mounted.
* Its ``__del__`` cleans (writes!) a filesystem that is garbage-collected: disabled, so a
  dropped mount never overwrites a volume restored behind its back.
* Read-only mounts go through a non-writable file object (pyfatfs decides read-only mode from
  ``fp.writable()``), so nothing is ever written to a snapshot or backup.
* FAT32's FSInfo free-cluster count is never updated by pyfatfs (``fsck.fat`` then reports
  a wrong free cluster summary): `FatVolume.flush` rewrites it (and its backup).
* The in-memory FAT covers whole FAT sectors, past the last cluster: pyfatfs would allocate
  those phantom clusters (writing past the end of the volume).  The table is cut to the real
  cluster count, and allocation is replaced (pyfatfs also could not hand out the last one).
* A directory that shrinks keeps its old entries in the clusters it no longer needs, and
  pyfatfs (and ``fsck.fat``) would read them back as live files: those clusters are zeroed.
* Replacing an empty file with ``create(wipe=True)`` frees the chain of cluster 0 (FAT[0]):
  files are replaced here by freeing their own chain.
* Long names are limited to 127 UTF-16 units (pyfatfs counts 255 *bytes*).  pyfatfs looks
  names up case-sensitively, decoding every name of the directory on every lookup (files
  in a directory cost O(n^2)): here lookups are case-insensitive, as FAT's are, through a
  per-directory index, and entries are created by this module (pyfatfs' short names).
* pyfatfs' PyFilesystem2 layer (``PyFatFS``, ``FatIO``) imports ``fs``, which needs
  setuptools' ``pkg_resources`` (removed in recent setuptools; a fresh venv on Python 3.12+
  gets those): only pyfatfs' core (``PyFat``, directory entries) is used, never ``fs``.
* pyfatfs parses the FAT entry by entry in Python and packs it the same way on every FAT
  write: both are done with numpy here (FAT16/32).

Names: FAT is case-insensitive and case-preserving.  A path names the same file whatever
its case; a new file keeps the case it was written with, a replaced one keeps its stored name
(``write_file('/A.TXT')`` over ``/a.txt`` leaves ``/a.txt``).  As on Windows, a file's 8.3
alias names it too (``/LONGFI~1.TXT`` is ``/longfilename.txt``).  Paths are reported as
stored.  A volume without a FAT boot sector (or one pyfatfs cannot parse) does not mount:
``FSCK_FAILED``.  Timestamps are wall-clock UTC.

Space: `FatVolume.write_file` counts the clusters it needs (data, new directories, growing
directories, the FAT16 root directory's 512 entries) before it touches anything, and raises
``NO_SPACE`` if they are not free (clusters of the file being replaced count as free).  If
pyfatfs still runs out half-way, what the call created is removed again.  File data is
allocated in one chain (contiguous on a fresh filesystem) and written in 4 MiB pieces
straight to the clusters, so memory stays bounded whatever the file size.
"""
from __future__ import annotations

import bisect
import datetime
import errno
import hashlib
import io
import math
import os
import shutil
import struct
import subprocess
import tempfile
import threading
import warnings
from collections import OrderedDict

import numpy as np

from .errors import SanError
from .pattern import pattern

SECTOR = 512
MAX_IO = 4 << 20            # the largest read_fn / write_fn call
PIECE = 4 << 20             # file data moves in pieces of this size
FAT16_MAX_CLUSTERS = 65524  # what fsck.fat accepts for FAT16
FAT32_MAX_FS = 32 << 30     # pyfatfs' FAT32 cluster table ends at 32 GiB
MAX_FILE_SIZE = 0xFFFFFFFF  # FAT's 32-bit file size
LABEL_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
BAD_NAME_CHARS = set('"*/:<>?\\|\x7f') | {chr(c) for c in range(0x20)}
MAX_NAME_UNITS = 127        # UTF-16 code units of one name (pyfatfs limit)


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


# ---------------------------------------------------------------------------------------------
# The block device
# ---------------------------------------------------------------------------------------------
class _Block:
    __slots__ = ("buf", "valid", "dirty", "full", "ndirty")

    def __init__(self, length: int):
        self.buf = np.zeros(length, dtype=np.uint8)
        nsec = length // SECTOR
        self.valid = np.zeros(nsec, dtype=bool)
        self.dirty = np.zeros(nsec, dtype=bool)
        self.full = False        # every sector valid
        self.ndirty = 0          # dirty sectors


class BlockDevice(io.RawIOBase):
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
        self._pos = 0
        self._lock = threading.RLock()
        self.stats = {"reads": 0, "writes": 0, "bytes_read": 0, "bytes_written": 0, "bytes": 0}

    # -- io.RawIOBase ---------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return not self._readonly

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
                self._blocks.clear()
                self._dirty_blocks.clear()
                self._dirty_sectors = 0
                super().close()

    def __del__(self):
        # io.IOBase.__del__ would close() and so write back: a dropped device must not write
        # (its cached view may be stale: the volume may have been restored behind its back).
        pass

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
            self._blocks.clear()
            self._dirty_blocks.clear()
            self._dirty_sectors = 0

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on a closed BlockDevice")

    def _block_len(self, index: int) -> int:
        return min(self.cache_block, self.size - index * self.cache_block)

    def _backing_read(self, offset: int, length: int) -> np.ndarray:
        """Read [offset, offset + length) (512-aligned) from the backing store, <= 4 MiB a call."""
        out = np.empty(length, dtype=np.uint8)
        done = 0
        while done < length:
            n = min(MAX_IO, length - done)
            data = self._read_fn(offset + done, n)
            arr = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
            arr = arr.reshape(-1).view(np.uint8)
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
                s0, s1 = (lo - bstart) // SECTOR, _round_up(hi - bstart, SECTOR) // SECTOR
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
                rhi = min(_round_up(min(end, (run_end + 1) * bs), SECTOR), self.size)
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
                s0, s1 = (lo - bstart) // SECTOR, _round_up(hi - bstart, SECTOR) // SECTOR
                partial_head = (lo - bstart) % SECTOR and not blk.valid[s0]
                partial_tail = (hi - bstart) % SECTOR and not blk.valid[s1 - 1]
                if partial_head or partial_tail:
                    self._fill(index, blk)      # read-modify-write of a partial sector
                blk.buf[lo - bstart:hi - bstart] = arr[lo - offset:hi - offset]
                if not blk.full:
                    blk.valid[s0:s1] = True
                    blk.full = bool(blk.valid.all())
                newly = s1 - s0 - int(np.count_nonzero(blk.dirty[s0:s1]))
                if newly:
                    blk.dirty[s0:s1] = True
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


class _ReadOnlyView(io.RawIOBase):
    """A non-writable file object over a device (pyfatfs mounts read-only through it)."""

    def __init__(self, device: BlockDevice):
        super().__init__()
        self._device = device
        self._pos = 0

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._device.size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, self._device.size - self._pos)
        data = self._device.pread(self._pos, size)
        self._pos += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(memoryview(buffer).cast("B")))
        memoryview(buffer).cast("B")[:len(data)] = data
        return len(data)

    def __del__(self):
        pass


# ---------------------------------------------------------------------------------------------
# pyfatfs, with its pitfalls fixed
# ---------------------------------------------------------------------------------------------
def _pyfatfs():
    # Only pyfatfs' core: its PyFilesystem2 layer (PyFatFS, FatIO) imports `fs`, which needs
    # setuptools' pkg_resources, gone from setuptools >= 81 (a fresh venv may have that).
    from pyfatfs.PyFat import PyFat
    return PyFat


def _make_classes():
    PyFat = _pyfatfs()
    from pyfatfs._exceptions import PyFATException

    class _PyFat(PyFat):
        """PyFat over a file object: bounded FAT, fixed allocation, quiet mount, no __del__."""

        _mounting = False

        def __del__(self):
            pass

        def close(self):
            # never close the caller's file object; cleaning is FatVolume.flush's business
            self.initialized = False

        def _mark_dirty(self):
            if not self._mounting:      # set_fp marks dirty on mount: deferred to the 1st change
                super()._mark_dirty()

        def cluster_count(self) -> int:
            data_sectors = self._get_total_sectors() - self.first_data_sector
            return data_sectors // self.bpb_header["BPB_SecPerClus"]

        def _parse_fat(self):
            if self.fat_type in (self.FAT_TYPE_FAT16, self.FAT_TYPE_FAT32):
                self.bytes_per_cluster = (self.bpb_header["BPB_BytsPerSec"]
                                          * self.bpb_header["BPB_SecPerClus"])
                fat_bytes = self.bpb_header["BPB_BytsPerSec"] * self._fat_size
                first = self.bpb_header["BPB_RsvdSecCnt"] * self.bpb_header["BPB_BytsPerSec"]
                with self._PyFat__lock:
                    self._PyFat__seek(first)
                    raw = self._PyFat__fp.read(fat_bytes)
                if len(raw) != fat_bytes:
                    raise PyFATException("Invalid length of FAT")
                if self.fat_type == self.FAT_TYPE_FAT16:
                    self.fat = np.frombuffer(raw, dtype="<u2").tolist()
                else:
                    self.fat = (np.frombuffer(raw, dtype="<u4") & 0x0FFFFFFF).tolist()
            else:
                super()._parse_fat()
            # the FAT sectors hold entries past the last cluster: never hand those out
            del self.fat[self.cluster_count() + 2:]

        def __bytes__(self):
            if self.fat_type == self.FAT_TYPE_FAT16:
                return np.array(self.fat, dtype="<u2").tobytes()
            if self.fat_type == self.FAT_TYPE_FAT32:
                return np.array(self.fat, dtype="<u4").tobytes()
            return super().__bytes__()

        def free_clusters(self) -> int:
            return self.fat.count(0)

        def allocate_bytes(self, size: int, erase: bool = False) -> list:
            if self.is_read_only:
                raise PyFATException("Filesystem has been opened read-only", errno=errno.EROFS)
            wanted = self.calc_num_clusters(size)
            fat, limit = self.fat, len(self.fat)
            found = []
            hint = min(max(2, self.first_free_cluster), limit)
            special = self.FAT12_SPECIAL_EOC if self.fat_type == self.FAT_TYPE_FAT12 else -1
            for lo, hi in ((hint, limit), (2, hint)):   # from the hint, then wrap around
                i = lo
                while len(found) < wanted:
                    try:
                        i = fat.index(0, i, hi)
                    except ValueError:
                        break
                    if i != special:
                        found.append(i)
                    i += 1
            if len(found) < wanted:
                raise PyFATException(f"Not enough free space to allocate {size} bytes "
                                     f"({len(found) * self.bytes_per_cluster} bytes free)",
                                     errno=errno.ENOSPC)
            found.sort()
            eoc = self.FAT_CLUSTER_VALUES[self.fat_type]["END_OF_CLUSTER_MAX"]
            for a, b in zip(found, found[1:]):
                fat[a] = b
            fat[found[-1]] = eoc
            self.first_free_cluster = found[-1] + 1
            if erase:
                zero = b"\0" * self.bytes_per_cluster
                for c in found:
                    self._write_data_to_address(zero, self.get_data_cluster_address(c))
            return found

        def free_cluster_chain(self, cluster: int):
            if cluster >= 2:          # never cluster 0 (the "empty file" cluster) or 1
                super().free_cluster_chain(cluster)

        def update_directory_entry(self, dir_entry) -> None:
            super().update_directory_entry(dir_entry)
            if dir_entry is self.root_dir and self.fat_type != self.FAT_TYPE_FAT32:
                return
            used = sum(len(bytes(d)) for d in dir_entry._get_entries_raw())
            keep = max(1, math.ceil(used / self.bytes_per_cluster))
            chain = list(self.get_cluster_chain(dir_entry.get_cluster()))
            if len(chain) > keep:
                # entries that moved up must not live on in the clusters no longer needed
                zero = b"\0" * self.bytes_per_cluster
                for c in chain[keep:]:
                    self._write_data_to_address(zero, self.get_data_cluster_address(c))

        def write_fsinfo(self) -> None:
            """FAT32: the FSInfo free count and next-free hint (and the backup's)."""
            if self.fat_type != self.FAT_TYPE_FAT32:
                return
            sector = self.bpb_header["BPB_FSInfo"]
            if sector in (0, 0xFFFF):
                return
            free = self.free_clusters()
            try:
                nxt = self.fat.index(0, 2)
            except ValueError:
                nxt = 0xFFFFFFFF
            bps = self.bpb_header["BPB_BytsPerSec"]
            places = [sector * bps]
            backup = self.bpb_header["BPB_BkBootSec"]
            if backup not in (0, 0xFFFF):
                places.append((backup + sector) * bps)
            for where in places:
                with self._PyFat__lock:
                    self._PyFat__seek(where)
                    raw = self._PyFat__fp.read(SECTOR)
                if len(raw) < SECTOR or struct.unpack_from("<L", raw, 0)[0] != 0x41615252:
                    continue
                self._write_data_to_address(struct.pack("<LL", free, nxt), where + 488)

    return _PyFat, PyFATException


_CLASSES = None


def _classes():
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _make_classes()
    return _CLASSES


# ---------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------
def _check_name(name: str, path: str) -> None:
    bad = sorted({c for c in name if c in BAD_NAME_CHARS})
    if bad:
        raise SanError("INVALID_INPUT", f"file path {path!r}: the name {name!r} holds characters "
                                        f"FAT does not allow ({', '.join(repr(c) for c in bad)}; "
                                        'not allowed: control characters and " * / : < > ? \\ |)')
    if name.endswith((".", " ")):
        raise SanError("INVALID_INPUT", f"file path {path!r}: the name {name!r} ends with a dot "
                                        "or a space, which FAT does not keep")
    if len(name.encode("utf-16-le")) // 2 > MAX_NAME_UNITS:
        raise SanError("INVALID_INPUT", f"file path {path!r}: the name {name[:20]!r}... is longer "
                                        f"than {MAX_NAME_UNITS} characters")


def normalize(path: str) -> str:
    """A file path inside a mount as ``'/a/b.txt'``.

    Relative paths are relative to the mount root, and an absolute path is taken as inside the
    mount; ``.`` and repeated slashes are dropped and ``..`` goes up a level.  ``INVALID_INPUT``
    (showing the path) for: an empty path, a path naming no file (``/``, a trailing ``/``,
    ending in ``.`` or ``..``), one that leaves the mount (``..`` above its root), NUL bytes,
    and names FAT cannot hold (control characters, ``" * : < > ? \\ |``, a trailing dot or
    space, more than 127 UTF-16 units).  Case is kept as given.

    >>> normalize('a/./b//c.txt'), normalize('/x/../y')
    ('/a/b/c.txt', '/y')
    """
    if not isinstance(path, str):
        raise SanError("INVALID_INPUT", f"file path {path!r} is not a string")
    if path == "":
        raise SanError("INVALID_INPUT", "file path '' is empty")
    if "\x00" in path:
        raise SanError("INVALID_INPUT", f"file path {path!r} holds a NUL byte")
    parts = path.split("/")
    if parts[-1] in ("", ".", ".."):
        raise SanError("INVALID_INPUT", f"file path {path!r} names no file (it ends with "
                                        f"{'/' if parts[-1] == '' else parts[-1]!r})")
    out: list[str] = []
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not out:
                raise SanError("INVALID_INPUT", f"file path {path!r} leaves the mount "
                                                "('..' above its root)")
            out.pop()
            continue
        _check_name(part, path)
        out.append(part)
    return "/" + "/".join(out)


def _fold(name: str) -> str:
    """FAT's case-insensitive key of a name (simple upper-casing, length kept)."""
    return "".join(u if len(u := c.upper()) == 1 else c for c in name)


def _entry_slots_bytes(name: str) -> int:
    """Directory bytes one entry named `name` takes (its 8.3 entry and LFN entries)."""
    from pyfatfs.EightDotThree import EightDotThree
    if EightDotThree.is_8dot3_conform(name):
        return 32
    units = len(name.encode("utf-16-le"))
    if units % 26:
        units += 2
    return 32 * (1 + math.ceil(units / 26))


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------
def fat_label(label: str) -> str:
    """The volume label `format_volume` writes: upper case, ``[A-Z0-9_-]``, at most 8
    characters (others become ``_``); ``SAN`` if nothing is left.  'NO NAME' never results."""
    text = "".join(c if c in LABEL_CHARS else "_" for c in str(label).upper())[:8].strip("_")
    return text or "SAN"


def _fat_type_for(size: int) -> tuple[int, int]:
    """(FAT type, filesystem size) pyfatfs should make for a volume of `size` bytes."""
    sectors = size // SECTOR
    if sectors <= 8400:
        return 12, sectors * SECTOR
    if sectors <= 4194304:
        return 16, sectors * SECTOR
    return 32, min(sectors * SECTOR, FAT32_MAX_FS)


FAT_EPOCH = datetime.datetime(1980, 1, 1, tzinfo=datetime.timezone.utc)


def _dos_stamp(entry, moment: datetime.datetime, created: bool) -> None:
    """Set a directory entry's times to `moment` (the host's simulated clock, never the
    machine's: a volume's bytes must not depend on when the simulation ran)."""
    from pyfatfs.DosDateTime import DosDateTime
    dos = DosDateTime(*moment.timetuple()[:6])
    entry.wrttime, entry.wrtdate = dos.serialize_time(), dos.serialize_date()
    entry.lstaccessdate = dos.serialize_date()
    if created:
        entry.crttime, entry.crtdate, entry.crttimetenth = dos.serialize_time(), dos.serialize_date(), 0


def _volume_id(moment: datetime.datetime) -> int:
    """The serial number mkfs derives from the time of formatting (here, simulated time)."""
    cdate = ((moment.year - 1980) << 9) | (moment.month << 5) | moment.day
    ctime = (moment.hour << 11) | (moment.minute << 5) | (moment.second // 2)
    return cdate << 16 | ctime


def _mkfs_image(path: str, fat_type: int, fs_size: int, label: str, moment: datetime.datetime):
    """Run pyfatfs' mkfs on the file `path`; return (header facts, pyfatfs warnings)."""
    PyFat = _pyfatfs()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pf = PyFat()
        pf.mkfs(path, fat_type, size=fs_size, label=label, volume_id=_volume_id(moment))
        pf.close()
        stamp = PyFat()                 # mkfs stamps the label's entry with the machine's time
        stamp.open(path)
        for entry in stamp.root_dir._get_entries_raw():
            if entry.is_volume_id():
                _dos_stamp(entry, moment, created=True)
        stamp.update_directory_entry(stamp.root_dir)
        stamp.close()
        check = PyFat()
        check.open(path, read_only=True)
        spc = check.bpb_header["BPB_SecPerClus"]
        facts = {"type": check.fat_type,
                 "clusters": (check._get_total_sectors() - check.first_data_sector) // spc,
                 "cluster_bytes": check.bytes_per_cluster,
                 "data_start": check.first_data_sector * SECTOR}
        check.initialized = False
        check._PyFat__fp.close()
    return facts, [str(w.message) for w in caught]


def format_volume(device: BlockDevice, label: str, now: datetime.datetime = FAT_EPOCH) -> None:
    """Make a FAT filesystem on `device` (see the module doc for the FAT type per size).

    pyfatfs' mkfs runs on a sparse temporary file of the device's size; the metadata area is
    then copied onto the device whole, and the blocks of the data area that mkfs wrote when
    they are not zero; the device is flushed.  The label is `fat_label(label)`.
    ``INVALID_INPUT`` for a volume smaller than 64 KiB or a read-only device."""
    if not device.writable():
        raise SanError("READ_ONLY", f"{device.name} is read-only: it cannot be formatted")
    if device.size < 64 * 1024:
        raise SanError("INVALID_INPUT", f"{device.name} ({device.size} bytes) is too small for "
                                        "a FAT filesystem (64 KiB at least)")
    fat_type, fs_size = _fat_type_for(device.size)
    label = fat_label(label)
    with tempfile.TemporaryDirectory(prefix="san-mkfs-") as tmp:
        image = os.path.join(tmp, "mkfs.img")
        for _ in range(8):
            with open(image, "wb") as f:
                f.truncate(device.size)
            facts, notes = _mkfs_image(image, fat_type, fs_size, label, now)
            excess = facts["clusters"] - FAT16_MAX_CLUSTERS
            doubt = any("determine FAT type" in note for note in notes)
            if facts["type"] == 16 and (excess > 0 or doubt):
                # too many clusters for FAT16 (fsck.fat refuses it, pyfatfs doubts the type)
                fs_size -= max(excess, 1) * facts["cluster_bytes"]
                continue
            break
        else:
            raise SanError("INVALID_INPUT", f"pyfatfs cannot make a FAT{fat_type} filesystem "
                                            f"on {device.name} ({device.size} bytes)")
        _copy_image(image, device, facts["data_start"])
    device.flush()


def _data_extents(f, size: int):
    """(offset, end) ranges of a sparse file that hold data (all of it if unknown)."""
    fd = f.fileno()
    if not hasattr(os, "SEEK_DATA"):
        yield 0, size
        return
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:
            return
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, min(end, size)
        pos = end


def _copy_image(image: str, device: BlockDevice, meta_end: int) -> None:
    size = os.path.getsize(image)
    meta_end = min(_round_up(meta_end, SECTOR), size)
    with open(image, "rb") as f:
        f.seek(0)
        done = 0
        while done < meta_end:           # boot sector, FATs, FAT12/16 root: written whole
            data = f.read(min(MAX_IO, meta_end - done))
            device.pwrite(done, data)
            done += len(data)
        for start, end in _data_extents(f, size):
            start = max(start - start % SECTOR, meta_end)
            end = _round_up(end, SECTOR)
            pos = start
            while pos < end:
                f.seek(pos)
                n = min(device.cache_block, end - pos)
                data = f.read(n)
                if np.frombuffer(data, dtype=np.uint8).any():
                    device.pwrite(pos, data)
                pos += n


def is_formatted(device) -> bool:
    """Whether the first sector looks like a FAT boot sector (a cheap probe, no mount)."""
    reader = device.pread if isinstance(device, BlockDevice) else device
    head = reader(0, SECTOR)
    head = bytes(head) if not isinstance(head, bytes) else head
    if len(head) < SECTOR or head[510:512] != b"\x55\xaa" or head[0] not in (0xEB, 0xE9):
        return False
    bps = struct.unpack_from("<H", head, 11)[0]
    return bps in (512, 1024, 2048, 4096) and head[13] in (1, 2, 4, 8, 16, 32, 64, 128)


# ---------------------------------------------------------------------------------------------
# The mounted filesystem
# ---------------------------------------------------------------------------------------------
def _pattern_pieces(size: int, seed: int):
    off = 0
    while off < size:
        n = min(PIECE, size - off)
        yield pattern(seed, off, _round_up(n, SECTOR))[:n]
        off += n


class FatVolume:
    """A mounted FAT filesystem on a `BlockDevice` (pyfatfs over the device as a file).

    ``readonly`` (or a read-only device) mounts through a non-writable file object: listing
    and reading work, every change is ``READ_ONLY``.  Mounting writes nothing; the first change
    marks the filesystem dirty, `flush` cleans it.  A volume that holds no FAT filesystem
    raises ``FSCK_FAILED``.  `warnings` keeps what pyfatfs warned about on mount (e.g. a
    filesystem not cleanly unmounted).  Thread-safe (one lock).
    """

    def __init__(self, device: BlockDevice, readonly: bool = False, now=None):
        self.device = device
        self._now = now or (lambda: FAT_EPOCH)   # file times: the host's simulated clock
        self.readonly = bool(readonly) or not device.writable()
        _PyFat, PyFATException = _classes()
        self._PyFATException = PyFATException
        fp = device if not self.readonly else (device if not device.writable()
                                               else _ReadOnlyView(device))
        if not is_formatted(device):
            raise SanError("FSCK_FAILED", f"{device.name} holds no FAT filesystem "
                                          "(no FAT boot sector)")
        pf = _PyFat(encoding="ibm437", lazy_load=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pf._mounting = True
            try:
                pf.set_fp(fp)
            except SanError:
                raise
            except Exception as exc:
                raise SanError("FSCK_FAILED", f"{device.name} holds no readable FAT "
                                              f"filesystem ({exc})") from None
            finally:
                pf._mounting = False
        self.warnings = [str(w.message) for w in caught]
        self._pf = pf
        self._disk_dirty = pf._is_dirty()     # what the volume says now
        self._marked = False                  # we set the dirty mark ourselves
        self._lock = threading.RLock()
        self._closed = False
        self._indexes: dict[int, tuple] = {}

    # -- facts ----------------------------------------------------------------------------------
    @property
    def fat_type(self) -> int:
        return self._pf.fat_type

    @property
    def cluster_size(self) -> int:
        return self._pf.bytes_per_cluster

    @property
    def label(self) -> str:
        return bytes(self._pf.bpb_header["BS_VolLab"]).decode("ascii", "replace").rstrip()

    def free_bytes(self) -> int:
        with self._lock:
            return self._pf.free_clusters() * self._pf.bytes_per_cluster

    # -- helpers --------------------------------------------------------------------------------
    def _check(self, writing: bool = False) -> None:
        if self._closed:
            raise ValueError("the FAT filesystem is unmounted")
        if writing and self.readonly:
            raise SanError("READ_ONLY", f"the FAT filesystem on {self.device.name} is mounted "
                                        "read-only")

    def _begin_change(self) -> None:
        if not self._marked:
            self._pf._mark_dirty()      # pyfatfs' own marks: FAT[1] and the boot sector
            self._marked = True
            self._disk_dirty = True

    def _children(self, entry):
        dirs, files, _ = entry.get_entries()
        return dirs + files

    def _index(self, directory):
        """{folded long or short name: entry} and the set of short names of a directory
        (pyfatfs decodes every name on every lookup: this keeps big directories usable)."""
        got = self._indexes.get(id(directory))
        if got is None or got[0] is not directory:
            names, shorts = {}, set()
            for e in self._children(directory):
                short = e.get_short_name()
                shorts.add(short)
                names.setdefault(_fold(repr(e)), e)
                names.setdefault(_fold(short), e)
            got = (directory, names, shorts)
            self._indexes[id(directory)] = got
        return got

    def _indexed_add(self, directory, entry) -> None:
        _, names, shorts = self._index(directory)
        short = entry.get_short_name()
        shorts.add(short)
        names.setdefault(_fold(repr(entry)), entry)
        names.setdefault(_fold(short), entry)

    def _indexed_remove(self, directory, entry) -> None:
        got = self._indexes.get(id(directory))
        if got is not None and got[0] is directory:
            got[2].discard(entry.get_short_name())
            for key in [k for k, e in got[1].items() if e is entry]:
                del got[1][key]
        self._indexes.pop(id(entry), None)

    def _find(self, parent, name: str):
        return self._index(parent)[1].get(_fold(name))

    def _entry_at(self, stored_path: str):
        entry = self._pf.root_dir
        for name in filter(None, stored_path.split("/")):
            entry = self._find(entry, name)
            if entry is None:
                return None
        return entry

    def _short_name(self, name: str, taken: set) -> str:
        """An 8.3 name for `name` not in `taken` (pyfatfs' scheme: NAME~N.EXT)."""
        from pyfatfs.EightDotThree import EightDotThree
        invalid = set(EightDotThree.INVALID_CHARACTERS[1:]) | set(range(0x20))

        def mapped(text: str) -> str:
            raw = text.encode(self._pf.encoding, errors="replace")
            return bytes(b"_"[0] if b in invalid else b for b in raw if b != 0x20).decode(
                self._pf.encoding)

        upper = name.upper()
        root, ext = os.path.splitext(upper)
        base = mapped(root[:8].strip()) or "_"
        ext = mapped(ext[1:4].strip())
        dot = "." if ext else ""
        for i in range(0, 1000000):
            stem = base if i == 0 else f"{base[:8 - 1 - len(str(i))]}~{i}"
            candidate = f"{stem}{dot}{ext}"
            if candidate not in taken:
                return candidate
        raise SanError("NO_SPACE", f"no free 8.3 name for {name!r}")

    def _new_entry(self, parent, name: str, attr: int):
        """A directory entry named `name` for `parent`: its 8.3 name (and LFN if needed)."""
        from pyfatfs.EightDotThree import EightDotThree
        from pyfatfs.FATDirectoryEntry import FATDirectoryEntry, make_lfn_entry
        pf = self._pf
        short = EightDotThree(encoding=pf.encoding)
        taken = self._index(parent)[2]
        if EightDotThree.is_8dot3_conform(name, pf.encoding) and name not in taken:
            short.set_str_name(name)            # a valid 8.3 name is its own short name
        else:
            short.set_str_name(self._short_name(name, taken))
        entry = FATDirectoryEntry.new(name=short, tz=datetime.timezone.utc,
                                      encoding=pf.encoding, attr=attr)
        _dos_stamp(entry, self._now(), created=True)
        if short.get_unpadded_filename() != name:
            entry.set_lfn_entry(make_lfn_entry(name, short))
        return entry

    def _link(self, parent, entry) -> None:
        parent.add_subdirectory(entry)
        self._indexed_add(parent, entry)
        self._pf.update_directory_entry(parent)

    def _create_file(self, parent, name: str):
        """A new empty file in `parent` (written to the directory)."""
        from pyfatfs.FATDirectoryEntry import FATDirectoryEntry
        entry = self._new_entry(parent, name, FATDirectoryEntry.ATTR_ARCHIVE)
        self._link(parent, entry)
        return entry

    def _create_dir(self, parent, name: str):
        """A new empty directory in `parent`: one zeroed cluster holding ``.`` and ``..``."""
        from pyfatfs.EightDotThree import EightDotThree
        from pyfatfs.FATDirectoryEntry import FATDirectoryEntry
        pf = self._pf
        attr = FATDirectoryEntry.ATTR_DIRECTORY
        entry = self._new_entry(parent, name, attr)
        first = pf.allocate_bytes(64, erase=True)[0]
        entry.set_cluster(first)
        up = 0 if parent is pf.root_dir else parent.get_cluster()
        for dots, cluster in ((b".          ", first), (b"..         ", up)):
            short = EightDotThree(encoding=pf.encoding)
            short.set_byte_name(dots)
            entry.add_subdirectory(FATDirectoryEntry.new(name=short, tz=datetime.timezone.utc,
                                                         encoding=pf.encoding, attr=attr,
                                                         cluster=cluster))
        pf.update_directory_entry(entry)
        self._link(parent, entry)
        return entry

    def _resolve(self, path: str):
        """(stored parent names, missing dir names, parent entry or None, entry or None)."""
        names = path.strip("/").split("/")
        entry = self._pf.root_dir
        stored: list[str] = []
        for i, name in enumerate(names[:-1]):
            child = self._find(entry, name)
            if child is None:
                return stored, names[i:-1], entry, None
            if not child.is_directory():
                raise SanError("INVALID_INPUT", f"file path {path!r}: "
                                                f"{'/' + '/'.join(stored + [repr(child)])} is a "
                                                "file, not a directory")
            stored.append(repr(child))
            entry = child
        return stored, [], entry, self._find(entry, names[-1])

    def _file_entry(self, path: str):
        path = normalize(path)
        stored, missing, parent, entry = self._resolve(path)
        if missing or entry is None:
            raise SanError("NO_SUCH_FILE", f"no file {path} on {self.device.name}")
        if entry.is_directory():
            raise SanError("NO_SUCH_FILE", f"{path} on {self.device.name} is a directory, "
                                           "not a file")
        return "/" + "/".join(stored + [repr(entry)]), entry

    def _chain(self, entry, size: int, path: str) -> list[int]:
        if size == 0:
            return []
        want = math.ceil(size / self._pf.bytes_per_cluster)
        chain = []
        try:
            for c in self._pf.get_cluster_chain(entry.get_cluster()):
                chain.append(c)
                if len(chain) == want:
                    break
        except (self._PyFATException, IndexError) as exc:
            raise SanError("FSCK_FAILED", f"{path} on {self.device.name}: broken cluster chain "
                                          f"({exc})") from None
        if len(chain) < want:
            raise SanError("FSCK_FAILED", f"{path} on {self.device.name}: {size} bytes but only "
                                          f"{len(chain)} clusters")
        return chain

    def _runs(self, chain: list[int]) -> list[tuple[int, int, int]]:
        """(file offset, device offset, length) of the physically contiguous cluster runs."""
        bpc = self._pf.bytes_per_cluster
        runs: list[list[int]] = []
        for i, c in enumerate(chain):
            if runs and c == runs[-1][3] + 1:
                runs[-1][2] += bpc
                runs[-1][3] = c
            else:
                runs.append([i * bpc, self._pf.get_data_cluster_address(c), bpc, c])
        return [(a, b, n) for a, b, n, _ in runs]

    # -- reading ----------------------------------------------------------------------------------
    def iter_file(self, path: str, piece: int = PIECE):
        """The content of a file, in pieces of at most `piece` bytes (``NO_SUCH_FILE``)."""
        with self._lock:
            self._check()
            stored, entry = self._file_entry(path)
        return self._iter_entry(entry, stored, piece)

    def _iter_entry(self, entry, stored: str, piece: int = PIECE):
        with self._lock:
            size = entry.filesize
            runs = self._runs(self._chain(entry, size, stored))
        for foff, doff, length in runs:
            length = min(length, size - foff)
            done = 0
            while done < length:
                n = min(piece, length - done)
                with self._lock:
                    data = self.device.pread_array(doff + done, n)
                if len(data) != n:
                    raise SanError("FSCK_FAILED", f"{stored} on {self.device.name} reaches past "
                                                  "the end of the volume")
                yield data
                done += n

    def read_file(self, path: str) -> bytes:
        """The content of a file (``NO_SUCH_FILE``)."""
        return b"".join(d.tobytes() for d in self.iter_file(path))

    @staticmethod
    def _digest(pieces) -> tuple[int, str]:
        h, n = hashlib.sha256(), 0
        for data in pieces:
            h.update(data)
            n += len(data)
        return n, h.hexdigest()

    def file_digest(self, path: str) -> tuple[int, str]:
        """(size, SHA-256 hex) of a file, streamed."""
        return self._digest(self.iter_file(path))

    def files(self) -> dict[str, tuple[int, str]]:
        """Every regular file, ``'/dir/name' -> (size, sha256 hex)``, sorted by path (names as
        stored; volume labels, ``.`` and ``..`` are not files)."""
        with self._lock:
            self._check()
            found = []
            stack = [("", self._pf.root_dir)]
            while stack:
                prefix, entry = stack.pop()
                dirs, files, _ = entry.get_entries()
                found += [(f"{prefix}/{f!r}", f) for f in files]
                stack += [(f"{prefix}/{d!r}", d) for d in dirs]
            found.sort(key=lambda pe: pe[0])
            return {p: self._digest(self._iter_entry(e, p)) for p, e in found}

    def listdir(self, path: str = "/") -> list[str]:
        """Names (as stored) in a directory."""
        with self._lock:
            self._check()
            entry = self._pf.root_dir
            for name in filter(None, path.split("/")):
                entry = self._find(entry, name)
                if entry is None or not entry.is_directory():
                    raise SanError("NO_SUCH_FILE", f"no directory {path} on {self.device.name}")
            return sorted(repr(e) for e in self._children(entry))

    # -- writing ----------------------------------------------------------------------------------
    def write_file(self, path: str, size: int, seed: int) -> int:
        """Write a file of `size` bytes: the first `size` bytes of ``pattern(seed, 0, size
        rounded up to 512)``.  Creates parent directories, replaces an existing file (keeping
        its stored name).  ``NO_SPACE`` when it does not fit (then nothing of the new file
        remains and nothing else changed); returns the bytes written."""
        if not isinstance(size, int) or size < 0:
            raise SanError("INVALID_INPUT", f"file size {size!r} of {path!r} is not a size >= 0")
        return self._write(path, size, _pattern_pieces(size, seed))

    def write_bytes(self, path: str, data) -> None:
        """Write a file with the given content (as `write_file`)."""
        data = data if isinstance(data, np.ndarray) else np.frombuffer(bytes(data), dtype=np.uint8)
        data = data.reshape(-1).view(np.uint8)
        self._write(path, len(data), (data[i:i + PIECE] for i in range(0, len(data), PIECE)))

    def _needed_clusters(self, parent, missing: list[str], name: str, size: int) -> int:
        """Clusters a new file needs: its data, new directories, directory growth."""
        pf = self._pf
        bpc = pf.bytes_per_cluster
        need = math.ceil(size / bpc)
        first_new = missing[0] if missing else name
        used = sum(len(bytes(d)) for d in parent._get_entries_raw())
        after = used + _entry_slots_bytes(first_new)
        if parent is pf.root_dir and pf.fat_type != pf.FAT_TYPE_FAT32:
            room = pf.root_dir_sectors * pf.bpb_header["BPB_BytsPerSec"]
            if after > room:
                raise SanError("NO_SPACE", f"the root directory of {self.device.name} is full "
                                           f"({pf.bpb_header['BPB_RootEntCnt']} entries)")
        else:
            chain = len(list(pf.get_cluster_chain(parent.get_cluster())))
            need += max(0, math.ceil(after / bpc) - chain)
        for i, _ in enumerate(missing):
            child = missing[i + 1] if i + 1 < len(missing) else name
            need += max(1, math.ceil((64 + _entry_slots_bytes(child)) / bpc))
        return need

    def _write(self, path: str, size: int, pieces) -> int:
        path = normalize(path)
        if size > MAX_FILE_SIZE:
            raise SanError("INVALID_INPUT", f"file {path}: {size} bytes is more than a FAT file "
                                            f"holds ({MAX_FILE_SIZE} bytes)")
        with self._lock:
            self._check(writing=True)
            pf = self._pf
            names = path.strip("/").split("/")
            stored, missing, parent, entry = self._resolve(path)
            if entry is not None and entry.is_directory():
                raise SanError("INVALID_INPUT", f"file path {path!r} names a directory on "
                                                f"{self.device.name}")
            bpc = pf.bytes_per_cluster
            free = pf.free_clusters()
            if entry is not None:
                old = len(list(pf.get_cluster_chain(entry.get_cluster()))) if entry.get_cluster() else 0
                need = math.ceil(size / bpc)
                free += old
            else:
                need = self._needed_clusters(parent, missing, names[-1], size)
            if need > free:
                raise SanError("NO_SPACE", f"no space for {path} ({size} bytes) on "
                                           f"{self.device.name}: {free * bpc} bytes free, "
                                           f"{need * bpc} needed")
            self._begin_change()
            created_dirs: list[str] = []
            file_path = None
            try:
                base = "/" + "/".join(stored)
                for name in missing:
                    base = base.rstrip("/") + "/" + name
                    created_dirs.append(base)
                    parent = self._create_dir(parent, name)
                if entry is None:
                    file_path = base.rstrip("/") + "/" + names[-1]
                    entry = self._create_file(parent, names[-1])
                else:
                    file_path = base.rstrip("/") + "/" + repr(entry)
                    old_cluster = entry.get_cluster()
                    entry.set_cluster(0)
                    entry.filesize = 0
                    pf.free_cluster_chain(old_cluster)
                    self._touch_times(entry)
                if size:
                    chain = pf.allocate_bytes(size)
                    entry.set_cluster(chain[0])
                    self._write_runs(self._runs(chain), pieces, size)
                entry.filesize = size
                pf.update_directory_entry(entry.get_parent_dir())
                pf.flush_fat()
            except self._PyFATException as exc:
                self._undo(file_path, created_dirs)
                if exc.errno == errno.ENOSPC:
                    raise SanError("NO_SPACE", f"no space for {path} ({size} bytes) on "
                                               f"{self.device.name}: {exc}") from None
                raise SanError("INVALID_INPUT", f"cannot write {path} on {self.device.name}: "
                                                f"{exc}") from None
            except BaseException:
                self._undo(file_path, created_dirs)
                raise
            return size

    def _touch_times(self, entry) -> None:
        _dos_stamp(entry, self._now(), created=False)

    def _write_runs(self, runs, pieces, size: int) -> None:
        starts = [r[0] for r in runs]
        off = 0
        for piece in pieces:
            piece = piece if isinstance(piece, np.ndarray) else np.frombuffer(piece, dtype=np.uint8)
            n = len(piece)
            if off + n > size:
                raise ValueError("more data than the file size")
            if off + n == size and n % SECTOR:
                # the last sector whole (zero padded inside its cluster): no read-modify-write
                padded = np.zeros(_round_up(n, SECTOR), dtype=np.uint8)
                padded[:n] = piece
                piece, n_write = padded, len(padded)
            else:
                n_write = n
            pos = 0
            while pos < n_write:
                i = bisect.bisect_right(starts, off + pos) - 1
                foff, doff, length = runs[i]
                take = min(n_write - pos, foff + length - (off + pos))
                self.device.pwrite(doff + (off + pos - foff), piece[pos:pos + take])
                pos += take
            off += n
        if off != size:
            raise ValueError(f"file data ended at {off} of {size} bytes")

    def _undo(self, file_path, created_dirs) -> None:
        """Best effort: remove what a failed write created (the file, then new directories)."""
        pf = self._pf
        for victim in ([file_path] if file_path else []) + created_dirs[::-1]:
            try:
                parent_path, _, name = victim.rpartition("/")
                self._indexes.clear()          # pyfatfs may have half-added an entry
                parent = self._entry_at(parent_path)
                entry = self._find(parent, name) if parent is not None else None
                if entry is None:
                    continue
                cluster = entry.get_cluster()
                parent._get_entries_raw().remove(entry)
                self._indexed_remove(parent, entry)
                pf.update_directory_entry(parent)
                entry.mark_empty()
                pf.free_cluster_chain(cluster)
            except Exception:
                pass
        try:
            pf.flush_fat()
        except Exception:
            pass

    def remove_file(self, path: str) -> None:
        """Delete a file (``NO_SUCH_FILE``); its directory stays."""
        with self._lock:
            self._check(writing=True)
            stored, entry = self._file_entry(path)
            self._begin_change()
            parent = entry.get_parent_dir()
            cluster = entry.get_cluster()
            parent._get_entries_raw().remove(entry)     # this entry (not a namesake)
            self._indexed_remove(parent, entry)
            self._pf.update_directory_entry(parent)
            entry.mark_empty()
            self._pf.free_cluster_chain(cluster)
            self._pf.flush_fat()

    # -- flush / close ----------------------------------------------------------------------------
    def flush(self) -> None:
        """Write everything back through the device with the filesystem marked clean, so the
        volume passes ``fsck.fat -n`` while still mounted.  The next change marks it dirty."""
        with self._lock:
            self._check()
            if self.readonly:
                return
            if self._disk_dirty or self._marked:
                self._pf.write_fsinfo()
                self._pf._mark_clean()
                self._disk_dirty = False
                self._marked = False
            self.device.flush()

    def close(self) -> None:
        """`flush`, then unmount.  The device stays open (it is the caller's)."""
        with self._lock:
            if self._closed:
                return
            try:
                if not self.readonly and not self.device.closed:
                    self.flush()
            finally:
                self._pf.initialized = False
                self._closed = True

    def discard(self) -> None:
        """Unmount without writing anything and drop the device's cache (dirty data is lost):
        for a volume that changed behind the host's back (raw writes, a restore)."""
        with self._lock:
            self._pf.initialized = False
            self._closed = True
            if not self.device.closed:
                self.device.drop_cache()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------------------------
# fsck and images
# ---------------------------------------------------------------------------------------------
def fsck_binary() -> str | None:
    """The path of dosfstools' ``fsck.fat`` (also looked for in /usr/sbin and /sbin)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    for name in ("fsck.fat", "fsck.vfat", "dosfsck"):
        found = shutil.which(name, path=path)
        if found:
            return found
    return None


def fsck(image_path: str) -> tuple[bool, str]:
    """Run ``fsck.fat -n`` (check, change nothing) on an image file: (clean?, its output).
    Clean means exit status 0.  ``INVALID_INPUT`` if dosfstools is not installed."""
    exe = fsck_binary()
    if exe is None:
        raise SanError("INVALID_INPUT", "fsck.fat is not installed: install dosfstools "
                                        "(e.g. apt-get install dosfstools)")
    env = dict(os.environ, LC_ALL="C", LANG="C")
    try:
        run = subprocess.run([exe, "-n", str(image_path)], capture_output=True, text=True,
                             errors="replace", env=env, timeout=900)
    except subprocess.TimeoutExpired:
        return False, f"fsck.fat -n {image_path} did not finish in 900 s"
    output = (run.stdout + run.stderr).strip()
    return run.returncode == 0, output


def image_to_file(device_or_read_fn, size: int, extents, path: str) -> None:
    """Write a sparse image file of a volume of `size` bytes: only the given ``(offset,
    length)`` extents are read (thin volumes; ``None`` reads the whole volume), through a
    `BlockDevice` (its cache included) or a ``read_fn(offset, length)``; zero pieces stay holes."""
    if isinstance(device_or_read_fn, BlockDevice):
        read = device_or_read_fn.pread_array
    else:
        read = device_or_read_fn
    with open(path, "wb") as out:
        out.truncate(size)
        for offset, length in sorted(extents if extents is not None else [(0, size)]):
            start = max(0, offset - offset % SECTOR)
            end = min(size, _round_up(offset + length, SECTOR))
            pos = start
            while pos < end:
                n = min(MAX_IO, end - pos)
                data = read(pos, n)
                arr = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
                if arr.any():
                    out.seek(pos)
                    out.write(arr.tobytes())
                pos += n
