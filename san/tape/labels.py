"""ANSI / ECMA-13 tape labels: what makes a tape medium self-describing in the SAN.

A tape copy's catalog row travels in its file's user header labels, so the backup server can
rebuild its catalog from the tapes alone; the volume labels name the medium and its library,
the trailer labels hold the exact size and digest of the data.  This module makes and parses
the 80-byte label records; where they stand on the tape is `san.tape.layout`'s concern.

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
    UTL text: blocks (exact data block count), bytes (the data size), and the digest of the
              data under the name of its algorithm: xxh3_128 (XXH3-128, 32 lower-case hex
              digits, what every file gets now) or sha256 (SHA-256, 64 hex digits: files
              written before, which still read and verify).

Why XXH3-128 and not SHA-256: the digest is there to catch rot (a block that reads back other
than it was written) -- what the arrays' per-granule checksums are for too (`san.checksums`
gives the reasons and the figures), and it is on the write path of every byte put on tape.
SHA-256 took as long as writing the data to the page cache (about 1.5 GB/s against 14 for
XXH3-128 here): it halved a tape backup's speed, for a strength against crafted collisions
that rot does not need.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import zlib

from ..errors import SanError
from ..units import MEDIA_ID_CHARACTERS
from .simh import TAPE_BLOCK

LABEL = 80                    # every label record
MAX_FILES = 9999              # 4-digit file sequence number
LABEL_NUMBERS = "123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
IMPLEMENTATION = "SAN"
A_CHARACTERS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 !\"%&'()*+,-./:;<=>?_")
KEY_RE = re.compile(r"[a-z_][a-z0-9_]*\Z")
TIMESTAMP_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T")

# the fields read back from a label (CP above, 0-based slices here)
VOLUME_ID = slice(4, 10)      # VOL1 volume identifier
SEQUENCE = slice(31, 35)      # HDR1 / EOF1 file sequence number
BLOCK_COUNT = slice(54, 60)   # HDR1 / EOF1 block count


class Damage(Exception):
    """A label text that does not parse; the scanner adds where it is."""


# --------------------------------------------------------------------------- VOL1, HDR, EOF

def check_media_id(media_id: str) -> str:
    """The VOL1 volume identifier of a media ID; INVALID_INPUT if VOL1 cannot hold it."""
    if not isinstance(media_id, str) or not 1 <= len(media_id) <= 6:
        raise SanError("INVALID_INPUT", f"media ID {media_id!r} does not fit a tape's VOL1 label "
                                        "(expected 1 to 6 characters)")
    vol = media_id.upper()
    # VOL1 could hold more of its A-characters, but the ID is also the medium's file name
    bad = sorted(set(re.sub(f"[{MEDIA_ID_CHARACTERS}]", "", media_id).upper()))
    if bad:
        raise SanError("INVALID_INPUT", f"media ID {media_id!r} has characters a media ID cannot "
                                        f"hold ({''.join(bad)!r}; expected letters, digits, . _ -)")
    return vol


def _a_chars(text: str, size: int) -> str:
    return "".join(c for c in text.upper() if c in A_CHARACTERS)[:size].ljust(size)


def _ansi_date(day: dt.date) -> str:
    century = " " if day.year < 2000 else str((day.year - 2000) // 100)
    return f"{century}{day.year % 100:02d}{day.timetuple().tm_yday:03d}"


def creation_day(row: dict, created) -> dt.date:
    """HDR1's creation date: `created` (a date, datetime or timestamp text), else row["timestamp"].

    Never the machine's clock: a label's date is the backup's, and HDR1 and EOF1 must agree
    (a clock read for each could straddle midnight)."""
    if isinstance(created, dt.datetime):
        return created.astimezone(dt.timezone.utc).date() if created.tzinfo else created.date()
    if isinstance(created, dt.date):
        return created
    text = created if created is not None else row.get("timestamp")
    match = TIMESTAMP_RE.match(str(text)) if text is not None else None
    try:
        if match:
            return dt.date(*(int(g) for g in match.groups()))
    except ValueError:
        pass
    raise SanError("INVALID_INPUT", f"a tape label needs the backup's date: "
                                    f"{'created' if created is not None else 'timestamp'} "
                                    f"{text!r} is not a date (expected YYYY-MM-DDTHH:MM:SSZ)")


def block_count(blocks: int) -> str:
    """HDR1 / EOF1's block count: the number of data blocks modulo 1 000 000."""
    return f"{blocks % 1_000_000:06d}"


