"""The raw-Ray baselines: a sender actor and a receiver actor moving the same bytes as the SAN.

A sender moves `size` bytes to its receiver in the `write` op's pattern (one new `ray.put`
per chunk, `window` chunks in flight, oldest answered first).  The receiver takes each chunk
by reference and either drops it (raw Ray) or pwrites it into its file (raw Ray + file); for
reads it returns a ready chunk (copied into the object store) or preads it from the file.
`punch` empties the file so that the next writes take new space, as an array's copy over FC
does (it UNMAPs its destination first); `check` compares the file with the pattern.
"""
from __future__ import annotations

import os
import time
from collections import deque

import numpy as np
import ray

from ..pattern import first_mismatch, pattern

PIECE = 16 << 20


@ray.remote(num_cpus=0)
class Receiver:
    def __init__(self, path: str, size: int):
        self.path, self.size = path, size
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(self.fd, size)
        self.block = pattern(1, 0, PIECE)
        self.received = 0

    def put(self, offset: int, data, to_file: bool) -> int:
        if to_file:
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
            seed: int) -> float:
        inflight: deque = deque()
        start = time.perf_counter()
        for off in range(0, size, chunk):
            if len(inflight) >= window:
                ray.get(inflight.popleft())
            n = min(chunk, size - off)
            if write:
                inflight.append(receiver.put.remote(off, ray.put(pattern(seed, off, n)), to_file))
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
            size: int | None = None) -> float:
        """Wall seconds for the first `n` pairs to move `size` bytes each, all at once."""
        size = size or self.size
        start = time.perf_counter()
        ray.get([s.run.remote(r, size, chunk, window, write, to_file, seed)
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
