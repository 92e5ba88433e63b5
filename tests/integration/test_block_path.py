"""The FC block path end to end through Ray: real bytes, real errors, persistence."""
import textwrap

import numpy as np
import pytest

from san.remote import get
from san.errors import SanError
from san.pattern import pattern
from san.topology import load_topology
from san.units import GiB, MiB

from .conftest import TOPOLOGIES

FABRIC = """
name: it-fabric
fabric:
  switches:
    - {name: sw1, speed: 8GFC}
    - {name: sw2, speed: 8GFC}
  isls:
    - {name: isl1, a: sw1, b: sw2, speed: 8GFC}
  zones:
    - {name: z1, members: [h1/hba0, h1/hba1, a1/fc0]}
    - {name: z2, members: [h2/hba0, a1/fc1]}
arrays:
  - name: a1
    device_id: HTC-7001
    ports:
      - {name: fc0, number: 0, wwpn: "50:00:00:00:00:00:00:01", switch: sw2}
      - {name: fc1, number: 1, wwpn: "50:00:00:00:00:00:00:02", switch: sw2}
    volumes:
      - {number: 0, size: 64MiB, port: fc0, lun: 0, hosts: [h1]}
      - {number: 1, size: 64MiB, port: fc0, lun: 1, hosts: [h2]}
      - {number: 2, size: 64MiB, port: fc1, lun: 0, hosts: [h2]}
hosts:
  - name: h1
    hbas:
      - {name: hba0, wwpn: "21:00:00:00:00:00:00:01", switch: sw1}
      - {name: hba1, wwpn: "21:00:00:00:00:00:00:02", switch: sw2}
    mounts:
      - {mount_point: /data, port: a1/fc0, lun: 0}
      - {mount_point: /masked, port: a1/fc0, lun: 1}
      - {mount_point: /nolun, port: a1/fc0, lun: 7}
      - {mount_point: /unzoned, port: a1/fc1, lun: 0}
  - name: h2
    hbas:
      - {name: hba0, wwpn: "21:00:00:00:00:00:00:03", switch: sw1}
    mounts:
      - {mount_point: /data, port: a1/fc1, lun: 0}
"""


@pytest.fixture
def fabric_topo(tmp_path):
    path = tmp_path / "fabric.yaml"
    path.write_text(textwrap.dedent(FABRIC))
    return load_topology(path)


def error_code(fn, *args):
    with pytest.raises(SanError) as info:
        fn(*args)
    return info.value


def test_one_gib_through_the_fabric_reads_back_byte_for_byte(build_san):
    san = build_san(load_topology(TOPOLOGIES / "two-arrays.yaml"))
    transfers = san.call("host1", "write", "/db", 0, 1 * GiB, 42)
    assert [t.nbytes for t in transfers] == [GiB]
    assert transfers[0].resources == ("host1/hba0:tx", "array1/fc0:rx")
    check = san.call("host1", "read_compare", "/db", 0, 1 * GiB, 42)
    assert check["first_mismatch"] is None and check["bytes"] == GiB
    # and a piece pulled all the way back to the test, compared here
    data, _ = san.call("host1", "read", "/db", 512 * MiB - 4096, 3 * MiB)
    assert np.array_equal(data, pattern(42, 512 * MiB - 4096, 3 * MiB))
    # unwritten space reads as zeros, and the array stored only what was written
    data, _ = san.call("host1", "read", "/db", GiB, MiB)
    assert not data.any()
    digest = san.call("array1", "digest_volume", 0)
    assert digest == san.call("host1", "digest", "/db")


def test_scsi_identify_reports_vendor_device_id_capacity_and_luns(build_san, fabric_topo):
    san = build_san(fabric_topo)
    info = san.call("h1", "scsi_identify", "/data")
    assert info["vendor"] == "HITACHI" and info["device_id"] == "HTC-7001"
    assert info["capacity"] == 64 * MiB and info["block_size"] == 512 and info["luns"] == [0]
    assert info["hba"] == "h1/hba0"
    # what crossed the fabric: the INQUIRY answers, READ CAPACITY (16)'s 32 bytes and REPORT
    # LUNS' 8-byte header with 8 bytes for its one LUN
    inquiry = len(san.call("a1", "inquiry", "h1/hba0", "fc0", 0))
    vpd = len(san.call("a1", "inquiry", "h1/hba0", "fc0", 0, 0x83))
    assert [t.nbytes for t in info["transfers"]] == [inquiry + vpd + 32 + 8 + 8]


def test_small_unaligned_chunk_size_still_moves_every_byte(build_san, fabric_topo):
    san = build_san(fabric_topo, chunk_size=3 * 512)
    san.call("h1", "write", "/data", 512, 100 * 512, 7)
    data, _ = san.call("h1", "read", "/data", 0, 102 * 512)
    assert not data[:512].any() and not data[-512:].any()
    assert np.array_equal(data[512:-512], pattern(7, 512, 100 * 512))


