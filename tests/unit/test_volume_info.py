"""The 512-byte volume info record (Fig. 11): layout, round trip, every boundary, bad records."""
import struct

import pytest

from san.errors import SanError
from san.units import format_time
from san.volume_info import FORMAT_ID, IDENTITY, VolumeInfo


def test_layout_offsets_are_the_figures():
    rec = VolumeInfo("L", "H", "/M", 0x01020304).encode()
    assert len(rec) == 512 and rec[0:4] == FORMAT_ID
    assert rec[4:5] == b"L" and rec[5:132] == bytes(127)
    assert rec[132:133] == b"H" and rec[133:164] == bytes(31)
    assert rec[164:166] == b"/M" and rec[166:420] == bytes(254)
    assert rec[420:424] == b"\x01\x02\x03\x04"
    assert rec[424:512] == bytes(88)


@pytest.mark.parametrize("label,host,mount", [
    ("", "", ""),
    ("x" * 128, "h" * 32, "/" + "m" * 255),              # every field exactly full
    ("é" * 64, "ü" * 16, "/" + "ß" * 127 + "a"),         # two-byte characters, full
    ("日本語のラベル", "host-1.example", "/データ"),
    ("🙂" * 32, "h", "/"),                                # four-byte characters, 128 bytes
])
def test_round_trip(label, host, mount):
    info = VolumeInfo(label, host, mount, 1767225600)
    assert VolumeInfo.decode(info.encode()) == info


@pytest.mark.parametrize("field,value,limit", [
    ("label", "x" * 129, 128),
    ("label", "é" * 64 + "x", 128),
    ("label", "🙂" * 32 + "x", 128),
    ("label", "x" * 127 + "é", 128),                     # the last character would be cut
    ("host", "h" * 33, 32),
    ("mount_point", "/" + "m" * 256, 256),
])
def test_a_field_too_long_is_refused_never_cut(field, value, limit):
    args = {"label": "l", "host": "h", "mount_point": "/m", "timestamp": 0, field: value}
    with pytest.raises(SanError) as info:
        VolumeInfo(**args)
    assert info.value.code == "INVALID_INPUT"
    assert field in info.value.message and str(limit) in info.value.message


@pytest.mark.parametrize("kwargs", [
    {"timestamp": -1}, {"timestamp": 2**32}, {"timestamp": 1.5}, {"label": "a\x00b"}, {"host": 7},
])
def test_bad_values_are_refused(kwargs):
    args = {"label": "l", "host": "h", "mount_point": "/m", "timestamp": 0, **kwargs}
    with pytest.raises(SanError) as info:
        VolumeInfo(**args)
    assert info.value.code == "INVALID_INPUT"


def good():
    return bytearray(VolumeInfo("label", "host", "/mnt", 100).encode())


def corrupt(offset, value):
    rec = good()
    rec[offset:offset + len(value)] = value
    return bytes(rec)


@pytest.mark.parametrize("record,words", [
    (b"", "512 bytes"),
    (bytes(good()) + b"\x00", "512 bytes"),
    (bytes(512), "format ID"),
    (corrupt(0, b"SANW"), "format ID"),
    (corrupt(4, b"\xff\xfe"), "label is not UTF-8"),
    (corrupt(132, b"\xc3"), "host is not UTF-8"),
    # a text's padding is NULs: one record, one form (a backup server names a backup by it)
    (corrupt(10, b"x"), "label 'label' is followed by byte 10 = 0x78 in its NUL padding"),
    (corrupt(131, b"\x01"), "label 'label' is followed by byte 131 = 0x01"),
    (corrupt(137, b"\x00x"), "host 'host' is followed by byte 138 = 0x78"),
    (corrupt(419, b"/"), "mount_point '/mnt' is followed by byte 419 = 0x2f"),
], ids=lambda value: None if isinstance(value, bytes) else value)
def test_bad_records_are_invalid_volume_info(record, words):
    with pytest.raises(SanError) as info:
        VolumeInfo.decode(record)
    assert info.value.code == "INVALID_VOLUME_INFO" and words in info.value.message


def test_timestamp_is_big_endian_seconds_and_reserved_is_ignored_on_read():
    rec = corrupt(424, b"future extension")
    info = VolumeInfo.decode(rec)
    assert rec[:IDENTITY] == good()[:IDENTITY] == info.encode()[:IDENTITY]
    assert info.timestamp == 100 == struct.unpack(">I", rec[420:424])[0]
    assert info.moment.isoformat() == "1970-01-01T00:01:40+00:00"


@pytest.mark.parametrize("timestamp", [0, 1, 59, 951_782_400, 1_767_225_600, 4_107_542_400, 2**32 - 1])
def test_time_text_is_the_catalogs_form_of_the_moment(timestamp):
    info = VolumeInfo("L", "H", "/M", timestamp)
    assert info.time_text == format_time(info.moment)


def test_a_decoded_record_is_the_record_the_constructor_makes():
    info = VolumeInfo("é" * 64, "h" * 32, "/" + "m" * 255, 2**32 - 1)
    decoded = VolumeInfo.decode(info.encode())
    assert decoded == info and hash(decoded) == hash(info) and repr(decoded) == repr(info)
    with pytest.raises(Exception):
        decoded.label = "x"                     # frozen, as constructed
