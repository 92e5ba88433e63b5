"""Byte buffers and positional file I/O: the primitives under the array's persistent state.

The volume stores (`san.storage`), their journals (`san.journal`) and the volume digest
(`san.digest`) move bytes between numpy buffers and files without copying where they can:

- `as_bytes_array` takes what a caller hands in (a numpy array of any dtype or shape, bytes,
  bytearray, memoryview; read-only ones too, as from Ray's object store) as a 1-D uint8 view;
- `pread_into` and `pwrite_all` are ``preadv`` / ``pwrite`` at an offset, repeated until the
  whole buffer has moved (a short transfer is not an error);
- `punch_hole` gives a byte range of a sparse file back to the file system (Linux
  ``fallocate(PUNCH_HOLE | KEEP_SIZE)``), returning False where it cannot; `allocate` does
  the opposite, before a range is first written;
- `close_fd` and `FdOwner`: an object holding descriptors closes them in `close()`, and
  when it is garbage-collected without one (an actor that crashed never calls it);
- `write_replace` replaces a file atomically: the payload goes to ``NAME.tmp``, is fsync-ed
  (else a power loss may leave the rename and an empty file) and moved over ``NAME`` with
  ``os.replace``, so a crash leaves the old file or the new one, and at worst a stale
  ``NAME.tmp`` that its reader deletes when it opens the file.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import pathlib

import numpy as np

from san.errors import SanError

__all__ = ["as_bytes_array", "pread_into", "pwrite_all", "punch_hole", "allocate", "write_replace", "sync_dir",
           "tmp_path_of", "close_fd", "FdOwner"]


def as_bytes_array(data) -> np.ndarray:
    """A 1-D uint8 view of `data` (ndarray, bytes, bytearray, memoryview), without copying."""
    if isinstance(data, np.ndarray):
        arr = data if data.flags.c_contiguous else np.ascontiguousarray(data)   # strided: one copy
        if arr.dtype != np.uint8:
            arr = arr.reshape(-1).view(np.uint8)
        elif arr.ndim != 1:
            arr = arr.reshape(-1)
        return arr
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        raise SanError("INVALID_INPUT",
                       f"data must be a uint8 numpy array, bytes or memoryview (got {type(data).__name__})") from None


def pwrite_all(fd: int, buf, offset: int) -> None:
    """Write all of `buf` to `fd` at `offset`."""
    mv = memoryview(buf).cast("B")
    while len(mv):
        n = os.pwrite(fd, mv, offset)
        if n <= 0:
            raise OSError(f"pwrite wrote {n} bytes")
        mv = mv[n:]
        offset += n


def pread_into(fd: int, arr: np.ndarray, offset: int) -> None:
    """Fill the writable contiguous uint8 array `arr` from `fd` at `offset`."""
    mv = memoryview(arr).cast("B")
    while len(mv):
        n = os.preadv(fd, [mv], offset)
        if n <= 0:  # past the end of the file (cannot happen for a file of `size` bytes)
            mv[:] = b"\0" * len(mv)
            return
        mv = mv[n:]
        offset += n


_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_fallocate = None
try:  # Linux: punch holes to give discarded granules back to the file system
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    _fallocate = _libc.fallocate
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    _fallocate.restype = ctypes.c_int
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _fallocate = None


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Free [offset, offset+length) of `fd` (it reads as zeros, the size stays); False if the
    platform or file system cannot, and the caller must write zeros instead."""
    if _fallocate is None:
        return False
    return _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) == 0


def allocate(fd: int, offset: int, length: int) -> bool:
    """Give [offset, offset+length) of `fd` disk blocks before it is written (Linux
    ``fallocate``, mode 0); False where the platform or file system cannot (the write then
    allocates as it goes).

    Writing into a hole makes the file system find blocks page by page as write-back happens;
    one ``fallocate`` of the whole range first finds them at once, in as few extents as it
    can.  The store calls it only for granules about to be written for the first time, so
    volumes stay thin: what is allocated is what is written.
    """
    if _fallocate is None or length <= 0:
        return False
    return _fallocate(fd, 0, offset, length) == 0


def tmp_path_of(path: pathlib.Path) -> pathlib.Path:
    """Where `write_replace` stages the next content of `path`: ``NAME.tmp`` beside it."""
    return path.with_name(path.name + ".tmp")


def write_replace(path: pathlib.Path, payload, sync: bool = True) -> None:
    """Replace `path` by `payload` atomically: a crash leaves the old file or the new one.
    Without `sync` the new file is not fsync-ed first (ext4 orders a rename after the new
    file's data; what needs no power-loss guarantee skips the fsync's cost)."""
    tmp = tmp_path_of(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        pwrite_all(fd, payload, 0)
        if sync:
            os.fsync(fd)        # else a power loss may leave the rename and an empty file
    finally:
        os.close(fd)
    os.replace(tmp, path)


def sync_dir(path: pathlib.Path) -> None:
    """fsync a directory: the renames and new files in it survive a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def close_fd(fd: int) -> None:
    """Close `fd` unless it is -1 (not open); an error while closing is ignored."""
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


class FdOwner:
    """A holder of file descriptors: a context manager whose `close` also runs when it is
    garbage-collected (a crashed actor never calls `close`).  Subclasses define `close`."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
