"""The layout of a tape medium: which SIMH objects it holds, in what order, and checking them.

Every backup file the SAN's backup server writes to tape (a volume image, see
`san.elements.tape_library`) is one labelled file on its medium.  This module builds the
records of a new file (`head_records`, `write_data`, `tail_records`) and walks a whole image
(`walk`), checking each object as it is met; `san.tape.medium` decides when, and keeps the
image crash safe.

The image, object by object
---------------------------
    VOL1                 80-byte volume label
    UVL1 [UVL2 ...]      80-byte user volume labels: the exact media ID and library
    -- per backup file n = 1, 2, ... --
    HDR1                 80-byte first file header label
    HDR2                 80-byte second file header label
    UHL1 [UHL2 ...]      80-byte user header labels: the catalog row (format_row)
    tape mark
    data records         the volume image in blocks of exactly 65536 bytes, the last one
                         shorter (1..65536).  Never empty: an empty (0-byte) file is one
                         18-byte block of zeros (ANSI's minimum block length), which the
                         trailer's bytes=0 marks as filler; read() yields nothing for it.
                         (A zero-length SIMH record cannot exist -- its length word would be
                         a tape mark -- and an empty data section would put two tape marks
                         in a row, which every reader, mtdump included, takes as the end.)
    tape mark
    EOF1                 80 bytes: HDR1 again with "EOF1" and the block count
    EOF2                 80 bytes: HDR2 again with "EOF2"
    UTL1 [UTL2 ...]      80-byte user trailer labels: blocks, bytes, the data's digest
                         (xxh3_128; sha256 in files written before: see `san.tape.labels`)
    tape mark
    -- after the last file --
    tape mark            the second of two tape marks in a row: the logical end of tape
    FF FF FF FF          end of medium, always the last 4 bytes written

An image always ends with ``tape mark, tape mark, end of medium`` (the first of the two marks
closes the last file, or follows the volume labels when no file was ever completed), so a
truncated image is always detected.  Anything after the end-of-medium marker is ignored (it
is never written except by an append that crashed before its commit, see
`TapeMedium.append`).  mtdump stops at the two tape marks ("end of logical tape") and never
reaches the marker.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import xxhash

from ..errors import SanError
from . import simh
from .labels import (BLOCK_COUNT, LABEL, SEQUENCE, VOLUME_ID, Damage, block_count, check_media_id,
                     creation_day, format_row, hdr1, hdr2, parse_labels, trailer_labels, vol1,
                     volume_labels)
from .simh import TAPE_BLOCK, END_OF_MEDIUM, TAPE_MARK, Reader, Sink, record, record_size

FILLER = bytes(18)            # the data section of an empty file

# the digests a trailer may hold: its key -> (name in messages, hasher, hex digits)
DIGESTS = {"xxh3_128": ("XXH3-128", xxhash.xxh3_128, 32),
           "sha256": ("SHA-256", hashlib.sha256, 64)}
DIGEST = "xxh3_128"           # what new files get (`san.tape.labels` says why)
CLOSE = TAPE_MARK + TAPE_MARK + END_OF_MEDIUM     # after a file's trailer: the end of tape


@dataclass
class File:
    number: int
    row: dict
    blocks: int
    nbytes: int
    digest: str           # hex, of the algorithm below
    start: int            # byte offset of its HDR1 record
    data_start: int       # byte offset of its first data record
    data_obj: int         # object number of its first data record
    data_end: int         # byte offset of the tape mark closing the data
    algorithm: str = DIGEST   # a key of DIGESTS: the trailer's

    def hasher(self):
        """A new hasher of this file's digest algorithm."""
        return DIGESTS[self.algorithm][1]()

    @property
    def digest_name(self) -> str:
        return DIGESTS[self.algorithm][0]

    def public(self) -> dict:
        return {"file": self.number, "row": dict(self.row), "blocks": self.blocks, "bytes": self.nbytes}


@dataclass
class Scan:
    key: tuple
    size: int
    blank: bool
    files: list = field(default_factory=list)     # the intact files, by number
    end: int = 0          # byte offset of the logical-end tape mark (the append point)
    end_obj: int = 0      # its object number
    error: SanError | None = None   # the first damage met (a lost file's, or `fatal`)
    lost: dict = field(default_factory=dict)      # number -> error of a file spaced past
    fatal: SanError | None = None   # damage no file after it could be found past
    indices: dict = field(default_factory=dict)

    def file(self, number: int) -> File | None:
        """Intact file `number`, or None."""
        return next((f for f in self.files if f.number == number), None)


