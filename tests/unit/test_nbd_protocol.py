"""san.nbd.protocol: every message byte by byte, and the decoders' refusals."""
from __future__ import annotations

import doctest
import errno
import struct
import urllib.parse

import pytest

from san.nbd import export as export_module
from san.nbd import protocol as p


def test_doctests():
    for module in (p, export_module):
        assert doctest.testmod(module).failed == 0


def test_greeting_is_nbdmagic_ihaveopt_and_two_flags():
    assert p.encode_greeting() == b"NBDMAGIC" + b"IHAVEOPT" + b"\x00\x03"


@pytest.mark.parametrize("flags", [0, 1, 2, 3])
def test_known_client_flags_decode(flags):
    assert p.decode_client_flags(struct.pack(">I", flags)) == flags


@pytest.mark.parametrize("flags", [4, 5, 0x80000000, 0xFFFFFFFF])
def test_unknown_client_flags_are_a_protocol_error(flags):
    with pytest.raises(p.ProtocolError, match=f"{flags:#x}"):
        p.decode_client_flags(struct.pack(">I", flags))


def test_option_round_trip_and_bad_magic():
    raw = p.encode_option(p.OPT_GO, b"abc")
    assert raw == b"IHAVEOPT" + b"\0\0\0\x07" + b"\0\0\0\x03" + b"abc"
    assert p.decode_option_header(raw[:16]) == (p.OPT_GO, 3)
    with pytest.raises(p.ProtocolError, match="0x4e42444d41474943"):
        p.decode_option_header(b"NBDMAGIC" + raw[8:16])


def test_option_reply_layout():
    raw = p.encode_option_reply(p.OPT_LIST, p.REP_ERR_UNKNOWN, b"why")
    assert raw == (bytes.fromhex("0003e889045565a9") + b"\0\0\0\x03" + bytes.fromhex("80000006")
                   + b"\0\0\0\x03" + b"why")
    assert p.decode_option_reply_header(raw[:20]) == (p.OPT_LIST, p.REP_ERR_UNKNOWN, 3)


def test_rep_server_is_name_length_name_description():
    assert p.encode_rep_server("host1:/db", "db") == b"\0\0\0\x09host1:/dbdb"


def test_info_replies():
    assert p.encode_info_export(1 << 40, 0x1ED) == b"\0\0" + (1 << 40).to_bytes(8, "big") + b"\x01\xed"
    assert p.encode_info_name("é") == b"\0\x01" + "é".encode()
    assert p.encode_info_description("d") == b"\0\x02d"
    assert p.encode_info_block_size(512, 4 << 20, 32 << 20) == (
        b"\0\x03" + b"\0\0\x02\0" + b"\0\x40\0\0" + b"\x02\0\0\0")


@pytest.mark.parametrize("no_zeroes,length", [(True, 10), (False, 134)])
def test_export_name_reply(no_zeroes, length):
    raw = p.encode_export_name_reply(4096, 0x0003, no_zeroes)
    assert len(raw) == length and raw[:10] == b"\0\0\0\0\0\0\x10\0\0\x03" and not any(raw[10:])


@pytest.mark.parametrize("name,infos", [("", []), ("host1:/db", [p.INFO_BLOCK_SIZE, p.INFO_NAME]),
                                        ("ü" * 100, [0, 1, 2, 3, 99])])
def test_info_request_round_trip(name, infos):
    assert p.decode_info_request(p.encode_info_request(name, infos)) == (name, infos)


@pytest.mark.parametrize("data,message", [
    (b"", "0 bytes of data"),
    (b"\0\0\0\x01\0", "5 bytes of data"),
    (b"\0\0\0\x05ab\0\0", "name length 5"),
    (b"\0\0\0\x02ab\0\x01", "1 info requests in 0 bytes"),
    (b"\0\0\0\x02ab\0\x01\0\x03\0\x04", "1 info requests in 4 bytes"),
    (b"\0\0\0\x02a\0\0\0", "NUL"),
    (b"\0\0\0\x02\xff\xfe\0\0", "not UTF-8"),
    (struct.pack(">I", 4097) + b"a" * 4097 + b"\0\0", "4097 bytes"),
])
def test_bad_info_requests(data, message):
    with pytest.raises(p.BadOption, match=message):
        p.decode_info_request(data)


@pytest.mark.parametrize("name,queries", [("", []), ("host1:/db", ["base:allocation", "base:", "x-y:z"])])
def test_meta_context_request_round_trip(name, queries):
    raw = p.encode_meta_context_request(name, queries)
    assert p.decode_meta_context_request(raw) == (name, queries)


@pytest.mark.parametrize("data,message", [
    (b"", "export name length of 4 bytes at byte 0"),
    (b"\0\0\0\x09abc", "export name of 9 bytes at byte 4"),
    (b"\0\0\0\0", "query count"),
    (b"\0\0\0\0\0\0\0\x01", "query length"),
    (b"\0\0\0\0\0\0\0\x01\0\0\0\x10base:", "query of 16 bytes"),
    (b"\0\0\0\0\0\0\0\0junk", "4 bytes left over"),
])
def test_bad_meta_context_requests(data, message):
    with pytest.raises(p.BadOption, match=message):
        p.decode_meta_context_request(data)


