"""What the NBD server serves: the `Export` interface a backend implements, and `ExportError`.

The server (`san.nbd.server`) knows an export only through this interface; it knows nothing
of where the bytes live.  A backend subclasses `Export` (or provides the same attributes
and coroutines) and implements at least `read` and `write`; the others have safe defaults.

What the server guarantees to a backend, so it need not check again:

* every call is in range: ``0 <= offset``, ``0 < length``, ``offset + length <= size``;
* every offset and length is a multiple of `MIN_BLOCK` (512), the minimum block size the
  server advertises (a client's unaligned request is refused with EINVAL before);
* a read or write is at most the server's maximum payload (32 MiB by default); trim, zero
  and block status may span the whole export;
* a read-only export never sees `write`, `trim` or `zero`;
* calls on one connection *start* in the order the client sent them (each runs as its own
  task, so many are in flight at once and may *finish* in any order; a backend that
  merges adjacent requests sees them arrive in order); `flush` starts only once every
  write, trim and zero received before it on that connection has finished.

And what it expects back:

* `read` returns exactly `length` bytes as ``bytes``, a ``memoryview`` or a C-contiguous
  uint8 numpy array; the server may send from it after `read` returns without copying,
  so the backend must not modify that buffer afterwards;
* `block_status` returns ``(length, flags)`` extents that describe the export from
  `offset` on, consecutively, at least one; they may stop short of ``offset + length``
  (the client asks again for the rest) or run past it (the server cuts them).  `flags`
  is `STATE_HOLE` (not allocated) | `STATE_ZERO` (reads as zeroes); 0 is always true;
* a failure is `ExportError(errno_value, message)`: the client gets that error (mapped to
  one of the eight NBD allows: `san.nbd.protocol.nbd_error`) and the message where the
  protocol can carry one.  Any other exception becomes EIO for that request and is
  logged; the connection and the server carry on.
"""
from __future__ import annotations

import errno as _errno
from typing import TYPE_CHECKING

from .protocol import STATE_HOLE, STATE_ZERO

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Export", "ExportError", "MIN_BLOCK", "STATE_HOLE", "STATE_ZERO"]

MIN_BLOCK = 512


class ExportError(Exception):
    """A backend's failure, carried to the client as the NBD error for ``errno_value``.

    >>> str(ExportError(_errno.ENOSPC, "pool p1 is full"))
    'ENOSPC: pool p1 is full'
    """

    def __init__(self, errno_value: int, message: str):
        if not isinstance(errno_value, int) or errno_value <= 0:
            raise ValueError(f"ExportError needs a positive errno value, got {errno_value!r}")
        super().__init__(errno_value, message)
        self.errno = errno_value
        self.message = message

    def __str__(self) -> str:
        return f"{_errno.errorcode.get(self.errno, self.errno)}: {self.message}"


class Export:
    """One NBD export: a name, a fixed size, and async I/O on its bytes.

    Attributes (plain attributes or properties; read once when a client picks the export,
    so a connection keeps the size it negotiated):

    * ``name``: what a client asks for, any characters a mount point may hold
      (``"host1:/db"``); at most 4096 bytes of UTF-8, no NUL;
    * ``size``: bytes, a multiple of 512;
    * ``read_only``: the server refuses writes, trims and zeroes with EPERM itself;
    * ``description``: a line for humans (``nbdinfo`` shows it), may be empty;
    * ``multi_conn``: True if a write completed through one connection is seen by reads
      on every other, and `flush` makes durable what every connection wrote (no cache
      private to a connection: the server has none).  The server then advertises
      ``NBD_FLAG_CAN_MULTI_CONN`` and clients such as nbdcopy open several connections.
    """

    name: str = ""
    size: int = 0
    read_only: bool = False
    description: str = ""
    multi_conn: bool = True

    async def read(self, offset: int, length: int) -> bytes | memoryview | np.ndarray:
        """The `length` bytes at `offset` (see the module docstring for the return type)."""
        raise NotImplementedError

    async def write(self, offset: int, data: memoryview) -> None:
        """Store `data` (``len(data)`` bytes, a multiple of 512) at `offset`.

        `data` is a read-only memoryview of a buffer that belongs to this request alone:
        the server never reuses or changes it, so the backend may keep a reference after
        returning (to merge it with a neighbour, say) without copying.
        """
        raise NotImplementedError

    async def flush(self) -> None:
        """Make every write that has completed durable (a simulator may do nothing)."""

    async def trim(self, offset: int, length: int) -> None:
        """A hint that the range is no longer needed; its contents are undefined after.

        The default ignores it, which the protocol allows.
        """

    async def zero(self, offset: int, length: int, may_trim: bool) -> None:
        """Make the range read as zeroes; `may_trim` allows deallocating it (a hole).

        `may_trim` is False when the client sent ``NBD_CMD_FLAG_NO_HOLE``: the range must
        stay allocated.  The default writes zeroes in 4 MiB pieces.
        """
        step = 4 << 20
        zeroes = memoryview(bytes(min(step, length)))
        end = offset + length
        while offset < end:
            n = min(step, end - offset)
            await self.write(offset, zeroes[:n])
            offset += n

    async def block_status(self, offset: int, length: int) -> list[tuple[int, int]]:
        """Extents ``(length, flags)`` from `offset` on (see the module docstring).

        The default says "allocated, contents unknown" for the whole range, always true.
        """
        return [(length, 0)]

    def refused(self, command: str, errno_value: int, message: str) -> None:
        """The server refused a request to this export by itself (`command`, e.g. ``"WRITE"``;
        the NBD error as an errno value; why), without calling the backend: a hook for
        counting them.  The default does nothing."""
