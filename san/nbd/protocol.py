"""The NBD wire format: constants, struct layouts and pure encode/decode functions.

Everything here is bytes in, values out (or the reverse), with no I/O, so each message can
be checked byte by byte.  The server (`san.nbd.server`) does the talking; tests and any
Python client use the client-side encoders (`encode_option`, `encode_request`) and the
server-side decoders' mirror images.

The protocol (https://github.com/NetworkBlockDevice/nbd, doc/proto.md), "fixed newstyle":

1. Handshake.  The server sends ``NBDMAGIC IHAVEOPT`` and 16 bits of handshake flags
   (`encode_greeting`); the client answers 32 bits of client flags (`decode_client_flags`).
2. Option haggling.  The client sends options, each ``IHAVEOPT, option, length, data``
   (`decode_option_header`); the server answers every one except ``NBD_OPT_EXPORT_NAME``
   with one or more replies ``REPLY_MAGIC, option, reply type, length, data``
   (`encode_option_reply`), an error type having bit 31 set.  ``NBD_OPT_GO`` (or the old
   ``NBD_OPT_EXPORT_NAME``) picks an export and ends the haggling.
3. Transmission.  The client sends 28-byte requests (`decode_request`), a write's data
   right behind its header; the server answers each, in any order, matched by the client's
   opaque 64-bit *cookie*: a 16-byte simple reply (`encode_simple_reply`, a read's data
   behind it), or, once ``NBD_OPT_STRUCTURED_REPLY`` was agreed, one or more 20-byte-header
   chunks (`encode_chunk` and its typed helpers), the last one flagged ``DONE``.

All integers are big-endian.  Strings are UTF-8, no NUL, at most 4096 bytes.

Two exceptions tell the server how bad an input is: `ProtocolError` when the byte stream
can no longer be trusted (bad magic, impossible length: the connection must close), and
`BadOption` when one option's data is malformed (the server answers
``NBD_REP_ERR_INVALID`` and reads the next option).
"""
from __future__ import annotations

import errno
import struct
import urllib.parse
from dataclasses import dataclass
from typing import Iterable

# --- magics -------------------------------------------------------------------------------
NBDMAGIC = 0x4E42444D41474943            # "NBDMAGIC"
IHAVEOPT = 0x49484156454F5054            # "IHAVEOPT": newstyle greeting, and every option
OPTION_REPLY_MAGIC = 0x0003E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

# --- handshake flags (server, 16 bits) and client flags (32 bits) ------------------------
FLAG_FIXED_NEWSTYLE = 1 << 0
FLAG_NO_ZEROES = 1 << 1
CLIENT_FIXED_NEWSTYLE = 1 << 0
CLIENT_NO_ZEROES = 1 << 1
KNOWN_CLIENT_FLAGS = CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES

# --- transmission flags (16 bits, per export) ---------------------------------------------
FLAG_HAS_FLAGS = 1 << 0
FLAG_READ_ONLY = 1 << 1
FLAG_SEND_FLUSH = 1 << 2
FLAG_SEND_FUA = 1 << 3
FLAG_ROTATIONAL = 1 << 4
FLAG_SEND_TRIM = 1 << 5
FLAG_SEND_WRITE_ZEROES = 1 << 6
FLAG_SEND_DF = 1 << 7
FLAG_CAN_MULTI_CONN = 1 << 8
FLAG_SEND_CACHE = 1 << 10
FLAG_SEND_FAST_ZERO = 1 << 11

# --- options ------------------------------------------------------------------------------
OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10
OPT_EXTENDED_HEADERS = 11
OPTION_NAMES = {
    OPT_EXPORT_NAME: "EXPORT_NAME", OPT_ABORT: "ABORT", OPT_LIST: "LIST", OPT_STARTTLS: "STARTTLS",
    OPT_INFO: "INFO", OPT_GO: "GO", OPT_STRUCTURED_REPLY: "STRUCTURED_REPLY",
    OPT_LIST_META_CONTEXT: "LIST_META_CONTEXT", OPT_SET_META_CONTEXT: "SET_META_CONTEXT",
    OPT_EXTENDED_HEADERS: "EXTENDED_HEADERS",
}

