"""A thin, checksummed, persistent volume store: the bytes of one volume of a disk array.

Granules versus transfer chunks
-------------------------------
A *transfer chunk* is how much data one SCSI-like command carries over the links (default
4 MiB, ``--chunk-size``); it is a property of the I/O path and of modeled time.  A *granule*
is the unit of allocation and integrity inside this store (default 256 KiB): the store keeps
one checksum per written granule, allocates disk space granule by granule, and always reads
and writes a granule whole.  The two sizes are independent: a 4 MiB chunk covers 16 granules
(hashed one after the other straight from the caller's buffer, and ``pwrite``-n from it in one
call); a 512-byte write inside a granule is a read-modify-write of that granule.
Only granules that were written exist; everything else reads as zeros, so memory and disk
grow with the data written, never with the volume size (a 1 TiB volume opens instantly).

File layout (in ``directory``)
------------------------------
``NAME.data``
    A sparse file of exactly ``size`` bytes (created with ``ftruncate``).  Byte ``o`` of the
    volume is byte ``o`` of the file.  Unwritten granules are holes and take no disk.
``NAME.map``
    An append-only journal of 24-byte little-endian records.  The first record is a header
    ``b"SANMAP02"``, granule size (u64), volume size (u64).  Every later record is
    ``(index u64, lo u64, hi u64)``: "granule ``index`` now holds data whose XXH3-128 is
    ``hi << 64 | lo``".  A record whose index has bit 63 set marks granule
    ``index & ~(1 << 63)`` as discarded (unwritten again; checksum fields are 0).  On open the
    journal is replayed and the last record of a granule wins; a torn trailing record (a crash
    in the middle of an append) is cut off.  When the journal holds more than ~4x as many
    records as live granules (plus `VolumeStore.COMPACT_MIN`), it is rewritten, one record per
    live granule, into ``NAME.map.tmp`` (fsync-ed) and moved over the journal with
    ``os.replace``.
``NAME.bad``
    The granules known to be bad (see "Bad granules"), only while there are any: ``b"SANBAD01"``
    then their sorted indexes as u64 little-endian.  Rewritten whole (``NAME.bad.tmp``,
    fsync, ``os.replace``) only when the set changes; removed when it becomes empty.

The granule size of an existing store is fixed by its header: re-opening with another
``granule`` argument uses the stored one (the bytes on disk are laid out for it).  Re-opening
with another ``size`` raises ``INVALID_INPUT`` naming both sizes.

Version 1 maps (``b"SANMAP01"``) held a linear checksum pair per granule (below).  Opening
such a store *converts* it once: every written granule is read and checked against its old
pair; a good one gets its XXH3-128 recorded, a bad one is put in the bad set and gets a
checksum that cannot match its current bytes (its XXH3-128 with the lowest bit flipped), so
it keeps failing reads exactly as before.  The new map is written to ``NAME.map.tmp``,
fsync-ed and moved over the old one with ``os.replace`` (the bad set is written first), so a
crash during conversion leaves the v1 map, converted again on the next open.
`VolumeStore.converted` and `VolumeStore.converted_bad` tell what the conversion found.

Durability
----------
A write is durable (survives the death of the process, e.g. an actor that crashes and is
restarted, or read by a second process) once `VolumeStore.write` returns: the data has been
``pwrite``-n into ``NAME.data`` and its journal records appended with one ``os.write`` on an
``O_APPEND`` descriptor.  There is no ``fsync`` on that path: a crash of the machine may lose
recent writes.  A process killed *during* a write may leave the granules it was writing with
their old checksum and new data; their next read raises ``CHECKSUM_MISMATCH`` (as a disk would
report a torn write) until they are written again.  A write verifies the granules it only
partly covers before it writes anything, so a refused write changes nothing.  One process
writes a store at a time; others may read it (and `VolumeStore.corrupt` it).

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

The old pair, kept as `_pair_checksums` to convert v1 stores, was a Fletcher-style pair over
little-endian u64 words ``w``: ``(sum(w), sum((i+1) * w[i])) mod 2**64``.  It caught every
change confined to one word, but being linear it was blind to any edit whose deltas ``d[i]``
have ``sum(d) = sum(i * d[i]) = 0`` (e.g. +1, -2, +1 on three adjacent words).

Bad granules
------------
A store remembers which granules it found bad, in ``NAME.bad``, so the array can repair them
(a mirror rewrites them) and report them (`VolumeStore.bad_extents`).  Any read that finds a
granule failing its checksum (`read`, the read-modify-write of a partial `write`, `digest`,
`scrub`, `verify`) records it; `mark_bad` records granules the array learned of elsewhere;
the conversion of a v1 store records what failed its old pair.  A write covering a granule
whole, or a discard of it, removes it (its data is new); `scrub` replaces the entries of the
written granules with what it finds.  The set is a record, not a gate: reads verify the bytes
against the checksum and that alone decides whether they fail.  `corrupt` marks nothing: rot
is unseen until read.  ``CHECKSUM_MISMATCH`` names the store's label and the failing granule's
byte range: ``"array1 volume 0: bytes 262144..524287 (granule 1, 262144 bytes) fail their
checksum"``.

Digest
------
`VolumeStore.digest` is the contract's volume digest (``checkpoint`` op): hex SHA-256 over,
for each 256 KiB block (`DIGEST_BLOCK`, whatever the granule) that is not all zeros, in block
order, the block index as 8-byte little-endian followed by the 32-byte SHA-256 of the block
(the last block of a volume whose size is not a multiple of 256 KiB is the shorter remainder).
Its cost follows the data written; `digest_of` computes the same for an in-memory image and
`DigestBuilder` is the incremental form both use.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import operator
import os
import pathlib
import struct
import threading

import numpy as np
import xxhash

from san.errors import SanError

__all__ = ["VolumeStore", "DigestBuilder", "digest_of", "checksums", "DIGEST_BLOCK",
           "BLOCK", "MAX_SIZE", "DEFAULT_GRANULE"]

BLOCK = 512
MAX_SIZE = 1 << 50                      # 1 PiB
DEFAULT_GRANULE = 256 * 1024
DIGEST_BLOCK = 256 * 1024
_MAGIC = b"SANMAP02"
_MAGIC_V1 = b"SANMAP01"                 # linear pair checksums: converted on open
_BAD_MAGIC = b"SANBAD01"
_HEADER = struct.Struct("<8sQQ")
_REC_DTYPE = np.dtype([("g", "<u8"), ("lo", "<u8"), ("hi", "<u8")])
_REC = _REC_DTYPE.itemsize              # 24 bytes, same as the header
_DELETED = np.uint64(1 << 63)
_DIGEST_PIECE = 64 * DIGEST_BLOCK       # 16 MiB read at a time by digest()
_VERIFY_RUN = 4 << 20                   # bytes read at a time by scrub(), verify(), conversion
_M64 = (1 << 64) - 1
assert _HEADER.size == _REC


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


# ------------------------------------------------------------------ the v1 pair (conversion)
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
_SPLIT, _SPLIT_MIN = 512, 64 * 1024


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


def _granule_checksums(piece: np.ndarray, granule: int, fn=checksums) -> np.ndarray:
    """`fn` over the granules of `piece`, whose last granule may be short (end of volume)."""
    nfull = len(piece) // granule
    cs = fn(piece[: nfull * granule], granule) if nfull else np.empty((0, 2), np.uint64)
    if nfull * granule != len(piece):
        cs = np.concatenate([cs, fn(piece[nfull * granule:], len(piece) - nfull * granule)])
    return cs


def _write_replace(path: pathlib.Path, payload: bytes) -> None:
    """Replace `path` by `payload` atomically: a crash leaves the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _pwrite_all(fd, payload, 0)
        os.fsync(fd)            # else a power loss may leave the rename and an empty file
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _as_bytes_array(data) -> np.ndarray:
    """A 1-D uint8 view of `data` (ndarray, bytes, bytearray, memoryview), without copying."""
    if isinstance(data, np.ndarray):
        arr = data if data.flags.c_contiguous else np.ascontiguousarray(data)   # strided: one copy
        if arr.dtype != np.uint8:
            arr = arr.reshape(-1).view(np.uint8)
        elif arr.ndim != 1:
            arr = arr.reshape(-1)
        return arr
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        raise SanError("INVALID_INPUT",
                       f"data must be a uint8 numpy array, bytes or memoryview (got {type(data).__name__})") from None


