"""The NBD server: asyncio, fixed newstyle, serving `Export` objects to standard clients.

``NbdServer(exports).start()`` listens; every accepted connection is a `_Connection` that
goes through two phases:

* **Handshake** (`_Connection._negotiate`): greeting, client flags, then options until
  ``NBD_OPT_GO`` or ``NBD_OPT_EXPORT_NAME`` picks an export.  The export list is asked
  for afresh at every option that names or lists exports, so a callable source can change
  between connections.  An empty name is the *default export*: the only export when
  there is exactly one, else unknown (a client must name one among several).
* **Transmission** (`_Connection._transmit`): one reader loop parses requests strictly in
  order; a write's data is read whole before the next header.  Each valid request becomes
  its own task, created in arrival order, so the backend's coroutines *start* in the
  order the client sent them and run concurrently (nbdcopy keeps 64 in flight; a backend
  may merge neighbours).  The loop stops reading while a connection has `max_requests`
  requests or `max_bytes_in_flight` bytes of reads and writes in flight, which pushes
  back on the client through TCP.  Replies go out as their tasks finish, in any order,
  each written whole under the connection's lock.

Requests the server can judge alone never reach the backend: EPERM for a write, trim or
zero to a read-only export; EINVAL for an unknown command or flag, an unaligned or
out-of-range request (ENOSPC for a write past the end, as the protocol asks); a
zero-length read/write/trim/zero succeeds at once.  A backend's `ExportError` becomes its
NBD error with its message (structured replies carry messages); any other exception EIO,
logged.  A broken stream (bad magic, a write longer than the maximum payload, a truncated
request) closes that connection only, logged as one line naming the offending value.

``NBD_CMD_FLUSH`` waits for every write, trim and zero received before it on the
connection, then calls the backend's `flush`; ``NBD_CMD_FLAG_FUA`` is the command
followed by `flush`.

What a client is told (``nbdinfo`` shows it): transmission flags HAS_FLAGS, SEND_FLUSH;
SEND_FUA, SEND_TRIM and SEND_WRITE_ZEROES for a writable export, READ_ONLY for the
others; SEND_DF once structured replies are on (a read is always answered in one
chunk); CAN_MULTI_CONN unless the export says otherwise (`Export.multi_conn`): the
server keeps no cache and replies to a write only once the backend has it, so with a
backend whose `flush` covers every connection, what one connection flushed is flushed
for all.  Not offered: FAST_ZERO, CACHE, ROTATIONAL, TLS.  Block sizes
(NBD_INFO_BLOCK_SIZE, sent with every NBD_OPT_INFO/GO): minimum 512, preferred 4 MiB,
maximum payload 32 MiB.  The base:allocation metadata context answers block status.

`close()` stops listening, stops reading requests, lets the ones in progress finish and
closes the connections.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Mapping
from typing import Awaitable, Callable, Iterable, Union

from . import protocol as p
from .export import MIN_BLOCK, Export, ExportError

__all__ = ["NbdServer", "ExportSource"]

KiB, MiB = 1 << 10, 1 << 20

# Where the exports come from: a fixed mapping name -> export, or a callable returning the
# current ones (a mapping or an iterable of exports keyed by their `name`), maybe awaitable.
ExportSource = Union[
    Mapping[str, Export],
    Callable[[], Union[Mapping[str, Export], Iterable[Export],
                       Awaitable[Union[Mapping[str, Export], Iterable[Export]]]]],
]

META_CONTEXT_ID = 1          # the id of base:allocation, the only context (any nonzero id would do)
MAX_OPTION_DATA = 64 * KiB   # more than any real option needs (names are at most 4096 bytes)
DISCARD_CHUNK = 1 * MiB      # how much of a refused write's data is read at a time
STREAM_LIMIT = 1 * MiB       # StreamReader buffer before it stops reading the socket


class NbdServer:
    """An NBD server on `host`:`port` for the exports of `exports` (see `ExportSource`).

    `max_requests` and `max_bytes_in_flight` bound each connection's requests in progress;
    `preferred_block` and `max_payload` are advertised with NBD_INFO_BLOCK_SIZE (the
    minimum block is `MIN_BLOCK`); reads and writes longer than `max_payload` are refused.
    Messages go to `logger` (default: the ``san.nbd`` logger).
    """

    def __init__(self, exports: ExportSource, host: str = "127.0.0.1", port: int = 10809, *,
                 max_requests: int = 64, max_bytes_in_flight: int = 64 * MiB,
                 preferred_block: int = 4 * MiB, max_payload: int = 32 * MiB,
                 logger: logging.Logger | None = None):
        if preferred_block < MIN_BLOCK or preferred_block & (preferred_block - 1):
            raise ValueError(f"preferred_block {preferred_block} is not a power of 2 >= {MIN_BLOCK}")
        if max_payload < preferred_block or max_payload % MIN_BLOCK:
            raise ValueError(f"max_payload {max_payload} is not a multiple of {MIN_BLOCK} "
                             f">= preferred_block {preferred_block}")
        if max_requests < 1 or max_bytes_in_flight < 1:
            raise ValueError(f"max_requests {max_requests} and max_bytes_in_flight "
                             f"{max_bytes_in_flight} must be positive")
        self.host, self.port = host, port
        self.max_requests = max_requests
        self.max_bytes_in_flight = max_bytes_in_flight
        self.preferred_block = preferred_block
        self.max_payload = max_payload
        self.log = logger or logging.getLogger("san.nbd")
        self._source = exports
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self._closing = False
        self.address: tuple[str, int] | None = None

    async def start(self) -> tuple[str, int]:
        """Listen; return the (host, port) bound (port 0 asks for a free one).

        A port in use raises OSError (errno EADDRINUSE).  With a host name that resolves to
        several addresses, every one is bound and the first is returned.
        """
        if self._server is not None:
            raise RuntimeError(f"NBD server already started on {self.address}")
        self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                  limit=STREAM_LIMIT)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.address = (host, port)
        return self.address

    async def close(self, timeout: float | None = None) -> None:
        """Stop listening and reading requests; let requests in progress finish; disconnect.

        After `timeout` seconds (None: no limit) requests still in progress are cancelled.
        """
        self._closing = True
        if self._server is not None:
            self._server.close()
        connections = list(self._connections)
        for conn in connections:
            conn.stop()
        done = [conn.finished for conn in connections]
        if done:
            _, late = await asyncio.wait(done, timeout=timeout)
            if late:
                for conn in connections:
                    conn.abort()
                await asyncio.wait(done)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> NbdServer:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # --- exports --------------------------------------------------------------------------
    async def exports(self) -> dict[str, Export]:
        """The exports being served now, by name."""
        source = self._source
        if callable(source):
            source = source()
            if inspect.isawaitable(source):
                source = await source
        if isinstance(source, Mapping):
            return dict(source)
        return {export.name: export for export in source}

    async def resolve(self, name: str) -> tuple[str, Export | None, str]:
        """(canonical name, export or None, why not) for a client's export name.

        The empty name is the default export: the only one if there is exactly one.
        """
        exports = await self.exports()
        if name in exports:
            return name, exports[name], ""
        if name == "" and len(exports) == 1:
            (only,) = exports.items()
            return only[0], only[1], ""
        if name == "":
            return name, None, (f"no default export among {len(exports)} exports; "
                                "name one (nbdinfo --list shows them)")
        return name, None, f"no export named {name!r}"

    # --- connections ----------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:
            writer.close()
            return
        conn = _Connection(self, reader, writer)
        self._connections.add(conn)
        try:
            await conn.serve()
        finally:
            self._connections.discard(conn)


class _Closed(Exception):
    """The connection ends here, for the reason given (logged by the caller at `level`)."""

    def __init__(self, reason: str, level: int = logging.DEBUG):
        super().__init__(reason)
        self.level = level


class _Connection:
    """One client: its negotiated state, its requests in flight, its reply lock."""

    def __init__(self, server: NbdServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server = server
        self.log = server.log
        self.reader, self.writer = reader, writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.finished: asyncio.Future = asyncio.get_running_loop().create_future()
        self._reply_lock = asyncio.Lock()
        self._stopping = False
        self._read_task: asyncio.Task | None = None
        # negotiated state
        self._no_zeroes = False
        self._structured = False
        self._meta_export: str | None = None    # export whose base:allocation was selected
        self.export: Export | None = None
        self.name = ""
        self.size = 0
        self.flags = 0
        self._block_status = False
        self._allowed_flags: dict[int, int] = {}      # command -> the flags it may carry
        # requests in flight
        self._tasks: dict[asyncio.Task, int] = {}     # task -> bytes it holds of the budget
        self._writes: set[asyncio.Task] = set()       # the writes, trims and zeroes among them
        self._bytes_in_flight = 0
        self._room = asyncio.Event()

    # --- life cycle -----------------------------------------------------------------------
    async def serve(self) -> None:
        """Run the connection to its end; never raises (every ending is logged)."""
        try:
            if not self._stopping:
                self._read_task = asyncio.create_task(self._read_side())
                await asyncio.wait([self._read_task])
            if self._tasks:
                await asyncio.wait(list(self._tasks))
        finally:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, OSError):
                pass   # the client went first
            if not self.finished.done():
                self.finished.set_result(None)

    def stop(self) -> None:
        """Read no more requests (those in progress go on to their replies)."""
        self._stopping = True
        if self._read_task is not None:
            self._read_task.cancel()

    def abort(self) -> None:
        """Cancel the requests in progress too, and drop the connection without sending what
        is still queued: a client that stopped reading its replies would otherwise hold the
        close forever (closing waits for the send buffer to empty)."""
        self.stop()
        for task in list(self._tasks):
            task.cancel()
        self.writer.transport.abort()

    async def _read_side(self) -> None:
        try:
            if await self._negotiate():
                await self._transmit()
        except _Closed as closed:
            self.log.log(closed.level, "nbd client %s: %s", self.peer, closed)
        except p.ProtocolError as err:
            self.log.warning("nbd client %s: protocol error, disconnecting: %s", self.peer, err)
        except asyncio.IncompleteReadError as err:
            if err.partial:
                self.log.warning("nbd client %s: stream cut after %d of %d bytes",
                                 self.peer, len(err.partial), err.expected)
            else:
                self.log.debug("nbd client %s: hung up", self.peer)
        except (ConnectionError, OSError) as err:
            self.log.debug("nbd client %s: connection lost: %s", self.peer, err)
        except asyncio.CancelledError:
            raise
        except Exception:     # a bug (or a failing export source) ends this connection only
            self.log.exception("nbd client %s: disconnecting after an unexpected error", self.peer)

    async def _send(self, *parts) -> None:
        """Write one whole message (several buffers) before any other reply's bytes."""
        async with self._reply_lock:
            for part in parts:
                self.writer.write(part)
            await self.writer.drain()

    # --- handshake ------------------------------------------------------------------------
    async def _negotiate(self) -> bool:
        """Greeting and options; True once an export is chosen, False on a soft disconnect."""
        await self._send(p.encode_greeting())
        flags = p.decode_client_flags(await self.reader.readexactly(p.CLIENT_FLAGS.size))
        self._no_zeroes = bool(flags & p.CLIENT_NO_ZEROES)
        while True:
            option, length = p.decode_option_header(await self.reader.readexactly(p.OPTION_HEADER.size))
            name = p.OPTION_NAMES.get(option, str(option))
            if length > MAX_OPTION_DATA:
                raise p.ProtocolError(f"option {name} with {length} bytes of data "
                                      f"(at most {MAX_OPTION_DATA})")
            data = await self.reader.readexactly(length)
            try:
                outcome = await self._option(option, data)
            except p.BadOption as err:
                if option == p.OPT_EXPORT_NAME:     # no way to answer an error to this one
                    raise _Closed(f"NBD_OPT_EXPORT_NAME: {err}", logging.WARNING) from None
                await self._reply(option, p.REP_ERR_INVALID, f"{name}: {err}")
                continue
            if outcome is not None:
                return outcome

    async def _reply(self, option: int, reply_type: int, data: bytes | str = b"") -> None:
        if isinstance(data, str):                  # an error's message
            data = p.truncate_utf8(data)
        await self._send(p.encode_option_reply(option, reply_type, data))

    async def _option(self, option: int, data: bytes) -> bool | None:
        """Answer one option; True: transmission begins, False: soft disconnect, None: go on."""
        if option == p.OPT_EXPORT_NAME:
            canonical, export, why = await self.server.resolve(p.decode_string(data, "export name"))
            if export is None:
                raise _Closed(f"NBD_OPT_EXPORT_NAME: {why}", logging.INFO)
            self._choose(canonical, export)
            await self._send(p.encode_export_name_reply(self.size, self.flags, self._no_zeroes))
            return True
        if option == p.OPT_ABORT:
            try:
                await self._reply(option, p.REP_ACK)
            except (ConnectionError, OSError):
                pass                               # the client may leave without waiting
            return False
        if option == p.OPT_LIST:
            if data:
                raise p.BadOption(f"{len(data)} bytes of data (expected none)")
            for name, export in (await self.server.exports()).items():
                await self._reply(option, p.REP_SERVER,
                                  p.encode_rep_server(name, getattr(export, "description", "")))
            await self._reply(option, p.REP_ACK)
            return None
        if option in (p.OPT_INFO, p.OPT_GO):
            return await self._info_or_go(option, data)
        if option == p.OPT_STRUCTURED_REPLY:
            if data:
                raise p.BadOption(f"{len(data)} bytes of data (expected none)")
            self._structured = True
            await self._reply(option, p.REP_ACK)
            return None
        if option in (p.OPT_LIST_META_CONTEXT, p.OPT_SET_META_CONTEXT):
            await self._meta_context(option, data)
            return None
        await self._reply(option, p.REP_ERR_UNSUP, f"option {option} is not supported by this server")
        return None

    async def _info_or_go(self, option: int, data: bytes) -> bool | None:
        name, infos = p.decode_info_request(data)
        canonical, export, why = await self.server.resolve(name)
        if export is None:
            await self._reply(option, p.REP_ERR_UNKNOWN, why)
            return None
        size, flags = self._describe(export)
        await self._reply(option, p.REP_INFO, p.encode_info_export(size, flags))
        await self._reply(option, p.REP_INFO, p.encode_info_name(canonical))
        description = getattr(export, "description", "")
        if p.INFO_DESCRIPTION in infos and description:
            await self._reply(option, p.REP_INFO, p.encode_info_description(description))
        # Sent even unasked: the spec lets a server volunteer it, and clients that ignore it
        # still get a clean EINVAL for an unaligned request rather than corrupted data.
        await self._reply(option, p.REP_INFO, p.encode_info_block_size(
            MIN_BLOCK, self.server.preferred_block, self.server.max_payload))
        await self._reply(option, p.REP_ACK)
        if option == p.OPT_INFO:
            return None
        self._choose(canonical, export)
        return True

    async def _meta_context(self, option: int, data: bytes) -> None:
        setting = option == p.OPT_SET_META_CONTEXT
        if setting:
            self._meta_export = None               # a SET replaces the selection, even failing
        name, queries = p.decode_meta_context_request(data)
        if setting and not self._structured:
            await self._reply(option, p.REP_ERR_INVALID,
                              "NBD_OPT_SET_META_CONTEXT needs NBD_OPT_STRUCTURED_REPLY first")
            return
        canonical, export, why = await self.server.resolve(name)
        if export is None:
            await self._reply(option, p.REP_ERR_UNKNOWN, why)
            return
        # base:allocation is the only context; "base:" lists it but must not select it.
        wanted = {p.META_BASE_ALLOCATION} if setting else {p.META_BASE_ALLOCATION, "base:"}
        if (not queries and not setting) or wanted.intersection(queries):
            context_id = META_CONTEXT_ID if setting else 0
            await self._reply(option, p.REP_META_CONTEXT,
                              p.encode_meta_context(context_id, p.META_BASE_ALLOCATION))
            if setting:
                self._meta_export = canonical
        await self._reply(option, p.REP_ACK)

    def _describe(self, export: Export) -> tuple[int, int]:
        """(size, transmission flags) of `export` as this connection would see it."""
        flags = p.FLAG_HAS_FLAGS | p.FLAG_SEND_FLUSH
        if export.read_only:
            flags |= p.FLAG_READ_ONLY
        else:
            flags |= p.FLAG_SEND_FUA | p.FLAG_SEND_TRIM | p.FLAG_SEND_WRITE_ZEROES
        if self._structured:
            flags |= p.FLAG_SEND_DF                # a read is always answered in one chunk
        if getattr(export, "multi_conn", True):
            flags |= p.FLAG_CAN_MULTI_CONN
        return int(export.size), flags

    def _choose(self, canonical: str, export: Export) -> None:
        self.export, self.name = export, canonical
        self.size, self.flags = self._describe(export)
        self._block_status = self._structured and self._meta_export == canonical
        fua = p.CMD_FLAG_FUA if self.flags & p.FLAG_SEND_FUA else 0
        self._allowed_flags = {
            p.CMD_READ: fua | (p.CMD_FLAG_DF if self._structured else 0),
            p.CMD_WRITE: fua, p.CMD_FLUSH: fua, p.CMD_TRIM: fua,
            p.CMD_WRITE_ZEROES: fua | p.CMD_FLAG_NO_HOLE,
            p.CMD_BLOCK_STATUS: fua | p.CMD_FLAG_REQ_ONE,
        }
        self.log.debug("nbd client %s: export %r, %d bytes, flags %#x",
                       self.peer, canonical, self.size, self.flags)

    # --- transmission ---------------------------------------------------------------------
    async def _transmit(self) -> None:
        """Read requests until NBD_CMD_DISC or the end of the stream; start each as a task."""
        while True:
            request = p.decode_request(await self.reader.readexactly(p.REQUEST.size))
            if request.command == p.CMD_DISC:
                self.log.debug("nbd client %s: disconnect requested", self.peer)
                return
            carries_data = request.command == p.CMD_WRITE
            if carries_data and request.length > self.server.max_payload:
                # Its data cannot be skipped at any reasonable cost: the stream is lost.
                raise p.ProtocolError(f"write of {request.length} bytes "
                                      f"(maximum payload {self.server.max_payload})")
            refusal = self._refusal(request)
            if refusal is not None:
                if carries_data:
                    await self._discard(request.length)
                refused = getattr(self.export, "refused", None)
                if refused is not None:     # an export not derived from `Export` may lack it
                    refused(p.COMMAND_NAMES.get(request.command, str(request.command)),
                            refusal[0], refusal[1])     # NBD errors are errno values
                await self._send_error(request, *refusal)
                continue
            moves_data = request.command in (p.CMD_READ, p.CMD_WRITE)
            held = await self._admit(request.length if moves_data else 0)
            data = None
            if carries_data:
                data = memoryview(await self.reader.readexactly(request.length))
            self._start(request, data, held)

    def _refusal(self, r: p.Request) -> tuple[int, str] | None:
        """(NBD error, message) if the server refuses `r` without asking the backend."""
        cmd = r.command
        allowed = self._allowed_flags.get(cmd)
        if allowed is None:
            return p.NBD_EINVAL, f"unknown or unsupported command {cmd}"
        what = p.COMMAND_NAMES[cmd]
        if r.flags & ~allowed:
            return p.NBD_EINVAL, f"{what}: flags {r.flags:#x} (allowed here: {allowed:#x})"
        if cmd == p.CMD_FLUSH:
            if r.offset or r.length:
                return p.NBD_EINVAL, f"FLUSH with offset {r.offset} length {r.length} (must be 0)"
            return None
        writes = cmd in (p.CMD_WRITE, p.CMD_TRIM, p.CMD_WRITE_ZEROES)
        if writes and self.export.read_only:
            return p.NBD_EPERM, f"{what}: export {self.name!r} is read-only"
        if cmd == p.CMD_BLOCK_STATUS:
            if not self._block_status:
                return p.NBD_EINVAL, "BLOCK_STATUS without the base:allocation context negotiated"
            if r.length == 0:
                return p.NBD_EINVAL, "BLOCK_STATUS of length 0"
        if r.offset % MIN_BLOCK or r.length % MIN_BLOCK:
            return p.NBD_EINVAL, (f"{what}: offset {r.offset} length {r.length} not aligned "
                                  f"to {MIN_BLOCK} bytes")
        if r.offset + r.length > self.size:
            error = p.NBD_ENOSPC if cmd in (p.CMD_WRITE, p.CMD_WRITE_ZEROES) else p.NBD_EINVAL
            return error, (f"{what}: offset {r.offset} + length {r.length} is past the end "
                           f"of export {self.name!r} ({self.size} bytes)")
        if cmd == p.CMD_READ and r.length > self.server.max_payload:
            error = p.NBD_EOVERFLOW if self._structured else p.NBD_EINVAL
            return error, f"READ of {r.length} bytes (maximum payload {self.server.max_payload})"
        return None

    async def _discard(self, length: int) -> None:
        """Read and drop a refused write's data, to find the next request header."""
        while length:
            n = min(length, DISCARD_CHUNK)
            await self.reader.readexactly(n)
            length -= n

    async def _admit(self, nbytes: int) -> int:
        """Wait for room for one more request holding `nbytes`; return what it holds.

        A request bigger than the whole budget holds all of it, so it runs alone.
        """
        nbytes = min(nbytes, self.server.max_bytes_in_flight)
        while (len(self._tasks) >= self.server.max_requests
               or self._bytes_in_flight + nbytes > self.server.max_bytes_in_flight):
            self._room.clear()
            await self._room.wait()
        self._bytes_in_flight += nbytes
        return nbytes

    def _start(self, request: p.Request, data: memoryview | None, held: int) -> None:
        """Create the request's task now, so tasks (and backend calls) start in arrival order."""
        earlier_writes = list(self._writes) if request.command == p.CMD_FLUSH else []
        task = asyncio.create_task(self._run(request, data, earlier_writes))
        self._tasks[task] = held
        if request.command in (p.CMD_WRITE, p.CMD_TRIM, p.CMD_WRITE_ZEROES):
            self._writes.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._bytes_in_flight -= self._tasks.pop(task)
        self._writes.discard(task)
        self._room.set()

    async def _run(self, r: p.Request, data: memoryview | None, earlier_writes: list) -> None:
        """Carry out one request on the backend, then send its reply."""
        try:
            reply = await self._execute(r, data, earlier_writes)
        except ExportError as err:
            reply = self._error_reply(r, p.nbd_error(err.errno), str(err))
        except asyncio.CancelledError:
            raise
        except Exception as err:   # a backend bug fails this request, not the server
            self.log.exception("nbd client %s: export %r failed %s", self.peer, self.name,
                               r.describe())
            reply = self._error_reply(r, p.NBD_EIO, f"{type(err).__name__}: {err}")
        try:
            await self._send(*reply)
        except (ConnectionError, OSError) as err:
            self.log.debug("nbd client %s: reply to %s not sent: %s", self.peer, r.describe(), err)

    async def _execute(self, r: p.Request, data: memoryview | None, earlier_writes: list) -> tuple:
        """The backend's part of request `r`; returns the buffers of its reply."""
        export, cmd = self.export, r.command
        if cmd == p.CMD_READ:
            payload = await export.read(r.offset, r.length) if r.length else b""
            return self._read_reply(r, _byte_view(payload, r.length))
        if cmd == p.CMD_BLOCK_STATUS:
            extents = await export.block_status(r.offset, r.length)
            one = bool(r.flags & p.CMD_FLAG_REQ_ONE)
            return (p.encode_block_status(r.cookie, META_CONTEXT_ID,
                                          _clip_extents(extents, r.length, one)),)
        if cmd == p.CMD_FLUSH:
            if earlier_writes:                 # FLUSH covers writes received before it
                await asyncio.wait(earlier_writes)
            await export.flush()
        elif r.length:
            if cmd == p.CMD_WRITE:
                await export.write(r.offset, data)
            elif cmd == p.CMD_TRIM:
                await export.trim(r.offset, r.length)
            elif cmd == p.CMD_WRITE_ZEROES:
                await export.zero(r.offset, r.length, may_trim=not r.flags & p.CMD_FLAG_NO_HOLE)
            if r.flags & p.CMD_FLAG_FUA:
                await export.flush()
        return (p.encode_simple_reply(r.cookie),)

    def _read_reply(self, r: p.Request, data: memoryview) -> tuple:
        if not self._structured:
            return p.encode_simple_reply(r.cookie), data
        if r.length == 0:
            return (p.encode_none_chunk(r.cookie),)
        # One chunk marked DONE: the data is all in hand, no error can follow it.
        return p.encode_offset_data_header(r.cookie, r.offset, r.length), data

    def _error_reply(self, r: p.Request, error: int, message: str) -> tuple:
        self.log.debug("nbd client %s: %s -> error %d: %s", self.peer, r.describe(), error, message)
        if self._structured:
            return (p.encode_error_chunk(r.cookie, error, message),)
        return (p.encode_simple_reply(r.cookie, error),)

    async def _send_error(self, r: p.Request, error: int, message: str) -> None:
        await self._send(*self._error_reply(r, error, message))


