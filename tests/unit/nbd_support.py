"""Test support for san.nbd: in-memory exports, a server on a background thread, a raw client.

* `MemoryExport`: a numpy array as an export.  Thin ones allocate 64 KiB grains on first
  write and report never-written grains as holes (HOLE|ZERO), so block status means
  something; trim and zero-with-may_trim give whole grains back.  Every backend call is
  recorded in `calls` as it starts; `fail` makes chosen operations raise.
* `ServerThread`: an `NbdServer` on 127.0.0.1:0 in an event loop of its own thread, so
  tests drive it with real clients (nbdinfo, nbdcopy, qemu-img, nbdsh) as subprocesses;
  its log records are kept in `records`.
* `RawClient`: a blocking socket speaking the protocol byte by byte (`san.nbd.protocol`
  encoders), for the edge cases no well-behaved client produces.
"""
from __future__ import annotations

import asyncio
import logging
import random
import shutil
import socket
import struct
import subprocess
import threading

import numpy as np
import pytest

from san.nbd import Export, NbdServer, export_uri
from san.nbd import protocol as p

KiB, MiB = 1 << 10, 1 << 20
GRAIN = 64 * KiB

needs_nbd_tools = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("nbdinfo", "nbdcopy", "nbdsh")), reason="libnbd-bin not installed")
needs_qemu = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("qemu-img", "qemu-io")), reason="qemu-utils not installed")


