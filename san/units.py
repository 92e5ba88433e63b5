"""Units of the YAML files: sizes, speeds, durations, schedules and times.

Every parser takes the value as written (int or str) and returns plain numbers:
bytes (int), bytes per second (float), seconds (float).  A bad value raises
`ValueError` whose message says what was expected; the topology loader turns it into a
located problem (``FILE:LINE:COL: path: ... (got '3 furlongs'; expected ...)``).

>>> parse_size("4 MiB"), parse_size("1GB"), parse_size(512)
(4194304, 1000000000, 512)
>>> parse_speed("8GFC"), parse_speed("1GbE"), parse_speed("160MB/s")
(800000000.0, 125000000.0, 160000000.0)
>>> parse_duration("5m")
300.0

It also defines, once, the sizes of the block path the rest of the SAN shares: `BLOCK` (a
512-byte sector), `DEFAULT_GRANULE` (256 KiB, an array's unit of allocation and integrity)
and `DEFAULT_CHUNK` (4 MiB, what one transfer command carries by default).
"""
from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass

KiB, MiB, GiB, TiB, PiB = (1 << 10), (1 << 20), (1 << 30), (1 << 40), (1 << 50)

# Sizes of the block path, defined here once.  Three different quantities that must not be
# confused with each other (nor with the patent's 512-byte volume-info record, which is
# `san.volume_info.SIZE`: a record, not a sector):
BLOCK = 512                     # a SCSI logical block (sector): LBAs count these
DEFAULT_GRANULE = 256 * KiB     # an array's unit of allocation and integrity (`san.storage`)
DEFAULT_CHUNK = 4 * MiB         # bytes one transfer command carries (``--chunk-size``)

SIZE_UNITS = {
    "B": 1, "KiB": KiB, "MiB": MiB, "GiB": GiB, "TiB": TiB, "PiB": PiB,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
}
SPEED_NAMES = {
    "1GFC": 100e6, "2GFC": 200e6, "4GFC": 400e6, "8GFC": 800e6, "16GFC": 1600e6, "32GFC": 3200e6,
    "1GbE": 125e6, "10GbE": 1250e6, "25GbE": 3125e6,
}
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

SIZE_EXPECTED = "a size: bytes, or a number with B KiB MiB GiB TiB PiB KB MB GB TB"
MIN_SPEED, MAX_SPEED = 1e3, 1e13      # bytes/s: 1 kB/s to 10 TB/s
SPEED_EXPECTED = ("a speed: " + " ".join(SPEED_NAMES) + ", 'N MB/s' or 'N Gb/s', from 0.001 MB/s "
                  "to 10000000 MB/s")
DURATION_EXPECTED = "a duration like 30s, 5m, 2h, 1d, 1w"
SCHEDULE_EXPECTED = ("a schedule: 'once 2026-12-01T02:00', 'daily 02:00', "
                     "'weekly sun 03:00' or 'every 6h'")
TIME_EXPECTED = "a UTC time like 2026-01-01T00:00:00Z"

_NUM = r"(\d+(?:\.\d+)?)"


def parse_size(value) -> int:
    """Bytes from an int or a string like '2GiB', '4 MiB', '1GB' (a whole number of bytes)."""
    if isinstance(value, bool):
        raise ValueError(SIZE_EXPECTED)
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size that is not negative")
        return value
    if isinstance(value, str):
        m = re.fullmatch(_NUM + r"\s*([A-Za-z]+)?", value.strip())
        if m and (m.group(2) or "B") in SIZE_UNITS:
            number, unit = m.group(1), m.group(2) or "B"
            scaled = _exact_scale(number, SIZE_UNITS[unit])
            if scaled is not None:
                return scaled
    raise ValueError(SIZE_EXPECTED)


