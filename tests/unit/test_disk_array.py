"""The target side of the block path on a plain DiskArray (no Ray)."""
import textwrap

import numpy as np
import pytest

from san.elements.disk_array import DiskArray
from san.errors import SanError
from san.pattern import pattern
from san.scsi import parse_device_identification, parse_standard_inquiry
from san.topology import load_topology
from san.volume_info import VolumeInfo

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
    # VPD page 0x00 (mandatory): the pages it serves, each of which answers
    pages = array.inquiry("h1/hba0", "fc0", 0, 0x00)
    assert pages[:2] == b"\x00\x00" and int.from_bytes(pages[2:4], "big") == len(pages) - 4
    assert list(pages[4:]) == [0x00, 0x83]
    for page in pages[4:]:
        assert array.inquiry("h1/hba0", "fc0", 0, page)[1] == page


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


@pytest.mark.parametrize("stored, shown", [(b"{not json", "JSONDecodeError"),
                                            (b"\xff\xfe\x00", "UnicodeDecodeError"),
                                            (b"[1, 2]", "a JSON list, not an object")])
def test_a_corrupt_volume_table_is_named(array, tmp_path, stored, shown):
    array.close()
    table = array.directory / "table.json"      # the volume management table (Fig. 7)
    table.write_bytes(stored)
    with pytest.raises(SanError) as info:
        DiskArray(array.spec, tmp_path / "state", granule=64 * 1024)
    assert info.value.code == "INVALID_INPUT"
    assert str(table) in info.value.message and shown in info.value.message


def test_unknown_volume(array):
    assert code(array.digest_volume, 7) == "NO_SUCH_VOLUME"


# -- volume info, one volume at a time and in bulk ------------------------------------------
@pytest.fixture
def managed(tmp_path):
    """The array of TOPO, managed by h2, with volume info on volumes 1 and 3 and on a
    snapshot of volume 0 (volume 4)."""
    (tmp_path / "m.yaml").write_text(textwrap.dedent(TOPO).replace(
        "    device_id: HTC-0042\n", "    device_id: HTC-0042\n    managers: [h2]\n"))
    arr = DiskArray(load_topology(tmp_path / "m.yaml").arrays[0], tmp_path / "state",
                    granule=64 * 1024)
    assert arr.snapshot(0) == 4
    for number, label in ((1, "one"), (3, "three"), (4, "snap")):
        arr.mgmt_record_info("h2", number, VolumeInfo(label, "h1", "/db", number).encode())
    yield arr
    arr.close()


def test_bulk_volume_info_is_every_volume_with_its_record_in_volume_order(managed):
    answer = managed.mgmt_read_infos("h2")
    assert answer["device_id"] == "HTC-0042"
    assert answer["volumes"] == managed.mgmt_volumes("h2")["volumes"] == [0, 1, 2, 3, 4]
    assert answer["records"] == [managed.mgmt_read_info("h2", n) for n in answer["volumes"]]
    assert [r and VolumeInfo.decode(r).label for r in answer["records"]] == \
        [None, "one", None, "three", "snap"]


def test_bulk_volume_info_of_named_volumes_in_the_order_named(managed):
    answer = managed.mgmt_read_infos("h2", [4, 2, 1])
    assert answer["volumes"] == [4, 2, 1]
    assert [r and VolumeInfo.decode(r).label for r in answer["records"]] == ["snap", None, "one"]
    assert managed.mgmt_read_infos("h2", [])["records"] == []


def test_bulk_volume_info_refusals_are_the_single_reads(managed):
    assert code(managed.mgmt_read_infos, "h1") == code(managed.mgmt_read_info, "h1", 1) \
        == "UNAUTHORIZED"
    assert code(managed.mgmt_read_infos, "h2", [1, 9]) == code(managed.mgmt_read_info, "h2", 9) \
        == "NO_SUCH_VOLUME"
    managed.delete_snapshot(4)                       # its record goes with it
    assert code(managed.mgmt_read_infos, "h2", [4]) == "NO_SUCH_VOLUME"
    assert managed.mgmt_read_infos("h2")["volumes"] == [0, 1, 2, 3]