# --- option reply types -------------------------------------------------------------------
REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
REP_ERR_UNSUP = (1 << 31) + 1
REP_ERR_POLICY = (1 << 31) + 2
REP_ERR_INVALID = (1 << 31) + 3
REP_ERR_PLATFORM = (1 << 31) + 4
REP_ERR_TLS_REQD = (1 << 31) + 5
REP_ERR_UNKNOWN = (1 << 31) + 6
REP_ERR_SHUTDOWN = (1 << 31) + 7
REP_ERR_BLOCK_SIZE_REQD = (1 << 31) + 8
REP_ERR_TOO_BIG = (1 << 31) + 9

# --- NBD_INFO types (in NBD_OPT_INFO / NBD_OPT_GO) ----------------------------------------
INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

# --- commands and command flags -----------------------------------------------------------
CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7
COMMAND_NAMES = {
    CMD_READ: "READ", CMD_WRITE: "WRITE", CMD_DISC: "DISC", CMD_FLUSH: "FLUSH", CMD_TRIM: "TRIM",
    CMD_CACHE: "CACHE", CMD_WRITE_ZEROES: "WRITE_ZEROES", CMD_BLOCK_STATUS: "BLOCK_STATUS",
}
CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
CMD_FLAG_DF = 1 << 2
CMD_FLAG_REQ_ONE = 1 << 3
CMD_FLAG_FAST_ZERO = 1 << 4

# --- structured reply chunks --------------------------------------------------------------
REPLY_FLAG_DONE = 1 << 0
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_ERROR = (1 << 15) + 1
REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2

# --- base:allocation ----------------------------------------------------------------------
META_BASE_ALLOCATION = "base:allocation"
STATE_HOLE = 1 << 0
STATE_ZERO = 1 << 1

# --- error values (the protocol's own numbers; they happen to be Linux's errno) -----------
NBD_EPERM = 1
NBD_EIO = 5
NBD_ENOMEM = 12
NBD_EINVAL = 22
NBD_ENOSPC = 28
NBD_EOVERFLOW = 75
NBD_ENOTSUP = 95
NBD_ESHUTDOWN = 108

# --- limits -------------------------------------------------------------------------------
MAX_STRING = 4096                # bytes in any protocol string (names, messages, queries)
MAX_EXTENTS = 1 << 20            # descriptors in one block status chunk (the spec's SHOULD)

# --- struct layouts -----------------------------------------------------------------------
GREETING = struct.Struct(">QQH")                 # NBDMAGIC, IHAVEOPT, handshake flags
CLIENT_FLAGS = struct.Struct(">I")
OPTION_HEADER = struct.Struct(">QII")            # IHAVEOPT, option, data length
OPTION_REPLY_HEADER = struct.Struct(">QIII")     # magic, option, reply type, data length
EXPORT_NAME_REPLY = struct.Struct(">QH")         # size, transmission flags (+ 124 zeroes)
REQUEST = struct.Struct(">IHHQQI")               # magic, flags, type, cookie, offset, length
SIMPLE_REPLY = struct.Struct(">IIQ")             # magic, error, cookie
CHUNK_HEADER = struct.Struct(">IHHQI")           # magic, flags, type, cookie, payload length
EXPORT_NAME_ZEROES = 124


class ProtocolError(Exception):
    """The peer broke the framing (bad magic, impossible length): close the connection."""


class BadOption(ValueError):
    """One option's data is malformed: answer ``NBD_REP_ERR_INVALID`` and carry on."""


# --- errno mapping ------------------------------------------------------------------------
def nbd_error(errno_value: int) -> int:
    """The NBD error value for a host ``errno`` (the protocol allows only eight of them).

    The ones NBD defines pass through, but ENOTSUP, which the protocol keeps for a fast
    zero this server does not offer (a client would misread it), is EINVAL; quota and
    file-size limits are out of space, a read-only file system is a permission error,
    anything else an I/O error.

    >>> nbd_error(errno.ENOSPC), nbd_error(errno.EDQUOT), nbd_error(errno.EROFS), nbd_error(errno.EBADF)
    (28, 28, 1, 5)
    """
    table = {
        errno.EPERM: NBD_EPERM, errno.EACCES: NBD_EPERM, errno.EROFS: NBD_EPERM,
        errno.EIO: NBD_EIO, errno.ENOMEM: NBD_ENOMEM, errno.EINVAL: NBD_EINVAL,
        errno.ENOSPC: NBD_ENOSPC, errno.EDQUOT: NBD_ENOSPC, errno.EFBIG: NBD_ENOSPC,
        errno.EOVERFLOW: NBD_EOVERFLOW, errno.ENOTSUP: NBD_EINVAL, errno.EOPNOTSUPP: NBD_EINVAL,
        errno.ESHUTDOWN: NBD_ESHUTDOWN,
    }
    return table.get(errno_value, NBD_EIO)


