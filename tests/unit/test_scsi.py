"""The SCSI bytes both ends of the block path agree on (san.scsi): encoders against parsers,
and the layouts SPC-4 fixes.  No Ray."""
import struct

import pytest

from san import scsi
from san.elements import client_host
from san.errors import SanError
from san.scsi import (blocks_of, capacity_bytes, device_identification, lu_identifier,
                      parse_device_identification, parse_standard_inquiry, read_capacity_data,
                      standard_inquiry)
from san.units import BLOCK


def test_standard_inquiry_layout_and_round_trip():
    data = standard_inquiry()
    assert len(data) == 36
    assert data[0] == 0x00                       # peripheral device type 0: direct-access block device
    assert data[2] == 0x06 and data[3] == 0x02   # SPC-4, response data format 2
    assert data[4] == 36 - 5                     # additional length
    assert data[8:16] == b"HITACHI " and data[16:32] == b"SAN-SIM ARRAY   " and data[32:36] == b"0100"
    assert parse_standard_inquiry(data) == {"device_type": 0, "vendor": "HITACHI",
                                            "product": "SAN-SIM ARRAY", "revision": "0100"}


@pytest.mark.parametrize("device_id,volume", [("HTC-0042", 0), ("HTC-0042", 2), ("X", 99999), ("ARRAY-2", 17)])
def test_device_identification_round_trip(device_id, volume):
    page = device_identification(device_id, volume)
    assert page[:2] == b"\x00\x83"
    (length,) = struct.unpack(">H", page[2:4])
    assert length == len(page) - 4
    assert parse_device_identification(page) == {"lu": lu_identifier(device_id, volume),
                                                 "target": device_id, "vendor": "HITACHI"}
    assert lu_identifier(device_id, volume) == f"{device_id}.{volume:05d}"


def test_device_identification_designators():
    page = device_identification("HTC-0042", 2)
    lu_body = b"HITACHI " + b"HTC-0042.00002"
    tgt_body = b"HITACHI " + b"HTC-0042"
    # code set 2 (ASCII); association 0 (LU) / 2 (target device) << 4 | type 1 (T10 vendor ID)
    assert page[4:] == bytes([2, 0x01, 0, len(lu_body)]) + lu_body + bytes([2, 0x21, 0, len(tgt_body)]) + tgt_body


@pytest.mark.parametrize("page", [b"", b"\x00\x80\x00\x00", b"\x00"])
def test_not_a_device_identification_page(page):
    with pytest.raises(SanError) as e:
        parse_device_identification(page)
    assert e.value.code == "INVALID_INPUT"


@pytest.mark.parametrize("size", [BLOCK, 8 << 20, 1 << 40])
def test_read_capacity_round_trip(size):
    last, block = read_capacity_data(size)
    assert block == BLOCK == 512 and last == size // 512 - 1
    assert capacity_bytes(last, block) == size


# (offset, size, expected (lba, blocks) or None: refused)
ADDRESSING = [
    (0, 0, (0, 0)),
    (0, 512, (0, 1)),
    (4096, 1 << 20, (8, 2048)),
    (100, 512, None),
    (0, 100, None),
    (-512, 512, None),
    (512, -512, None),
]


@pytest.mark.parametrize("offset,size,expected", ADDRESSING)
def test_blocks_of(offset, size, expected):
    if expected is None:
        with pytest.raises(SanError) as e:
            blocks_of(offset, size)
        assert e.value.code == "INVALID_INPUT" and "512-byte blocks" in e.value.message
    else:
        assert blocks_of(offset, size) == expected


def test_the_initiator_names_are_still_importable_from_client_host():
    for name in ("blocks_of", "parse_device_identification", "parse_standard_inquiry"):
        assert getattr(client_host, name) is getattr(scsi, name)


# ---------------------------------------------------------------------- data buffers
def _pickled_in_one_buffer(value):
    """Pickle `value` out of band as Ray does, then load it with every buffer cut from one
    block laid end to end (as Ray's object store holds them)."""
    import pickle
    buffers = []
    inband = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    block = bytearray(b"".join(b.raw() for b in buffers))
    view, pieces, at = memoryview(block).toreadonly(), [], 0
    for b in buffers:
        pieces.append(view[at:at + b.raw().nbytes])
        at += b.raw().nbytes
    return pickle.loads(inband, buffers=pieces), len(buffers)


def test_a_data_buffer_travels_in_pieces_and_arrives_as_one_array_over_them():
    import numpy as np
    data = np.random.default_rng(3).integers(0, 256, 4 * scsi.PIECE + 1024, dtype=np.uint8)
    wrapped = scsi.data_buffer(data)
    assert isinstance(wrapped, scsi.DataBuffer) and np.shares_memory(wrapped, data)
    got, nbuffers = _pickled_in_one_buffer(wrapped)
    assert nbuffers == 5                                  # 4 pieces of PIECE bytes and the rest
    assert type(got) is np.ndarray and np.array_equal(got, data)
    assert not got.flags.owndata and not got.flags.writeable   # a view over the pieces


def test_a_data_buffer_pickled_without_out_of_band_buffers_is_a_plain_array():
    import pickle

    import numpy as np
    data = np.arange(3 * scsi.PIECE, dtype=np.uint64).view(np.uint8)[: 2 * scsi.PIECE + 512]
    for protocol in (4, 5):
        got = pickle.loads(pickle.dumps(scsi.data_buffer(data), protocol=protocol))
        assert type(got) is np.ndarray and np.array_equal(got, data)


def test_only_large_contiguous_byte_arrays_become_data_buffers():
    import numpy as np
    small = np.zeros(scsi.PIECE, np.uint8)
    strided = np.zeros(4 * scsi.PIECE, np.uint8)[::2]
    words = np.zeros(scsi.PIECE, np.uint64)
    for value in (small, strided, words, b"x" * (2 * scsi.PIECE)):
        assert scsi.data_buffer(value) is value