@pytest.mark.parametrize("host,mount,code,words", [
    ("h1", "/masked", "LUN_NOT_MAPPED", "not mapped to h1"),
    ("h1", "/nolun", "NO_SUCH_PORT", "no volume at LUN 7"),
    ("h1", "/unzoned", "ZONING_DENIED", "h1/hba0 is not zoned with a1/fc1"),
    ("h1", "/nowhere", "NO_SUCH_MOUNT", "'/nowhere'"),
])
def test_wrong_places_fail_with_their_code(build_san, fabric_topo, host, mount, code, words):
    san = build_san(fabric_topo)
    err = error_code(san.call, host, "write", mount, 0, 4096, 1)
    assert err.code == code and words in err.message


def test_range_errors_come_before_any_data_moves(build_san, fabric_topo):
    san = build_san(fabric_topo)
    err = error_code(san.call, "h1", "write", "/data", 63 * MiB, 2 * MiB, 1)
    assert err.code == "LBA_OUT_OF_RANGE"
    data, _ = san.call("h1", "read", "/data", 63 * MiB, MiB)
    assert not data.any()
    assert error_code(san.call, "h1", "write", "/data", 100, 512, 1).code == "INVALID_INPUT"


def test_link_down_fails_over_then_fails_then_comes_back(build_san, fabric_topo):
    san = build_san(fabric_topo)
    transfers = san.call("h1", "write", "/data", 0, MiB, 1)
    assert transfers[0].resources == ("h1/hba0:tx", "isl1:tx", "a1/fc0:rx")
    san.set_link("isl1", False)
    transfers = san.call("h1", "write", "/data", MiB, MiB, 2)
    assert transfers[0].resources == ("h1/hba1:tx", "a1/fc0:rx")   # the second HBA, no ISL
    san.set_link("h1/hba1", False)
    err = error_code(san.call, "h1", "write", "/data", 0, MiB, 3)
    assert err.code == "LINK_DOWN" and "sw1 to sw2" in err.message  # the first HBA's failure
    san.set_link("isl1", True)
    san.call("h1", "write", "/data", 2 * MiB, MiB, 3)
    assert san.call("h1", "read_compare", "/data", MiB, MiB, 2)["first_mismatch"] is None


def test_killed_array_is_element_down_and_restarts_with_its_data(build_san, fabric_topo):
    san = build_san(fabric_topo)
    san.call("h1", "write", "/data", 0, 8 * MiB, 5)
    san.kill("a1")
    err = error_code(san.call, "h1", "write", "/data", 0, MiB, 6)
    assert err.code == "ELEMENT_DOWN" and "a1" in err.message
    assert error_code(san.call, "a1", "digest_volume", 0).code == "ELEMENT_DOWN"
    san.restart("a1")
    assert san.call("h1", "read_compare", "/data", 0, 8 * MiB, 5)["first_mismatch"] is None


def test_killed_switch_is_element_down_for_hosts_behind_it(build_san, fabric_topo):
    san = build_san(fabric_topo)
    san.kill("sw1")
    err = error_code(san.call, "h2", "write", "/data", 0, MiB, 1)
    assert err.code == "ELEMENT_DOWN" and "sw1" in err.message
    san.restart("sw1")
    san.call("h2", "write", "/data", 0, MiB, 1)


def test_corrupted_byte_is_a_checksum_mismatch_on_read(build_san, fabric_topo):
    san = build_san(fabric_topo)
    san.call("h1", "write", "/data", 0, MiB, 5)
    san.call("a1", "corrupt", 0, 4097, 1)
    err = error_code(san.call, "h1", "read_compare", "/data", 0, MiB, 5)
    assert err.code == "CHECKSUM_MISMATCH"


def test_writes_to_one_volume_apply_in_the_order_sent(build_san, fabric_topo):
    import ray
    san = build_san(fabric_topo)
    array = san.actor("a1")
    # 200 WRITEs of the same blocks, each with other data, all in flight at once
    refs = [array.write.remote("h1/hba0", "fc0", 0, 0, ray.put(pattern(seed, 0, 8192)))
            for seed in range(1, 201)]
    get(refs)
    data, _ = san.call("h1", "read", "/data", 0, 8192)
    assert np.array_equal(data, pattern(200, 0, 8192))


def test_a_placement_no_node_offers_is_refused_not_waited_for(build_san, tmp_path):
    text = (TOPOLOGIES / "single-array.yaml").read_text().replace(
        "  - name: array1\n", "  - name: array1\n    placement: {resources: {site_z: 1}}\n", 1)
    (tmp_path / "t.yaml").write_text(text)
    with pytest.raises(SanError) as info:
        build_san(load_topology(tmp_path / "t.yaml"))
    assert info.value.code == "INVALID_INPUT" and "site_z" in info.value.message


def test_a_restarted_switch_still_knows_which_links_are_down(build_san, fabric_topo):
    san = build_san(fabric_topo)
    san.set_link("h2/hba0", False)
    san.kill("sw1")
    san.restart("sw1")
    err = error_code(san.call, "h2", "write", "/data", 0, MiB, 1)
    assert err.code == "LINK_DOWN" and "h2/hba0" in err.message
