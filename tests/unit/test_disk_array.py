"""The target side of the block path on a plain DiskArray (no Ray)."""
import textwrap

import numpy as np
import pytest

from san.elements.disk_array import DiskArray
from san.errors import SanError
from san.pattern import pattern
from san.scsi import parse_device_identification, parse_standard_inquiry
from san.topology import load_topology

TOPO = """
name: t
fabric:
  switches: [{name: sw1}]
  zones: [{name: z, members: [h1/hba0, a1/fc0]}]
arrays:
  - name: a1
    device_id: HTC-0042
    ports:
      - {name: fc0, number: 0, wwpn: "50:00:00:00:00:00:00:01", switch: sw1}
      - {name: fc1, number: 1, wwpn: "50:00:00:00:00:00:00:02", switch: sw1}
    volumes:
      - {number: 0, size: 8MiB, port: fc0, lun: 0, hosts: [h1]}
      - {number: 1, size: 8MiB, port: fc0, lun: 1, hosts: [h2]}
      - {number: 2, size: 1TiB, port: fc0, lun: 2, hosts: [h1, h2]}
      - {number: 3, size: 8MiB}
hosts:
  - name: h1
    hbas: [{name: hba0, wwpn: "21:00:00:00:00:00:00:01", switch: sw1}]
  - name: h2
    hbas: [{name: hba0, wwpn: "21:00:00:00:00:00:00:02", switch: sw1}]
"""


@pytest.fixture
def array(tmp_path):
    (tmp_path / "t.yaml").write_text(textwrap.dedent(TOPO))
    topo = load_topology(tmp_path / "t.yaml")
    arr = DiskArray(topo.arrays[0], tmp_path / "state", granule=64 * 1024)
    yield arr
    arr.close()


def code(fn, *args):
    with pytest.raises(SanError) as info:
        fn(*args)
    return info.value.code


def test_write_then_read_back_through_the_lun(array):
    data = pattern(5, 4096, 1 << 20)
    assert array.write("h1/hba0", "fc0", 0, 8, data) == 1 << 20
    assert np.array_equal(array.read("h1/hba0", "fc0", 0, 8, 2048), data)
    assert not array.read("h1/hba0", "fc0", 0, 4096, 8).any()  # never written: zeros


def test_inquiry_carries_vendor_and_device_id(array):
    std = parse_standard_inquiry(array.inquiry("h1/hba0", "fc0", 0))
    assert std == {"device_type": 0, "vendor": "HITACHI", "product": "SAN-SIM ARRAY", "revision": "0100"}
    ident = parse_device_identification(array.inquiry("h1/hba0", "fc0", 2, 0x83))
    assert ident["target"] == "HTC-0042" and ident["lu"] == "HTC-0042.00002"
    assert code(array.inquiry, "h1/hba0", "fc0", 0, 0x80) == "INVALID_INPUT"


def test_report_luns_and_capacity_respect_masking(array):
    assert array.report_luns("h1/hba0", "fc0") == [0, 2]
    assert array.report_luns("h2/hba0", "fc0") == [1, 2]
    assert array.report_luns("h1/hba0", "fc1") == []
    assert array.read_capacity("h1/hba0", "fc0", 2) == ((1 << 40) // 512 - 1, 512)


# (initiator, port, lun, lba, blocks, expected code)
REFUSALS = [
    ("h1/hba0", "fc7", 0, 0, 1, "NO_SUCH_PORT"),
    ("h1/hba0", "fc1", 0, 0, 1, "NO_SUCH_PORT"),       # a port with no volume at that LUN
    ("h1/hba0", "fc0", 9, 0, 1, "NO_SUCH_PORT"),
    ("h2/hba0", "fc0", 0, 0, 1, "LUN_NOT_MAPPED"),
    ("h1/hba0", "fc0", 1, 0, 1, "LUN_NOT_MAPPED"),
    ("h2/hba0", "fc0", 0, 1 << 30, 1, "LUN_NOT_MAPPED"),  # masking before range
    ("h1/hba0", "fc0", 0, 16384, 1, "LBA_OUT_OF_RANGE"),
    ("h1/hba0", "fc0", 0, 16383, 2, "LBA_OUT_OF_RANGE"),
]


@pytest.mark.parametrize("initiator,port,lun,lba,blocks,expected", REFUSALS)
def test_refusals_in_path_order(array, initiator, port, lun, lba, blocks, expected):
    assert code(array.read, initiator, port, lun, lba, blocks) == expected
    assert code(array.write, initiator, port, lun, lba, np.zeros(blocks * 512, np.uint8)) == expected


def test_read_only_volume_refuses_writes_after_range_checks(array):
    array.read_only.add(0)
    assert code(array.write, "h1/hba0", "fc0", 0, 0, np.zeros(512, np.uint8)) == "READ_ONLY"
    assert code(array.write, "h1/hba0", "fc0", 0, 1 << 20, np.zeros(512, np.uint8)) == "LBA_OUT_OF_RANGE"
    assert array.read("h1/hba0", "fc0", 0, 0, 1).shape == (512,)


def test_last_block_of_a_1tib_volume(array):
    data = pattern(1, (1 << 40) - 512, 512)
    array.write("h1/hba0", "fc0", 2, (1 << 40) // 512 - 1, data)
    assert np.array_equal(array.read("h2/hba0", "fc0", 2, (1 << 40) // 512 - 1, 1), data)
    assert array.stores[2].bytes_stored <= 64 * 1024


def test_corruption_is_seen_by_the_next_read(array):
    array.write("h1/hba0", "fc0", 0, 0, pattern(1, 0, 65536))
    array.corrupt(0, 100)
    assert code(array.read, "h1/hba0", "fc0", 0, 0, 1) == "CHECKSUM_MISMATCH"
    assert code(array.digest_volume, 0) == "CHECKSUM_MISMATCH"
    assert code(array.corrupt, 0, 8 << 20) == "LBA_OUT_OF_RANGE"


def test_data_survives_a_new_array_object(array, tmp_path):
    data = pattern(9, 0, 1 << 20)
    array.write("h1/hba0", "fc0", 0, 0, data)
    digest = array.digest_volume(0)
    array.close()
    again = DiskArray(array.spec, tmp_path / "state", granule=64 * 1024)
    assert np.array_equal(again.read("h1/hba0", "fc0", 0, 0, 2048), data)
    assert again.digest_volume(0) == digest
    again.close()


def test_unknown_volume(array):
    assert code(array.digest_volume, 7) == "NO_SUCH_VOLUME"