def test_meta_context_reply():
    assert p.encode_meta_context(1, "base:allocation") == b"\0\0\0\x01base:allocation"


def test_request_round_trip_and_layout():
    raw = p.encode_request(p.CMD_WRITE, cookie=0x0102030405060708, offset=4096, length=512,
                           flags=p.CMD_FLAG_FUA)
    assert raw == (b"\x25\x60\x95\x13" + b"\0\x01" + b"\0\x01" + bytes(range(1, 9))
                   + (4096).to_bytes(8, "big") + (512).to_bytes(4, "big"))
    assert p.decode_request(raw) == p.Request(p.CMD_FLAG_FUA, p.CMD_WRITE, 0x0102030405060708, 4096, 512)


def test_request_with_bad_magic_is_a_protocol_error():
    with pytest.raises(p.ProtocolError, match="0x12560953"):
        p.decode_request(p.encode_request(p.CMD_READ, magic=0x12560953))


def test_simple_reply_layout():
    assert p.encode_simple_reply(0xAB, p.NBD_EPERM) == b"\x67\x44\x66\x98\0\0\0\x01" + (0xAB).to_bytes(8, "big")


def test_offset_data_header_claims_the_data_that_follows():
    raw = p.encode_offset_data_header(cookie=5, offset=1024, data_length=512)
    assert raw == (b"\x66\x8e\x33\xef" + b"\0\x01" + b"\0\x01" + (5).to_bytes(8, "big")
                   + (520).to_bytes(4, "big") + (1024).to_bytes(8, "big"))


def test_offset_hole_and_none_chunks():
    assert p.encode_offset_hole(5, 1024, 4096, done=False)[4:] == (
        b"\0\0\0\x02" + (5).to_bytes(8, "big") + b"\0\0\0\x0c" + (1024).to_bytes(8, "big") + b"\0\0\x10\0")
    assert p.encode_none_chunk(9) == b"\x66\x8e\x33\xef\0\x01\0\0" + (9).to_bytes(8, "big") + b"\0\0\0\0"


def test_error_chunk_carries_errno_and_message():
    raw = p.encode_error_chunk(3, p.NBD_EIO, "disk on fire")
    assert raw[4:8] == b"\0\x01\x80\x01"
    assert raw[16:20] == (6 + 12).to_bytes(4, "big")
    assert raw[20:] == b"\0\0\0\x05\0\x0cdisk on fire"


def test_error_chunk_message_is_cut_to_4096_bytes_on_a_character():
    raw = p.encode_error_chunk(3, p.NBD_EIO, "é" * 3000)      # 6000 bytes of UTF-8
    (length,) = struct.unpack(">H", raw[24:26])
    assert length == 4096 and raw[26:].decode("utf-8") == "é" * 2048


def test_block_status_chunk():
    raw = p.encode_block_status(4, 1, [(65536, 3), (512, 0)])
    assert raw[4:8] == b"\0\x01\0\x05"
    assert raw[16:] == struct.pack(">IIIIII", 20, 1, 65536, 3, 512, 0)
    with pytest.raises(ValueError, match="at least one extent"):
        p.encode_block_status(4, 1, [])


@pytest.mark.parametrize("host_errno,nbd", [
    (errno.EPERM, 1), (errno.EACCES, 1), (errno.EROFS, 1), (errno.EIO, 5), (errno.ENOMEM, 12),
    (errno.EINVAL, 22), (errno.ENOSPC, 28), (errno.EDQUOT, 28), (errno.EFBIG, 28),
    (errno.EOVERFLOW, 75), (errno.ENOTSUP, 22), (errno.ESHUTDOWN, 108),
    (errno.ENOENT, 5), (errno.ETIMEDOUT, 5), (9999, 5),
])
def test_errno_to_nbd_error(host_errno, nbd):
    assert p.nbd_error(host_errno) == nbd


@pytest.mark.parametrize("text", ["a\0b", "x" * 4097])
def test_bad_strings_are_refused_when_encoding(text):
    with pytest.raises(ValueError, match="not an NBD string"):
        p.encode_string(text)


@pytest.mark.parametrize("host,name,uri", [
    ("127.0.0.1", "host1:/db", "nbd://127.0.0.1:10809/host1:/db"),
    ("127.0.0.1", "plain", "nbd://127.0.0.1:10809/plain"),
    ("127.0.0.1", "a b", "nbd://127.0.0.1:10809/a%20b"),
    ("127.0.0.1", "50%?#x", "nbd://127.0.0.1:10809/50%25%3F%23x"),
    ("127.0.0.1", "/abs", "nbd://127.0.0.1:10809//abs"),
    ("localhost", "é", "nbd://localhost:10809/%C3%A9"),
    ("::1", "v", "nbd://[::1]:10809/v"),
    ("[::1]", "v", "nbd://[::1]:10809/v"),
])
def test_export_uri(host, name, uri):
    assert p.export_uri(host, 10809, name) == uri
    assert urllib.parse.unquote(urllib.parse.urlsplit(uri).path[1:]) == name
