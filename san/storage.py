"""A thin, checksummed, persistent volume store: the bytes of one volume of a disk array.

Granules versus transfer chunks
-------------------------------
A *transfer chunk* is how much data one SCSI-like command carries over the links (default
4 MiB, ``--chunk-size``); it is a property of the I/O path and of modeled time.  A *granule*
is the unit of allocation and integrity inside this store (default 256 KiB): the store keeps
one checksum per written granule, allocates disk space granule by granule, and always reads
and writes a granule whole.  The two sizes are independent: a 4 MiB chunk covers 16 granules
(their checksums are computed in one vectorized call and they are ``pwrite``-n straight from
the caller's buffer); a 512-byte write inside a granule is a read-modify-write of that granule.
Only granules that were written exist; everything else reads as zeros, so memory and disk
grow with the data written, never with the volume size (a 1 TiB volume opens instantly).

File layout (in ``directory``)
------------------------------
``NAME.data``
    A sparse file of exactly ``size`` bytes (created with ``ftruncate``).  Byte ``o`` of the
    volume is byte ``o`` of the file.  Unwritten granules are holes and take no disk.
``NAME.map``
    An append-only journal of 24-byte little-endian records.  The first record is a header
    ``b"SANMAP01"``, granule size (u64), volume size (u64).  Every later record is
    ``(index u64, sum u64, weighted u64)``: "granule ``index`` now holds data whose checksum is
    ``(sum, weighted)``".  A record whose index has bit 63 set marks granule
    ``index & ~(1 << 63)`` as discarded (unwritten again; checksum fields are 0).  On open the
    journal is replayed and the last record of a granule wins; a torn trailing record (a crash
    in the middle of an append) is cut off.  When the journal holds more than ~4x as many
    records as live granules (plus `VolumeStore.COMPACT_MIN`), it is rewritten, one record per
    live granule, into ``NAME.map.tmp`` and moved over the journal with ``os.replace``.

The granule size of an existing store is fixed by its header: re-opening with another
``granule`` argument uses the stored one (the bytes on disk are laid out for it).  Re-opening
with another ``size`` raises ``INVALID_INPUT`` naming both sizes.

Durability
----------
A write is durable (survives the death of the process, e.g. an actor that crashes and is
restarted, or read by a second process) once `VolumeStore.write` returns: the data has been
``pwrite``-n into ``NAME.data`` and its journal records appended with one ``os.write`` on an
``O_APPEND`` descriptor.  There is no ``fsync``: a crash of the machine may lose recent writes.
A process killed *during* a write may leave the granules it was writing with their old
checksum and new data; their next read raises ``CHECKSUM_MISMATCH`` (as a disk would report a
torn write) until they are written again.  One process writes a store at a time; others may
read it (and `VolumeStore.corrupt` it).

Checksum
--------
Per granule, a Fletcher-style pair over the granule viewed as little-endian uint64 words
``w[0..n)``: ``(sum(w) mod 2**64, sum((i+1) * w[i]) mod 2**64)``, computed with numpy for all
granules of a write at once (``w.reshape(n_granules, words)``; the row sums and one ``einsum``
against the weight vector).  Measured on this machine: ~7 GB/s for the pair (sum alone ~20
GB/s), against ~2-4 GB/s for ``zlib.crc32`` and ~1.2 GB/s for SHA-256, so at a write path of
~1 GiB/s the checksum costs about 15% of the time.  Guarantees: any change confined to one
8-byte word (every single flipped bit or byte) changes the plain sum; two different words
``a``, ``b`` swapped at distance ``d`` change the weighted sum by ``(a-b)*d mod 2**64``, which
is non-zero unless ``a`` and ``b`` agree in their low ``64 - v2(d)`` bits (for 256 KiB
granules: at least their low 50 bits).  Every read of a written granule reads it whole and
verifies it, with no cache: bytes changed under the store by anyone are seen by the next read.

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
import os
import pathlib
import struct
import threading

import numpy as np

from san.errors import SanError

__all__ = ["VolumeStore", "DigestBuilder", "digest_of", "checksums", "DIGEST_BLOCK",
           "BLOCK", "MAX_SIZE", "DEFAULT_GRANULE"]

BLOCK = 512
MAX_SIZE = 1 << 50                      # 1 PiB
DEFAULT_GRANULE = 256 * 1024
DIGEST_BLOCK = 256 * 1024
_MAGIC = b"SANMAP01"
_HEADER = struct.Struct("<8sQQ")
_REC_DTYPE = np.dtype([("g", "<u8"), ("s", "<u8"), ("w", "<u8")])
_REC = _REC_DTYPE.itemsize              # 24 bytes, same as the header
_DELETED = np.uint64(1 << 63)
_DIGEST_PIECE = 64 * DIGEST_BLOCK       # 16 MiB read at a time by digest()
assert _HEADER.size == _REC

_weights_cache: dict[int, np.ndarray] = {}


def _weights(words: int) -> np.ndarray:
    w = _weights_cache.get(words)
    if w is None:
        w = _weights_cache[words] = np.arange(1, words + 1, dtype=np.uint64)
        w.flags.writeable = False
    return w


def checksums(data: np.ndarray, granule: int) -> np.ndarray:
    """Checksums of consecutive granules of `data` (uint8, length a multiple of `granule`).

    Returns a (n, 2) uint64 array: per granule (sum of words, index-weighted sum), mod 2**64.
    `granule` must be a multiple of 8.

    >>> checksums(np.zeros(16, np.uint8), 8).tolist()
    [[0, 0], [0, 0]]
    >>> checksums(np.array([1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0], np.uint8), 16).tolist()
    [[3, 5]]
    """
    n, rem = divmod(len(data), granule)
    if rem or granule % 8:
        raise ValueError(f"checksums: {len(data)} bytes is not a whole number of {granule}-byte granules")
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

    `read` returns a new, writable uint8 array owned by the caller.  Methods are thread-safe
    (one lock per store).  See the module docstring for the layout and guarantees.
    """

    COMPACT_MIN = 256   # journal records tolerated beyond 4x the live granules

    def __init__(self, directory: pathlib.Path, name: str, size: int, granule: int = DEFAULT_GRANULE):
        name = str(name)
        if not name or "/" in name or name in (".", "..") or "\0" in name:
            raise SanError("INVALID_INPUT", f"store name {name!r} cannot be a file name")
        if not isinstance(size, (int, np.integer)) or not 0 < size <= MAX_SIZE or size % BLOCK:
            raise SanError("INVALID_INPUT",
                           f"volume {name}: size {size!r} must be a multiple of 512 in (0, 1 PiB]")
        if not isinstance(granule, (int, np.integer)) or granule <= 0 or granule % BLOCK:
            raise SanError("INVALID_INPUT", f"volume {name}: granule {granule!r} must be a positive multiple of 512")
        self.name = name
        self.size = int(size)
        self.granule = int(granule)
        self.directory = pathlib.Path(directory)
        self.data_path = self.directory / f"{name}.data"
        self.map_path = self.directory / f"{name}.map"
        self._lock = threading.RLock()
        self._map: dict[int, tuple[int, int]] = {}
        self._records = 0
        self._data_fd = -1
        self._map_fd = -1
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
                               f"volume {self.name}: stored with size {have} bytes in {self.data_path}, "
                               f"opened with size {self.size} bytes")
        except BaseException:
            os.close(fd)
            raise
        self._data_fd = fd
        try:
            self._replay()
        except BaseException:
            self.close()
            raise

    def _replay(self) -> None:
        tmp = self.map_path.with_name(self.map_path.name + ".tmp")
        if tmp.exists():        # a compaction that died before its os.replace
            tmp.unlink()
        raw = self.map_path.read_bytes() if self.map_path.exists() else b""
        if len(raw) < _REC:
            header = _HEADER.pack(_MAGIC, self.granule, self.size)
            with open(self.map_path, "wb") as f:
                f.write(header)
            os.chmod(self.map_path, 0o600)
            raw = header
        magic, granule, size = _HEADER.unpack_from(raw)
        if magic != _MAGIC or granule <= 0 or granule % BLOCK:
            raise SanError("INVALID_INPUT", f"volume {self.name}: {self.map_path} is not a volume map")
        if size != self.size:
            raise SanError("INVALID_INPUT",
                           f"volume {self.name}: stored with size {size} bytes in {self.map_path}, "
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
                               f"volume {self.name}: {self.map_path} names granule {int(kg.max())} "
                               f"beyond the volume's {self.n_granules} granules")
            live = dict(zip(kg.tolist(), zip(recs["s"][keep].tolist(), recs["w"][keep].tolist())))
        self._map = live
        self._map_fd = os.open(self.map_path, os.O_WRONLY | os.O_APPEND)
        self._maybe_compact()

    def _journal(self, recs: np.ndarray) -> None:
        os.write(self._map_fd, recs.tobytes())
        self._records += len(recs)
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        if self._records > 4 * len(self._map) + self.COMPACT_MIN:
            self.compact()

    def compact(self) -> None:
        """Rewrite the journal with one record per live granule (atomically)."""
        with self._lock:
            self._check_open()
            gs = sorted(self._map)
            recs = np.empty(len(gs), dtype=_REC_DTYPE)
            recs["g"] = gs
            recs["s"] = [self._map[g][0] for g in gs]
            recs["w"] = [self._map[g][1] for g in gs]
            tmp = self.map_path.with_name(self.map_path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _pwrite_all(fd, _HEADER.pack(_MAGIC, self.granule, self.size) + recs.tobytes(), 0)
            finally:
                os.close(fd)
            os.replace(tmp, self.map_path)
            os.close(self._map_fd)
            self._map_fd = os.open(self.map_path, os.O_WRONLY | os.O_APPEND)
            self._records = len(gs)

    @property
    def journal_records(self) -> int:
        """Records in the journal after its header (for tests and diagnostics)."""
        return self._records

    # ------------------------------------------------------------------ geometry
    @property
    def n_granules(self) -> int:
        return -(-self.size // self.granule)

    def _glen(self, g: int) -> int:
        return min(self.granule, self.size - g * self.granule)

    def _check_range(self, what: str, offset: int, length: int) -> None:
        if offset % BLOCK or length % BLOCK:
            raise SanError("INVALID_INPUT",
                           f"volume {self.name}: {what} at offset {offset}, length {length} is not "
                           f"aligned to 512 bytes")
        if offset < 0 or length < 0 or offset + length > self.size:
            raise SanError("LBA_OUT_OF_RANGE",
                           f"volume {self.name}: {what} at offset {offset}, length {length} is outside "
                           f"the volume of {self.size} bytes")

    def _check_open(self) -> None:
        if self._data_fd < 0:
            raise SanError("INVALID_INPUT", f"volume {self.name}: store is closed")

    def _mismatch(self, g: int) -> SanError:
        return SanError("CHECKSUM_MISMATCH",
                        f"volume store {self.name}: granule {g} at byte offset {g * self.granule} "
                        f"(length {self._glen(g)}) fails its checksum")

    # ------------------------------------------------------------------ granule I/O
    def _read_granule(self, g: int) -> np.ndarray:
        """The verified content of written granule `g` (a new array)."""
        buf = np.empty(self._glen(g), dtype=np.uint8)
        _pread_into(self._data_fd, buf, g * self.granule)
        if tuple(checksums(buf, len(buf))[0].tolist()) != self._map[g]:
            raise self._mismatch(g)
        return buf

    # ------------------------------------------------------------------ public API
    def write(self, offset: int, data) -> None:
        """Store `data` (uint8 array, bytes or memoryview; 512-byte multiple) at `offset`."""
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
            recs = []
            for g in (g0, g1) if g1 != g0 else (g0,):
                if f0 <= g < f1:
                    continue
                recs.append(self._rmw(g, offset, arr))
            if f1 > f0:
                recs.append(self._write_whole(f0, f1, arr[f0 * G - offset: min(f1 * G, self.size) - offset]))
            self._journal(np.concatenate(recs) if len(recs) > 1 else recs[0])

    def _rmw(self, g: int, offset: int, arr: np.ndarray) -> np.ndarray:
        """Read-modify-write of granule `g`, partly covered by `arr` written at `offset`."""
        G = self.granule
        gstart = g * G
        buf = self._read_granule(g) if g in self._map else np.zeros(self._glen(g), dtype=np.uint8)
        lo = max(offset, gstart)
        hi = min(offset + len(arr), gstart + len(buf))
        buf[lo - gstart: hi - gstart] = arr[lo - offset: hi - offset]
        cs = checksums(buf, len(buf))
        _pwrite_all(self._data_fd, buf, gstart)
        return self._commit(g, cs)

    def _write_whole(self, f0: int, f1: int, piece: np.ndarray) -> np.ndarray:
        """Write granules [f0, f1) from `piece` (their exact bytes) directly from the buffer."""
        G = self.granule
        nfull = (len(piece)) // G
        if nfull * G == len(piece):
            cs = checksums(piece, G)
        else:  # the last granule of the volume is short
            cs = np.concatenate([checksums(piece[: nfull * G], G), checksums(piece[nfull * G:], len(piece) - nfull * G)])
        _pwrite_all(self._data_fd, piece, f0 * G)
        return self._commit(np.arange(f0, f1, dtype=np.uint64), cs)

    def _commit(self, gs, cs: np.ndarray) -> np.ndarray:
        gs = np.atleast_1d(np.asarray(gs, dtype=np.uint64))
        recs = np.empty(len(gs), dtype=_REC_DTYPE)
        recs["g"] = gs
        recs["s"] = cs[:, 0]
        recs["w"] = cs[:, 1]
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
        G = self.granule
        start = run[0] * G
        stop = run[-1] * G + self._glen(run[-1])
        piece = out[start - offset: stop - offset]
        _pread_into(self._data_fd, piece, start)
        nfull = len(piece) // G
        cs = checksums(piece[: nfull * G], G) if nfull else np.empty((0, 2), np.uint64)
        if nfull * G != len(piece):
            cs = np.concatenate([cs, checksums(piece[nfull * G:], len(piece) - nfull * G)])
        want = np.array([self._map[g] for g in run], dtype=np.uint64)
        bad = np.flatnonzero((cs != want).any(axis=1))
        if len(bad):
            raise self._mismatch(run[int(bad[0])])

    def discard(self, offset: int, length: int) -> int:
        """Un-write the granules lying wholly inside [offset, offset+length); returns how many.

        Their disk space is given back (hole punched, or zeros written where holes cannot be
        punched) and they read as zeros again.  Granules only partly inside are left as they are.
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
            if not gone:
                return 0
            for g in gone:
                if not _punch_hole(self._data_fd, g * G, self._glen(g)):
                    _pwrite_all(self._data_fd, np.zeros(self._glen(g), np.uint8), g * G)
                del self._map[g]
            recs = np.zeros(len(gone), dtype=_REC_DTYPE)
            recs["g"] = np.asarray(gone, dtype=np.uint64) | _DELETED
            self._journal(recs)
            return len(gone)

    def checksum(self, g: int) -> tuple[int, int] | None:
        """The stored checksum pair of granule `g`, or None if it was never written.

        Two stores with the same granule size hold the same bytes in `g` exactly when their
        checksums agree (up to the checksum's strength): copies compare these to move only
        the granules that differ (incremental resync), without reading any data.
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

        The map is not touched, so the next read of an affected granule raises
        CHECKSUM_MISMATCH.  Only bytes of written granules are flipped (unwritten regions hold
        no data and read as zeros whatever the file holds); returns how many bytes were flipped.
        Any offset and length inside the volume are allowed (no 512-byte alignment needed).
        """
        offset, nbytes = int(offset), int(nbytes)
        with self._lock:
            self._check_open()
            if offset < 0 or nbytes < 0 or offset + nbytes > self.size:
                raise SanError("LBA_OUT_OF_RANGE",
                               f"volume {self.name}: corrupt at offset {offset}, length {nbytes} is "
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
                f"granule={self.granule}, stored={self.bytes_stored})")
