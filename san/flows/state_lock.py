"""One generation of an element at a time in its part of the state dir.

The elements that keep state (an array: ``arrays/NAME/``, a backup server: ``servers/NAME/``,
a tape library: ``tapes/NAME/``) each hold an exclusive ``flock`` on ``PART/.owner`` from
before they open anything there until their process ends (or, in process, until they are
closed).  The kernel drops the lock when the process dies, however it dies.

Why: the actors of a `san run` killed with SIGKILL outlive it by seconds (Ray's reaper ends
them) and may still be writing: a copy job, a tape append, a catalog commit.  An actor killed
by a `fault kill` is ended asynchronously too, and `restart` starts its successor at once.
The next generation (the next run's element, or the restarted one) waits here until the last
one is gone, so two never write one store.  The wait is bounded (`WAIT`): an element whose
part stays held that long does not start (ELEMENT_DOWN, naming the holder).

A file system without locks (some network file systems refuse ``flock``) gets no guarantee
here, and is used all the same.
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from pathlib import Path

from ..errors import SanError

__all__ = ["StateLock", "WAIT", "read_holder", "write_holder"]

WAIT = 60.0         # seconds an element waits for the last holder of its part to end
POLL = 0.05
NAME = ".owner"


class StateLock:
    """The lock of one element's part of the state dir, taken when made, until `release`."""

    def __init__(self, directory: Path, owner: str, wait: float | None = None):
        wait = WAIT if wait is None else wait
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / NAME
        self._fd: int | None = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self._holder()
                    self.release()
                    raise SanError("ELEMENT_DOWN", f"{owner} did not start: {directory} is still "
                                                   f"held by {holder} after {wait:g} s (an earlier "
                                                   "run's or life's element that has not ended)")
                time.sleep(POLL)
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
                self.release()          # no locks on this file system: no guarantee, no wait
                return
        write_holder(self._fd, f"{owner} (pid {os.getpid()} on {socket.gethostname()})")

    @classmethod
    def holding(cls, directory: Path, owner: str, opens) -> "StateLock":
        """Take the lock of `directory`, then call `opens()` (the element opening what it
        keeps there); if that fails, let the lock go again.  Returns the lock held."""
        lock = cls(directory, owner)
        try:
            opens()
        except BaseException:
            lock.release()
            raise
        return lock

    def _holder(self) -> str:
        return read_holder(self._fd) or "another process"

    def release(self) -> None:
        """Let the next generation in (closing the file drops the lock)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def write_holder(fd: int, text: str) -> None:
    """Name the holder of the lock on `fd` in its file: what the next one refused shows."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, (text + "\n").encode(), 0)


def read_holder(fd: int) -> str:
    """What the holder of the lock on `fd` wrote in its file; "" if nothing readable."""
    try:
        return os.pread(fd, 512, 0).decode(errors="replace").strip()
    except OSError:
        return ""
