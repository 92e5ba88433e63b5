"""The array's management interface and copies through Ray, and a copy across the fabric."""
import numpy as np
import pytest

from san.remote import manage
from san.errors import SanError
from san.pattern import pattern
from san.topology import load_topology
from san.units import MiB
from san.volume_info import VolumeInfo

from .conftest import TOPOLOGIES


@pytest.fixture
def san(build_san):
    return build_san(load_topology(TOPOLOGIES / "two-arrays.yaml"))


def call(san, caller, array, method, *args):
    answer, transfers = manage(caller, san.namespace, array, method, *args)
    return answer, transfers


def raises(fn, *args):
    with pytest.raises(SanError) as info:
        fn(*args)
    return info.value


def test_management_calls_are_charged_on_the_lan_and_guarded(san):
    answer, transfers = san.call("host1", "manage", "array1", "volumes")
    assert answer == {"device_id": "HTC-0001", "volumes": [0, 1, 2]}
    assert [t.resources for t in transfers] == [("host1/lan:tx", "array1/lan:rx"),
                                                ("array1/lan:tx", "host1/lan:rx")]
    err = raises(san.call, "host1", "manage", "array2", "volumes")
    assert err.code == "UNAUTHORIZED" and "host1 may not manage array2" in err.message
    answer, _ = call(san, "backup1", "array1", "copy_destinations", "fc0", 0)
    assert answer == {"device_id": "HTC-0001", "volume": 0, "destinations": [1, 2]}


def test_volume_info_round_trip_through_the_actor(san):
    record = VolumeInfo("orders DB, nightly", "host1", "/db", 1767225600).encode()
    call(san, "backup1", "array1", "record_info", 1, record)
    answer, _ = call(san, "backup1", "array1", "read_info", 1)
    assert VolumeInfo.decode(answer).label == "orders DB, nightly"
    table, _ = call(san, "backup1", "array1", "volume_table")
    assert table[1]["volume_info"] == record.hex() and table[0]["fc_interface"] == 0
    call(san, "backup1", "array1", "delete_info", 1)
    assert call(san, "backup1", "array1", "read_info", 1)[0] is None


def test_mirror_while_the_host_keeps_writing_is_the_point_in_time(san):
    san.call("host1", "write", "/db", 0, 256 * MiB, 1)
    before = san.call("array1", "digest_volume", 0)
    status, _ = call(san, "backup1", "array1", "mirror", "fc0", 0, 1)
    san.call("host1", "write", "/db", 0, 64 * MiB, 2)          # while the copy runs
    done, _ = call(san, "backup1", "array1", "wait", status["job"])
    assert done["state"] == "done" and done["copied"] == 256 * MiB
    assert done["transfers"][0].resources == ("array1/copy",)
    assert san.call("array1", "digest_volume", 1) == before
    assert san.call("host1", "read_compare", "/db", 0, 64 * MiB, 2)["first_mismatch"] is None
    again, _ = call(san, "backup1", "array1", "mirror", "fc0", 0, 1)   # incremental
    assert call(san, "backup1", "array1", "wait", again["job"])[0]["copied"] == 64 * MiB
    err = raises(call, san, "backup1", "array1", "mirror", "fc0", 0, 0)
    assert err.code == "NOT_A_COPY_DESTINATION"


def test_snapshot_attach_and_read_through_the_fabric(san):
    san.call("host1", "write", "/db", 0, 8 * MiB, 3)
    snap, _ = call(san, "backup1", "array1", "snapshot", "fc0", 0)
    assert snap == {"volume": 3}
    san.call("host1", "write", "/db", 0, 8 * MiB, 4)
    call(san, "backup1", "array1", "attach", 3, "fc0", 9, "host1")
    info = san.call("array1", "report_luns", "host1/hba0", "fc0")
    assert info == [0, 9]
    data = san.call("array1", "read", "host1/hba0", "fc0", 9, 0, 2048)
    assert np.array_equal(data, pattern(3, 0, MiB))
    err = raises(san.call, "array1", "write", "host1/hba0", "fc0", 9, 0, np.zeros(512, np.uint8))
    assert err.code == "READ_ONLY"
    call(san, "backup1", "array1", "detach", "fc0", 9)
    status, _ = call(san, "backup1", "array1", "restore", 3, "fc0", 0)
    assert call(san, "backup1", "array1", "wait", status["job"])[0]["copied"] == 8 * MiB
    assert san.call("host1", "read_compare", "/db", 0, 8 * MiB, 3)["first_mismatch"] is None