# --- strings ------------------------------------------------------------------------------
def encode_string(text: str) -> bytes:
    """`text` as a protocol string: UTF-8, no NUL, at most `MAX_STRING` bytes."""
    data = text.encode("utf-8")
    if b"\0" in data or len(data) > MAX_STRING:
        raise ValueError(f"not an NBD string (NUL, or over {MAX_STRING} bytes): {text[:80]!r}")
    return data


def decode_string(data: bytes, what: str) -> str:
    """A protocol string from the wire; `BadOption` naming `what` if it is not one."""
    if len(data) > MAX_STRING:
        raise BadOption(f"{what} of {len(data)} bytes (at most {MAX_STRING})")
    if b"\0" in data:
        raise BadOption(f"{what} {bytes(data)[:80]!r} holds a NUL byte")
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise BadOption(f"{what} {bytes(data)[:80]!r} is not UTF-8") from None


def truncate_utf8(text: str, limit: int = MAX_STRING) -> bytes:
    """`text` as UTF-8 cut to at most `limit` bytes on a character boundary (for messages)."""
    return text.replace("\0", " ").encode("utf-8")[:limit].decode("utf-8", "ignore").encode("utf-8")


# --- handshake ----------------------------------------------------------------------------
def encode_greeting() -> bytes:
    """The server's first 18 bytes: fixed newstyle, and zeroes may be left out."""
    return GREETING.pack(NBDMAGIC, IHAVEOPT, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)


def decode_client_flags(data: bytes) -> int:
    """The client's 32-bit flags; `ProtocolError` on a bit the server does not know.

    The spec makes the server drop the connection then: a client asking for something
    unknown cannot be understood from here on.
    """
    (flags,) = CLIENT_FLAGS.unpack(data)
    if flags & ~KNOWN_CLIENT_FLAGS:
        raise ProtocolError(f"unknown client flags {flags:#x} (known: {KNOWN_CLIENT_FLAGS:#x})")
    return flags


# --- options ------------------------------------------------------------------------------
def encode_option(option: int, data: bytes = b"") -> bytes:
    """A client's option (for tests and Python clients)."""
    return OPTION_HEADER.pack(IHAVEOPT, option, len(data)) + data


def decode_option_header(data: bytes) -> tuple[int, int]:
    """(option, data length) from a 16-byte option header; `ProtocolError` on a bad magic."""
    magic, option, length = OPTION_HEADER.unpack(data)
    if magic != IHAVEOPT:
        raise ProtocolError(f"option magic {magic:#018x} (expected IHAVEOPT {IHAVEOPT:#018x})")
    return option, length


def encode_option_reply(option: int, reply_type: int, data: bytes = b"") -> bytes:
    """One reply to `option`: header, then `data`."""
    return OPTION_REPLY_HEADER.pack(OPTION_REPLY_MAGIC, option, reply_type, len(data)) + data


def decode_option_reply_header(data: bytes) -> tuple[int, int, int]:
    """(option, reply type, data length) of an option reply (the client side, for tests)."""
    magic, option, reply_type, length = OPTION_REPLY_HEADER.unpack(data)
    if magic != OPTION_REPLY_MAGIC:
        raise ProtocolError(f"option reply magic {magic:#x} (expected {OPTION_REPLY_MAGIC:#x})")
    return option, reply_type, length


def encode_rep_server(name: str, description: str = "") -> bytes:
    """``NBD_REP_SERVER`` data: the name's length, the name, then a free text (description)."""
    raw = encode_string(name)
    return struct.pack(">I", len(raw)) + raw + truncate_utf8(description)