def _byte_view(payload, length: int) -> memoryview:
    """`payload` (bytes, memoryview, numpy array) as a flat byte view of exactly `length`."""
    view = memoryview(payload)
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    if view.nbytes != length:
        raise ValueError(f"read returned {view.nbytes} bytes for a request of {length}")
    return view


def _clip_extents(extents, length: int, req_one: bool) -> list[tuple[int, int]]:
    """The backend's extents as the reply may carry them.

    Zero-length extents go, neighbours with equal flags merge, flags keep only the
    base:allocation bits, and the list stops at the request's end (with REQ_ONE: after one
    extent), at most `protocol.MAX_EXTENTS` of them.  An empty list is a backend bug.
    """
    out: list[list[int]] = []
    total = 0
    for ext_length, flags in extents:
        ext_length, flags = int(ext_length), int(flags) & (p.STATE_HOLE | p.STATE_ZERO)
        if ext_length < 0:
            raise ValueError(f"block_status returned an extent of length {ext_length}")
        ext_length = min(ext_length, length - total)
        if ext_length == 0:
            continue
        if out and out[-1][1] == flags:
            out[-1][0] += ext_length
        elif len(out) == p.MAX_EXTENTS:
            break
        else:
            out.append([ext_length, flags])
        total += ext_length
        if total >= length or (req_one and out):
            break
    if not out:
        raise ValueError(f"block_status returned no extent: {list(extents)[:4]!r}")
    return [(n, f) for n, f in out]