def test_volume_copy_to_another_array_crosses_the_fabric_with_its_volume_info(san):
    san.call("host1", "write", "/db", 16 * MiB, 48 * MiB, 5)
    record = VolumeInfo("copy me", "host1", "/db", 1767225600).encode()
    call(san, "backup1", "array1", "record_info", 0, record)
    call(san, "array1", "array2", "record_info", 0, VolumeInfo("stale", "x", "/", 1).encode())
    status, _ = call(san, "backup1", "array1", "copy_remote", 0, "array2", 0, "fc0", 0, True)
    done, _ = call(san, "backup1", "array1", "wait", status["job"])
    stored = sum(length for _, length in san.call("array1", "extents", 0))  # FAT metadata too
    assert stored >= 48 * MiB
    assert done["copied"] == stored and done["dest_array"] == "array2"   # thin: only the data
    fc, lan = done["transfers"]
    assert fc.resources == ("array1/fc1:tx", "array2/fc0:rx") and fc.nbytes == stored
    assert lan.resources == ("array1/lan:tx", "array2/lan:rx")
    assert san.call("array2", "digest_volume", 0) == san.call("array1", "digest_volume", 0)
    assert call(san, "backup1", "array2", "read_info", 0)[0] == record


def test_a_copy_over_fc_verifies_what_it_sends_and_copies_holes_and_zeros_as_such(san):
    san.call("host1", "write", "/db", 4 * MiB, 8 * MiB, 9)
    # granules written all zeros: sent as read, not as mapped pages
    san.call("array1", "write", "host1/hba0", "fc0", 0, 20 * MiB // 512, np.zeros(MiB, np.uint8))
    status, _ = call(san, "backup1", "array1", "copy_remote", 0, "array2", 0, "fc0", 0, False)
    call(san, "backup1", "array1", "wait", status["job"])
    assert san.call("array2", "digest_volume", 0) == san.call("array1", "digest_volume", 0)
    san.call("array1", "corrupt", 0, 6 * MiB + 5, 1)      # rot in the source
    status, _ = call(san, "backup1", "array1", "copy_remote", 0, "array2", 0, "fc0", 0, False)
    err = raises(call, san, "backup1", "array1", "wait", status["job"])
    assert err.code == "CHECKSUM_MISMATCH" and f"bytes {6 * MiB}.." in err.message


def test_volume_copy_refusals(san):
    err = raises(call, san, "backup1", "array1", "copy_remote", 0, "array2", 0, "fc0", 3, True)
    assert err.code == "NO_SUCH_PORT"
    err = raises(call, san, "backup1", "array1", "copy_remote", 9, "array2", 0, "fc0", 0, True)
    assert err.code == "NO_SUCH_VOLUME"
    err = raises(call, san, "array2", "array1", "copy_remote", 0, "array2", 0, "fc0", 0, True)
    assert err.code == "UNAUTHORIZED"
    # the port zoned with the destination is down: its LINK_DOWN is what is said, not the
    # ZONING_DENIED of array1/fc0, which never was a path there
    san.set_link("array1/fc1", False)
    err = raises(call, san, "backup1", "array1", "copy_remote", 0, "array2", 0, "fc0", 0, True)
    assert err.code == "LINK_DOWN" and "link array1/fc1 is down" in err.message


def test_the_destination_of_a_copy_over_fc_is_reserved_while_it_runs(san):
    san.call("host1", "write", "/db", 0, 4 * MiB, 7)
    san.call("array1", "hold_copies", True)      # the copy starts, then waits half done
    status, _ = call(san, "backup1", "array1", "copy_remote", 0, "array2", 0, "fc0", 0, True)
    err = raises(call, san, "array1", "array2", "reserve", 0)
    assert err.code == "BUSY" and "running copy from array1" in err.message
    err = raises(call, san, "backup1", "array1", "copy_remote", 0, "array2", 0, "fc0", 0, True)
    assert err.code == "BUSY"
    san.call("array1", "hold_copies", False)
    call(san, "backup1", "array1", "wait", status["job"])
    call(san, "array1", "array2", "reserve", 0)   # released when the copy ended
    call(san, "array1", "array2", "release", 0)
    status, _ = call(san, "backup1", "array1", "copy_remote", 0, "array2", 0, "fc0", 0, True)
    call(san, "backup1", "array1", "wait", status["job"])
    call(san, "array1", "array2", "reserve", 0)   # released again when the copy ended
    call(san, "array1", "array2", "release", 0)
