"""A tripwire on an element's byte counter: where a fault `when:` strikes mid-step.

Hosts count the payload bytes their FC transfers have had acknowledged, arrays the bytes
their copies have moved (`san.progress` reads the same counters).  A fault with
``when: {step: T, after: SIZE}`` (`san.strike`) arms the tripwire of the elements that move
step T's bytes at (their count when the concurrent step began) + SIZE.  The element's thread
that counts a chunk past that point stops right there, at the chunk boundary, before it sends
anything more, until the driver has struck and releases it.  So the fault finds the step
exactly SIZE bytes (rounded up to the chunk) into its work, whatever the machine's speed.
Commands the thread had already sent (a host keeps `san.flows.peers.WINDOW` in flight) still
complete, as commands in flight on a real link may: what lands is fixed by SIZE, the chunk
size and the window, not by timing; unless the fault kills the element they go to, which
applies those it reaches before it dies (timing decides how many).

The wait is bounded (`Tripwire.HOLD`): a driver that died cannot hold an element forever.
The thread that trips must not hold a lock the fault needs (arrays trip outside their lock).
"""
from __future__ import annotations

import threading

__all__ = ["Tripwire"]


class Tripwire:
    """Stop the counting thread once a counter reaches an armed point, until released.

    >>> t = Tripwire()
    >>> t.passed(10)            # not armed: nothing happens
    False
    >>> t.arm(8); t.release(); t.passed(10)   # released before anyone reached it
    False
    """

    HOLD = 60.0     # seconds a tripped thread waits for its release at most

    def __init__(self):
        self._lock = threading.Lock()
        self._at: int | None = None
        self._go = threading.Event()
        self._go.set()

    def arm(self, at: int) -> None:
        """Stop the first thread whose count reaches `at` (bytes, the element's own counter)."""
        with self._lock:
            self._at = int(at)
            self._go.clear()

    def release(self) -> None:
        """Let a stopped thread go on (and disarm)."""
        with self._lock:
            self._at = None
            self._go.set()

    def passed(self, total: int) -> bool:
        """Called after each counted chunk with the counter's new value: if it reached the
        armed point, wait here until released (True); else return at once (False)."""
        with self._lock:
            if self._at is None or total < self._at:
                return False
            self._at = None          # one strike per arming
        self._go.wait(self.HOLD)
        return True
