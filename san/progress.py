"""Progress of long steps on a terminal: bytes moved and the rate, as the elements report them.

Every host counts the payload bytes its FC transfers have had acknowledged (`Host.bytes_moved`) and
every array the bytes its copies have moved (`mgmt_moved`): counters that only grow.  While a
top-level step runs, `StepProgress` polls them (twice a second, from a thread of the driver)
and, once the step has run for `delay` seconds, shows a rich progress bar with the bytes
moved since the step began and the rate.  Nothing shows with `--quiet` or when stdout is not
a terminal (the caller then passes no `StepProgress`); what it reads is never part of a
report, so a counter an element failed to answer (it is down) just stops counting.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

from rich.progress import BarColumn, TextColumn

from .errors import SanError
from .units import format_size

__all__ = ["StepProgress", "counters", "moved_since", "moved_bytes", "columns"]


def columns() -> tuple:
    """The run's progress display: a line for the steps (a bar), and one per long step (its
    bytes and rate); every task carries an `info` field."""
    return (TextColumn("[progress.description]{task.description}"), BarColumn(),
            TextColumn("{task.fields[info]}"))


def counters(san, last: dict | None = None) -> dict[str, int]:
    """Every host's and array's byte counter; one that is down (or dies while asked) keeps
    its value in `last`, so a total over them does not drop when a fault takes an element
    down mid-step (a restarted one counts from 0 again: its count starts over there)."""
    out = dict(last or {})
    for name, kind in san.kinds.items():
        if name in san.down or kind not in ("host", "array"):
            continue
        try:
            out[name] = (san.call(name, "bytes_moved") if kind == "host"
                         else san.call(name, "mgmt_moved", "san"))
        except SanError as exc:
            if exc.code != "ELEMENT_DOWN":
                raise
            # it died meanwhile: the step's own error says so
    return out


def moved_since(start: dict[str, int], now: dict[str, int]) -> int:
    """Bytes moved between two `counters` readings (an element restarted since, its counter
    lower than at the start, counts what it moved since it came back)."""
    return sum(n - start.get(name, 0) if n >= start.get(name, 0) else n
               for name, n in now.items())


def moved_bytes(san) -> int:
    """The sum of every live host's and array's byte counter."""
    return sum(counters(san).values())


class StepProgress:
    """`with watch.step(title):` around a step shows a line with the bytes it moved and the
    rate, in the rich `progress` display, if the step lasts over `delay` seconds."""

    def __init__(self, san, progress, delay: float = 1.0, every: float = 0.5):
        self.san, self.progress, self.delay, self.every = san, progress, delay, every

    @contextmanager
    def step(self, title: str):
        done = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(title, done), daemon=True,
                                   name="san-progress")
        watcher.start()
        try:
            yield
        finally:
            done.set()
            watcher.join()

    def _watch(self, title: str, done: threading.Event) -> None:
        # read as the step begins: its first `delay` seconds count too
        start, began = counters(self.san), time.monotonic()
        if done.wait(self.delay):
            return                       # a short step: no line
        task = self.progress.add_task(f"  {title}", total=None, info="")
        seen = dict(start)
        try:
            while not done.wait(self.every):
                seen = counters(self.san, seen)
                moved = moved_since(start, seen)
                rate = moved / max(time.monotonic() - began, 1e-9)
                self.progress.update(task, info=f"{format_size(moved)} moved, {format_size(int(rate))}/s")
        finally:
            self.progress.remove_task(task)