def _pwrite_all(fd: int, buf, offset: int) -> None:
    mv = memoryview(buf).cast("B")
    while len(mv):
        n = os.pwrite(fd, mv, offset)
        if n <= 0:
            raise OSError(f"pwrite wrote {n} bytes")
        mv = mv[n:]
        offset += n


def _pread_into(fd: int, arr: np.ndarray, offset: int) -> None:
    """Fill the writable contiguous uint8 array `arr` from `fd` at `offset`."""
    mv = memoryview(arr).cast("B")
    while len(mv):
        n = os.preadv(fd, [mv], offset)
        if n <= 0:  # past the end of the file (cannot happen for a file of `size` bytes)
            mv[:] = b"\0" * len(mv)
            return
        mv = mv[n:]
        offset += n


_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_fallocate = None
try:  # Linux: punch holes to give discarded granules back to the file system
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    _fallocate = _libc.fallocate
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    _fallocate.restype = ctypes.c_int
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _fallocate = None


def _punch_hole(fd: int, offset: int, length: int) -> bool:
    if _fallocate is None:
        return False
    return _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) == 0


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
    per = _DIGEST_PIECE // DIGEST_BLOCK
    i = 0
    while i < len(blocks):
        j = i + 1           # a piece: up to `per` consecutive blocks
        while j < len(blocks) and j - i < per and blocks[j] == blocks[j - 1] + 1:
            j += 1
        start = blocks[i] * DIGEST_BLOCK
        stop = min(blocks[j - 1] * DIGEST_BLOCK + DIGEST_BLOCK, size)
        builder.add(start, read(start, stop - start))
        i = j
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
        arr = _as_bytes_array(data)
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


