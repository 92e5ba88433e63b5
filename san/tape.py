"""Tape media as real SIMH tape images with ANSI / ECMA-13 labels, one image file per medium.

A medium is ``STATE_DIR/tapes/LIBRARY/MEDIA.tap``.  Debian's ``mtdump`` (package ``simh``)
reads it; so does any SIMH simulator's tape drive.  A medium never written has no image, or
an empty one: it is *blank* (``files()`` is ``[]``; catalog rebuild skips it).

SIMH objects (all integers 4 bytes, little-endian)
--------------------------------------------------
    data record   n (1 <= n <= 65536), then n data bytes, then one 0x00 pad byte if n is
                  odd (the SIMH rule: the data occupies (n + 1) & ~1 bytes), then n again.
                  A record of n bytes thus takes 8 + n + (n & 1) bytes of the image.
    tape mark     00 00 00 00   (there is no such thing as a zero-length record)
    end of medium FF FF FF FF

Where this module says "record N" in an error, N counts every object from the beginning of
the tape, tape marks included, starting at 1 -- the numbering of mtdump's "Obj N".  Every
error also gives the byte offset of the object's first length word.

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
    UTL1 [UTL2 ...]      80-byte user trailer labels: blocks, bytes, sha256 of the data
    tape mark
    -- after the last file --
    tape mark            the second of two tape marks in a row: the logical end of tape
    FF FF FF FF          end of medium, always the last 4 bytes written

An image always ends with ``tape mark, tape mark, end of medium`` (the first of the two marks
closes the last file, or follows the volume labels when no file was ever completed), so a
truncated image is always detected.  Anything after the end-of-medium marker is ignored (it
is never written except by an append that crashed before its commit, see `append`).
mtdump stops at the two tape marks ("end of logical tape") and never reaches the marker.

Label records (80 ASCII characters; CP = character position, 1-based, as in ECMA-13 4th ed.)
------------------------------------------------------------------------------------------
    VOL1  CP 1-4 "VOL1" | 5-10 volume identifier = the media ID in upper case, space padded |
          11 accessibility " " | 12-24 spaces | 25-37 implementation identifier "SAN" |
          38-51 owner identifier = the library name in upper case (a-characters only) |
          52-79 spaces | 80 label standard version "4"
    HDR1  CP 1-4 "HDR1" | 5-21 file identifier "SAN.BACKUP.nnnn" | 22-27 file set identifier
          = the volume identifier | 28-31 file section number "0001" | 32-35 file sequence
          number = the file number n, 4 digits | 36-39 generation number "0001" | 40-41
          generation version "00" | 42-47 creation date "cyyddd" (c = " " for 19yy, "0" for
          20yy, "1" for 21yy; ddd = day of the year) | 48-53 expiration date " 00000" (none)
          | 54 accessibility " " | 55-60 block count "000000" | 61-73 implementation
          identifier "SAN" | 74-80 spaces
    HDR2  CP 1-4 "HDR2" | 5 record format "U" (undefined: blocks of varying length) | 6-10
          block length "65536" | 11-15 record length "65536" (the largest) | 16-50 spaces |
          51-52 buffer offset length "00" | 53-80 spaces
    EOF1  as HDR1, with "EOF1" and CP 55-60 the number of data blocks modulo 1 000 000 (the
          exact count is in the user trailer labels)
    EOF2  as HDR2, with "EOF2"
    UVLk, UHLk, UTLk: CP 1-3 "UVL" / "UHL" / "UTL", CP 4 the label number k, one character of
          "123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ" (UVL: 1-9 only), CP 5-80 76 bytes of a text.

The creation date is the date of the row's ``timestamp`` (when the backup was ordered, on the
simulated clock), so the same backup gives the same image.  The file sequence number limits a
medium to 9999 files (the 10000th append is TAPE_FULL).  A media ID must be 1 to 6 characters
(the VOL1 volume identifier holds 6; longer IDs are refused with INVALID_INPUT when the medium
is first written, never cut); VOL1 holds it in upper case, as ECMA-13 allows only upper-case
letters there, and UVL1 holds it exactly.

The texts of user labels
------------------------
UTF-8 text, one ``key=value`` line per field, each line ending with ``\\n``; ``key`` is
``[a-z_][a-z0-9_]*`` and ``value`` is JSON (so strings are quoted, non-ASCII characters stay
UTF-8, control characters are escaped, and null / numbers keep their type: ``file=null``,
``file=3``, ``media_id="3"``).  A last line ``crc32=XXXXXXXX`` (8 lower-case hex digits) is the
CRC-32 of all the bytes before it, so a flipped label byte is MEDIA_ERROR, never a wrong row.
The text is cut into 76-byte pieces (a UTF-8 character may straddle two labels: the pieces
are joined before decoding) and the last piece is padded with spaces.  A catalog row (host,
mount_point, type, device_id, media_id, file, label, timestamp) with a 128-byte label and a
256-byte mount point takes about 8 UHL labels; at most 35 fit (2660 bytes of text).

    UVL text: media_id, library
    UHL text: the catalog row exactly as given to append (``file`` included, null or not)
    UTL text: blocks (exact data block count), bytes (the data size), sha256 (of the data)

Reading checks everything: length words before and after each record agree, every label is
where it must be and well formed, the file numbers run 1, 2, ..., block and byte counts match
the trailer, and `read` checks the data's SHA-256 before it yields the last block.
`read_range` checks the digest when it builds its index of a file (first use, or after the
image changed), and the length words of every record it touches.  Any failure is MEDIA_ERROR
naming the medium, the record number and the byte offset.  Files before a damaged spot stay
readable with `read` (and are listed by ``files(partial=True)``); ``files()`` and `append`
refuse a damaged medium; `damage()` returns the error, or None.

Appending (crash safety): a new file starts where the logical end of tape was (the position of
the second tape mark).  Everything but the new HDR1 record is written beyond the old
``tape mark, end of medium`` and synced; then the HDR1 record is written over them (the
commit) and synced again.  Until the commit, readers see the old tape.  On any failure --
TAPE_FULL, a chunk source that raises -- the image is truncated back and the old ``tape mark,
end of medium`` restored: exactly the image as it was.  A blank medium is written to
``MEDIA.tap.partial`` and renamed into place.  The image never grows beyond `capacity`.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .errors import SanError

BLOCK = 65536                 # the largest data block
LABEL = 80                    # every label record
FILLER = bytes(18)            # the data section of an empty file
MAX_FILES = 9999              # 4-digit file sequence number
TAPE_MARK = b"\0\0\0\0"
END_OF_MEDIUM = b"\xff\xff\xff\xff"
LABEL_NUMBERS = "123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
IMPLEMENTATION = "SAN"
A_CHARACTERS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 !\"%&'()*+,-./:;<=>?_")
KEY_RE = re.compile(r"[a-z_][a-z0-9_]*\Z")
TIMESTAMP_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T")
_U32 = struct.Struct("<I")
_IOV_BATCH = 1000             # below Linux's IOV_MAX (1024)


# --------------------------------------------------------------------------- small helpers

def record_size(n: int) -> int:
    """Bytes an n-byte data record takes in a SIMH image."""
    return 8 + n + (n & 1)


def _record(payload: bytes) -> bytes:
    n = len(payload)
    return _U32.pack(n) + payload + (b"\0" if n & 1 else b"") + _U32.pack(n)


def check_media_id(media_id: str) -> str:
    """The VOL1 volume identifier of a media ID; INVALID_INPUT if VOL1 cannot hold it."""
    if not isinstance(media_id, str) or not 1 <= len(media_id) <= 6:
        raise SanError("INVALID_INPUT", f"media ID {media_id!r} does not fit a tape's VOL1 label "
                                        "(expected 1 to 6 characters)")
    vol = media_id.upper()
    bad = sorted(set(vol) - A_CHARACTERS)
    if bad:
        raise SanError("INVALID_INPUT", f"media ID {media_id!r} has characters a VOL1 label cannot "
                                        f"hold ({''.join(bad)!r}; expected letters, digits, . _ -)")
    return vol


def _a_chars(text: str, size: int) -> str:
    return "".join(c for c in text.upper() if c in A_CHARACTERS)[:size].ljust(size)


def _ansi_date(day: dt.date) -> str:
    century = " " if day.year < 2000 else str((day.year - 2000) // 100)
    return f"{century}{day.year % 100:02d}{day.timetuple().tm_yday:03d}"


def _creation_day(row: dict, created) -> dt.date:
    if isinstance(created, dt.datetime):
        return created.astimezone(dt.timezone.utc).date() if created.tzinfo else created.date()
    if isinstance(created, dt.date):
        return created
    match = TIMESTAMP_RE.match(str(created if created is not None else row.get("timestamp", "")))
    if match:
        try:
            return dt.date(*(int(g) for g in match.groups()))
        except ValueError:
            pass
    return dt.datetime.now(dt.timezone.utc).date()


def _vol1(vol: str, library: str) -> bytes:
    text = ("VOL1" + vol.ljust(6) + " " + " " * 13 + IMPLEMENTATION.ljust(13)
            + _a_chars(library, 14) + " " * 28 + "4")
    assert len(text) == LABEL
    return text.encode("ascii")


def _hdr1(kind: str, vol: str, number: int, day: dt.date, blocks: int) -> bytes:
    text = (kind + "1" + f"SAN.BACKUP.{number:04d}".ljust(17) + vol.ljust(6) + "0001"
            + f"{number:04d}" + "0001" + "00" + _ansi_date(day) + " 00000" + " "
            + f"{blocks % 1_000_000:06d}" + IMPLEMENTATION.ljust(13) + " " * 7)
    assert len(text) == LABEL
    return text.encode("ascii")


def _hdr2(kind: str) -> bytes:
    text = kind + "2" + "U" + f"{BLOCK:05d}" + f"{BLOCK:05d}" + " " * 35 + "00" + " " * 28
    assert len(text) == LABEL
    return text.encode("ascii")


class _Damage(Exception):
    """A label text that does not parse; the scanner adds where it is."""


# --------------------------------------------------------------------------- label texts

def format_labels(prefix: str, fields: dict, limit: int = len(LABEL_NUMBERS)) -> list[bytes]:
    """`fields` as 80-byte user labels PREFIXk (UHL, UTL, UVL): the text the docstring shows."""
    lines = []
    for key, value in fields.items():
        if not isinstance(key, str) or not KEY_RE.match(key) or key == "crc32":
            raise SanError("INVALID_INPUT", f"label field name {key!r} is not [a-z_][a-z0-9_]*")
        try:
            lines.append(f"{key}={json.dumps(value, ensure_ascii=False, allow_nan=False)}\n")
        except (TypeError, ValueError) as exc:
            raise SanError("INVALID_INPUT", f"label field {key} = {value!r} cannot be written "
                                            f"to a tape label ({exc})") from None
    try:
        body = "".join(lines).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SanError("INVALID_INPUT", f"label fields are not valid text ({exc})") from None
    text = body + f"crc32={zlib.crc32(body):08x}\n".encode("ascii")
    count = -(-len(text) // (LABEL - 4))
    if count > limit:
        raise SanError("INVALID_INPUT", f"the fields take {len(text)} bytes of {prefix} labels, "
                                        f"more than the {limit * (LABEL - 4)} that {limit} labels hold")
    text = text.ljust(count * (LABEL - 4), b" ")
    return [prefix.encode("ascii") + LABEL_NUMBERS[i].encode("ascii") + text[i * 76:(i + 1) * 76]
            for i in range(count)]


def parse_labels(prefix: str, records: list[bytes]) -> dict:
    """The fields of user labels made by `format_labels`; raises _Damage."""
    if not records:
        raise _Damage(f"no {prefix} labels")
    for i, rec in enumerate(records):
        expected = prefix.encode("ascii") + LABEL_NUMBERS[i].encode("ascii")
        if len(rec) != LABEL or rec[:4] != expected:
            raise _Damage(f"label {i + 1} of the {prefix} labels is {bytes(rec[:4])!r}, "
                          f"expected {expected!r}")
    text = b"".join(bytes(rec[4:]) for rec in records).rstrip(b" ")
    at = text.rfind(b"crc32=", 0)
    if not text.endswith(b"\n") or at < 0 or (at > 0 and text[at - 1:at] != b"\n"):
        raise _Damage(f"the {prefix} text has no crc32 line at its end")
    body, crc = text[:at], text[at + 6:-1]
    if crc != f"{zlib.crc32(body):08x}".encode("ascii"):
        raise _Damage(f"the {prefix} text fails its CRC-32 (recorded {crc[:8]!r}, "
                      f"computed {zlib.crc32(body):08x})")
    fields = {}
    try:
        for line in body.decode("utf-8").split("\n")[:-1]:
            key, sep, value = line.partition("=")
            if not sep or not KEY_RE.match(key):
                raise _Damage(f"the {prefix} text has a bad line {line!r}")
            fields[key] = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Damage(f"the {prefix} text does not parse ({exc})") from None
    return fields


def format_row(row: dict) -> list[bytes]:
    """A catalog row as 80-byte user header labels UHL1, UHL2, ... (exact round trip)."""
    if not isinstance(row, dict):
        raise SanError("INVALID_INPUT", f"a catalog row must be a mapping (got {row!r})")
    return format_labels("UHL", row)


def parse_row(records: list[bytes]) -> dict:
    """The catalog row held by UHL records (format_row); MEDIA_ERROR if they are damaged."""
    try:
        return parse_labels("UHL", [bytes(r) for r in records])
    except _Damage as exc:
        raise SanError("MEDIA_ERROR", f"user header labels damaged: {exc}") from None


def _trailer_labels(blocks: int, nbytes: int, sha256: str) -> list[bytes]:
    return format_labels("UTL", {"blocks": blocks, "bytes": nbytes, "sha256": sha256})


def _data_blocks(size: int) -> int:
    return max(1, -(-size // BLOCK))


def _data_image_bytes(size: int) -> int:
    if size == 0:
        return record_size(len(FILLER))
    full, rest = divmod(size, BLOCK)
    return full * record_size(BLOCK) + (record_size(rest) if rest else 0)


# --------------------------------------------------------------------------- the scan

@dataclass
class _File:
    number: int
    row: dict
    blocks: int
    nbytes: int
    sha256: str
    start: int            # byte offset of its HDR1 record
    data_start: int       # byte offset of its first data record
    data_obj: int         # object number of its first data record
    data_end: int         # byte offset of the tape mark closing the data

    def public(self) -> dict:
        return {"file": self.number, "row": dict(self.row), "blocks": self.blocks, "bytes": self.nbytes}


@dataclass
class _Scan:
    key: tuple
    size: int
    blank: bool
    files: list = field(default_factory=list)
    end: int = 0          # byte offset of the logical-end tape mark (the append point)
    end_obj: int = 0      # its object number
    error: SanError | None = None
    indices: dict = field(default_factory=dict)


class _Reader:
    """Walks the objects of an image with pread; every object is checked as it is read."""

    def __init__(self, medium: "TapeMedium", fd: int, size: int):
        self.medium, self.fd, self.size = medium, fd, size
        self.pos, self.obj = 0, 0

    def fail(self, message: str, pos: int | None = None, obj: int | None = None) -> SanError:
        return self.medium._error(obj if obj is not None else self.obj,
                                  pos if pos is not None else self.pos, message)

    def word(self, at: int) -> int:
        raw = os.pread(self.fd, 4, at)
        if len(raw) < 4:
            raise self.fail(f"the image ends inside a length word ({self.size} bytes)")
        return _U32.unpack(raw)[0]

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
        if n > BLOCK:
            raise self.fail(f"length word {n:#010x} is not a record of 1 to {BLOCK} bytes "
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

    def label(self, prefix: bytes, what: str) -> bytes:
        kind, n, data = self.next(payload=True)
        if kind != "record" or n != LABEL or not data.startswith(prefix):
            raise self.fail(f"expected {what}, found {_describe(kind, n, data)}")
        return data


def _describe(kind: str, n: int, data: bytes | None) -> str:
    if kind == "mark":
        return "a tape mark"
    if kind == "end":
        return "the end-of-medium marker"
    if n == LABEL and data is not None and data[:4].isalnum():
        return f"an 80-byte record starting {data[:4].decode('ascii', 'replace')!r}"
    return f"a {n}-byte record"


# --------------------------------------------------------------------------- the medium

def _user_labels(r: "_Reader", prefix: bytes, number: int) -> tuple[list[bytes], tuple[int, int]]:
    """The user labels (UHLn / UTLn) up to the next tape mark, and where they began."""
    records, at = [], (r.obj + 1, r.pos)
    while True:
        kind, n, data = r.next(payload=True)
        if kind == "record" and n == LABEL and data.startswith(prefix):
            records.append(data)
            continue
        if kind != "mark":
            raise r.fail(f"expected {prefix.decode()} labels then a tape mark in file {number}, "
                         f"found {_describe(kind, n, data)}")
        return records, at


class TapeMedium:
    """One tape medium: the SIMH image at `path` (see the module docstring for the layout)."""

    def __init__(self, path: Path, media_id: str, capacity: int):
        self.path = Path(path)
        self.media_id = media_id
        self.capacity = int(capacity)
        self.library = self.path.parent.name
        self._lock = threading.RLock()
        self._cache: _Scan | None = None

    def __getstate__(self):
        return {"path": self.path, "media_id": self.media_id, "capacity": self.capacity}

    def __setstate__(self, state):
        self.__init__(state["path"], state["media_id"], state["capacity"])

    def __repr__(self) -> str:
        return f"TapeMedium({str(self.path)!r}, {self.media_id!r}, capacity={self.capacity})"

    # ---- errors
    def _error(self, obj: int, pos: int, message: str) -> SanError:
        return SanError("MEDIA_ERROR", f"medium {self.media_id} ({self.path}): record {obj} "
                                       f"at byte {pos}: {message}")

    def _full(self, message: str) -> SanError:
        return SanError("TAPE_FULL", f"medium {self.media_id} (capacity {self.capacity} bytes): {message}")

    # ---- state
    def _stat_key(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _scan(self) -> _Scan:
        with self._lock:
            key = self._stat_key()
            if self._cache is not None and self._cache.key == key:
                return self._cache
            if key is None or key[1] == 0:
                scan = _Scan(key, 0, True)
            else:
                with open(self.path, "rb") as f:
                    st = os.fstat(f.fileno())
                    key = (st.st_ino, st.st_size, st.st_mtime_ns)
                    scan = self._walk(f.fileno(), key)
            self._cache = scan
            return scan

    def _walk(self, fd: int, key: tuple) -> _Scan:
        scan = _Scan(key, key[1], False)
        r = _Reader(self, fd, key[1])
        try:
            vol1 = r.label(b"VOL1", "the VOL1 volume label")
            vol = self.media_id.upper()
            if vol1[4:10].decode("ascii", "replace").rstrip() != vol:
                raise r.fail(f"this image holds volume {vol1[4:10].decode('ascii', 'replace').rstrip()!r}, "
                             f"not {vol!r}", 0, 1)
            uvl, uvl_at = [], (r.obj + 1, r.pos)
            while True:
                obj_pos = (r.obj + 1, r.pos)
                kind, n, data = r.next(payload=True)
                if kind == "record" and n == LABEL and data.startswith(b"UVL"):
                    uvl.append(data)
                    continue
                break
            if uvl:
                try:
                    fields = parse_labels("UVL", uvl)
                except _Damage as exc:
                    raise r.fail(str(exc), uvl_at[1], uvl_at[0]) from None
                if fields.get("media_id") != self.media_id:
                    raise r.fail(f"this image holds medium {fields.get('media_id')!r}, not "
                                 f"{self.media_id!r}", uvl_at[1], uvl_at[0])
            number = 0
            while True:
                # obj_pos / kind / n / data: the object after the volume labels or a file's trailer
                if kind == "mark":
                    scan.end_obj, scan.end = obj_pos
                    r.obj, r.pos = obj_pos[0], obj_pos[1] + 4
                    kind, n, data = r.next(payload=True)
                    if kind != "end":
                        raise r.fail(f"expected the end-of-medium marker after the logical end of "
                                     f"tape, found {_describe(kind, n, data)}")
                    return scan
                if not (kind == "record" and n == LABEL and data.startswith(b"HDR1")):
                    raise r.fail(f"expected HDR1 or a tape mark (logical end of tape), found "
                                 f"{_describe(kind, n, data)}", obj_pos[1], obj_pos[0])
                number += 1
                scan.files.append(self._walk_file(r, number, obj_pos, data))
                obj_pos = (r.obj + 1, r.pos)
                kind, n, data = r.next(payload=True)
        except SanError as exc:
            scan.error = exc
            return scan

    def _walk_file(self, r: _Reader, number: int, hdr_at: tuple, hdr1: bytes) -> _File:
        def check_hdr1(rec: bytes, at: tuple, kind: str):
            try:
                seq = int(rec[31:35])
            except ValueError:
                seq = None
            if seq != number:
                raise r.fail(f"{kind} gives file sequence number {rec[31:35]!r}, expected "
                             f"{number:04d}", at[1], at[0])

        check_hdr1(hdr1, hdr_at, "HDR1")
        r.label(b"HDR2", f"HDR2 of file {number}")
        uhl, uhl_at = _user_labels(r, b"UHL", number)
        try:
            row = parse_labels("UHL", uhl)
        except _Damage as exc:
            raise r.fail(f"file {number}: {exc}", uhl_at[1], uhl_at[0]) from None
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
                             f"{_describe(kind, n, None)}")
            break
        data_end = r.pos - 4
        if blocks == 0:
            raise r.fail(f"file {number} has an empty data section", data_end, r.obj)
        eof_at = (r.obj + 1, r.pos)
        eof1 = r.label(b"EOF1", f"EOF1 of file {number}")
        check_hdr1(eof1, eof_at, "EOF1")
        r.label(b"EOF2", f"EOF2 of file {number}")
        utl, utl_at = _user_labels(r, b"UTL", number)
        try:
            trailer = parse_labels("UTL", utl)
            nbytes, tblocks, sha = trailer["bytes"], trailer["blocks"], trailer["sha256"]
        except (_Damage, KeyError) as exc:
            raise r.fail(f"file {number}: trailer labels damaged ({exc})", utl_at[1], utl_at[0]) from None
        if eof1[54:60] != f"{blocks % 1_000_000:06d}".encode() or tblocks != blocks:
            raise r.fail(f"file {number} has {blocks} data blocks, its trailer says "
                         f"{eof1[54:60].decode('ascii', 'replace')} / {tblocks}", eof_at[1], eof_at[0])
        expected = len(FILLER) if nbytes == 0 else nbytes
        if total != expected or (nbytes == 0 and blocks != 1):
            raise r.fail(f"file {number} holds {total} bytes of data blocks, its trailer says "
                         f"{nbytes}", utl_at[1], utl_at[0])
        return _File(number, row, blocks, nbytes, sha, hdr_at[1], data_start, data_obj, data_end)

    # ---- public API
    @property
    def blank(self) -> bool:
        """True when the medium was never written (no image, or an empty one)."""
        return self._scan().blank

    def used_bytes(self) -> int:
        """The size of the image in bytes (0 when blank)."""
        key = self._stat_key()
        return 0 if key is None else key[1]

    def files(self, *, partial: bool = False) -> list[dict]:
        """[{file, row, blocks, bytes}] from the labels; MEDIA_ERROR if the image is damaged.

        With partial=True a damaged image gives the files that are intact before the damage
        instead (what a catalog rebuild can still recover); `damage()` says what is wrong.
        """
        scan = self._scan()
        if scan.error is not None and not partial:
            raise scan.error
        return [f.public() for f in scan.files]

    def damage(self) -> SanError | None:
        """The MEDIA_ERROR the image's structure gives, or None if it is intact."""
        return self._scan().error

    def _file(self, number) -> tuple[_Scan, _File]:
        scan = self._scan()
        if isinstance(number, bool) or not isinstance(number, (int, np.integer)):
            raise SanError("INVALID_INPUT", f"a tape file number is a whole number (got {number!r})")
        number = int(number)
        if 1 <= number <= len(scan.files):
            return scan, scan.files[number - 1]
        if scan.error is not None:
            raise scan.error
        raise SanError("NO_SUCH_BACKUP", f"medium {self.media_id} has no file {number} "
                                         f"(it holds {len(scan.files)})")

    def _records(self, f: _File, fd: int) -> Iterator[tuple[int, np.ndarray]]:
        """(byte offset, data) of each data record of file `f`, checking the length words."""
        pos = f.data_start
        for i in range(f.blocks):
            buf = bytearray(BLOCK + 8)
            got = os.preadv(fd, [buf], pos)
            n = _U32.unpack_from(buf)[0] if got >= 4 else -1
            if not 1 <= n <= BLOCK or got < record_size(n):
                raise self._error(f.data_obj + i, pos, f"data block {i + 1} of file {f.number} "
                                  "is damaged or cut short (the image changed?)")
            if _U32.unpack_from(buf, 4 + n + (n & 1))[0] != n:
                raise self._error(f.data_obj + i, pos, f"data block {i + 1} of file {f.number}: "
                                  "length words differ (damaged length word)")
            yield pos, np.frombuffer(buf, dtype=np.uint8, count=n, offset=4)
            pos += record_size(n)
        if pos != f.data_end:
            raise self._error(f.data_obj + f.blocks, pos, f"file {f.number}: the data section "
                              "does not end where it did (the image changed?)")

    def read(self, file: int) -> Iterator[np.ndarray]:
        """The data blocks of file `file`, in order; the digest is checked before the last one."""
        scan, f = self._file(file)
        return self._read(f)

    def _read(self, f: _File) -> Iterator[np.ndarray]:
        with open(self.path, "rb") as fh:
            digest = hashlib.sha256()
            pending = None
            for _, block in self._records(f, fh.fileno()):
                if f.nbytes == 0:       # the filler of an empty file
                    break
                if pending is not None:
                    yield pending
                digest.update(block)
                pending = block
            if digest.hexdigest() != f.sha256:
                raise self._error(f.data_obj, f.data_start, f"file {f.number}: the data fails its "
                                  f"SHA-256 (recorded {f.sha256[:16]}..., read "
                                  f"{digest.hexdigest()[:16]}...): damaged data blocks")
            if pending is not None:
                yield pending

    def _index(self, scan: _Scan, f: _File, verify: bool):
        with self._lock:
            index = scan.indices.get(f.number)
            if index is not None and (index[2] or not verify):
                return index
        positions, lengths = [], []
        digest = hashlib.sha256()
        with open(self.path, "rb") as fh:
            for pos, block in self._records(f, fh.fileno()):
                positions.append(pos)
                lengths.append(len(block))
                if verify:
                    digest.update(block)
        if verify and digest.hexdigest() != f.sha256:
            raise self._error(f.data_obj, f.data_start, f"file {f.number}: the data fails its "
                              "SHA-256: damaged data blocks")
        starts = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(np.asarray(lengths, dtype=np.int64), out=starts[1:])
        index = (np.asarray(positions, dtype=np.int64), starts, verify)
        with self._lock:
            scan.indices[f.number] = index
        return index

    def read_range(self, file: int, offset: int, length: int, *, verify: bool = True) -> np.ndarray:
        """`length` bytes of file `file`'s data from `offset` (random access into a volume image).

        The first call for a file (or the first after the image changed) builds an index of its
        block offsets, reading the whole file once and checking its SHA-256 (unless
        verify=False); later calls read only the blocks they need, checking their length words.
        """
        scan, f = self._file(file)
        for name, value in (("offset", offset), ("length", length)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise SanError("INVALID_INPUT", f"read_range {name} must be a whole number (got {value!r})")
        offset, length = int(offset), int(length)
        if offset < 0 or length < 0 or offset + length > f.nbytes:
            raise SanError("LBA_OUT_OF_RANGE", f"bytes {offset}..{offset + length} are outside file "
                                               f"{f.number} of medium {self.media_id} ({f.nbytes} bytes)")
        out = np.empty(length, dtype=np.uint8)
        if length == 0:
            return out
        positions, starts, _ = self._index(scan, f, verify)
        first = int(np.searchsorted(starts, offset, side="right")) - 1
        done = 0
        with open(self.path, "rb") as fh:
            fd = fh.fileno()
            i = first
            while done < length:
                pos, start = int(positions[i]), int(starts[i])
                n = int(starts[i + 1]) - start
                head = os.pread(fd, 4, pos)
                tail = os.pread(fd, 4, pos + 4 + n + (n & 1))
                if head != _U32.pack(n) or tail != head:
                    raise self._error(f.data_obj + i, pos, f"data block {i + 1} of file {f.number}: "
                                      "length words differ from the index (damaged length word)")
                lo = offset + done - start
                take = min(n - lo, length - done)
                got = os.preadv(fd, [memoryview(out)[done:done + take]], pos + 4 + lo)
                if got != take:
                    raise self._error(f.data_obj + i, pos, f"data block {i + 1} of file {f.number} "
                                      "is cut short")
                done += take
                i += 1
        return out

    def erase(self) -> None:
        """Blank the medium again (the image becomes empty)."""
        with self._lock:
            if self.path.exists():
                with open(self.path, "r+b") as fh:
                    fh.truncate(0)
                    os.fsync(fh.fileno())
            self.path.with_name(self.path.name + ".partial").unlink(missing_ok=True)
            self._cache = None

    def projected_size(self, row: dict, size: int) -> int:
        """The image size after appending a `size`-byte backup with this row."""
        scan = self._scan()
        if scan.error is not None:
            raise scan.error
        begin = 0 if scan.blank else scan.end
        head = self._head(row, len(scan.files) + 1, scan.blank, None)
        blocks = _data_blocks(size)
        trailer = len(_trailer_labels(blocks, size, "0" * 64)) + 2
        return (begin + sum(len(r) for r in head) + _data_image_bytes(size) + 4
                + trailer * record_size(LABEL) + 12)

    def _head(self, row: dict, number: int, blank: bool, created) -> list[bytes]:
        """The records before the data: [VOL1, UVLs,] HDR1, HDR2, UHLs (each as a record), a mark."""
        uhl = format_row(row)
        vol = check_media_id(self.media_id)
        day = _creation_day(row, created)
        records = []
        if blank:
            records.append(_vol1(vol, self.library))
            records += format_labels("UVL", {"media_id": self.media_id, "library": self.library}, 9)
        records += [_hdr1("HDR", vol, number, day, 0), _hdr2("HDR")] + uhl
        return [_record(r) for r in records] + [TAPE_MARK]

    def append(self, row: dict, chunks: Iterable, size: int | None = None, *, created=None) -> int:
        """Append a backup file: labels, the data of `chunks` in 64 KiB blocks, the trailer.

        Returns its file number (1, 2, ...).  TAPE_FULL if it would not fit within `capacity`:
        checked up front from `size` (the expected byte count, None if unknown) and again as
        the chunks arrive; on TAPE_FULL -- or any other failure -- nothing of the new file
        remains.  `created` (a date, datetime or timestamp text) sets HDR1's creation date;
        by default the date of row["timestamp"].  The row is stored exactly as given.
        """
        with self._lock:
            scan = self._scan()
            if scan.error is not None:
                raise scan.error
            number = len(scan.files) + 1
            if number > MAX_FILES:
                raise self._full(f"it holds {MAX_FILES} files, the most its labels can number")
            head = self._head(row, number, scan.blank, created)
            blank = scan.blank
            begin = 0 if blank else scan.end
            if size is not None:
                need = self.projected_size(row, int(size))
                if need > self.capacity:
                    raise self._full(f"a {size}-byte backup needs {need - begin} bytes of tape, "
                                     f"{self.capacity - begin} are free")
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            target = self.path.with_name(self.path.name + ".partial") if blank else self.path
            fd = os.open(target, os.O_RDWR | os.O_CREAT | (os.O_TRUNC if blank else 0), 0o600)
            try:
                commit = b"" if blank else head[0]
                sink = _Sink(self, fd, begin + len(commit))
                for rec in head[1:] if commit else head:
                    sink.put(rec)
                data_obj = scan.end_obj + len(head) if not blank else len(head) + 1
                data_start = sink.end
                blocks, nbytes, digest = self._write_data(sink, chunks)
                data_end = sink.end
                sink.put(TAPE_MARK)
                day = _creation_day(row, created)
                vol = check_media_id(self.media_id)
                trailer = ([_record(_hdr1("EOF", vol, number, day, blocks)), _record(_hdr2("EOF"))]
                           + [_record(r) for r in _trailer_labels(blocks, nbytes, digest)])
                for rec in trailer:
                    sink.put(rec)
                sink.put(TAPE_MARK + TAPE_MARK + END_OF_MEDIUM)
                sink.flush()
                end = sink.pos - 8
                if os.fstat(fd).st_size > sink.pos:     # leftovers of a crashed append
                    os.ftruncate(fd, sink.pos)
                os.fsync(fd)
                if commit:
                    os.pwrite(fd, commit, begin)
                    os.fsync(fd)
                else:
                    os.replace(target, self.path)
                    _fsync_dir(self.path.parent)
            except BaseException:
                try:
                    if blank:
                        os.ftruncate(fd, 0)
                        os.unlink(target)
                    else:
                        os.pwrite(fd, TAPE_MARK + END_OF_MEDIUM, begin)
                        os.ftruncate(fd, begin + 8)
                        os.fsync(fd)
                finally:
                    os.close(fd)
                    self._cache = None
                raise
            os.close(fd)
            # bring the cached scan up to date instead of walking the whole tape again
            new = _File(number, json.loads(json.dumps(row)), blocks, nbytes, digest, begin,
                        data_start, data_obj, data_end)
            key = self._stat_key()
            files = [] if blank else scan.files
            objects = len(head) + blocks + 1 + len(trailer) + 1
            end_obj = (scan.end_obj if not blank else 1) + objects
            self._cache = _Scan(key, key[1], False, files + [new], end, end_obj)
            self._cache.indices = {} if blank else {k: v for k, v in scan.indices.items()}
            return number

    def _write_data(self, sink: "_Sink", chunks: Iterable) -> tuple[int, int, str]:
        digest = hashlib.sha256()
        blocks = nbytes = 0
        carry = bytearray()

        def emit(buf):
            nonlocal blocks
            n = len(buf)
            head = _U32.pack(n)
            sink.add([head, buf, b"\0", head] if n & 1 else [head, buf, head], record_size(n))
            blocks += 1

        for chunk in chunks:
            mv = _as_bytes(chunk)
            if not len(mv):
                continue
            digest.update(mv)
            nbytes += len(mv)
            carry = _reblock(emit, mv, carry)
            sink.flush()        # the caller may reuse its chunk buffer once we ask for the next
        if carry:
            emit(carry)
        if nbytes == 0:
            emit(FILLER)
        sink.flush()
        return blocks, nbytes, digest.hexdigest()



def _reblock(emit, mv: memoryview, carry: bytearray) -> bytearray:
    """Emit 64 KiB blocks of `carry` + `mv`; returns what is left over (less than a block)."""
    total, i = len(mv), 0
    if carry:
        i = min(BLOCK - len(carry), total)
        carry += mv[:i]
        if len(carry) == BLOCK:
            emit(carry)
            carry = bytearray()
    while total - i >= BLOCK:
        emit(mv[i:i + BLOCK])
        i += BLOCK
    if i < total:
        carry += mv[i:]
    return carry


def _as_bytes(chunk) -> memoryview:
    if isinstance(chunk, np.ndarray):
        chunk = np.ascontiguousarray(chunk)
    mv = memoryview(chunk)
    return mv if mv.format == "B" and mv.ndim == 1 and mv.c_contiguous else mv.cast("B")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _Sink:
    """Gathers buffers and writes them with pwritev at `pos`, never past the capacity."""

    def __init__(self, medium: TapeMedium, fd: int, pos: int):
        self.medium, self.fd, self.pos = medium, fd, pos
        self.buffers: list = []
        self.pending = 0

    @property
    def end(self) -> int:
        """Where the next byte goes."""
        return self.pos + self.pending

    def put(self, data: bytes) -> None:
        self.add([data], len(data))

    def add(self, buffers: list, nbytes: int) -> None:
        if self.pos + self.pending + nbytes > self.medium.capacity:
            raise self.medium._full(f"the backup does not fit: writing it reached byte "
                                    f"{self.pos + self.pending + nbytes} of the image")
        self.buffers += buffers
        self.pending += nbytes
        if len(self.buffers) >= _IOV_BATCH:
            self.flush()

    def flush(self) -> None:
        buffers, pos, left = self.buffers, self.pos, self.pending
        while left:
            wrote = os.pwritev(self.fd, buffers, pos)
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
        self.pos = pos
        self.buffers, self.pending = [], 0