def _exact_scale(number: str, factor: int) -> int | None:
    """`number` * `factor` if that is a whole number of bytes, else None (no rounding)."""
    if "." not in number:
        return int(number) * factor
    whole, frac = number.split(".")
    scaled = int(whole + frac) * factor
    div = 10 ** len(frac)
    return scaled // div if scaled % div == 0 else None


def parse_speed(value) -> float:
    """Bytes per second from a named link speed or 'N MB/s' / 'N Gb/s'."""
    if isinstance(value, str):
        text = value.strip()
        if text in SPEED_NAMES:
            return SPEED_NAMES[text]
        m = re.fullmatch(_NUM + r"\s*(MB/s|Gb/s)", text)
        if m:
            number = float(m.group(1))
            rate = number * 1e6 if m.group(2) == "MB/s" else number * 1e9 / 8
            if MIN_SPEED <= rate <= MAX_SPEED:      # (inf, or 1e-312 B/s, broke the clock)
                return rate
    raise ValueError(SPEED_EXPECTED)


def parse_duration(value) -> float:
    """Seconds from '30s', '5m', '2h', '1d', '1w'."""
    if isinstance(value, str):
        m = re.fullmatch(_NUM + r"\s*([smhdw])", value.strip())
        if m:
            return float(m.group(1)) * DURATION_UNITS[m.group(2)]
    raise ValueError(DURATION_EXPECTED)


# The simulated clock's range: FAT dates start in 1980, a volume info timestamp (u32 seconds
# since 1970) ends at 2106-02-07T06:28:15Z.  A topology's `start` and every clock move stay in it.
CLOCK_FIRST = _dt.datetime(1980, 1, 1, tzinfo=_dt.timezone.utc)
CLOCK_LAST = _dt.datetime(2106, 2, 7, 6, 28, 15, tzinfo=_dt.timezone.utc)
CLOCK_RANGE = f"from {CLOCK_FIRST:%Y-%m-%dT%H:%M:%SZ} to {CLOCK_LAST:%Y-%m-%dT%H:%M:%SZ}"


def in_clock_range(moment: _dt.datetime) -> bool:
    """Can the simulated clock show `moment` (a FAT date and a volume info timestamp hold it)?"""
    return CLOCK_FIRST <= moment <= CLOCK_LAST


# A media ID names a tape in its VOL1 label and is its file's name in the state dir: both the
# topology's check and the tape labels' take it from here.
MEDIA_ID_CHARACTERS = "A-Za-z0-9._-"           # a regular expression's character class
MEDIA_ID_PATTERN = f"^[{MEDIA_ID_CHARACTERS}]{{1,6}}$"
MEDIA_ID_EXPECTED = "1 to 6 letters, digits, '.', '_' or '-' (a tape's VOL1 label)"


def parse_time(value) -> _dt.datetime:
    """An aware UTC datetime from '2026-01-01T00:00:00Z' (YAML may already give a datetime)."""
    if isinstance(value, _dt.datetime):
        return value.replace(tzinfo=_dt.timezone.utc) if value.tzinfo is None else value.astimezone(_dt.timezone.utc)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            parsed = _dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(TIME_EXPECTED) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=_dt.timezone.utc)
        return parsed.astimezone(_dt.timezone.utc)
    raise ValueError(TIME_EXPECTED)


def format_time(moment: _dt.datetime) -> str:
    """The report's timestamp form, 'YYYY-MM-DDTHH:MM:SSZ'."""
    return moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Schedule:
    """When a backup definition falls due, in simulated UTC time.

    kind is 'once' (at `at`), 'daily' / 'weekly' (at `hour`:`minute`, weekly on `weekday`,
    0 = Monday) or 'every' (each `interval` seconds from the clock's start).
    """
    kind: str
    text: str
    at: _dt.datetime | None = None
    hour: int = 0
    minute: int = 0
    weekday: int = 0
    interval: float = 0.0

    def next_after(self, moment: _dt.datetime, origin: _dt.datetime) -> _dt.datetime | None:
        """The first due time strictly after `moment` (None if a 'once' has passed)."""
        if self.kind == "once":
            return self.at if self.at > moment else None
        if self.kind == "every":
            step = _dt.timedelta(seconds=self.interval)
            n = int((moment - origin) / step) + 1 if moment >= origin else 1
            due = origin + n * step
            while due <= moment:
                due += step
            return due
        due = moment.replace(hour=self.hour, minute=self.minute, second=0, microsecond=0)
        if self.kind == "weekly":
            due += _dt.timedelta(days=(self.weekday - due.weekday()) % 7)
            period = _dt.timedelta(days=7)
        else:
            period = _dt.timedelta(days=1)
        while due <= moment:
            due += period
        return due