class VolumeStore:
    """One volume of `size` bytes stored thinly in `directory/NAME.data` + `NAME.map`.

    `label` names the store in error messages (default ``"volume store NAME"``; a disk array
    passes e.g. ``"array1 volume 0"``).  `read` returns a new, writable uint8 array owned by
    the caller.  Methods are thread-safe (one lock per store).  After opening, `converted`
    tells whether a version-1 map was converted and `converted_bad` which granules failed
    their old checksum then.  See the module docstring for the layout and guarantees.
    """

    COMPACT_MIN = 256   # journal records tolerated beyond 4x the live granules

    def __init__(self, directory: pathlib.Path, name: str, size: int, granule: int = DEFAULT_GRANULE,
                 label: str | None = None):
        name = str(name)
        self.label = str(label) if label is not None else f"volume store {name}"
        if not name or "/" in name or name in (".", "..") or "\0" in name:
            raise SanError("INVALID_INPUT", f"store name {name!r} cannot be a file name")
        if not isinstance(size, (int, np.integer)) or not 0 < size <= MAX_SIZE or size % BLOCK:
            raise SanError("INVALID_INPUT",
                           f"{self.label}: size {size!r} must be a multiple of 512 in (0, 1 PiB]")
        if not isinstance(granule, (int, np.integer)) or granule <= 0 or granule % BLOCK:
            raise SanError("INVALID_INPUT", f"{self.label}: granule {granule!r} must be a positive multiple of 512")
        self.name = name
        self.size = int(size)
        self.granule = int(granule)
        self.directory = pathlib.Path(directory)
        self.data_path = self.directory / f"{name}.data"
        self.map_path = self.directory / f"{name}.map"
        self.bad_path = self.directory / f"{name}.bad"
        self._lock = threading.RLock()
        self._map: dict[int, tuple[int, int]] = {}
        self._bad: set[int] = set()
        self._records = 0
        self._data_fd = -1
        self._map_fd = -1
        self.converted = False
        self.converted_bad: list[int] = []
        self.directory.mkdir(parents=True, exist_ok=True)
        self._open()

    # ------------------------------------------------------------------ opening, journal
    def _open(self) -> None:
        fd = os.open(self.data_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            have = os.fstat(fd).st_size
            map_exists = self.map_path.exists() and self.map_path.stat().st_size >= _REC
            if have == 0 and not map_exists:
                os.ftruncate(fd, self.size)
            elif have != self.size:
                raise SanError("INVALID_INPUT",
                               f"{self.label}: stored with size {have} bytes in {self.data_path}, "
                               f"opened with size {self.size} bytes")
        except BaseException:
            os.close(fd)
            raise
        self._data_fd = fd
        try:
            magic = self._replay()          # fixes the granule size, hence the granule count
            self._load_bad()
            if magic == _MAGIC_V1:
                self._convert_v1()
            self._map_fd = os.open(self.map_path, os.O_WRONLY | os.O_APPEND)
            self._maybe_compact()
        except BaseException:
            self.close()
            raise

    def _replay(self) -> bytes:
        """Load the journal into `_map`; returns its magic (v1 maps still hold the old pair)."""
        tmp = self.map_path.with_name(self.map_path.name + ".tmp")
        if tmp.exists():        # a compaction or conversion that died before its os.replace
            tmp.unlink()
        raw = self.map_path.read_bytes() if self.map_path.exists() else b""
        if len(raw) < _REC:
            header = _HEADER.pack(_MAGIC, self.granule, self.size)
            with open(self.map_path, "wb") as f:
                f.write(header)
            os.chmod(self.map_path, 0o600)
            raw = header
        magic, granule, size = _HEADER.unpack_from(raw)
        if magic not in (_MAGIC, _MAGIC_V1) or granule <= 0 or granule % BLOCK:
            raise SanError("INVALID_INPUT",
                           f"{self.label}: {self.map_path} is not a volume map (header {magic!r}, "
                           f"granule {granule}; expected {_MAGIC!r} or {_MAGIC_V1!r} and a multiple of 512)")
        if size != self.size:
            raise SanError("INVALID_INPUT",
                           f"{self.label}: stored with size {size} bytes in {self.map_path}, "
                           f"opened with size {self.size} bytes")
        self.granule = int(granule)
        nrec, torn = divmod(len(raw) - _REC, _REC)
        if torn:                # a crash in the middle of an append: drop the partial record
            os.truncate(self.map_path, _REC * (nrec + 1))
        recs = np.frombuffer(raw, dtype=_REC_DTYPE, count=nrec, offset=_REC)
        self._records = nrec
        live: dict[int, tuple[int, int]] = {}
        if nrec:
            g = recs["g"] & ~_DELETED
            # last record per granule wins: first occurrence in the reversed journal
            _, first_rev = np.unique(g[::-1], return_index=True)
            last = nrec - 1 - first_rev
            keep = last[(recs["g"][last] & _DELETED) == 0]
            keep.sort()
            kg = recs["g"][keep]
            if len(kg) and int(kg.max()) >= self.n_granules:
                raise SanError("INVALID_INPUT",
                               f"{self.label}: {self.map_path} names granule {int(kg.max())} "
                               f"beyond the volume's {self.n_granules} granules")
            live = dict(zip(kg.tolist(), zip(recs["lo"][keep].tolist(), recs["hi"][keep].tolist())))
        self._map = live
        return magic

    def _convert_v1(self) -> None:
        """Re-checksum a v1 store with XXH3-128, trusting only granules that pass the old pair."""
        G = self.granule
        buf = np.empty(max(_VERIFY_RUN, G), dtype=np.uint8)
        bad: list[int] = []
        for run in self._runs(sorted(self._map)):
            piece = self._pread_run(run, buf)
            old = _granule_checksums(piece, G, _pair_checksums)
            new = _granule_checksums(piece, G)
            want = np.array([self._map[g] for g in run], dtype=np.uint64)
            for i in np.flatnonzero((old != want).any(axis=1)).tolist():
                new[i, 0] ^= np.uint64(1)       # can never match these bytes: reads keep failing
                bad.append(run[i])
            self._map.update(zip(run, zip(new[:, 0].tolist(), new[:, 1].tolist())))
        # the bad set first: a crash before the map's os.replace converts again from v1
        self._bad.update(bad)
        self._save_bad()
        self._write_map()
        self.converted = True
        self.converted_bad = sorted(bad)

    def _journal(self, recs: np.ndarray) -> None:
        os.write(self._map_fd, recs.tobytes())
        self._records += len(recs)
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        if self._records > 4 * len(self._map) + self.COMPACT_MIN:
            self.compact()

    def _write_map(self) -> None:
        """Replace the journal by one record per live granule (v2 header), atomically."""
        gs = sorted(self._map)
        recs = np.empty(len(gs), dtype=_REC_DTYPE)
        recs["g"] = gs
        recs["lo"] = [self._map[g][0] for g in gs]
        recs["hi"] = [self._map[g][1] for g in gs]
        _write_replace(self.map_path, _HEADER.pack(_MAGIC, self.granule, self.size) + recs.tobytes())
        self._records = len(gs)

    def compact(self) -> None:
        """Rewrite the journal with one record per live granule (atomically)."""
        with self._lock:
            self._check_open()
            self._write_map()
            os.close(self._map_fd)
            self._map_fd = os.open(self.map_path, os.O_WRONLY | os.O_APPEND)

    @property
    def journal_records(self) -> int:
        """Records in the journal after its header (for tests and diagnostics)."""
        return self._records

    # ------------------------------------------------------------------ the bad set
    def _load_bad(self) -> None:
        tmp = self.bad_path.with_name(self.bad_path.name + ".tmp")
        if tmp.exists():        # a rewrite that died before its os.replace
            tmp.unlink()
        if not self.bad_path.exists():
            return
        raw = self.bad_path.read_bytes()
        if raw[:8] != _BAD_MAGIC or len(raw) % 8:
            raise SanError("INVALID_INPUT",
                           f"{self.label}: {self.bad_path} is not a bad-granule list "
                           f"(header {raw[:8]!r}, {len(raw)} bytes; expected {_BAD_MAGIC!r} + u64 indexes)")
        gs = np.frombuffer(raw, dtype="<u8", offset=8)
        if len(gs) and int(gs.max()) >= self.n_granules:
            raise SanError("INVALID_INPUT",
                           f"{self.label}: {self.bad_path} names granule {int(gs.max())} "
                           f"beyond the volume's {self.n_granules} granules")
        self._bad = set(gs.tolist())

    def _save_bad(self) -> None:
        if self._bad:
            _write_replace(self.bad_path, _BAD_MAGIC + np.array(sorted(self._bad), dtype="<u8").tobytes())
        elif self.bad_path.exists():
            self.bad_path.unlink()

    def _add_bad(self, gs) -> None:
        new = set(gs) - self._bad
        if new:
            self._bad |= new
            self._save_bad()

    def _clear_bad(self, g0: int, g1: int) -> None:
        """Forget bad granules in [g0, g1): their data was just replaced or discarded."""
        if not self._bad:       # the common case costs one test
            return
        gone = [g for g in self._bad if g0 <= g < g1]
        if gone:
            self._bad.difference_update(gone)
            self._save_bad()

    def _granule_list(self, what: str, granules) -> list[int]:
        """`granules` (an index, or an iterable / array of them) as sorted distinct ints, each
        a granule of this volume."""
        if isinstance(granules, (int, np.integer)):
            granules = [granules]
        vals = granules.reshape(-1).tolist() if isinstance(granules, np.ndarray) else list(granules)
        try:
            out = sorted({operator.index(g) for g in vals})
        except TypeError:
            bad = next(g for g in vals if not isinstance(g, (int, np.integer)))
            raise SanError("INVALID_INPUT",
                           f"{self.label}: {what} granule {bad!r} is not an integer index") from None
        if out and (out[0] < 0 or out[-1] >= self.n_granules):
            badg = out[0] if out[0] < 0 else out[-1]
            raise SanError("INVALID_INPUT",
                           f"{self.label}: {what} granule {badg} is outside the volume's "
                           f"{self.n_granules} granules of {self.granule} bytes")
        return out

    def bad_granules(self) -> list[int]:
        """The granules known to be bad (found by a read, scrub, verify, conversion or
        `mark_bad`, and not rewritten or discarded since), sorted."""
        with self._lock:
            return sorted(self._bad)

    def bad_extents(self) -> list[tuple[int, int]]:
        """Merged (offset, length) byte ranges of `bad_granules`."""
        return granule_extents(self.bad_granules(), self.granule, self._glen)

    def mark_bad(self, granules) -> None:
        """Add `granules` (indexes of this volume) to the bad set, persistently."""
        with self._lock:
            self._check_open()
            self._add_bad(self._granule_list("mark_bad", granules))

    def verify(self, granules) -> list[int]:
        """Read and verify `granules` (unwritten ones hold no data and are skipped); record the
        ones failing their checksum in the bad set and return them, sorted.  Never raises
        CHECKSUM_MISMATCH: finding bad granules is the result."""
        with self._lock:
            self._check_open()
            gs = [g for g in self._granule_list("verify", granules) if g in self._map]
            bad = self._verify_granules(gs)
            self._add_bad(bad)
            return bad

    def scrub(self) -> tuple[int, list[int]]:
        """Read and verify every written granule; returns (bytes checked, sorted bad granules).

        The bad set's entries for written granules become what this scrub found (entries of
        unwritten granules, from `mark_bad`, stay).  The lock is taken per run of up to 4 MiB,
        so writes go on during a long scrub; a granule written meanwhile is checked as it is
        when its run is read.  Never raises CHECKSUM_MISMATCH.
        """
        with self._lock:
            self._check_open()
            todo = sorted(self._map)
        checked = 0
        found: list[int] = []
        buf = np.empty(max(_VERIFY_RUN, self.granule), dtype=np.uint8)
        for run in self._runs(todo):
            with self._lock:
                self._check_open()
                run = [g for g in run if g in self._map]     # discarded since the list was made
                bad = self._verify_granules(run, buf)
                checked += sum(self._glen(g) for g in run)
                now_bad = set(bad)
                healed = [g for g in run if g in self._bad and g not in now_bad]
                if healed or not now_bad <= self._bad:
                    self._bad.difference_update(healed)
                    self._bad |= now_bad
                    self._save_bad()
                found.extend(bad)
        return checked, sorted(found)

    def _runs(self, gs: list[int]):
        """Sorted granules `gs` cut into runs of consecutive indexes of at most `_VERIFY_RUN` bytes."""
        per = max(1, _VERIFY_RUN // self.granule)
        run: list[int] = []
        for g in gs:
            if run and (g != run[-1] + 1 or len(run) == per):
                yield run
                run = []
            run.append(g)
        if run:
            yield run

    def _pread_run(self, run: list[int], buf: np.ndarray) -> np.ndarray:
        """The bytes of consecutive granules `run`, read with one pread into the front of `buf`."""
        start = run[0] * self.granule
        stop = run[-1] * self.granule + self._glen(run[-1])
        piece = buf[: stop - start]
        _pread_into(self._data_fd, piece, start)
        return piece

    def _verify_granules(self, gs: list[int], buf: np.ndarray | None = None) -> list[int]:
        """The written granules among sorted `gs` that fail their checksum (records nothing)."""
        if buf is None:
            buf = np.empty(max(_VERIFY_RUN, self.granule), dtype=np.uint8)
        bad: list[int] = []
        for run in self._runs(gs):
            piece = self._pread_run(run, buf)
            bad.extend(self._failing(run, piece))
        return bad

    def _failing(self, run: list[int], piece: np.ndarray) -> list[int]:
        """The granules of consecutive `run` whose bytes `piece` fail their stored checksum."""
        cs = _granule_checksums(piece, self.granule)
        want = np.array([self._map[g] for g in run], dtype=np.uint64)
        return [run[i] for i in np.flatnonzero((cs != want).any(axis=1)).tolist()]

    # ------------------------------------------------------------------ geometry
    @property
    def n_granules(self) -> int:
        return -(-self.size // self.granule)

    def _glen(self, g: int) -> int:
        return min(self.granule, self.size - g * self.granule)

    def _check_range(self, what: str, offset: int, length: int) -> None:
        if offset % BLOCK or length % BLOCK:
            raise SanError("INVALID_INPUT",
                           f"{self.label}: {what} at offset {offset}, length {length} is not "
                           f"aligned to 512 bytes")
        if offset < 0 or length < 0 or offset + length > self.size:
            raise SanError("LBA_OUT_OF_RANGE",
                           f"{self.label}: {what} at offset {offset}, length {length} is outside "
                           f"the volume of {self.size} bytes")

    def _check_open(self) -> None:
        if self._data_fd < 0:
            raise SanError("INVALID_INPUT", f"{self.label}: store is closed")

    def _mismatch(self, bad: list[int]) -> SanError:
        """Record `bad` (granules a read found failing) and the error naming the first."""
        self._add_bad(bad)
        g = bad[0]
        start, length = g * self.granule, self._glen(g)
        return SanError("CHECKSUM_MISMATCH",
                        f"{self.label}: bytes {start}..{start + length - 1} (granule {g}, {length} bytes) "
                        f"fail their checksum")

    # ------------------------------------------------------------------ granule I/O
    def _read_granule(self, g: int) -> np.ndarray:
        """The verified content of written granule `g` (a new array)."""
        buf = np.empty(self._glen(g), dtype=np.uint8)
        _pread_into(self._data_fd, buf, g * self.granule)
        if self._failing([g], buf):
            raise self._mismatch([g])
        return buf

    # ------------------------------------------------------------------ public API
    def write(self, offset: int, data) -> None:
        """Store `data` (uint8 array, bytes or memoryview; 512-byte multiple) at `offset`.

        Granules the write covers whole are written from `data` as they are (and leave the bad
        set); granules it covers in part are read and verified first (CHECKSUM_MISMATCH if one
        fails, before anything is written).
        """
        arr = _as_bytes_array(data)
        offset = int(offset)
        length = len(arr)
        with self._lock:
            self._check_open()
            self._check_range("write", offset, length)
            if not length:
                return
            G = self.granule
            end = offset + length
            g0, g1 = offset // G, (end - 1) // G          # granules touched, inclusive
            # whole-granule run [f0, f1): granules covered entirely by the write
            f0 = g0 if offset == g0 * G else g0 + 1
            f1 = g1 + 1 if end == g1 * G + self._glen(g1) else g1
            # read (and verify) both partial granules before writing anything: a refused write
            # must not leave one of them with new bytes under its old checksum
            old = {g: self._read_granule(g) if g in self._map else np.zeros(self._glen(g), dtype=np.uint8)
                   for g in ((g0, g1) if g1 != g0 else (g0,)) if not f0 <= g < f1}
            recs = [self._rmw(g, buf, offset, arr) for g, buf in old.items()]
            if f1 > f0:
                recs.append(self._write_whole(f0, f1, arr[f0 * G - offset: min(f1 * G, self.size) - offset]))
            self._journal(np.concatenate(recs) if len(recs) > 1 else recs[0])
            if f1 > f0:
                self._clear_bad(f0, f1)

    def _rmw(self, g: int, buf: np.ndarray, offset: int, arr: np.ndarray) -> np.ndarray:
        """Write granule `g`, whose old bytes are `buf`, partly overwritten by `arr` at `offset`."""
        gstart = g * self.granule
        lo = max(offset, gstart)
        hi = min(offset + len(arr), gstart + len(buf))
        buf[lo - gstart: hi - gstart] = arr[lo - offset: hi - offset]
        cs = checksums(buf, len(buf))
        _pwrite_all(self._data_fd, buf, gstart)
        return self._commit(g, cs)

    def _write_whole(self, f0: int, f1: int, piece: np.ndarray) -> np.ndarray:
        """Write granules [f0, f1) from `piece` (their exact bytes) directly from the buffer."""
        cs = _granule_checksums(piece, self.granule)
        _pwrite_all(self._data_fd, piece, f0 * self.granule)
        return self._commit(np.arange(f0, f1, dtype=np.uint64), cs)

    def _commit(self, gs, cs: np.ndarray) -> np.ndarray:
        gs = np.atleast_1d(np.asarray(gs, dtype=np.uint64))
        recs = np.empty(len(gs), dtype=_REC_DTYPE)
        recs["g"] = gs
        recs["lo"] = cs[:, 0]
        recs["hi"] = cs[:, 1]
        self._map.update(zip(gs.tolist(), zip(cs[:, 0].tolist(), cs[:, 1].tolist())))
        return recs

    def read(self, offset: int, length: int) -> np.ndarray:
        """`length` bytes at `offset` as a new writable uint8 array; verifies every granule read."""
        offset, length = int(offset), int(length)
        with self._lock:
            self._check_open()
            self._check_range("read", offset, length)
            if not length or not self._map:
                return np.zeros(length, dtype=np.uint8)
            G = self.granule
            end = offset + length
            g0, g1 = offset // G, (end - 1) // G
            if g1 - g0 + 1 <= len(self._map):
                touched = [g for g in range(g0, g1 + 1) if g in self._map]
            else:
                touched = sorted(g for g in self._map if g0 <= g <= g1)
            # zero-filling 4 MiB costs a third of reading it: only when some granule is a hole
            full = len(touched) == g1 - g0 + 1
            out = np.empty(length, dtype=np.uint8) if full else np.zeros(length, dtype=np.uint8)
            run: list[int] = []        # consecutive written granules wholly inside the read
            for g in touched:
                gstart = g * G
                glen = self._glen(g)
                if gstart >= offset and gstart + glen <= end:
                    if run and run[-1] != g - 1:
                        self._read_run(run, offset, out)
                        run = []
                    run.append(g)
                    continue
                buf = self._read_granule(g)
                lo, hi = max(offset, gstart), min(end, gstart + glen)
                out[lo - offset: hi - offset] = buf[lo - gstart: hi - gstart]
            if run:
                self._read_run(run, offset, out)
            return out

    def _read_run(self, run: list[int], offset: int, out: np.ndarray) -> None:
        """Read consecutive whole granules `run` straight into `out` (which starts at `offset`)."""
        start = run[0] * self.granule
        piece = self._pread_run(run, out[start - offset:])
        bad = self._failing(run, piece)
        if bad:     # every failing granule of the run is recorded, the first is named
            raise self._mismatch(bad)

    def discard(self, offset: int, length: int) -> int:
        """Un-write the granules lying wholly inside [offset, offset+length); returns how many.

        Their disk space is given back (hole punched, or zeros written where holes cannot be
        punched), they read as zeros again and leave the bad set.  Granules only partly inside
        are left as they are.
        """
        offset, length = int(offset), int(length)
        with self._lock:
            self._check_open()
            self._check_range("discard", offset, length)
            G = self.granule
            end = offset + length
            f0 = -(-offset // G)
            f1 = end // G
            if end == self.size and length:
                f1 = self.n_granules
            if f1 - f0 <= len(self._map):
                gone = [g for g in range(f0, f1) if g in self._map]
            else:
                gone = sorted(g for g in self._map if f0 <= g < f1)
            if gone:
                for g in gone:
                    if not _punch_hole(self._data_fd, g * G, self._glen(g)):
                        _pwrite_all(self._data_fd, np.zeros(self._glen(g), np.uint8), g * G)
                    del self._map[g]
                recs = np.zeros(len(gone), dtype=_REC_DTYPE)
                recs["g"] = np.asarray(gone, dtype=np.uint64) | _DELETED
                self._journal(recs)
            # after the journal: a crash in between leaves a stale entry, never a lost one
            self._clear_bad(f0, f1)
            return len(gone)

    def checksum(self, g: int) -> tuple[int, int] | None:
        """The stored checksum of granule `g`: (low, high) 64-bit halves of its XXH3-128, or
        None if it was never written.

        Two stores with the same granule size hold the same bytes in `g` exactly when their
        checksums agree (up to a ~2**-128 chance of an accidental collision): copies compare
        these to move only the granules that differ (incremental resync), without reading any
        data.  A granule that failed its old checksum when its
        store was converted from v1 has a value no content hashes to, so it differs from every
        good copy.
        """
        with self._lock:
            return self._map.get(int(g))

    def written_granules(self) -> list[int]:
        with self._lock:
            return sorted(self._map)

    def extents(self) -> list[tuple[int, int]]:
        """Merged (offset, length) byte ranges of the written granules, in order."""
        return granule_extents(self.written_granules(), self.granule, self._glen)

    @property
    def bytes_stored(self) -> int:
        """Bytes of the written granules (what the store holds on disk, thinly)."""
        with self._lock:
            n = len(self._map) * self.granule
            last = self.n_granules - 1
            if last in self._map:
                n -= self.granule - self._glen(last)
            return n

    def digest(self) -> str:
        """The contract's volume digest (see module docstring); reads verify checksums."""
        with self._lock:
            self._check_open()
            return digest_extents(self.extents(), self.size, self.read)

    def corrupt(self, offset: int, nbytes: int) -> int:
        """Flip every bit of the stored bytes in [offset, offset+nbytes) in the .data file.

        The map and the bad set are not touched (rot is unseen until read), so the next read of
        an affected granule raises CHECKSUM_MISMATCH.  Only bytes of written granules are
        flipped (unwritten regions hold no data and read as zeros whatever the file holds);
        returns how many bytes were flipped.  Any offset and length inside the volume are
        allowed (no 512-byte alignment needed).
        """
        offset, nbytes = int(offset), int(nbytes)
        with self._lock:
            self._check_open()
            if offset < 0 or nbytes < 0 or offset + nbytes > self.size:
                raise SanError("LBA_OUT_OF_RANGE",
                               f"{self.label}: corrupt at offset {offset}, length {nbytes} is "
                               f"outside the volume of {self.size} bytes")
            flipped = 0
            end = offset + nbytes
            for start, ln in self.extents():
                lo, hi = max(offset, start), min(end, start + ln)
                if lo >= hi:
                    continue
                buf = np.empty(hi - lo, dtype=np.uint8)
                _pread_into(self._data_fd, buf, lo)
                np.bitwise_xor(buf, 0xFF, out=buf)
                _pwrite_all(self._data_fd, buf, lo)
                flipped += hi - lo
            return flipped

    def close(self) -> None:
        with self._lock:
            for attr in ("_data_fd", "_map_fd"):
                fd = getattr(self, attr, -1)
                if fd >= 0:
                    setattr(self, attr, -1)
                    try:
                        os.close(fd)
                    except OSError:
                        pass

    def __enter__(self) -> "VolumeStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return (f"VolumeStore({str(self.directory)!r}, {self.name!r}, size={self.size}, "
                f"granule={self.granule}, stored={self.bytes_stored}, label={self.label!r})")
