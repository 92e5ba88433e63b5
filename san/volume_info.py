"""Volume info: the 512-byte record of backup management information beside a volume (Fig. 11).

To the disk array the record is an opaque byte string, stored beside the volume (recording
it never changes the volume's data or its READ CAPACITY).  This layout is the backup
software's:

    offset  size  field
         0     4  format ID: the bytes b"SANV" (identifies this layout)
         4   128  label: the definition's label text
       132    32  host name
       164   256  mount point of the source (primary) volume
       420     4  timestamp: when the backup was ordered, seconds since 1970-01-01T00:00:00Z,
                  unsigned 32-bit big-endian (network order, as SCSI fields are)
       424    88  reserved: zeros

Text fields are UTF-8, padded with NUL bytes to their size; a field whose UTF-8 form is
longer than its size is refused (`INVALID_INPUT`) when the record is built, never cut (a cut
could split a character).  A text may not contain NUL (it would end the field early).
Decoding a record whose format ID is not b"SANV", or that is not 512 bytes, or whose text is
not UTF-8, or with a byte other than NUL in a text's padding, is `INVALID_VOLUME_INFO`.
The reserved bytes are ignored on read (a later version's extension), and are not part of
the backup's identity: a backup server names a disk backup by the record's first
`IDENTITY` bytes (the array checks the volume still holds them before a restore), so those
have one form for one backup, which the strict padding keeps.

>>> info = VolumeInfo("nightly", "host1", "/db", 1767225600)
>>> VolumeInfo.decode(info.encode()) == info, len(info.encode())
(True, 512)
"""
from __future__ import annotations

import datetime as dt
import struct
import time as _time
from dataclasses import dataclass

from .errors import SanError

FORMAT_ID = b"SANV"
SIZE = 512
FIELDS = (("label", 4, 128), ("host", 132, 32), ("mount_point", 164, 256))
TIMESTAMP_AT, RESERVED_AT = 420, 424
# the whole record: format ID, the text fields (FIELDS, in order), timestamp, reserved
_LAYOUT = struct.Struct(">4s" + "".join(f"{size}s" for _, _, size in FIELDS) + "I88x")
assert _LAYOUT.size == SIZE and RESERVED_AT + 88 == SIZE
IDENTITY = RESERVED_AT   # bytes that say which backup a record is (all but the reserved)
_DATES: dict[int, str] = {}     # day since 1970 -> 'YYYY-MM-DDT' (`time_text`)


@dataclass(frozen=True)
class VolumeInfo:
    label: str
    host: str
    mount_point: str
    timestamp: int  # seconds since the epoch, UTC

    def __post_init__(self):
        for name, _, size in FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str):
                raise SanError("INVALID_INPUT", f"volume info {name} must be text (got {value!r})")
            if "\x00" in value:
                raise SanError("INVALID_INPUT", f"volume info {name} may not contain NUL (got {value!r})")
            length = len(value.encode("utf-8"))
            if length > size:
                raise SanError("INVALID_INPUT", f"volume info {name} is {length} bytes in UTF-8, "
                                                f"more than its {size} (got {value!r})")
        if not isinstance(self.timestamp, int) or not 0 <= self.timestamp < 2**32:
            raise SanError("INVALID_INPUT", "volume info timestamp must be whole seconds from 1970 "
                                            f"to 2106 (got {self.timestamp!r})")

    @classmethod
    def at(cls, label: str, host: str, mount_point: str, moment: dt.datetime) -> "VolumeInfo":
        return cls(label, host, mount_point, int(moment.timestamp()))

    @property
    def moment(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.timestamp, dt.timezone.utc)

    def encode(self) -> bytes:
        record = bytearray(SIZE)
        record[0:4] = FORMAT_ID
        for name, offset, size in FIELDS:
            raw = getattr(self, name).encode("utf-8")
            record[offset:offset + len(raw)] = raw
        record[TIMESTAMP_AT:TIMESTAMP_AT + 4] = struct.pack(">I", self.timestamp)
        return bytes(record)

    @property
    def time_text(self) -> str:
        """The timestamp as the catalog writes it, 'YYYY-MM-DDTHH:MM:SSZ' (`units.format_time`
        of `moment`, without making a datetime: a catalog rebuild makes thousands)."""
        days, seconds = divmod(self.timestamp, 86400)
        date = _DATES.get(days)
        if date is None:
            if len(_DATES) >= 4096:
                _DATES.clear()
            date = _DATES[days] = _time.strftime("%Y-%m-%dT", _time.gmtime(days * 86400))
        hours, seconds = divmod(seconds, 3600)
        minutes, seconds = divmod(seconds, 60)
        return f"{date}{hours:02d}:{minutes:02d}:{seconds:02d}Z"

    @classmethod
    def decode(cls, record: bytes) -> "VolumeInfo":
        record = bytes(record)
        if len(record) != SIZE:
            raise SanError("INVALID_VOLUME_INFO", f"a volume info record is {SIZE} bytes (got {len(record)})")
        format_id, *raws, timestamp = _LAYOUT.unpack(record)
        if format_id != FORMAT_ID:
            raise SanError("INVALID_VOLUME_INFO", f"format ID {format_id!r} is not {FORMAT_ID!r}")
        info = object.__new__(cls)
        setattr_ = object.__setattr__      # frozen: fields are set as the constructor would
        for (name, offset, _), raw in zip(FIELDS, raws):
            raw, _, padding = raw.partition(b"\x00")
            if padding.strip(b"\x00"):
                at = offset + len(raw) + 1 + next(i for i, b in enumerate(padding) if b)
                raise SanError("INVALID_VOLUME_INFO", f"{name} {raw.decode('utf-8', 'replace')!r} is followed by byte "
                                                      f"{at} = {record[at]:#04x} in its NUL padding")
            try:
                setattr_(info, name, raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise SanError("INVALID_VOLUME_INFO", f"{name} is not UTF-8 (got {raw!r})") from None
        # what the constructor checks holds by construction (a field ends at its first NUL,
        # within its size; the timestamp is 32 unsigned bits), so it is not checked again
        setattr_(info, "timestamp", timestamp)
        return info
