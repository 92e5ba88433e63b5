"""Which host WRITEs an array has applied, by sequence number: what makes a retry idempotent.

A host numbers the WRITEs it sends to each LUN (`san.elements.client_host.Sequencer`): a
*session* (drawn when the host starts) and a number counting up from 0 in it, in the order
the host sends them.  A WRITE that got no answer (its path went down, its array died) is sent
again with the same number, on another path or once the array is back, so the array may see
it twice; and a path change may leave a copy of an older WRITE still on its way.  So the
array keeps, for each (initiator host, port, LUN), its session, the last number applied and
the numbers it skipped (gaps), and for each WRITE decides (`admit`):

- a new session (the host restarted, or never wrote here): applied;
- a number past the last one: applied (the numbers skipped since become a gap);
- a number at or before the last one that was applied: acknowledged, not applied again;
- a number at or before the last one that was never applied (in a gap, or older than the
  gaps kept): refused (INVALID_INPUT), rather than applied out of order over newer data.

`applied` records a WRITE after its data is in the volume.  Both HBAs of a host share its
numbers (the key is the host element), so a WRITE retried on the other path is recognized.

The table lives in memory and in ``STATE_DIR/arrays/NAME/sequences``: one 512-byte record per
key, rewritten in place (one `pwrite`) after each WRITE applied, so a restarted array still
recognizes a WRITE it applied before it died.  Records carry a CRC; a torn one is ignored.
The file is fsync-ed at the array's barriers, after the volumes (`DiskArray.sync`).
"""
from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SanError

__all__ = ["WriteSequences", "RECORD", "GAPS"]

RECORD = 512        # bytes per key in the file
GAPS = 20           # gaps kept per key; an older one is forgotten (its numbers are refused)
_HEAD = struct.Struct("<IH96sQqqI")     # crc, key length, key, session, last, floor, gaps
_GAP = struct.Struct("<qq")


@dataclass
class _Seen:
    session: int
    last: int = -1                  # the highest number applied
    floor: int = -1                 # numbers at or below it are not known applied: refused
    gaps: list = field(default_factory=list)   # [first, last] ranges never applied

    def skipped(self, n: int) -> bool:
        return n <= self.floor or any(lo <= n <= hi for lo, hi in self.gaps)


class WriteSequences:
    """The sequence table of one array (see the module docstring)."""

    def __init__(self, directory: Path, name: str = "array"):
        self.name = name
        self.path = Path(directory) / "sequences"
        self.seen: dict[tuple, _Seen] = {}
        self.slots: dict[tuple, int] = {}
        self.duplicates = 0          # WRITEs acknowledged without being applied again
        self._fd: int | None = None
        self._next_slot = 0
        self._closed = False
        self._load()

    # -- the WRITE path ---------------------------------------------------------------------------
    def admit(self, key: tuple, session: int, n: int) -> bool:
        """Apply this WRITE (True), or acknowledge it as already applied (False); raises
        INVALID_INPUT for a number from the past that was never applied."""
        seen = self.seen.get(key)
        if seen is None or seen.session != session or n > seen.last:
            return True
        if seen.skipped(n):
            host, port, lun = key
            raise SanError("INVALID_INPUT", (
                f"{self.name}: WRITE #{n} from {host} to {port} LUN {lun} was never applied and "
                f"later ones were (up to #{seen.last}): refused rather than applied out of order"))
        self.duplicates += 1
        return False

    def applied(self, key: tuple, session: int, n: int) -> None:
        """Record that WRITE `n` of `session` is in the volume (after `admit` said so)."""
        seen = self.seen.get(key)
        if seen is None or seen.session != session:
            seen = self.seen[key] = _Seen(session)
        if n > seen.last + 1:        # numbers were sent that never arrived: never to be applied
            seen.gaps.append([seen.last + 1, n - 1])
            if len(seen.gaps) > GAPS:
                seen.floor = seen.gaps.pop(0)[1]
        seen.last = max(seen.last, n)
        self._save(key, seen)

    # -- the file -------------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        for slot in range(len(raw) // RECORD):
            record = raw[slot * RECORD:(slot + 1) * RECORD]
            crc, size, key, session, last, floor, count = _HEAD.unpack_from(record)
            if crc != zlib.crc32(record[4:]) or size > 96 or count > GAPS:
                continue                        # torn by a crash: as if never written
            host, port, lun = key[:size].decode().split("\t")
            gaps = [list(_GAP.unpack_from(record, _HEAD.size + i * _GAP.size)) for i in range(count)]
            k = (host, port, int(lun))
            self.seen[k] = _Seen(session, last, floor, gaps)
            self.slots[k] = slot
        self._fd = os.open(self.path, os.O_RDWR)
        self._next_slot = len(raw) // RECORD + (1 if len(raw) % RECORD else 0)

    def _save(self, key: tuple, seen: _Seen) -> None:
        if self._fd is None:
            if self._closed:
                raise SanError("ELEMENT_DOWN", f"{self.name} is down")
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = self._next_slot
            self._next_slot += 1
        name = "\t".join(map(str, key)).encode()
        body = bytearray(RECORD)
        _HEAD.pack_into(body, 0, 0, len(name), name, seen.session, seen.last, seen.floor,
                        len(seen.gaps))
        for i, (lo, hi) in enumerate(seen.gaps):
            _GAP.pack_into(body, _HEAD.size + i * _GAP.size, lo, hi)
        struct.pack_into("<I", body, 0, zlib.crc32(memoryview(body)[4:]))
        os.pwrite(self._fd, body, slot * RECORD)

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        self._closed = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