def encode_info_export(size: int, flags: int) -> bytes:
    return struct.pack(">HQH", INFO_EXPORT, size, flags)


def encode_info_name(name: str) -> bytes:
    return struct.pack(">H", INFO_NAME) + encode_string(name)


def encode_info_description(description: str) -> bytes:
    return struct.pack(">H", INFO_DESCRIPTION) + truncate_utf8(description)


def encode_info_block_size(minimum: int, preferred: int, maximum: int) -> bytes:
    return struct.pack(">HIII", INFO_BLOCK_SIZE, minimum, preferred, maximum)


def encode_export_name_reply(size: int, flags: int, no_zeroes: bool) -> bytes:
    """The answer to ``NBD_OPT_EXPORT_NAME``: size, flags, and 124 zeroes unless waived."""
    return EXPORT_NAME_REPLY.pack(size, flags) + (b"" if no_zeroes else bytes(EXPORT_NAME_ZEROES))


def encode_info_request(name: str, infos: Iterable[int] = ()) -> bytes:
    """Data of ``NBD_OPT_INFO`` / ``NBD_OPT_GO`` (client side, for tests)."""
    raw, infos = encode_string(name), list(infos)
    return (struct.pack(">I", len(raw)) + raw + struct.pack(">H", len(infos))
            + struct.pack(f">{len(infos)}H", *infos))


def decode_info_request(data: bytes) -> tuple[str, list[int]]:
    """(export name, requested NBD_INFO types) from ``NBD_OPT_INFO`` / ``NBD_OPT_GO`` data.

    The lengths inside must account for every byte: the name's length, the name, a count
    of 16-bit info types and exactly that many.
    """
    if len(data) < 6:
        raise BadOption(f"{len(data)} bytes of data (at least 6: name length and info count)")
    (name_len,) = struct.unpack_from(">I", data)
    if name_len > len(data) - 6:
        raise BadOption(f"name length {name_len} in {len(data)} bytes of data")
    name = decode_string(data[4:4 + name_len], "export name")
    (count,) = struct.unpack_from(">H", data, 4 + name_len)
    rest = len(data) - 6 - name_len
    if rest != 2 * count:
        raise BadOption(f"{count} info requests in {rest} bytes (expected {2 * count})")
    return name, list(struct.unpack_from(f">{count}H", data, 6 + name_len))


def encode_meta_context_request(name: str, queries: Iterable[str] = ()) -> bytes:
    """Data of ``NBD_OPT_LIST_META_CONTEXT`` / ``NBD_OPT_SET_META_CONTEXT`` (client side)."""
    raw, queries = encode_string(name), [encode_string(q) for q in queries]
    return (struct.pack(">I", len(raw)) + raw + struct.pack(">I", len(queries))
            + b"".join(struct.pack(">I", len(q)) + q for q in queries))


def decode_meta_context_request(data: bytes) -> tuple[str, list[str]]:
    """(export name, queries) from a meta context option's data; every byte accounted for."""
    view = memoryview(data)
    pos = 0

    def take(n: int, what: str) -> memoryview:
        nonlocal pos
        if n > len(view) - pos:
            raise BadOption(f"{what} of {n} bytes at byte {pos} of {len(view)} bytes of data")
        pos += n
        return view[pos - n:pos]

    (name_len,) = struct.unpack(">I", take(4, "export name length"))
    name = decode_string(take(name_len, "export name"), "export name")
    (count,) = struct.unpack(">I", take(4, "query count"))
    queries = []
    for _ in range(count):
        (qlen,) = struct.unpack(">I", take(4, "query length"))
        queries.append(decode_string(take(qlen, "query"), "query"))
    if pos != len(view):
        raise BadOption(f"{len(view) - pos} bytes left over after {count} queries")
    return name, queries


def encode_meta_context(context_id: int, name: str) -> bytes:
    """``NBD_REP_META_CONTEXT`` data: the context's id and name."""
    return struct.pack(">I", context_id) + encode_string(name)


# --- transmission -------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    """One decoded request header (a write's data follows it on the wire)."""
    flags: int
    command: int
    cookie: int
    offset: int
    length: int

    def describe(self) -> str:
        name = COMMAND_NAMES.get(self.command, f"command {self.command}")
        return f"{name} offset={self.offset} length={self.length} flags={self.flags:#x}"