def test_a_record_file_of_another_size_is_read_whole(managed):
    # what a backup server decodes is what the file holds (decode then says its size)
    for size in (0, 100, 513, 70_000):
        managed._info_path(1).write_bytes(bytes(range(256)) * (size // 256) + bytes(size % 256))
        record = managed.mgmt_read_infos("h2", [1])["records"][0]
        assert len(record) == size and record == managed._info_path(1).read_bytes()
        assert managed.mgmt_read_info("h2", 1) == record
    managed.mgmt_delete_info("h2", 1)
    assert managed.mgmt_read_infos("h2", [1])["records"] == [None]


# -- the volume table stays small: snapshot create time does not grow with the count ------------
@pytest.mark.parametrize("numbers,stored", [
    (set(), []), ({0}, [0]), ({0, 1}, [[0, 1]]), ({0, 1, 2, 5, 7, 8}, [[0, 2], 5, [7, 8]]),
    ({3, 9}, [3, 9])])
def test_used_numbers_are_stored_as_ranges_and_read_back(numbers, stored):
    from san.elements.disk_array import _expand, _ranges
    assert _ranges(numbers) == stored
    assert _expand(stored) == numbers
    assert _expand(sorted(numbers)) == numbers          # the older plain-list form


def test_a_thousand_snapshots_keep_the_table_small_and_numbers_never_reused(array, tmp_path):
    import json
    made = [array.snapshot(0) for _ in range(1000)]
    assert made == list(range(4, 1004))                 # the lowest number never used, each time
    table = json.loads(array._table_path.read_text())
    assert table["ever_used"] == [[0, 1003]]
    array.delete_snapshot(500)
    again = DiskArray(array.spec, tmp_path / "state", granule=64 * 1024)
    assert again.snapshot(0) == 1004                    # 500 stays used
    again.close()


@pytest.mark.parametrize("size", ["8MiB", "8224KiB", "8389120"])   # last granule: whole, half, 1 block
def test_unmap_to_the_end_frees_every_granule_even_a_short_last_one(tmp_path, size):
    """A volume whose size is not whole granules ends in a short granule: UNMAP of the whole
    volume (and a copy of zeros, which zeroes the same way) freed all but it, which stayed
    stored as written zeros, and GET LBA STATUS reported it as data."""
    (tmp_path / "t.yaml").write_text(textwrap.dedent(TOPO).replace(
        "{number: 0, size: 8MiB,", f"{{number: 0, size: {size},"))
    arr = DiskArray(load_topology(tmp_path / "t.yaml").arrays[0], tmp_path / "state",
                    granule=64 * 1024)
    try:
        nbytes = arr.size_of(0)
        arr.write("h1/hba0", "fc0", 0, 0, pattern(3, 0, nbytes))
        assert arr.stores[0].bytes_stored == nbytes
        arr.unmap("h1/hba0", "fc0", 0, 0, nbytes // 512)
        assert arr.stores[0].bytes_stored == 0 and arr.stores[0].extents() == []
        assert arr.lba_status("h1/hba0", "fc0", 0) == []
        assert not arr.read("h1/hba0", "fc0", 0, 0, nbytes // 512).any()
        # a range short of the end keeps the last granule's remaining bytes
        arr.write("h1/hba0", "fc0", 0, 0, pattern(4, 0, nbytes))
        arr.unmap("h1/hba0", "fc0", 0, 0, nbytes // 512 - 1)
        tail = arr.read("h1/hba0", "fc0", 0, nbytes // 512 - 1, 1)
        assert np.array_equal(tail, pattern(4, nbytes - 512, 512))
        assert not arr.read("h1/hba0", "fc0", 0, 0, nbytes // 512 - 1).any()
    finally:
        arr.close()


def test_volume_info_recorded_by_several_callers_at_once_is_one_of_theirs(array):
    """Two servers recording a volume's info at once shared its staging file: one could move
    the other's half-written record into place, or find its own gone (FileNotFoundError)."""
    import threading
    records = [bytes([i]) * 512 for i in range(8)]
    failures, go = [], threading.Barrier(8)

    def recorder(record):
        go.wait()
        for _ in range(50):
            try:
                array.record_info(3, record)
            except Exception as exc:        # noqa: BLE001 -- what the test counts
                failures.append(exc)
    threads = [threading.Thread(target=recorder, args=(r,)) for r in records]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    assert array.read_info(3) in records


@pytest.mark.parametrize("lba,blocks,ok", [
    (0, 0, True), (16383, 1, True), (16383, 0, True),       # 8 MiB: blocks 0..16383
    (16384, 0, False),          # no blocks, but past the last one (SBC: out of range)
    (16384, 1, False), (16383, 2, False), (-1, 1, False), (0, -1, False),
])
def test_the_range_of_a_command(array, lba, blocks, ok):
    calls = {"read": lambda: array.read("h1/hba0", "fc0", 0, lba, blocks),
             "write": lambda: array.write("h1/hba0", "fc0", 0, lba,
                                          np.zeros(max(blocks, 0) * 512, np.uint8)),
             "unmap": lambda: array.unmap("h1/hba0", "fc0", 0, lba, blocks)}
    for name, call in calls.items():
        if ok:
            call()
            continue
        if name == "write" and blocks < 0:
            continue            # a write's length is its data's
        with pytest.raises(SanError) as info:
            call()
        assert info.value.code == "LBA_OUT_OF_RANGE", name
        assert f"block{'s' if blocks > 0 else ''} {lba}" in info.value.message
        assert "16384 blocks" in info.value.message
