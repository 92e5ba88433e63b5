"""SIMH tape images: the record format every tape medium of the SAN's tape libraries is kept in.

A medium is one SIMH image file, so Debian's ``mtdump`` (package ``simh``) reads it, and so
does any SIMH simulator's tape drive.  This module knows only SIMH objects -- records, tape
marks, the end-of-medium marker -- read one by one with pread (`Reader`) and written in
batches with pwritev (`Sink`); which objects a medium holds, and in what order, is
`san.tape.layout`'s concern.

SIMH objects (all integers 4 bytes, little-endian)
--------------------------------------------------
    data record   n (1 <= n <= 65536), then n data bytes, then one 0x00 pad byte if n is
                  odd (the SIMH rule: the data occupies (n + 1) & ~1 bytes), then n again.
                  A record of n bytes thus takes 8 + n + (n & 1) bytes of the image.
    tape mark     00 00 00 00   (there is no such thing as a zero-length record)
    end of medium FF FF FF FF

Where this package says "record N" in an error, N counts every object from the beginning of
the tape, tape marks included, starting at 1 -- the numbering of mtdump's "Obj N".  Every
error also gives the byte offset of the object's first length word.
"""
from __future__ import annotations

import os
import struct
from typing import Callable

from ..errors import SanError

TAPE_BLOCK = 65536                 # the largest data block
TAPE_MARK = b"\0\0\0\0"
END_OF_MEDIUM = b"\xff\xff\xff\xff"
U32 = struct.Struct("<I")
_IOV_BATCH = 1000             # below Linux's IOV_MAX (1024)


def record_size(n: int) -> int:
    """Bytes an n-byte data record takes in a SIMH image."""
    return 8 + n + (n & 1)


def record_buffers(payload) -> list:
    """The pieces of the record holding `payload`: length word, data, pad byte if odd, length word."""
    n = len(payload)
    head = U32.pack(n)
    return [head, payload, b"\0", head] if n & 1 else [head, payload, head]


def record(payload: bytes) -> bytes:
    """The record holding `payload`, as bytes."""
    return b"".join(record_buffers(payload))


def describe(kind: str, n: int) -> str:
    """An object as an error message names it."""
    if kind == "mark":
        return "a tape mark"
    if kind == "end":
        return "the end-of-medium marker"
    return f"a {n}-byte record"


class Reader:
    """Walks the objects of an image with pread; every object is checked as it is read.

    `error(obj, pos, message)` makes the error of a damaged object (the medium's MEDIA_ERROR).
    """

    def __init__(self, fd: int, size: int, error: Callable[[int, int, str], SanError]):
        self.fd, self.size, self.error = fd, size, error
        self.pos, self.obj = 0, 0

    def fail(self, message: str, pos: int | None = None, obj: int | None = None) -> SanError:
        return self.error(obj if obj is not None else self.obj,
                          pos if pos is not None else self.pos, message)

    def word(self, at: int) -> int:
        raw = os.pread(self.fd, 4, at)
        if len(raw) < 4:
            raise self.fail(f"the image ends inside a length word ({self.size} bytes)")
        return U32.unpack(raw)[0]

    def next(self, payload: bool):
        """Read the next object: ('mark', 0, None) | ('end', 0, None) | ('record', n, bytes)."""
        self.obj += 1
        start = self.pos
        if start + 4 > self.size:
            raise self.fail(f"the image ends here ({self.size} bytes): no tape mark or "
                            "end-of-medium marker closes it (truncated?)")
        n = self.word(start)
        if n == 0:
            self.pos = start + 4
            return "mark", 0, None
        if n == 0xFFFFFFFF:
            self.pos = start + 4
            return "end", 0, None
        if n > TAPE_BLOCK:
            raise self.fail(f"length word {n:#010x} is not a record of 1 to {TAPE_BLOCK} bytes "
                            "(damaged length word)")
        stop = start + record_size(n)
        if stop > self.size:
            raise self.fail(f"a {n}-byte record runs past the end of the image at byte "
                            f"{self.size} (truncated?)")
        data = None
        if payload:
            data = os.pread(self.fd, n, start + 4)
        after = self.word(stop - 4)
        if after != n:
            raise self.fail(f"length words differ: {n} before the record, {after} after it "
                            "(damaged length word)")
        self.pos = stop
        return "record", n, data


class Sink:
    """Gathers buffers and writes them with pwritev at `pos`, never past `capacity`.

    `full(message)` makes the error of a write that would pass it (the medium's TAPE_FULL).
    Buffers are not copied: keep them unchanged until `flush`, which writes them in batches
    of at most `_IOV_BATCH` (Linux refuses more than IOV_MAX = 1024 in one call).
    """

    def __init__(self, fd: int, pos: int, capacity: int, full: Callable[[str], SanError]):
        self.fd, self.pos, self.capacity, self.full = fd, pos, capacity, full
        self.buffers: list = []
        self.pending = 0

    @property
    def end(self) -> int:
        """Where the next byte goes."""
        return self.pos + self.pending

    def put(self, data: bytes) -> None:
        self.add([data], len(data))

    def put_record(self, payload) -> None:
        """A record holding `payload`, which is not copied: keep it unchanged until `flush`."""
        self.add(record_buffers(payload), record_size(len(payload)))

    def put_records(self, data: memoryview) -> int:
        """`data` (bytes, one dimension) as records of `TAPE_BLOCK` bytes, the last one shorter;
        nothing is copied (each record is its two length words around a slice of `data`).
        Returns the number of records."""
        n = len(data)
        full, rest = divmod(n, TAPE_BLOCK)
        self._check(full * record_size(TAPE_BLOCK) + (record_size(rest) if rest else 0))
        head = _FULL
        buffers = self.buffers
        for at in range(0, full * TAPE_BLOCK, TAPE_BLOCK):
            buffers += (head, data[at:at + TAPE_BLOCK], head)
        self.pending += full * record_size(TAPE_BLOCK)
        if rest:
            self.add(record_buffers(data[full * TAPE_BLOCK:]), record_size(rest))
        return full + (1 if rest else 0)

    def _check(self, nbytes: int) -> None:
        if self.pos + self.pending + nbytes > self.capacity:
            raise self.full(f"the backup does not fit: writing it reached byte "
                            f"{self.pos + self.pending + nbytes} of the image")

    def add(self, buffers: list, nbytes: int) -> None:
        self._check(nbytes)
        self.buffers += buffers
        self.pending += nbytes
        if len(self.buffers) >= _IOV_BATCH:
            self.flush()

    def flush(self) -> None:
        buffers, pos = self.buffers, self.pos
        for first in range(0, len(buffers), _IOV_BATCH):
            pos = _pwritev_all(self.fd, buffers[first:first + _IOV_BATCH], pos)
        self.pos = pos
        self.buffers, self.pending = [], 0


_FULL = U32.pack(TAPE_BLOCK)       # the length word of a full record


def _pwritev_all(fd: int, buffers: list, pos: int) -> int:
    """Write `buffers` at `pos` whatever short writes happen; returns the position after them."""
    left = sum(memoryview(b).nbytes for b in buffers)
    while left:
        wrote = os.pwritev(fd, buffers, pos)
        pos += wrote
        left -= wrote
        if left:            # a short write: drop what was written, go on with the rest
            views, skip = [], wrote
            for b in buffers:
                b = memoryview(b).cast("B") if not isinstance(b, memoryview) else b
                if skip >= len(b):
                    skip -= len(b)
                    continue
                views.append(b[skip:])
                skip = 0
            buffers = views
    return pos