def encode_request(command: int, cookie: int = 0, offset: int = 0, length: int = 0,
                   flags: int = 0, magic: int = REQUEST_MAGIC) -> bytes:
    """A request header (client side; `magic` can be spoiled for tests)."""
    return REQUEST.pack(magic, flags, command, cookie, offset, length)


def decode_request(data: bytes) -> Request:
    """A `Request` from its 28-byte header; `ProtocolError` on a bad magic.

    After a bad magic nothing that follows can be framed, so the connection must close.
    """
    magic, flags, command, cookie, offset, length = REQUEST.unpack(data)
    if magic != REQUEST_MAGIC:
        raise ProtocolError(f"request magic {magic:#010x} (expected {REQUEST_MAGIC:#010x})")
    return Request(flags, command, cookie, offset, length)


def encode_simple_reply(cookie: int, error: int = 0) -> bytes:
    """A simple reply's 16 bytes (a successful read's data follows them)."""
    return SIMPLE_REPLY.pack(SIMPLE_REPLY_MAGIC, error, cookie)


def encode_chunk(cookie: int, reply_type: int, payload: bytes = b"", done: bool = True,
                 payload_length: int | None = None) -> bytes:
    """A structured reply chunk: header and `payload`.

    `payload_length` > len(payload) writes only the header's claim, for a caller that
    sends the rest (a read's data) without copying it into this bytes object.
    """
    length = len(payload) if payload_length is None else payload_length
    flags = REPLY_FLAG_DONE if done else 0
    return CHUNK_HEADER.pack(STRUCTURED_REPLY_MAGIC, flags, reply_type, cookie, length) + payload


def encode_offset_data_header(cookie: int, offset: int, data_length: int, done: bool = True) -> bytes:
    """Header and offset of an ``OFFSET_DATA`` chunk; `data_length` bytes of data follow."""
    return encode_chunk(cookie, REPLY_TYPE_OFFSET_DATA, struct.pack(">Q", offset), done,
                        payload_length=8 + data_length)


def encode_offset_hole(cookie: int, offset: int, size: int, done: bool = True) -> bytes:
    """An ``OFFSET_HOLE`` chunk: `size` bytes at `offset` read as zeroes."""
    return encode_chunk(cookie, REPLY_TYPE_OFFSET_HOLE, struct.pack(">QI", offset, size), done)


def encode_error_chunk(cookie: int, error: int, message: str = "", done: bool = True) -> bytes:
    """An ``ERROR`` chunk: NBD error value and a message for a human (cut to 4096 bytes)."""
    text = truncate_utf8(message)
    return encode_chunk(cookie, REPLY_TYPE_ERROR, struct.pack(">IH", error, len(text)) + text, done)


def encode_block_status(cookie: int, context_id: int, extents: Iterable[tuple[int, int]],
                        done: bool = True) -> bytes:
    """A ``BLOCK_STATUS`` chunk: the context id, then (length, flags) descriptors."""
    flat = [v for extent in extents for v in extent]
    if not flat:
        raise ValueError("a block status chunk needs at least one extent")
    return encode_chunk(cookie, REPLY_TYPE_BLOCK_STATUS,
                        struct.pack(f">I{len(flat)}I", context_id, *flat), done)


def encode_none_chunk(cookie: int) -> bytes:
    """The empty final chunk (``NBD_REPLY_TYPE_NONE``, DONE)."""
    return encode_chunk(cookie, REPLY_TYPE_NONE)


# --- URIs ---------------------------------------------------------------------------------
def export_uri(host: str, port: int, name: str) -> str:
    """The NBD URI of export `name` (doc/uri.md): ``nbd://HOST:PORT/NAME``.

    The name is percent-encoded except ``/`` and ``:``, which a path may hold as they are
    (so a mount-point-like name stays readable); an IPv6 address goes in brackets.

    >>> export_uri("127.0.0.1", 10809, "host1:/db")
    'nbd://127.0.0.1:10809/host1:/db'
    >>> export_uri("::1", 10809, "a b%")
    'nbd://[::1]:10809/a%20b%25'
    """
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"nbd://{host}:{port}/{urllib.parse.quote(name, safe='/:')}"