def parse_schedule(value) -> Schedule:
    """A `Schedule` from 'once 2026-12-01T02:00', 'daily 02:00', 'weekly sun 03:00', 'every 6h'."""
    if isinstance(value, str):
        words = value.split()
        try:
            if len(words) == 2 and words[0] == "once":
                return Schedule("once", value, at=parse_time(words[1]))
            if len(words) == 2 and words[0] == "daily":
                hour, minute = _hhmm(words[1])
                return Schedule("daily", value, hour=hour, minute=minute)
            if len(words) == 3 and words[0] == "weekly" and words[1].lower()[:3] in WEEKDAYS:
                hour, minute = _hhmm(words[2])
                return Schedule("weekly", value, hour=hour, minute=minute,
                                weekday=WEEKDAYS.index(words[1].lower()[:3]))
            if len(words) == 2 and words[0] == "every":
                interval = parse_duration(words[1])
                if interval > 0:
                    return Schedule("every", value, interval=interval)
        except ValueError:
            pass
    raise ValueError(SCHEDULE_EXPECTED)


def _hhmm(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError(SCHEDULE_EXPECTED)
    return int(m.group(1)), int(m.group(2))


def plural(n: int, word: str, words: str | None = None) -> str:
    """`n` and its noun: ``1 drive``, ``2 drives``, ``3 media`` (``words``, if not ``word+s``)."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def format_size(nbytes: int) -> str:
    """A short human form for tables: 2 GiB, 512 B, 1.5 MiB; a size that rounds to 1024 of
    a unit is shown in the next one.

    >>> format_size(2 * GiB), format_size(512), format_size(3 * MiB // 2), format_size(GiB - 1)
    ('2 GiB', '512 B', '1.5 MiB', '1.0 GiB')
    """
    units = (("PiB", PiB), ("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB))
    for i, (unit, factor) in enumerate(units):
        if nbytes >= factor:
            value = nbytes / factor
            if value == int(value):
                return f"{value:.0f} {unit}"
            text = f"{value:.1f}"
            if text == "1024.0" and i:          # just under the next unit: say so in it
                return f"{nbytes / units[i - 1][1]:.1f} {units[i - 1][0]}"
            return f"{text} {unit}"
    return f"{nbytes} B"


def format_speed(rate: float, kind: str = "fc") -> str:
    """A speed as the table shows it: a Fibre Channel link's by its name if it has one
    ('8GFC'), the LAN's likewise ('1GbE'), anything else ('plain': a copy engine, a tape
    drive) in MB/s, written out in full (no exponent).

    >>> format_speed(800e6), format_speed(800e6, "plain"), format_speed(125e6, "lan")
    ('8GFC', '800 MB/s', '1GbE')
    >>> format_speed(1234567e6, "plain"), format_speed(1e3, "plain"), format_speed(100e6, "lan")
    ('1234567 MB/s', '0.001 MB/s', '100 MB/s')
    """
    suffix = {"fc": "GFC", "lan": "GbE"}.get(kind)
    for name, value in SPEED_NAMES.items():
        if suffix and value == rate and name.endswith(suffix):
            return name
    return f"{rate / 1e6:.3f}".rstrip("0").rstrip(".") + " MB/s"
