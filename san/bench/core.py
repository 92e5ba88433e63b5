"""What every benchmark shares: settings, figures, curves, alternating timed runs, data checks.

A *figure* is one measured number beside its *baseline*, a number measured in the same run
on the same bytes by a plain mover (raw Ray, a file copy, a memory copy...), each the median
of runs that alternate with the baseline's (`alternate`), each run after `os.sync()` so that
one run's dirty pages are not flushed into the next one's time.  Disk writes on this kind of
machine swing tenfold between new file space and overwrites, so a figure says which it does
(`space`): wherever the work allows, the timed runs overwrite space an untimed warm-up wrote.

A *curve* is what a plot draws: an x axis and series of y values, the baselines marked.
Both are plain data (they go into the JSON as they are; the plots read only them).
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import SanError
from ..units import GiB, MiB

# what a figure's timed runs do to disk
OVERWRITE = "overwrite"          # they overwrite space an untimed warm-up wrote
NEW_SPACE = "new space"          # they write new file space (the work cannot do otherwise)
NO_DATA = "no data written"      # metadata only, or nothing at all
READS = "reads only"
MEMORY = "memory only"


class DataCheckFailed(Exception):
    """A benchmark's bytes were not what it wrote: the run fails (exit 1), naming it."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise DataCheckFailed(message)


