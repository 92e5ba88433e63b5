"""Append-only journals of fixed-size records: how an array's metadata survives a crash.

Every piece of an array's state that changes often is a journal: each volume's map of
written granules and their checksums (``vol-N.map``, 24-byte records, `san.storage`) and the
snapshot engine's history (``snapshots.log``, 64-byte records with a CRC-32,
`san.snapshots`).  `Journal` is the one implementation both use; what a record *means* is
its owner's business, the journal only keeps the records.

Layout: one header record, then records, all `record_size` bytes.  The header says what the
file is (a magic, the parameters its records depend on); the owner checks it.

Appending: `Journal.append` writes its records with one ``os.write`` on an ``O_APPEND``
descriptor (repeated only if the kernel writes short), before the change they describe is
visible to anyone: once it returns, a second process opening the journal sees them.  There
is no ``fsync`` on that path: a crash of the process loses nothing appended, a crash of the
machine may lose the records since the owner's last `Journal.sync` (a barrier).  A new
journal's header is written with `san.fileio.write_replace` (fsync-ed, renamed into place),
so no record can be durable in a file whose header is not.

Replay (`Journal.replay`), on open:

- a leftover ``NAME.tmp`` (a rewrite that died before its ``os.replace``) is deleted: the
  journal itself is still whole;
- a file shorter than one record (new, or torn while its header was being written) is
  created afresh with the owner's header;
- the owner checks the header (``check_header`` raises when the file is not its journal);
- a torn tail (a crash in the middle of an append: less than one record) is cut off;
- with a ``valid`` callback, each record is checked (e.g. its CRC-32, see `seal` and
  `sealed`): a bad *last* record is a torn append and is cut off like a partial one; a bad
  record before the last is damage the journal cannot explain, and opening fails
  (``INVALID_INPUT`` naming the record and its byte offset), changing nothing.

Rewriting (`Journal.rewrite`, the owner's compaction or format conversion): the new header
and records go to ``NAME.tmp``, are fsync-ed and moved over the journal with ``os.replace``,
so a crash leaves the old journal or the new one, never a mix.
"""
from __future__ import annotations

import os
import pathlib
import struct
import threading
import zlib
from typing import Callable

from san.errors import SanError
from san.fileio import FdOwner, close_fd, tmp_path_of, write_replace

__all__ = ["Journal", "seal", "sealed"]

_CRC = struct.Struct("<Q")


def seal(body: bytes) -> bytes:
    """`body` followed by its CRC-32 as a little-endian u64: a record `sealed` accepts.

    >>> len(seal(bytes(56))), sealed(seal(bytes(56))), sealed(bytes(64))
    (64, True, False)
    """
    return body + _CRC.pack(zlib.crc32(body))


def sealed(record: bytes) -> bool:
    """Does `record` end with the CRC-32 (u64) of the bytes before it?"""
    cut = len(record) - _CRC.size
    return zlib.crc32(record[:cut]) == _CRC.unpack_from(record, cut)[0]


class Journal(FdOwner):
    """The append-only file `path` of `record_size`-byte records after a header record.

    Open it with `replay`, then `append` and `rewrite`; `records` counts the records after
    the header.  Not thread-safe: its owner holds its own lock around every call, except
    `sync`, which any thread may call at any time (a barrier another file's owner needs).
    """

    def __init__(self, path: pathlib.Path, record_size: int):
        if record_size <= 0:
            raise ValueError(f"journal record size {record_size} must be positive")
        self.path = pathlib.Path(path)
        self.record_size = record_size
        self.records = 0
        self._fd = -1
        self._fd_lock = threading.Lock()     # `sync` against the descriptor being replaced

    def replay(self, new_header: bytes,
               check_header: Callable[[bytes], None] | None = None,
               valid: Callable[[bytes], bool] | None = None) -> tuple[bytes, memoryview]:
        """Open the journal: (its header, the bytes of its good records, whole records only).

        `new_header` is written when there is no journal yet (or only a torn piece of one);
        `check_header(header)` raises if an existing header is not acceptable (nothing is cut
        then); `valid(record)` tells a good record from a garbled one (see the module
        docstring).  Afterwards the journal is open for `append`.
        """
        R = self.record_size
        if len(new_header) != R:
            raise ValueError(f"journal header of {len(new_header)} bytes, records of {R}")
        self.close()
        tmp = tmp_path_of(self.path)
        if tmp.exists():        # a rewrite that died before its os.replace
            tmp.unlink()
        raw = self.path.read_bytes() if self.path.exists() else b""
        if len(raw) < R:        # new (or torn while being created): the header is made
            write_replace(self.path, new_header)    # durable once, so records never outlive it
            os.chmod(self.path, 0o600)
            raw = bytes(new_header)
        header = raw[:R]
        if check_header is not None:
            check_header(header)
        good = (len(raw) - R) // R
        if valid is not None:
            for i in range(good):
                at = (i + 1) * R
                if not valid(raw[at: at + R]):
                    if i != good - 1:
                        raise SanError("INVALID_INPUT", f"{self.path}: record {i} (byte {at}) "
                                                        f"is damaged and is not the last one")
                    good = i    # a garbled last record: as torn
                    break
        end = (good + 1) * R
        if len(raw) != end:     # cut off a torn or garbled tail
            os.truncate(self.path, end)
        self.records = good
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        return header, memoryview(raw)[R:end]

    def append(self, data) -> None:
        """Append whole records (bytes, or a buffer such as a numpy record array)."""
        mv = memoryview(data).cast("B")
        if len(mv) % self.record_size:
            raise ValueError(f"{len(mv)} bytes are not whole {self.record_size}-byte records")
        if not len(mv):
            return
        n = len(mv) // self.record_size
        while len(mv):
            mv = mv[os.write(self._fd, mv):]
        self.records += n

    def sync(self) -> None:
        """fsync the records appended so far (a barrier: they survive a power loss)."""
        with self._fd_lock:
            if self._fd >= 0:
                os.fsync(self._fd)

    def rewrite(self, header: bytes, body=b"") -> None:
        """Replace the whole journal by `header` and the records `body`, atomically."""
        data = bytes(header) + bytes(memoryview(body).cast("B"))
        if len(header) != self.record_size or len(data) % self.record_size:
            raise ValueError(f"a journal rewrite must be whole {self.record_size}-byte records")
        write_replace(self.path, data)
        with self._fd_lock:
            reopen = self._fd >= 0
            self._drop_fd()
            if reopen:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self.records = len(data) // self.record_size - 1

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        with self._fd_lock:
            self._drop_fd()

    def _drop_fd(self) -> None:
        """Close the descriptor (the caller holds `_fd_lock`)."""
        fd, self._fd = self._fd, -1
        close_fd(fd)

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r}, record_size={self.record_size}, records={self.records})"
