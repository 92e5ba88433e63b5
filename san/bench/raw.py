"""The raw-Ray baselines: a sender actor and a receiver actor moving the same bytes as the SAN.

A sender moves `size` bytes to its receiver in the `write` op's pattern (one new `ray.put`
per chunk, `window` chunks in flight, oldest answered first).  The receiver takes each chunk
by reference and either drops it (raw Ray) or pwrites it into its file (raw Ray + file); for
reads it returns a ready chunk (copied into the object store) or preads it from the file.
`punch` empties the file so that the next writes take new space, as an array's copy over FC
does (it UNMAPs its destination first); with `allocate` the receiver writes new space the
fastest way here: each chunk's range is `posix_fallocate`d, then pwritten.  `check` compares
the file with the pattern.

For `san bench --only targets`: `Source`, `Hop` and `Appender` stream the bytes of a file over
the hops of a tape backup (array -> host -> library actors) into a file appended with the
tape medium's syncs (`Appender.append`), and `Bare` is the bare actor SAN start-up is
compared with.
"""
from __future__ import annotations

import os
import time
from collections import deque

import numpy as np
import ray

from ..pattern import first_mismatch, pattern
from .core import read_exact, write_all

PIECE = 16 << 20


@ray.remote(num_cpus=0)
class Receiver:
    def __init__(self, path: str, size: int):
        self.path, self.size = path, size
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(self.fd, size)
        self.block = pattern(1, 0, PIECE)
        self.received = 0

    def put(self, offset: int, data, to_file: bool, allocate: bool = False) -> int:
        if to_file:
            if allocate:                # new space, the fastest way: allocate, then write
                os.posix_fallocate(self.fd, offset, len(data))
            os.pwrite(self.fd, data, offset)
        self.received += len(data)
        return len(data)

    def get(self, offset: int, length: int, from_file: bool):
        if not from_file:       # returned arrays are copied into the object store each time
            return self.block[:length]
        buf = np.empty(length, dtype=np.uint8)
        os.preadv(self.fd, [buf], offset)
        return buf

    def take_received(self) -> int:
        got, self.received = self.received, 0
        return got

    def punch(self) -> None:
        """Free the file's space: the next writes take new space."""
        os.ftruncate(self.fd, 0)
        os.ftruncate(self.fd, self.size)

    def check(self, seed: int, length: int) -> int | None:
        """The first byte of the file's first `length` that differs from the pattern of
        `seed` (None: all equal)."""
        buf = np.empty(PIECE, dtype=np.uint8)
        for off in range(0, length, PIECE):
            n = min(PIECE, length - off)
            os.preadv(self.fd, [buf[:n]], off)
            bad = first_mismatch(buf[:n], seed, off)
            if bad is not None:
                return bad
        return None

    def close(self) -> None:
        os.close(self.fd)
        os.unlink(self.path)


@ray.remote(num_cpus=0)
class Sender:
    def run(self, receiver, size: int, chunk: int, window: int, write: bool, to_file: bool,
            seed: int, allocate: bool = False) -> float:
        inflight: deque = deque()
        start = time.perf_counter()
        for off in range(0, size, chunk):
            if len(inflight) >= window:
                ray.get(inflight.popleft())
            n = min(chunk, size - off)
            if write:
                inflight.append(receiver.put.remote(off, ray.put(pattern(seed, off, n)), to_file,
                                                    allocate))
            else:
                inflight.append(receiver.get.remote(off, n, to_file))
        while inflight:
            ray.get(inflight.popleft())
        return time.perf_counter() - start


class RawPairs:
    """N senders and N receivers (each with its file under `folder`), made once, reused."""

    def __init__(self, folder, n: int, size: int):
        self.size = size
        self.receivers = [Receiver.remote(str(folder / f"raw-{i}.data"), size) for i in range(n)]
        self.senders = [Sender.remote() for _ in range(n)]
        ray.get([r.take_received.remote() for r in self.receivers])   # all up before timing

    def run(self, n: int, chunk: int, window: int, write: bool, to_file: bool, seed: int,
            size: int | None = None, allocate: bool = False) -> float:
        """Wall seconds for the first `n` pairs to move `size` bytes each, all at once
        (`allocate`: each receiver `posix_fallocate`s each chunk's range before writing it)."""
        size = size or self.size
        start = time.perf_counter()
        ray.get([s.run.remote(r, size, chunk, window, write, to_file, seed, allocate)
                 for s, r in zip(self.senders[:n], self.receivers[:n])])
        return time.perf_counter() - start

    def received(self, n: int) -> list[int]:
        return ray.get([r.take_received.remote() for r in self.receivers[:n]])

    def punch(self, n: int) -> None:
        ray.get([r.punch.remote() for r in self.receivers[:n]])

    def check(self, n: int, seed: int, length: int) -> list:
        return ray.get([r.check.remote(seed, length) for r in self.receivers[:n]])

    def close(self) -> None:
        try:
            ray.get([r.close.remote() for r in self.receivers])
        finally:
            for actor in self.receivers + self.senders:
                ray.kill(actor)


# -- the tape path's hops, and bare actors (san bench --only targets) ------------------------
@ray.remote(num_cpus=0)
class Source:
    """The array's hop: chunks of a file holding the volume's bytes (pread, as a store reads)."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDONLY)

    def read(self, offset: int, length: int):
        return read_exact(self.fd, np.empty(length, dtype=np.uint8), offset)

    def close(self) -> None:
        os.close(self.fd)


@ray.remote(num_cpus=0)
class Hop:
    """The host's hop: asks the source for chunks and hands each reply on to the appender by
    reference, `window` in flight: a relay never copies a payload, the appender fetches it
    straight from the source's object (Ray resolves a top-level ref argument)."""

    def relay(self, source, appender, pieces: list, window: int) -> int:
        inflight: deque = deque()
        moved = 0
        for off, n in pieces:
            if len(inflight) >= window:
                moved += ray.get(inflight.popleft())
            inflight.append(appender.put.remote(source.read.remote(off, n)))
        return moved + sum(ray.get(list(inflight)))


@ray.remote(num_cpus=0, concurrency_groups={"control": 1})
class Appender:
    """The library's hop: appends what the host hop relays to a file, in order (one thread
    takes the chunks), syncing as a tape medium's append does: all the data, one fsync, then
    a small commit record written over the file's head and a second fsync."""

    def __init__(self):
        self.fd, self.at = -1, 0

    @ray.method(concurrency_group="control")
    def append(self, hop, source, pieces: list, window: int, path: str, commit: bytes) -> int:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            self.at = os.fstat(self.fd).st_size
            if self.at == 0:                        # room for the commit record
                self.at = write_all(self.fd, bytes(len(commit)), 0)
            me = ray.get_runtime_context().current_actor
            ray.get(hop.relay.remote(source, me, pieces, window))
            os.fsync(self.fd)
            write_all(self.fd, commit, 0)
            os.fsync(self.fd)
            return self.at
        finally:
            os.close(self.fd)
            self.fd = -1

    def put(self, data) -> int:
        self.at += write_all(self.fd, data, self.at)
        return len(data)


@ray.remote(num_cpus=0)
class Bare:
    """An actor that does nothing: what starting an element costs Ray alone."""

    def __init__(self, name: str):
        self.name = name

    def ping(self) -> str:
        return self.name
