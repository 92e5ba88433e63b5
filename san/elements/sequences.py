"""Which host WRITEs an array has applied, by sequence number: what makes a retry idempotent.

A host numbers the WRITEs of each transfer it makes (`san.flows.client_host.ClientHost._stream`):
a *session* drawn for the transfer and a number counting up from 0 in it, in the order the
host sends them.  A WRITE that got no answer (its path went down, its array died) is sent
again with the same number, on another path or once the array is back, so the array may see
it twice; and a path change may leave a copy of an older WRITE still on its way.  So the
array keeps, for each (initiator host, port, LUN) and each of its `SESSIONS` most recent
sessions there, the last number applied and the numbers it skipped (gaps), and for each
WRITE decides (`admit`):

- a session it does not know (a new transfer, or one forgotten): applied;
- a number past the session's last one: applied (the numbers skipped since become a gap);
- a number in a gap (sent, overtaken by later ones, never applied): applied, and the gap
  closes behind it;
- a number at or before the last one that was applied: acknowledged, not applied again;
- a number older than the gaps kept (`GAPS` per session): refused (INVALID_INPUT), since
  whether it was applied is no longer known.

A session per transfer, not per host, and a WRITE overtaken within its transfer applied:
a transfer's WRITEs cover distinct blocks, so one applied late writes over nothing newer of
its own.  With one count per host, two transfers to one LUN at once made gaps in each
other's numbers: after an array restart, one's retry came after the other's later WRITEs,
was refused, and its bytes were never written.

`applied` records a WRITE after its data is in the volume.  Both HBAs of a host share its
numbers (the key is the host element), so a WRITE retried on the other path is recognized.

The table lives in memory and in ``STATE_DIR/arrays/NAME/sequences``: one 512-byte record per
(key, session), rewritten in place (one `pwrite`) after each WRITE applied, so a restarted
array still recognizes a WRITE it applied before it died; the record of a key's least recently
used session is reused for its newest.  Records carry a CRC; a torn one is ignored.  The
file is fsync-ed at the array's barriers, after the volumes (`DiskArray.sync`).
"""
from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SanError

__all__ = ["WriteSequences", "RECORD", "GAPS", "SESSIONS"]

RECORD = 512        # bytes per (key, session) in the file
GAPS = 20           # gaps kept per session; an older one is forgotten (its numbers are refused)
SESSIONS = 32       # sessions (transfers) kept per key; the least recently used is forgotten
_HEAD = struct.Struct("<IH96sQqqI")     # crc, key length, key, session, last, floor, gaps
_GAP = struct.Struct("<qq")
_USED = struct.Struct("<Q")             # at the record's end: when it was last used (0 before)


@dataclass
class _Seen:
    session: int
    last: int = -1                  # the highest number applied
    floor: int = -1                 # numbers at or below it are not known applied: refused
    gaps: list = field(default_factory=list)   # [first, last] ranges never applied
    used: int = 0                   # a count of WRITEs applied, when this one last was

    def in_gap(self, n: int) -> bool:
        """Was WRITE `n` sent, overtaken by later ones, and never applied (a kept gap)?"""
        return n > self.floor and any(lo <= n <= hi for lo, hi in self.gaps)

    def fill(self, n: int) -> None:
        """WRITE `n`, in a gap, is applied: the gap loses it (and may split in two)."""
        for i, (lo, hi) in enumerate(self.gaps):
            if lo <= n <= hi:
                self.gaps[i:i + 1] = [g for g in ([lo, n - 1], [n + 1, hi]) if g[0] <= g[1]]
                return


class WriteSequences:
    """The sequence table of one array (see the module docstring)."""

    def __init__(self, directory: Path, name: str = "array"):
        self.name = name
        self.path = Path(directory) / "sequences"
        self.seen: dict[tuple, dict[int, _Seen]] = {}     # key -> session -> its state
        self.slots: dict[tuple, int] = {}                 # (key, session) -> record number
        self.duplicates = 0          # WRITEs acknowledged without being applied again
        self._fd: int | None = None
        self._next_slot = 0
        self._clock = 0
        self._closed = False
        self._load()

    # -- the WRITE path ---------------------------------------------------------------------------
    def admit(self, key: tuple, session: int, n: int) -> bool:
        """Apply this WRITE (True), or acknowledge it as already applied (False); raises
        INVALID_INPUT for a number from the past that was never applied."""
        seen = self.seen.get(key, {}).get(session)
        if seen is None or n > seen.last or seen.in_gap(n):
            return True
        if n <= seen.floor:
            host, port, lun = key
            raise SanError("INVALID_INPUT", (
                f"{self.name}: WRITE #{n} from {host} to {port} LUN {lun} is older than the "
                f"numbers of its transfer this array keeps (up to #{seen.last}; gaps before "
                f"#{seen.floor + 1} forgotten): refused, since whether it was applied is not "
                f"known"))
        self.duplicates += 1
        return False

    def applied(self, key: tuple, session: int, n: int) -> None:
        """Record that WRITE `n` of `session` is in the volume (after `admit` said so)."""
        sessions = self.seen.setdefault(key, {})
        seen = sessions.get(session)
        if seen is None:
            if len(sessions) >= SESSIONS:       # the least recently used one's record goes
                oldest = min(sessions.values(), key=lambda s: s.used)      # to the newest
                del sessions[oldest.session]
                self.slots[(key, session)] = self.slots.pop((key, oldest.session))
            seen = sessions[session] = _Seen(session)
        if n > seen.last + 1:        # numbers were sent that have not arrived (yet)
            seen.gaps.append([seen.last + 1, n - 1])
            if len(seen.gaps) > GAPS:
                seen.floor = seen.gaps.pop(0)[1]
        elif seen.in_gap(n):         # one that had been overtaken: its gap closes behind it
            seen.fill(n)
        seen.last = max(seen.last, n)
        self._clock += 1
        seen.used = self._clock
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
            used = _USED.unpack_from(record, RECORD - _USED.size)[0]
            k = (host, port, int(lun))
            self.seen.setdefault(k, {})[session] = _Seen(session, last, floor, gaps, used)
            self.slots[(k, session)] = slot
            self._clock = max(self._clock, used)
        self._fd = os.open(self.path, os.O_RDWR)
        self._next_slot = len(raw) // RECORD + (1 if len(raw) % RECORD else 0)

    def _save(self, key: tuple, seen: _Seen) -> None:
        if self._fd is None:
            if self._closed:
                raise SanError("ELEMENT_DOWN", f"{self.name} is down")
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        slot = self.slots.get((key, seen.session))
        if slot is None:
            slot = self.slots[(key, seen.session)] = self._next_slot
            self._next_slot += 1
        name = "\t".join(map(str, key)).encode()
        body = bytearray(RECORD)
        _HEAD.pack_into(body, 0, 0, len(name), name, seen.session, seen.last, seen.floor,
                        len(seen.gaps))
        for i, (lo, hi) in enumerate(seen.gaps):
            _GAP.pack_into(body, _HEAD.size + i * _GAP.size, lo, hi)
        _USED.pack_into(body, RECORD - _USED.size, seen.used)
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