@dataclass
class Settings:
    """Sizes and lists every benchmark reads; `quick` ones take seconds and a few MiB."""
    quick: bool = False
    size: int = GiB
    repeat: int = 3
    tmp: Path = Path("/tmp")

    @property
    def stream(self) -> int:
        """Bytes each of N hosts (or fan-out destinations) moves per run: size / 8, so the
        8-stream point moves `size`; at least 4 MiB, a whole number of MiB."""
        return max(4 * MiB, self.size // 8 // MiB * MiB)

    @property
    def chunks(self) -> list[int]:
        return [1 * MiB, 4 * MiB] if self.quick else [256 << 10, 1 * MiB, 4 * MiB, 16 * MiB]

    @property
    def hosts(self) -> list[int]:
        return [1, 2] if self.quick else [1, 2, 4, 8]

    @property
    def fanout(self) -> list[int]:
        return [1, 2] if self.quick else [1, 2, 4, 8]

    @property
    def snapshot_sizes(self) -> list[int]:
        return [GiB, 64 * GiB, 1 << 40] if self.quick else [GiB, 16 * GiB, 256 * GiB, 1 << 40, 4 << 40]

    @property
    def snapshot_data(self) -> int:
        """Bytes written into each volume before its snapshots are taken."""
        return min(self.size, 4 * MiB if self.quick else 64 * MiB)

    @property
    def fractions(self) -> list[float]:
        return [0.01, 0.1, 1.0] if self.quick else [0.001, 0.01, 0.1, 0.5, 1.0]

    @property
    def media(self) -> list[int]:
        return [1, 2] if self.quick else [1, 4, 16]

    @property
    def hash_buffer(self) -> int:
        return 8 * MiB if self.quick else 64 * MiB


@dataclass
class Baseline:
    name: str
    value: float
    measured: str
    runs: list = field(default_factory=list)


@dataclass
class Figure:
    """One measured number beside its baseline from the same run."""
    benchmark: str
    key: str                      # unique within the run, e.g. "fabric.write.4MiB"
    name: str                     # short, for the table
    value: float
    unit: str
    measured: str                 # what was measured, in a sentence
    baseline: Baseline
    better: str = "higher"        # or "lower"
    space: str = OVERWRITE
    runs: list = field(default_factory=list)
    other_baselines: list = field(default_factory=list)
    params: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return self.value / self.baseline.value if self.baseline.value else None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["ratio"] = self.ratio
        return out


@dataclass
class Series:
    name: str
    y: list
    baseline: bool = False
    panel: str = ""                # series of one panel share a plot; panels side by side


@dataclass
class Curve:
    """What one plot draws (`san.bench.plots`)."""
    key: str                       # also the PNG's file name
    title: str
    x_label: str
    y_label: str
    x: list
    series: list
    note: str = ""                 # median of N, writes/overwrites...
    x_log: bool = True
    y_log: bool = False
    x_ticks: list | None = None    # labels for the x values (e.g. "4 MiB")
    kind: str = "lines"            # or "scatter": series y are [[x, y], ...] points
    verdicts: list | None = None   # bars: per x, target met (True), missed (False) or None,
                                   # when the verdict judges more than the bar (every round)

    def to_dict(self) -> dict:
        return asdict(self)


def median(values) -> float:
    return statistics.median(values)


def williams(n: int) -> list[list[int]]:
    """The orders of `n` movers round after round: a Williams design, a Latin square in which
    each mover runs right after each other one equally often (n rounds for an even n, 2n for
    an odd one: the rows, then the rows reversed), so that no mover always pays for the
    one before it.  For 2 movers: [0, 1], [1, 0]; for 3: 012, 120, 201, then 210, 021, 102."""
    if n < 1:
        raise SanError("INVALID_INPUT", f"alternate needs at least one mover (got {n})")
    first, low, high = [0], 1, n - 1
    while len(first) < n:
        first.append(low)
        low += 1
        if len(first) < n:
            first.append(high)
            high -= 1
    rows = [[(x + i) % n for x in first] for i in range(n)]
    return rows + [row[::-1] for row in rows] if n % 2 else rows


def warm_memory(nbytes: int) -> None:
    """Touch `nbytes` of fresh memory and free it again (untimed), so that the run right
    after it takes warm pages for whatever new file space it writes.

    Why: this VM hands freed memory back to its host (its virtio balloon reports free pages,
    in 2 MiB blocks, a couple of seconds after they are freed), and the next process to take
    such a page waits for the host to give it back.  Touching 2 GiB here took 0.27-0.54 s
    right after the same touch, 2.8-4.7 s after 2-3 s of nothing; runs writing 1 GiB of new
    space ran at 3-5 GiB/s in most rounds and at 0.4-1.3 in others, on either side of a row,
    so which kind of round a side got decided the row's median.  In two runs of row 4 of the
    targets (mirror, restore and copy into new space, each beside a Python copy), 3 of 60
    timed runs were slower than 1.5 GiB/s with 2 GiB warmed before each, 10 of 60 without
    (5 of them below 1 GiB/s)."""
    if nbytes > 0:
        np.ones(nbytes, dtype=np.uint8)         # every page written, then freed at once


def alternate(movers: dict[str, Callable[[], float]], repeat: int, sync: bool = True,
              setup: Callable[[str], None] | None = None,
              settle: bool = False, warm: int = 0) -> dict[str, list[float]]:
    """Run each mover `repeat` times, alternating them (round r takes the order `williams`
    gives, so that none always follows the same one), `os.sync()` before each; each mover
    returns its own seconds.  `setup(name)`, if given, runs untimed before each run (e.g.
    changing data).  With `warm`, `warm_memory(warm)` runs last before each run: what a
    row whose runs write new space needs (both sides alike), so each run gets warm pages.

    With `settle`, `os.sync()` also runs before each setup: the last run's write-back is
    done before this run's setup starts, so the sync right before a run flushes only what
    its own setup wrote.  What it is for: on this VM, memory left untouched for a while is
    slow to touch again (10 MiB took 11 ms after 0.5 s unused, 42-47 ms after 3-5 s), so a
    short run that waits out another run's seconds-long flush right before it is timed
    pays for that other run."""
    names = list(movers)
    times: dict[str, list[float]] = {n: [] for n in names}
    orders = williams(len(names))
    for r in range(repeat):
        for name in (names[i] for i in orders[r % len(orders)]):
            if settle:
                os.sync()
            if setup is not None:
                setup(name)
            if sync:
                os.sync()
            warm_memory(warm)
            times[name].append(float(movers[name]()))
    return times


def clock(fn: Callable[[], object]) -> Callable[[], float]:
    """A mover timing `fn()` with a wall clock."""
    def run() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    return run


def rate(nbytes: int, seconds: list[float]) -> float:
    """GiB/s of the median run."""
    return nbytes / median(seconds) / GiB


def gibps(nbytes: int, seconds: list[float]) -> list[float]:
    return [nbytes / s / GiB for s in seconds]


def plain(value):
    """JSON-ready: numpy scalars and paths become Python values."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def write_all(fd: int, data, offset: int) -> int:
    """pwrite every byte of `data` at `offset` (pwrite may write less); returns the count:
    what the plain baselines write with."""
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)
    return done


def read_exact(fd: int, buf, offset: int):
    """Fill `buf` from `fd` at `offset` in one preadv; OSError if the file is short there."""
    got = os.preadv(fd, [buf], offset)
    if got != len(buf):
        raise OSError(f"short read: {got} of {len(buf)} bytes at {offset}")
    return buf
