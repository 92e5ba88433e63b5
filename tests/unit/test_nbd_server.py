"""san.nbd.server: real NBD clients (nbdinfo, nbdcopy, qemu-img, qemu-io, nbdsh) against
in-memory exports, raw-socket edge cases, and the concurrency of one connection."""
from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import socket
import struct
import subprocess
import threading
import time

import numpy as np
import pytest

from san.nbd import ExportError, NbdServer, export_uri
from san.nbd import protocol as p
from san.nbd.server import _byte_view, _clip_extents

from .nbd_support import (GRAIN, MemoryExport, MiB, RawClient, ServerThread, needs_nbd_tools,
                          needs_qemu, run)

KiB = 1 << 10
HOLE = p.STATE_HOLE | p.STATE_ZERO


def errors_logged(st: ServerThread) -> list[str]:
    """Log records at ERROR and above: tracebacks, which bad input must never cause."""
    return st.messages(logging.ERROR)


def pattern(size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)


@pytest.fixture
def san_like():
    """Three exports with mount-point names: a thin one with data in two places, a thick
    one, a read-only one."""
    db = MemoryExport("host1:/db", 16 * MiB, description="the database volume", thin=True)
    db.data[MiB:2 * MiB] = pattern(MiB, 1)
    db.data[8 * MiB:8 * MiB + GRAIN] = 0x5A
    db.allocated[MiB // GRAIN:2 * MiB // GRAIN] = True
    db.allocated[8 * MiB // GRAIN] = True
    log = MemoryExport("host2:/var/log", 8 * MiB)
    ro = MemoryExport("ro", 1 * MiB, read_only=True, description="a snapshot")
    ro.data[:] = 0x11
    exports = {e.name: e for e in (db, log, ro)}
    st = ServerThread(exports)
    yield st, exports
    st.close()


@pytest.fixture(scope="session")
def nbdsh():
    """Run an nbdsh script (a python3 with libnbd's module must come first on PATH)."""
    env = dict(os.environ, PATH="/usr/bin:" + os.environ.get("PATH", ""))
    env.pop("PYTHONPATH", None)
    probe = subprocess.run(["nbdsh", "-c", "pass"], capture_output=True, env=env)
    if probe.returncode:
        pytest.skip(f"nbdsh does not run here: {probe.stderr[-200:]!r}")

    def script(text: str) -> subprocess.CompletedProcess:
        return subprocess.run(["nbdsh", "-c", text], capture_output=True, text=True, env=env, timeout=30)
    return script


# --- nbdinfo ------------------------------------------------------------------------------
@needs_nbd_tools
def test_nbdinfo_lists_every_export_with_its_description(san_like):
    st, exports = san_like
    out = run("nbdinfo", "--list", "--json", st.uri())
    assert out.returncode == 0, out.stderr
    listed = {e["export-name"]: e for e in json.loads(out.stdout)["exports"]}
    assert set(listed) == {"host1:/db", "host2:/var/log", "ro"}
    assert listed["host1:/db"]["description"] == "the database volume"
    assert listed["ro"]["is_read_only"] is True and listed["host2:/var/log"]["is_read_only"] is False
    assert {e["export-size"] for e in listed.values()} == {16 * MiB, 8 * MiB, MiB}
    assert not errors_logged(st)


@needs_nbd_tools
def test_nbdinfo_json_of_one_export(san_like):
    st, _ = san_like
    out = run("nbdinfo", "--json", st.uri("host1:/db"))
    assert out.returncode == 0, out.stderr
    (info,) = json.loads(out.stdout)["exports"]
    assert info["export-name"] == "host1:/db" and info["export-size"] == 16 * MiB
    assert (info["block_size_minimum"], info["block_size_preferred"],
            info["block_size_maximum"]) == (512, 4 * MiB, 32 * MiB)
    assert info["can_multi_conn"] and info["can_fua"] and info["can_trim"] and info["can_zero"]
    assert info["contexts"] == ["base:allocation"]


@needs_nbd_tools
def test_nbdinfo_map_shows_the_backends_holes(san_like):
    st, exports = san_like
    out = run("nbdinfo", "--map", "--json", st.uri("host1:/db"))
    assert out.returncode == 0, out.stderr
    extents = [(e["offset"], e["length"], e["type"]) for e in json.loads(out.stdout)]
    assert extents == [(0, MiB, HOLE), (MiB, MiB, 0), (2 * MiB, 6 * MiB, HOLE),
                       (8 * MiB, GRAIN, 0), (8 * MiB + GRAIN, 8 * MiB - GRAIN, HOLE)]
    assert [(o, n) for o, n, t in extents if t == HOLE] == exports["host1:/db"].holes()


@needs_nbd_tools
@pytest.mark.parametrize("name", ["a b", "50%?#x", "é/ü", "/abs", "x:"])
def test_uris_of_awkward_names_reach_their_export(name):
    st = ServerThread({name: MemoryExport(name, MiB), "other": MemoryExport("other", 2 * MiB)})
    try:
        out = run("nbdinfo", "--size", export_uri(st.host, st.port, name))
        assert (out.returncode, out.stdout.strip()) == (0, str(MiB)), out.stderr
    finally:
        st.close()


@needs_nbd_tools
def test_the_default_export_is_the_only_one_or_none():
    st = ServerThread({"only": MemoryExport("only", 2 * MiB)})
    try:
        out = run("nbdinfo", "--size", st.uri())
        assert (out.returncode, out.stdout.strip()) == (0, str(2 * MiB)), out.stderr
    finally:
        st.close()
    st = ServerThread({"a": MemoryExport("a", MiB), "b": MemoryExport("b", MiB)})
    try:
        out = run("nbdinfo", "--size", st.uri())
        assert out.returncode == 1 and "server has no export named ''" in out.stderr
    finally:
        st.close()


@needs_nbd_tools
def test_a_callable_source_is_asked_at_every_connection():
    exports = [MemoryExport("first", MiB)]
    st = ServerThread(lambda: exports)
    try:
        assert run("nbdinfo", "--size", st.uri("first")).stdout.strip() == str(MiB)
        exports[:] = [MemoryExport("second", 2 * MiB)]
        assert run("nbdinfo", "--size", st.uri("first")).returncode != 0
        assert run("nbdinfo", "--size", st.uri("second")).stdout.strip() == str(2 * MiB)
    finally:
        st.close()


@needs_nbd_tools
def test_an_async_callable_source():
    async def source():
        return {"v": MemoryExport("v", 3 * MiB)}
    st = ServerThread(source)
    try:
        assert run("nbdinfo", "--size", st.uri("v")).stdout.strip() == str(3 * MiB)
    finally:
        st.close()


# --- copies -------------------------------------------------------------------------------
@needs_nbd_tools
def test_nbdcopy_in_and_out(san_like, tmp_path):
    st, exports = san_like
    image = pattern(5 * MiB, 7)
    image.tofile(tmp_path / "in.raw")
    copy_in = run("nbdcopy", str(tmp_path / "in.raw"), st.uri("host2:/var/log"))
    assert copy_in.returncode == 0, copy_in.stderr
    assert (exports["host2:/var/log"].data[:5 * MiB] == image).all()
    copy_out = run("nbdcopy", st.uri("host2:/var/log"), str(tmp_path / "out.raw"))
    assert copy_out.returncode == 0, copy_out.stderr
    back = np.fromfile(tmp_path / "out.raw", dtype=np.uint8)
    assert len(back) == 8 * MiB and (back[:5 * MiB] == image).all() and not back[5 * MiB:].any()
    assert not errors_logged(st)


@needs_nbd_tools
def test_two_nbdcopy_at_once_to_two_exports(san_like, tmp_path):
    st, exports = san_like
    images = {"host1:/db": pattern(16 * MiB, 3), "host2:/var/log": pattern(8 * MiB, 4)}
    procs = []
    for name, image in images.items():
        path = tmp_path / f"{len(procs)}.raw"
        image.tofile(path)
        procs.append(subprocess.Popen(["nbdcopy", str(path), st.uri(name)], stderr=subprocess.PIPE))
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    for name, image in images.items():
        assert (exports[name].data == image).all()
    assert not errors_logged(st)


@needs_qemu
def test_qemu_img_convert_reads_only_the_data(san_like, tmp_path):
    st, exports = san_like
    db = exports["host1:/db"]
    out = run("qemu-img", "convert", "-O", "raw", st.uri("host1:/db"), str(tmp_path / "out.raw"))
    assert out.returncode == 0, out.stderr
    assert (np.fromfile(tmp_path / "out.raw", dtype=np.uint8) == db.data).all()
    reads = [(o, n) for op, o, n in (c for c in db.calls if c[0] == "read")]
    assert reads and all(db.allocated[o // GRAIN:(o + n) // GRAIN].all() for o, n in reads), reads


@needs_qemu
def test_qemu_io_writes_and_reads_a_pattern(san_like):
    st, exports = san_like
    out = run("qemu-io", "-f", "raw", st.uri("host1:/db"),
              "-c", "write -P 0xab 64k 64k", "-c", "read -P 0xab 64k 64k")
    assert out.returncode == 0, out.stderr
    assert "wrote 65536/65536 bytes at offset 65536" in out.stdout
    assert "read 65536/65536 bytes at offset 65536" in out.stdout
    assert (exports["host1:/db"].data[64 * KiB:128 * KiB] == 0xAB).all()


@needs_qemu
def test_qemu_io_cannot_write_a_read_only_export(san_like):
    st, exports = san_like
    out = run("qemu-io", "-f", "raw", st.uri("ro"), "-c", "write -P 0xab 0 64k")
    assert out.returncode == 1 and "Permission denied" in out.stderr
    assert (exports["ro"].data == 0x11).all()


# --- nbdsh: every command -------------------------------------------------------------------
def test_nbdsh_trim_zero_flush_fua_and_block_status(san_like, nbdsh):
    st, exports = san_like
    thin, other = exports["host1:/db"], exports["host2:/var/log"]
    out = nbdsh(f"""
import json
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri({st.uri("host1:/db")!r})
h.pwrite(b"\\xab" * 262144, 4194304)                        # grains 64..67
h.trim(131072, 4194304)                                     # grains 64, 65 back to holes
h.zero(65536, 4325376, nbd.CMD_FLAG_NO_HOLE)                # grain 66: zeroes, allocated
h.zero(65536, 4390912)                                      # grain 67: zeroes, may be a hole
h.pwrite(b"\\xcd" * 512, 0, nbd.CMD_FLAG_FUA)
h.flush()
extents = []
h.block_status(524288, 4194304, lambda ctx, off, ents, err: extents.extend(ents))
print(json.dumps({{"data": h.pread(262144, 4194304).hex()[:8], "head": h.pread(512, 0)[:2].hex(),
                  "extents": extents}}))
""")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["data"] == "00000000" and result["head"] == "cdcd"
    assert result["extents"] == [2 * GRAIN, HOLE, GRAIN, 0, 5 * GRAIN, HOLE]
    ops = [c for c in thin.calls if c[0] != "read" and c[0] != "block_status"]
    assert ops == [("write", 4 * MiB, 4 * GRAIN), ("trim", 4 * MiB, 2 * GRAIN),
                   ("zero", 4 * MiB + 2 * GRAIN, GRAIN, False), ("zero", 4 * MiB + 3 * GRAIN, GRAIN, True),
                   ("write", 0, 512), ("flush",), ("flush",)]
    assert not thin.data[4 * MiB:4 * MiB + 4 * GRAIN].any() and not other.calls


@pytest.mark.parametrize("setup,structured", [
    ("", True),
    ("h.set_request_structured_replies(False)", False),   # simple replies
    ("h.set_handshake_flags(0)", False),                   # plain newstyle: NBD_OPT_EXPORT_NAME, zeroes
])
def test_nbdsh_reads_and_writes_however_it_negotiates(san_like, nbdsh, setup, structured):
    st, exports = san_like
    out = nbdsh(f"""
{setup}
h.connect_uri({st.uri("host2:/var/log")!r})
h.pwrite(bytes(range(256)) * 64, 8192)
print(h.get_structured_replies_negotiated(), h.pread(16384, 8192) == bytes(range(256)) * 64)
try:
    h.pread(512, 8 * 1024 * 1024)
except nbd.Error as e:
    print(e.errnum)
""")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(structured), "True", str(errno.EINVAL)]
    assert exports["host2:/var/log"].data[8192:8192 + 256].tolist() == list(range(256))


@pytest.mark.parametrize("command", ["h.pwrite(b'x' * 512, 0)", "h.trim(512, 0)", "h.zero(512, 0)"])
def test_writing_a_read_only_export_is_eperm_from_the_server(san_like, nbdsh, command):
    st, exports = san_like
    out = nbdsh(f"""
h.set_strict_mode(0)                 # let the command reach the server despite READ_ONLY
h.connect_uri({st.uri("ro")!r})
try:
    {command}
except nbd.Error as e:
    print(e.errnum)
print(h.pread(512, 0)[:1].hex())
""")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(errno.EPERM), "11"]
    assert [c[0] for c in exports["ro"].calls] == ["read"]


@pytest.mark.parametrize("op,error,command,errnum", [
    ("read", ExportError(errno.EIO, "medium error"), "h.pread(512, 0)", errno.EIO),
    ("write", ExportError(errno.ENOSPC, "pool p1 is full"), "h.pwrite(b'x' * 512, 0)", errno.ENOSPC),
    ("write", ExportError(errno.EDQUOT, "quota"), "h.pwrite(b'x' * 512, 0)", errno.ENOSPC),
    ("flush", ExportError(errno.EROFS, "snapshot"), "h.flush()", errno.EPERM),
    ("zero", ExportError(errno.EBADF, "odd"), "h.zero(512, 0)", errno.EIO),
    ("read", RuntimeError("a bug in the backend"), "h.pread(512, 0)", errno.EIO),
    ("block_status", ZeroDivisionError("division by zero"),
     "h.block_status(512, 0, lambda *a: 0)", errno.EIO),
])
def test_backend_errors_reach_the_client_and_the_server_goes_on(nbdsh, op, error, command, errnum):
    export = MemoryExport("v", MiB, thin=True, fail={op: error})
    st = ServerThread({"v": export})
    try:
        out = nbdsh(f"""
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri({st.uri("v")!r})
try:
    {command}
except nbd.Error as e:
    print(e.errnum)
{command}                            # the failure was once: the same again succeeds
print("ok")
""")
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [str(errnum), "ok"]
        assert run("nbdinfo", "--size", st.uri("v")).stdout.strip() == str(MiB)
        logged = [r for r in st.records if r.levelno >= logging.ERROR]
        if isinstance(error, ExportError):
            assert not logged
        else:                                           # a bug: logged with its traceback
            assert len(logged) == 1 and logged[0].exc_info[1] is error
            assert f"export 'v' failed {op.upper()}" in logged[0].getMessage()
    finally:
        st.close()


@needs_nbd_tools
def test_nbdcopy_fails_on_a_read_error_and_the_next_copy_works(tmp_path):
    export = MemoryExport("v", 4 * MiB, fail={"read": ExportError(errno.EIO, "medium error at LBA 8")})
    export.data[:] = pattern(4 * MiB, 9)
    st = ServerThread({"v": export})
    try:
        bad = run("nbdcopy", st.uri("v"), str(tmp_path / "bad.raw"))
        assert bad.returncode != 0 and "Input/output error" in bad.stderr
        good = run("nbdcopy", st.uri("v"), str(tmp_path / "good.raw"))
        assert good.returncode == 0, good.stderr
        assert (np.fromfile(tmp_path / "good.raw", dtype=np.uint8) == export.data).all()
    finally:
        st.close()


# --- raw protocol edge cases ------------------------------------------------------------------
def _closed(c, msg=""):
    assert c.closed_by_server(), msg


def _simple_read(c, name="host1:/db"):
    c.greet(p.CLIENT_FIXED_NEWSTYLE)                       # no NO_ZEROES: 124 zeroes follow
    c.send(p.encode_option(p.OPT_EXPORT_NAME, name.encode()))
    size, flags = p.EXPORT_NAME_REPLY.unpack(c.recv(10))
    assert size == 16 * MiB and flags & p.FLAG_SEND_FLUSH and not flags & p.FLAG_SEND_DF
    assert c.recv(124) == bytes(124)
    c.request(p.CMD_READ, MiB, 512, cookie=11)
    assert c.simple_reply(512)[:2] == (0, 11)
    c.request(p.CMD_READ, 16 * MiB, 512, cookie=12)          # past the end: no data follows
    assert c.simple_reply(512) == (errno.EINVAL, 12, b"")
    c.request(p.CMD_READ, MiB, 512, cookie=13)
    error, cookie, data = c.simple_reply(512)
    assert (error, cookie) == (0, 13) and len(data) == 512


def _in_transmission(*steps):
    """A case that negotiates (structured, base:allocation) into "host1:/db" first."""
    def case(c):
        c.go("host1:/db")
        for step in steps:
            step(c)
    return case


def _expect(command, offset, length, error, flags=0, data=b""):
    def step(c):
        c.request(command, offset, length, flags, cookie=99, data=data)
        assert c.error_of() == error
    return step


def _option_then_go(option, data, reply_type, message=""):
    def case(c):
        c.greet()
        replies = c.option(option, data)
        assert replies[-1][0] == reply_type, replies
        assert message.encode() in replies[-1][1]
        c.go("host1:/db", structured=False, meta=False, greet=False)
    return case


def _go_unknown(c):
    c.greet()
    (reply,) = c.option(p.OPT_GO, p.encode_info_request("nope"))
    assert reply == (p.REP_ERR_UNKNOWN, b"no export named 'nope'")
    (reply,) = c.option(p.OPT_GO, p.encode_info_request(""))
    assert reply[0] == p.REP_ERR_UNKNOWN and b"no default export among 3" in reply[1]
    assert c.go("host1:/db", structured=False, meta=False, greet=False)[0] == 16 * MiB


def _list(c):
    c.greet()
    assert c.option(p.OPT_LIST, b"x")[0][0] == p.REP_ERR_INVALID
    replies = c.option(p.OPT_LIST)
    assert [t for t, _ in replies] == [p.REP_SERVER] * 3 + [p.REP_ACK]
    assert replies[0][1] == b"\0\0\0\x09host1:/dbthe database volume"


def _meta(c):
    c.greet()
    request = p.encode_meta_context_request("host1:/db", ["base:allocation"])
    assert c.option(p.OPT_SET_META_CONTEXT, request)[0][0] == p.REP_ERR_INVALID  # not structured
    assert c.option(p.OPT_STRUCTURED_REPLY)[0][0] == p.REP_ACK
    for queries, listed in [([], 1), (["base:"], 1), (["base:allocation", "x-y:z"], 1), (["x-y:"], 0)]:
        replies = c.option(p.OPT_LIST_META_CONTEXT, p.encode_meta_context_request("host1:/db", queries))
        assert replies[:-1] == [(p.REP_META_CONTEXT, b"\0\0\0\0base:allocation")] * listed
    assert c.option(p.OPT_SET_META_CONTEXT, p.encode_meta_context_request("host1:/db", ["base:"])) == [
        (p.REP_ACK, b"")]                                    # "base:" selects nothing
    assert c.option(p.OPT_SET_META_CONTEXT, request)[0] == (p.REP_META_CONTEXT, b"\0\0\0\x01base:allocation")
    assert c.option(p.OPT_SET_META_CONTEXT, b"\0\0\0")[0][0] == p.REP_ERR_INVALID


def _disconnect_mid_write(c):
    c.go("host1:/db")
    c.send(p.encode_request(p.CMD_WRITE, 1, 0, 64 * KiB) + b"\xee" * 1000)


def _read_only_write_skips_the_data(c):
    c.go("ro")
    c.request(p.CMD_WRITE, 0, 4096, cookie=5, data=b"\xee" * 4096)
    assert c.error_of() == errno.EPERM
    c.request(p.CMD_READ, 0, 512, cookie=6)
    (chunk,) = c.chunks()
    assert chunk[:3] == (p.REPLY_FLAG_DONE, p.REPLY_TYPE_OFFSET_DATA, 6) and chunk[3][8:] == b"\x11" * 512


def _zero_lengths(c):
    c.go("host1:/db")
    for command in (p.CMD_READ, p.CMD_WRITE, p.CMD_TRIM, p.CMD_WRITE_ZEROES):
        c.request(command, 4096, 0, cookie=command)
        assert c.error_of() == 0


def _block_status_req_one(c):
    c.go("host1:/db")
    c.request(p.CMD_BLOCK_STATUS, MiB - 4096, 3 * MiB, p.CMD_FLAG_REQ_ONE, cookie=3)
    ((flags, kind, cookie, payload),) = c.chunks()
    assert (flags, kind, cookie) == (p.REPLY_FLAG_DONE, p.REPLY_TYPE_BLOCK_STATUS, 3)
    assert struct.unpack(">III", payload) == (1, 4096, HOLE)
    c.request(p.CMD_BLOCK_STATUS, MiB - 4096, 8192, cookie=4)
    ((_, _, _, payload),) = c.chunks()
    assert struct.unpack(">IIIII", payload) == (1, 4096, HOLE, 4096, 0)


def _abort(c):
    c.greet()
    assert c.option(p.OPT_ABORT) == [(p.REP_ACK, b"")]
    _closed(c)


def _disc(c):
    c.go("host1:/db")
    c.request(p.CMD_DISC)
    _closed(c)


EDGE_CASES = {
    "bad client flags": lambda c: (c.greet(0x4), _closed(c)),
    "client flags without fixed newstyle still served": lambda c: (
        c.greet(0), c.option(p.OPT_LIST)),
    "unknown option": _option_then_go(99, b"abc", p.REP_ERR_UNSUP, "option 99"),
    "STARTTLS refused": _option_then_go(p.OPT_STARTTLS, b"", p.REP_ERR_UNSUP),
    "STRUCTURED_REPLY with data": _option_then_go(p.OPT_STRUCTURED_REPLY, b"x", p.REP_ERR_INVALID),
    "GO name length past its data": _option_then_go(p.OPT_GO, b"\0\0\0\x10ab\0\0", p.REP_ERR_INVALID,
                                                    "name length 16"),
    "GO with a NUL in the name": _option_then_go(p.OPT_GO, b"\0\0\0\x02a\0\0\0", p.REP_ERR_INVALID, "NUL"),
    "INFO then GO": _option_then_go(p.OPT_INFO, p.encode_info_request("ro", [p.INFO_DESCRIPTION]),
                                    p.REP_ACK),
    "GO of unknown and default names": _go_unknown,
    "LIST with and without data": _list,
    "meta contexts": _meta,
    "option of 4 GiB": lambda c: (c.greet(), c.send(p.OPTION_HEADER.pack(p.IHAVEOPT, p.OPT_GO, 2**32 - 1)),
                                  _closed(c)),
    "option with bad magic": lambda c: (c.greet(), c.send(b"NBDMAGIC" + bytes(8)), _closed(c)),
    "EXPORT_NAME unknown": lambda c: (c.greet(), c.send(p.encode_option(p.OPT_EXPORT_NAME, b"nope")),
                                      _closed(c)),
    "EXPORT_NAME, zeroes, simple replies": _simple_read,
    "ABORT": _abort,
    "hang up in the handshake": lambda c: (c.greet(), c.send(b"IHAVE")),
    "request with bad magic": lambda c: (c.go("host1:/db"),
                                         c.send(p.encode_request(p.CMD_READ, magic=0xDEADBEEF)), _closed(c)),
    "truncated request header": lambda c: (c.go("host1:/db"), c.send(p.encode_request(p.CMD_READ)[:10])),
    "disconnect mid-write": _disconnect_mid_write,
    "write of 4 GiB": lambda c: (c.go("host1:/db"), c.send(p.encode_request(p.CMD_WRITE, 1, 0, 2**32 - 1)),
                                 _closed(c)),
    "read past the end": _in_transmission(_expect(p.CMD_READ, 16 * MiB - 512, 1024, errno.EINVAL),
                                          _expect(p.CMD_READ, 2**64 - 512, 512, errno.EINVAL)),
    "write past the end": _in_transmission(_expect(p.CMD_WRITE, 16 * MiB, 512, errno.ENOSPC, data=bytes(512)),
                                           _expect(p.CMD_READ, 0, 512, 0)),
    "trim and zero past the end": _in_transmission(_expect(p.CMD_TRIM, 16 * MiB, 512, errno.EINVAL),
                                                   _expect(p.CMD_WRITE_ZEROES, 0, 17 * MiB, errno.ENOSPC)),
    "unaligned": _in_transmission(_expect(p.CMD_READ, 100, 512, errno.EINVAL),
                                  _expect(p.CMD_WRITE, 0, 100, errno.EINVAL, data=bytes(100)),
                                  _expect(p.CMD_READ, 0, 512, 0)),
    "huge trim within the export": _in_transmission(_expect(p.CMD_TRIM, 0, 16 * MiB, 0)),
    "zero lengths": _zero_lengths,
    "unknown commands": _in_transmission(_expect(42, 0, 512, errno.EINVAL),
                                         _expect(p.CMD_CACHE, 0, 512, errno.EINVAL),
                                         _expect(p.CMD_READ, 0, 512, 0)),
    "flags a command may not carry": _in_transmission(
        _expect(p.CMD_READ, 0, 512, errno.EINVAL, flags=p.CMD_FLAG_NO_HOLE),
        _expect(p.CMD_WRITE_ZEROES, 0, 512, errno.EINVAL, flags=p.CMD_FLAG_FAST_ZERO),
        _expect(p.CMD_READ, 0, 512, 0, flags=p.CMD_FLAG_DF | p.CMD_FLAG_FUA)),
    "flush with an offset": _in_transmission(_expect(p.CMD_FLUSH, 512, 0, errno.EINVAL)),
    "block status of length 0": _in_transmission(_expect(p.CMD_BLOCK_STATUS, 0, 0, errno.EINVAL)),
    "block status past the end": _in_transmission(_expect(p.CMD_BLOCK_STATUS, 16 * MiB, 512, errno.EINVAL)),
    "block status without a context": lambda c: (
        c.go("host1:/db", meta=False), _expect(p.CMD_BLOCK_STATUS, 0, 512, errno.EINVAL)(c)),
    "block status, one extent or several": _block_status_req_one,
    "write to a read-only export": _read_only_write_skips_the_data,
    "DISC": _disc,
}


@pytest.mark.parametrize("case", EDGE_CASES.values(), ids=EDGE_CASES.keys())
def test_protocol_edge_case_and_the_server_survives(san_like, case):
    st, exports = san_like
    with RawClient(st.port) as bystander:                # a connection already in transmission
        bystander.go("host2:/var/log")
        with RawClient(st.port) as c:
            case(c)
        bystander.request(p.CMD_READ, 0, 512, cookie=1)
        assert bystander.error_of() == 0                 # it carries on
    with RawClient(st.port) as after:                    # and a new client is served
        after.go("host1:/db")
        after.request(p.CMD_READ, MiB, 4096, cookie=2)
        ((_, kind, cookie, payload),) = after.chunks()
        assert (kind, cookie, payload[8:]) == (p.REPLY_TYPE_OFFSET_DATA, 2, exports["host1:/db"].data[
            MiB:MiB + 4096].tobytes())
    assert not errors_logged(st)


@pytest.mark.parametrize("structured,error", [(True, errno.EOVERFLOW), (False, errno.EINVAL)])
def test_payloads_over_the_maximum(structured, error):
    export = MemoryExport("v", 4 * MiB)
    st = ServerThread({"v": export}, preferred_block=64 * KiB, max_payload=MiB)
    try:
        with RawClient(st.port) as c:
            c.go("v", structured=structured, meta=False)
            c.request(p.CMD_READ, 0, MiB + 512, cookie=1)      # refused, the connection goes on
            assert c.error_of() == error
            c.request(p.CMD_READ, 0, MiB, cookie=2)
            assert c.error_of() == 0 if structured else c.simple_reply(MiB)[0] == 0
            c.request(p.CMD_WRITE_ZEROES, 0, 4 * MiB, cookie=3)  # no payload: any length
            assert c.error_of() == 0
            c.request(p.CMD_WRITE, 0, MiB + 512, cookie=4)     # its data cannot be skipped
            _closed(c)
        assert [c[0] for c in export.calls] == ["read", "zero"]
        assert "write of 1049088 bytes (maximum payload 1048576)" in " ".join(st.messages(logging.WARNING))
        assert not errors_logged(st)
    finally:
        st.close()


# --- concurrency -------------------------------------------------------------------------------
def _pipelined_writes(st, export, count, size=4 * KiB):
    """Send `count` writes back to back, then a FLUSH; read every reply; the reply cookies."""
    with RawClient(st.port, timeout=20) as c:
        c.go(export.name)
        c.send(b"".join(p.encode_request(p.CMD_WRITE, i, i * size, size) + bytes([i % 256]) * size
                        for i in range(count)) + p.encode_request(p.CMD_FLUSH, 10_000))
        cookies = []
        for _ in range(count + 1):
            ((_, kind, cookie, payload),) = c.chunks()
            assert (kind, payload) == (-1, bytes(4))     # simple replies, no error
            cookies.append(cookie)
        c.request(p.CMD_DISC)
    return cookies


def test_writes_reach_the_backend_in_arrival_order_and_run_concurrently():
    export = MemoryExport("v", 4 * MiB, delay=0.02)
    st = ServerThread({"v": export})
    try:
        cookies = _pipelined_writes(st, export, 64)
    finally:
        st.close()
    assert export.calls == [("write", i * 4096, 4096) for i in range(64)] + [("flush",)]
    assert export.max_active > 8                         # not serialized
    assert sorted(cookies) == list(range(64)) + [10_000] and cookies[-1] == 10_000
    flush_begins = export.events.index(("begin", ("flush",)))
    write_ends = [i for i, (kind, call) in enumerate(export.events) if kind == "end" and call[0] == "write"]
    assert len(write_ends) == 64 and max(write_ends) < flush_begins
    for i in range(64):
        assert (export.data[i * 4096:(i + 1) * 4096] == i).all()


@pytest.mark.parametrize("options,bound", [
    ({"max_requests": 4}, 4),
    ({"max_bytes_in_flight": 8 * KiB}, 2),
    ({"max_requests": 1}, 1),
])
def test_requests_in_flight_are_bounded(options, bound):
    export = MemoryExport("v", 4 * MiB, delay=0.01)
    st = ServerThread({"v": export}, **options)
    try:
        _pipelined_writes(st, export, 24)
    finally:
        st.close()
    assert export.max_active == bound
    assert [c for c in export.calls if c[0] == "write"] == [("write", i * 4096, 4096) for i in range(24)]


def test_close_lets_requests_in_progress_finish():
    slow = MemoryExport("slow", MiB)
    entered = threading.Event()

    async def slow_write(offset, data, _write=slow.write):
        entered.set()
        await asyncio.sleep(0.3)
        await _write(offset, data)
    slow.write = slow_write
    st = ServerThread({"slow": slow})
    with RawClient(st.port) as c:
        c.go("slow")
        c.request(p.CMD_WRITE, 0, 512, cookie=8, data=b"\x77" * 512)
        assert entered.wait(10)                           # the write is in the backend now
        st.close()                                        # returns once it is done
        assert c.error_of() == 0 and c.closed_by_server()
    assert (slow.data[:512] == 0x77).all()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", st.port), timeout=2)


def test_close_disconnects_idle_clients_in_any_phase():
    st = ServerThread({"v": MemoryExport("v", MiB)})
    haggling, idle = RawClient(st.port), RawClient(st.port)
    haggling.greet()
    idle.go("v")
    started = time.monotonic()
    st.close()
    assert time.monotonic() - started < 2
    assert haggling.closed_by_server() and idle.closed_by_server()
    assert not errors_logged(st)


def test_a_port_in_use_is_an_oserror():
    st = ServerThread({"v": MemoryExport("v", MiB)})
    try:
        with pytest.raises(OSError) as err:
            st.call(NbdServer({}, "127.0.0.1", st.port).start())
        assert err.value.errno == errno.EADDRINUSE and str(st.port) in str(err.value)
    finally:
        st.close()


# --- the server's pure helpers --------------------------------------------------------------
@pytest.mark.parametrize("extents,length,req_one,expected", [
    ([(4096, 0)], 4096, False, [(4096, 0)]),
    ([(1 << 30, 3)], 4096, False, [(4096, 3)]),                    # cut at the request's end
    ([(512, 0), (512, 0), (1024, 3)], 4096, False, [(1024, 0), (1024, 3)]),   # merged
    ([(0, 1), (512, 7)], 4096, False, [(512, 3)]),                 # empty gone, flags masked
    ([(512, 0), (512, 3)], 4096, True, [(512, 0)]),                # REQ_ONE: one extent
    ([(512, 0), (512, 0), (512, 3)], 4096, True, [(512, 0)]),
    ([(8192, 0)], 4096, True, [(4096, 0)]),
])
def test_clip_extents(extents, length, req_one, expected):
    assert _clip_extents(extents, length, req_one) == expected


@pytest.mark.parametrize("extents,message", [([], "no extent"), ([(0, 0)], "no extent"),
                                             ([(-512, 0)], "length -512")])
def test_clip_extents_refuses_a_backends_nonsense(extents, message):
    with pytest.raises(ValueError, match=message):
        _clip_extents(extents, 4096, False)


@pytest.mark.parametrize("payload", [
    b"\1" * 1024, bytearray(b"\1" * 1024), memoryview(b"\1" * 1024), np.ones(1024, np.uint8),
    np.ones(256, np.uint32).view(np.uint32) * 0x01010101, np.ones((2, 2048), np.uint8)[:, ::4],
])
def test_byte_view_of_what_a_read_may_return(payload):
    view = _byte_view(payload, 1024)
    assert view.nbytes == 1024 and view.format == "B" and bytes(view) == b"\1" * 1024


def test_byte_view_of_the_wrong_length():
    with pytest.raises(ValueError, match="1000 bytes for a request of 1024"):
        _byte_view(b"\0" * 1000, 1024)


@pytest.mark.parametrize("options,message", [
    ({"preferred_block": 1000}, "preferred_block 1000"),
    ({"preferred_block": 256}, "preferred_block 256"),
    ({"max_payload": 1 * MiB}, "max_payload 1048576"),
    ({"max_payload": 32 * MiB + 1}, "max_payload 33554433"),
    ({"max_requests": 0}, "max_requests 0"),
])
def test_bad_server_options(options, message):
    with pytest.raises(ValueError, match=message):
        NbdServer({}, **options)


def test_requests_the_server_refuses_by_itself_are_told_to_the_export():
    """`Export.refused` hears of each (the SAN counts them), with the NBD error and why;
    requests the backend carried out are not told."""
    class Counting(MemoryExport):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.told = []

        def refused(self, command, errno_value, message):
            self.told.append((command, errno_value, message))
    rw, ro = Counting("rw", 1 * MiB), Counting("ro", 1 * MiB, read_only=True)
    st = ServerThread({"rw": rw, "ro": ro})
    try:
        with RawClient(st.port) as c:
            c.go("rw")
            for command, offset, length, error, data in [
                    (p.CMD_READ, 100, 512, errno.EINVAL, b""),
                    (p.CMD_WRITE, MiB, 512, errno.ENOSPC, bytes(512)),
                    (p.CMD_READ, 0, 512, 0, b"")]:
                c.request(command, offset, length, cookie=7, data=data)
                assert c.error_of() == error
        with RawClient(st.port) as c:
            c.go("ro")
            c.request(p.CMD_WRITE, 0, 512, cookie=8, data=bytes(512))
            assert c.error_of() == errno.EPERM
    finally:
        st.close()
    assert [(cmd, err) for cmd, err, _ in rw.told] == [("READ", errno.EINVAL), ("WRITE", errno.ENOSPC)]
    assert "not aligned" in rw.told[0][2] and "past the end" in rw.told[1][2]
    assert [(cmd, err) for cmd, err, _ in ro.told] == [("WRITE", errno.EPERM)]


def test_close_with_a_timeout_ends_even_when_a_client_reads_no_replies():
    """A client that stops reading (suspended, say) fills the socket: the replies under way
    wait to be sent, and after the timeout the close cut the requests short but then waited
    for the send buffer to empty, forever, so `san serve` hung on SIGINT."""
    served = ServerThread({"v": MemoryExport("v", 64 * MiB)})
    client = RawClient(served.port)
    try:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.go("v")
        for i in range(16):                 # 64 MiB of replies that nobody reads
            client.request(p.CMD_READ, i * 4 * MiB, 4 * MiB, cookie=i)
        time.sleep(0.5)
        started = time.monotonic()
        served.call(served.server.close(timeout=0.5), timeout=20)
        assert time.monotonic() - started < 10
    finally:
        client.close()
        served.loop.call_soon_threadsafe(served.loop.stop)
        served.thread.join(10)
        served.loop.close()