class MemoryExport(Export):
    """An export held in a numpy array (see the module docstring)."""

    def __init__(self, name: str, size: int, *, read_only: bool = False, description: str = "",
                 thin: bool = False, fail: dict | None = None, delay: float = 0.0):
        self.name, self.size, self.read_only, self.description = name, size, read_only, description
        self.thin = thin
        self.data = np.zeros(size, dtype=np.uint8)
        self.allocated = np.zeros(-(-size // GRAIN), dtype=bool)
        self.fail = dict(fail or {})          # operation -> exception to raise, once
        self.delay = delay                    # a random sleep up to this, inside each call
        self.calls: list[tuple] = []          # as they begin
        self.events: list[tuple] = []         # ("begin" | "end", call)
        self.active = self.max_active = 0

    async def _enter(self, *call) -> None:
        self.calls.append(call)
        self.events.append(("begin", call))
        if call[0] in self.fail:
            self.events.append(("end", call))
            raise self.fail.pop(call[0])
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        if self.delay:
            await asyncio.sleep(random.uniform(0, self.delay))

    def _leave(self, *call) -> None:
        self.active -= 1
        self.events.append(("end", call))

    async def read(self, offset, length):
        await self._enter("read", offset, length)
        self._leave("read", offset, length)
        return self.data[offset:offset + length].copy()

    async def write(self, offset, data):
        await self._enter("write", offset, len(data))
        self.data[offset:offset + len(data)] = np.frombuffer(data, dtype=np.uint8)
        self.allocated[offset // GRAIN:-(-(offset + len(data)) // GRAIN)] = True
        self._leave("write", offset, len(data))

    async def flush(self):
        await self._enter("flush")
        self._leave("flush")

    async def trim(self, offset, length):
        await self._enter("trim", offset, length)
        self._release(offset, length)
        self._leave("trim", offset, length)

    async def zero(self, offset, length, may_trim):
        await self._enter("zero", offset, length, may_trim)
        self.data[offset:offset + length] = 0
        if may_trim:
            self._release(offset, length)
        else:
            self.allocated[offset // GRAIN:-(-(offset + length) // GRAIN)] = True
        self._leave("zero", offset, length, may_trim)

    def _release(self, offset, length):
        """Zero the range; grains wholly inside it become holes again."""
        self.data[offset:offset + length] = 0
        first, end = -(-offset // GRAIN), (offset + length) // GRAIN
        if self.thin and first < end:
            self.allocated[first:end] = False

    async def block_status(self, offset, length):
        await self._enter("block_status", offset, length)
        self._leave("block_status", offset, length)
        if not self.thin:
            return [(self.size - offset, 0)]          # past the request: the server cuts it
        extents, pos, end = [], offset, offset + length
        while pos < end:
            grain = pos // GRAIN
            stop = min((grain + 1) * GRAIN, self.size)
            flags = 0 if self.allocated[grain] else p.STATE_HOLE | p.STATE_ZERO
            extents.append((stop - pos, flags))
            pos = stop
        return extents

    def holes(self) -> list[tuple[int, int]]:
        """(offset, length) of the unallocated runs, merged."""
        runs, start = [], None
        for grain, used in enumerate(list(self.allocated) + [True]):
            if not used and start is None:
                start = grain
            elif used and start is not None:
                runs.append((start * GRAIN, min(grain * GRAIN, self.size) - start * GRAIN))
                start = None
        return runs


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


class ServerThread:
    """An NbdServer on 127.0.0.1:0 in its own thread's event loop."""

    def __init__(self, exports, **options):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="nbd-server", daemon=True)
        self.thread.start()
        self.handler = _Records()
        self.logger = logging.getLogger(f"test.nbd.{id(self)}")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self.handler)
        self.server = NbdServer(exports, "127.0.0.1", 0, logger=self.logger, **options)
        self.host, self.port = self.call(self.server.start())

    @property
    def records(self) -> list[logging.LogRecord]:
        return self.handler.records

    def messages(self, level: int = logging.DEBUG) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]

    def call(self, coro, timeout: float = 20):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def uri(self, name: str = "") -> str:
        return export_uri(self.host, self.port, name) if name else f"nbd://{self.host}:{self.port}"

    def close(self) -> None:
        try:
            self.call(self.server.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def run(*argv, timeout: float = 30, input: bytes | None = None) -> subprocess.CompletedProcess:
    """A client tool's run: exit code, stdout and stderr as text."""
    return subprocess.run(argv, capture_output=True, text=input is None, timeout=timeout, input=input)


class RawClient:
    """A blocking NBD client that sends exactly the bytes a test asks for."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5):
        self.sock = socket.create_connection((host, port), timeout=timeout)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, n: int) -> bytes:
        """Exactly `n` bytes; fewer only if the server closed the connection first."""
        out = bytearray()
        while len(out) < n:
            got = self.sock.recv(n - len(out))
            if not got:
                break
            out += got
        return bytes(out)

    def closed_by_server(self) -> bool:
        """True if the server ends the connection (EOF or reset) with nothing more to say."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def greet(self, flags: int = p.CLIENT_FIXED_NEWSTYLE | p.CLIENT_NO_ZEROES) -> None:
        magic, opt, hflags = p.GREETING.unpack(self.recv(p.GREETING.size))
        assert (magic, opt) == (p.NBDMAGIC, p.IHAVEOPT)
        assert hflags == p.FLAG_FIXED_NEWSTYLE | p.FLAG_NO_ZEROES
        self.send(struct.pack(">I", flags))

    def reply(self) -> tuple[int, int, bytes]:
        """One option reply: (option, reply type, data)."""
        option, reply_type, length = p.decode_option_reply_header(self.recv(p.OPTION_REPLY_HEADER.size))
        return option, reply_type, self.recv(length)

    def option(self, option: int, data: bytes = b"") -> list[tuple[int, bytes]]:
        """Send an option; its replies (type, data) up to the final ACK or error."""
        self.send(p.encode_option(option, data))
        replies = []
        while True:
            opt, reply_type, payload = self.reply()
            assert opt == option
            replies.append((reply_type, payload))
            if reply_type == p.REP_ACK or reply_type & (1 << 31):
                return replies

    def go(self, name: str, structured: bool = True, meta: bool = True,
           greet: bool = True) -> tuple[int, int]:
        """Negotiate (greeting too unless `greet` is False) into transmission: (size, flags)."""
        if greet:
            self.greet()
        if structured:
            assert self.option(p.OPT_STRUCTURED_REPLY)[-1][0] == p.REP_ACK
        if meta:
            data = p.encode_meta_context_request(name, [p.META_BASE_ALLOCATION])
            assert self.option(p.OPT_SET_META_CONTEXT, data)[-1][0] == p.REP_ACK
        replies = self.option(p.OPT_GO, p.encode_info_request(name, [p.INFO_BLOCK_SIZE]))
        assert replies[-1][0] == p.REP_ACK, replies
        info = [d for t, d in replies if t == p.REP_INFO and d[:2] == b"\0\0"][0]
        _, size, flags = struct.unpack(">HQH", info)
        return size, flags

    def request(self, command: int, offset: int = 0, length: int = 0, flags: int = 0,
                cookie: int = 7, data: bytes = b"") -> None:
        self.send(p.encode_request(command, cookie, offset, length, flags) + data)

    def simple_reply(self, read_length: int = 0) -> tuple[int, int, bytes]:
        """(error, cookie, data) of a simple reply (`read_length` bytes follow a good read)."""
        magic, error, cookie = p.SIMPLE_REPLY.unpack(self.recv(p.SIMPLE_REPLY.size))
        assert magic == p.SIMPLE_REPLY_MAGIC, hex(magic)
        return error, cookie, self.recv(read_length) if not error else b""

    def chunks(self) -> list[tuple[int, int, int, bytes]]:
        """A structured reply's chunks (flags, type, cookie, payload), up to the DONE one.

        A simple reply met instead is returned as one chunk of type -1 with the error in
        its payload.
        """
        out = []
        while True:
            head = self.recv(4)
            if len(head) < 4:
                raise ConnectionError("server closed the connection mid-reply")
            (magic,) = struct.unpack(">I", head)
            if magic == p.SIMPLE_REPLY_MAGIC:
                error, cookie = struct.unpack(">IQ", self.recv(12))
                return out + [(p.REPLY_FLAG_DONE, -1, cookie, struct.pack(">I", error))]
            assert magic == p.STRUCTURED_REPLY_MAGIC, hex(magic)
            flags, reply_type, cookie, length = struct.unpack(">HHQI", self.recv(16))
            out.append((flags, reply_type, cookie, self.recv(length)))
            if flags & p.REPLY_FLAG_DONE:
                return out

    def error_of(self) -> int:
        """The NBD error of the next reply (simple or structured), 0 for success."""
        for _, reply_type, _, payload in self.chunks():
            if reply_type == -1 or reply_type & (1 << 15):
                return struct.unpack_from(">I", payload)[0]
        return 0