# --------------------------------------------------------------------------- writing a file

def head_records(row: dict, media_id: str, library: str, number: int, blank: bool,
                 created) -> list[bytes]:
    """The records before the data: [VOL1, UVLs,] HDR1, HDR2, UHLs (each as a record), a mark."""
    uhl = format_row(row)
    vol = check_media_id(media_id)
    day = creation_day(row, created)
    records = []
    if blank:
        records.append(vol1(vol, library))
        records += volume_labels(media_id, library)
    records += [hdr1("HDR", vol, number, day, 0), hdr2("HDR")] + uhl
    return [record(r) for r in records] + [TAPE_MARK]


def tail_records(row: dict, media_id: str, number: int, created, blocks: int, nbytes: int,
                 digest: str, algorithm: str = DIGEST) -> list[bytes]:
    """The records after the data's tape mark: EOF1, EOF2, UTLs (each as a record)."""
    day = creation_day(row, created)
    vol = check_media_id(media_id)
    return ([record(hdr1("EOF", vol, number, day, blocks)), record(hdr2("EOF"))]
            + [record(r) for r in trailer_labels(blocks, nbytes, digest, algorithm)])


def data_blocks(size: int) -> int:
    return max(1, -(-size // TAPE_BLOCK))


def data_image_bytes(size: int) -> int:
    if size == 0:
        return record_size(len(FILLER))
    full, rest = divmod(size, TAPE_BLOCK)
    return full * record_size(TAPE_BLOCK) + (record_size(rest) if rest else 0)


def file_bytes(row: dict, media_id: str, number: int, head: list[bytes], size: int,
               created=None) -> int:
    """Bytes from a new file's first record to the end-of-medium marker, for `size` bytes of
    data (`created` as `tail_records` takes it)."""
    tail = tail_records(row, media_id, number, created, data_blocks(size), size,
                        "0" * DIGESTS[DIGEST][2])
    return (sum(len(r) for r in head) + data_image_bytes(size) + len(TAPE_MARK)
            + sum(len(r) for r in tail) + len(CLOSE))


class DataWriter:
    """Writes a file's data records into a `Sink`: the chunks given to `write`, re-blocked to
    64 KiB, with the digest of the data (`algorithm`, a key of DIGESTS) for the trailer.

    A chunk is written as whole records straight from its buffer, one pwritev for all of them
    (`Sink.put_records`: no per-record Python, no copy); only the bytes that straddle two
    chunks (less than a block) are copied, into the record that joins them.  `write` returns
    once the chunk is written, so the caller may reuse its buffer.
    """

    def __init__(self, sink: Sink, algorithm: str = DIGEST):
        self.sink = sink
        self.algorithm = algorithm
        self.digest = DIGESTS[algorithm][1]()
        self.blocks = self.nbytes = 0
        self.carry = bytearray()

    def write(self, chunk) -> None:
        mv = _as_bytes(chunk)
        n = len(mv)
        if not n:
            return
        self.digest.update(mv)
        self.nbytes += n
        at = 0
        if self.carry:
            at = min(TAPE_BLOCK - len(self.carry), n)
            self.carry += mv[:at]
            if len(self.carry) == TAPE_BLOCK:
                self.sink.put_record(self.carry)
                self.blocks += 1
                self.carry = bytearray()
        whole = (n - at) // TAPE_BLOCK * TAPE_BLOCK
        if whole:
            self.blocks += self.sink.put_records(mv[at:at + whole])
        if at + whole < n:
            self.carry += mv[at + whole:]
        self.sink.flush()

    def finish(self) -> tuple[int, int, str]:
        """The last (short) record, or the filler of an empty file: (blocks, bytes, digest hex)."""
        if self.carry:
            self.sink.put_record(self.carry)
            self.blocks += 1
            self.carry = bytearray()
        if self.nbytes == 0:
            self.sink.put_record(FILLER)
            self.blocks += 1
        self.sink.flush()
        return self.blocks, self.nbytes, self.digest.hexdigest()


def write_data(sink: Sink, chunks: Iterable, algorithm: str = DIGEST) -> tuple[int, int, str]:
    """The data records of `chunks`, re-blocked to 64 KiB: (blocks, bytes, digest hex)."""
    writer = DataWriter(sink, algorithm)
    for chunk in chunks:
        writer.write(chunk)
    return writer.finish()


def _as_bytes(chunk) -> memoryview:
    if isinstance(chunk, np.ndarray):
        chunk = np.ascontiguousarray(chunk)
    mv = memoryview(chunk)
    return mv if mv.format == "B" and mv.ndim == 1 and mv.c_contiguous else mv.cast("B")


# --------------------------------------------------------------------------- walking an image

def describe(kind: str, n: int, data: bytes | None) -> str:
    """An object as an error message names it: a label by its name."""
    if kind == "record" and n == LABEL and data is not None and data[:4].isalnum():
        return f"an 80-byte record starting {data[:4].decode('ascii', 'replace')!r}"
    return simh.describe(kind, n)


def read_label(r: Reader, prefix: bytes, what: str) -> bytes:
    """The next object, which must be an 80-byte label starting `prefix` (`what` names it)."""
    kind, n, data = r.next(payload=True)
    if kind != "record" or n != LABEL or not data.startswith(prefix):
        raise r.fail(f"expected {what}, found {describe(kind, n, data)}")
    return data


def _label_run(r: Reader, prefix: bytes) -> tuple[list[bytes], tuple[int, int], tuple]:
    """The labels PREFIXk from here on, where they began, and the object after them:
    (records, (obj, pos), ((obj, pos), kind, n, data))."""
    records, at = [], (r.obj + 1, r.pos)
    while True:
        obj_pos = (r.obj + 1, r.pos)
        kind, n, data = r.next(payload=True)
        if kind == "record" and n == LABEL and data.startswith(prefix):
            records.append(data)
            continue
        return records, at, (obj_pos, kind, n, data)


def _user_labels(r: Reader, prefix: bytes, number: int) -> tuple[list[bytes], tuple[int, int]]:
    """The user labels (UHLn / UTLn) up to the next tape mark, and where they began."""
    records, at, (_, kind, n, data) = _label_run(r, prefix)
    if kind != "mark":
        raise r.fail(f"expected {prefix.decode()} labels then a tape mark in file {number}, "
                     f"found {describe(kind, n, data)}")
    return records, at


def _fields(r: Reader, prefix: str, records: list[bytes], at: tuple[int, int],
            message: Callable[[Exception], str], required: tuple = ()) -> dict:
    """The fields of user labels, `required` ones present; else `message` fails where they began."""
    try:
        fields = parse_labels(prefix, records)
        missing = [key for key in required if key not in fields]
        if missing:
            raise KeyError(missing[0])
    except (Damage, KeyError) as exc:
        raise r.fail(message(exc), at[1], at[0]) from None
    return fields


def _label_group(r: Reader, kind: str, number: int, first: bytes, first_at: tuple[int, int],
                 prefix: bytes) -> tuple[list[bytes], tuple[int, int]]:
    """After HDR1 / EOF1 (`first`, read at `first_at`): its file sequence number checked, then
    HDR2 / EOF2, then the user labels up to a tape mark and where they began."""
    try:
        seq = int(first[SEQUENCE])
    except ValueError:
        seq = None
    if seq != number:
        raise r.fail(f"{kind}1 gives file sequence number {first[SEQUENCE]!r}, expected "
                     f"{number:04d}", first_at[1], first_at[0])
    read_label(r, f"{kind}2".encode("ascii"), f"{kind}2 of file {number}")
    return _user_labels(r, prefix, number)


def walk(fd: int, key: tuple, media_id: str, error: Callable[[int, int, str], SanError]) -> Scan:
    """The files of the image open at `fd` (of stat key `key`), checked object by object; a
    damage gives the files before it and its error (`error(obj, pos, message)`) in `Scan.error`."""
    scan = Scan(key, key[1], False)
    r = Reader(fd, key[1], error)
    try:
        label = read_label(r, b"VOL1", "the VOL1 volume label")
        vol = media_id.upper()
        if label[VOLUME_ID].decode("ascii", "replace").rstrip() != vol:
            raise r.fail(f"this image holds volume {label[VOLUME_ID].decode('ascii', 'replace').rstrip()!r}, "
                         f"not {vol!r}", 0, 1)
        uvl, uvl_at, (obj_pos, kind, n, data) = _label_run(r, b"UVL")
        if uvl:
            fields = _fields(r, "UVL", uvl, uvl_at, str)
            if fields.get("media_id") != media_id:
                raise r.fail(f"this image holds medium {fields.get('media_id')!r}, not "
                             f"{media_id!r}", uvl_at[1], uvl_at[0])
        number = 0
        while True:
            # obj_pos / kind / n / data: the object after the volume labels or a file's trailer
            if kind == "mark":
                scan.end_obj, scan.end = obj_pos
                r.obj, r.pos = obj_pos[0], obj_pos[1] + 4
                kind, n, data = r.next(payload=True)
                if kind != "end":
                    raise r.fail(f"expected the end-of-medium marker after the logical end of "
                                 f"tape, found {describe(kind, n, data)}")
                return scan
            if not (kind == "record" and n == LABEL):
                raise r.fail(f"expected HDR1 or a tape mark (logical end of tape), found "
                             f"{describe(kind, n, data)}", obj_pos[1], obj_pos[0])
            number += 1
            try:
                if not data.startswith(b"HDR1"):
                    raise r.fail(f"expected HDR1 of file {number}, found "
                                 f"{describe(kind, n, data)}", obj_pos[1], obj_pos[0])
                scan.files.append(_walk_file(r, number, obj_pos, data))
            except SanError as exc:
                if not _space_past(r, obj_pos, number):
                    raise
                scan.lost[number] = exc         # its labels are damaged, not the framing
                scan.error = scan.error or exc
            obj_pos = (r.obj + 1, r.pos)
            kind, n, data = r.next(payload=True)
    except SanError as exc:
        scan.error = scan.error or exc
        scan.fatal = exc
        return scan


def _space_past(r: Reader, hdr_at: tuple[int, int], number: int) -> bool:
    """Space past file `number` (HDR1 at `hdr_at`), whose labels are damaged, as a drive
    spaces forward a file: three tape marks on, the reader just after the third.  True only
    if the framing leads there (length words intact) and what follows is HDR1 of file
    ``number + 1`` or the logical end of tape (a tape mark); the reader then stands before it.
    Anything else (a damaged length word, a stray mark) and no file past this one is trusted."""
    r.obj, r.pos = hdr_at[0] - 1, hdr_at[1]
    try:
        for _ in range(3):
            while True:
                kind, _, _ = r.next(payload=False)
                if kind == "mark":
                    break
                if kind != "record":
                    return False
        at = (r.obj, r.pos)
        kind, n, data = r.next(payload=True)
    except SanError:
        return False
    r.obj, r.pos = at
    return kind == "mark" or (kind == "record" and n == LABEL and data.startswith(b"HDR1")
                              and data[SEQUENCE] == f"{number + 1:04d}".encode())


def _walk_file(r: Reader, number: int, hdr_at: tuple, hdr: bytes) -> File:
    uhl, uhl_at = _label_group(r, "HDR", number, hdr, hdr_at, b"UHL")
    row = _fields(r, "UHL", uhl, uhl_at, lambda exc: f"file {number}: {exc}")
    data_start, data_obj = r.pos, r.obj + 1
    blocks = total = 0
    while True:
        kind, n, _ = r.next(payload=False)
        if kind == "record":
            blocks += 1
            total += n
            continue
        if kind != "mark":
            raise r.fail(f"expected data blocks then a tape mark in file {number}, found "
                         f"{describe(kind, n, None)}")
        break
    data_end = r.pos - 4
    if blocks == 0:
        raise r.fail(f"file {number} has an empty data section", data_end, r.obj)
    eof_at = (r.obj + 1, r.pos)
    eof1 = read_label(r, b"EOF1", f"EOF1 of file {number}")
    utl, utl_at = _label_group(r, "EOF", number, eof1, eof_at, b"UTL")
    trailer = _fields(r, "UTL", utl, utl_at, lambda exc: f"file {number}: trailer labels damaged ({exc})",
                      ("bytes", "blocks"))
    algorithm = next((a for a in DIGESTS if isinstance(trailer.get(a), str)), None)
    if algorithm is None:
        raise r.fail(f"file {number}: trailer labels damaged (no digest: expected one of "
                     f"{', '.join(DIGESTS)})", utl_at[1], utl_at[0])
    nbytes, tblocks, digest = trailer["bytes"], trailer["blocks"], trailer[algorithm]
    if eof1[BLOCK_COUNT] != block_count(blocks).encode() or tblocks != blocks:
        raise r.fail(f"file {number} has {blocks} data blocks, its trailer says "
                     f"{eof1[BLOCK_COUNT].decode('ascii', 'replace')} / {tblocks}", eof_at[1], eof_at[0])
    expected = len(FILLER) if nbytes == 0 else nbytes
    if total != expected or (nbytes == 0 and blocks != 1):
        raise r.fail(f"file {number} holds {total} bytes of data blocks, its trailer says "
                     f"{nbytes}", utl_at[1], utl_at[0])
    return File(number, row, blocks, nbytes, digest, hdr_at[1], data_start, data_obj, data_end,
                algorithm)