def vol1(vol: str, library: str) -> bytes:
    text = ("VOL1" + vol.ljust(6) + " " + " " * 13 + IMPLEMENTATION.ljust(13)
            + _a_chars(library, 14) + " " * 28 + "4")
    assert len(text) == LABEL
    return text.encode("ascii")


def hdr1(kind: str, vol: str, number: int, day: dt.date, blocks: int) -> bytes:
    """HDR1 (kind "HDR") or EOF1 (kind "EOF") of file `number`."""
    text = (kind + "1" + f"SAN.BACKUP.{number:04d}".ljust(17) + vol.ljust(6) + "0001"
            + f"{number:04d}" + "0001" + "00" + _ansi_date(day) + " 00000" + " "
            + block_count(blocks) + IMPLEMENTATION.ljust(13) + " " * 7)
    assert len(text) == LABEL
    return text.encode("ascii")


def hdr2(kind: str) -> bytes:
    """HDR2 (kind "HDR") or EOF2 (kind "EOF")."""
    text = kind + "2" + "U" + f"{TAPE_BLOCK:05d}" + f"{TAPE_BLOCK:05d}" + " " * 35 + "00" + " " * 28
    assert len(text) == LABEL
    return text.encode("ascii")


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
    """The fields of user labels made by `format_labels`; raises Damage."""
    if not records:
        raise Damage(f"no {prefix} labels")
    for i, rec in enumerate(records):
        expected = prefix.encode("ascii") + LABEL_NUMBERS[i].encode("ascii")
        if len(rec) != LABEL or rec[:4] != expected:
            raise Damage(f"label {i + 1} of the {prefix} labels is {bytes(rec[:4])!r}, "
                         f"expected {expected!r}")
    text = b"".join(bytes(rec[4:]) for rec in records).rstrip(b" ")
    at = text.rfind(b"crc32=", 0)
    if not text.endswith(b"\n") or at < 0 or (at > 0 and text[at - 1:at] != b"\n"):
        raise Damage(f"the {prefix} text has no crc32 line at its end")
    body, crc = text[:at], text[at + 6:-1]
    if crc != f"{zlib.crc32(body):08x}".encode("ascii"):
        raise Damage(f"the {prefix} text fails its CRC-32 (recorded {crc[:8]!r}, "
                     f"computed {zlib.crc32(body):08x})")
    fields = {}
    try:
        for line in body.decode("utf-8").split("\n")[:-1]:
            key, sep, value = line.partition("=")
            if not sep or not KEY_RE.match(key):
                raise Damage(f"the {prefix} text has a bad line {line!r}")
            fields[key] = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Damage(f"the {prefix} text does not parse ({exc})") from None
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
    except Damage as exc:
        raise SanError("MEDIA_ERROR", f"user header labels damaged: {exc}") from None


def volume_labels(media_id: str, library: str) -> list[bytes]:
    """UVL1 [UVL2 ...]: the exact media ID and the library."""
    return format_labels("UVL", {"media_id": media_id, "library": library}, 9)


def trailer_labels(blocks: int, nbytes: int, digest: str, algorithm: str = "xxh3_128") -> list[bytes]:
    """UTL1 [UTL2 ...]: the exact block count, the byte count and the digest of the data,
    under the name of its algorithm (``xxh3_128``, or ``sha256`` as files written before)."""
    return format_labels("UTL", {"blocks": blocks, "bytes": nbytes, algorithm: digest})
