"""The backup flows of `tests/integration/test_backup_flows.py`, run on plain elements, without Ray.

Each test there builds its SAN with the `build_san` fixture; here that fixture builds a
`LocalSan` (`san.flows.local`), so the same flows, refusals and failure paths run in
process, on real state directories, and must give the same outcomes.
"""
from ..integration.test_backup_flows import *  # noqa: F401,F403 (the tests and their fixtures)
from .local_san import build_san  # noqa: F401 (the fixture: a LocalSan, not actors)

# -- the catalog rebuild's reads of an array (here only: its transfers are plain data) --------
import pytest  # noqa: E402

from san.errors import SanError  # noqa: E402
from san.flows.lan import lan_transfer, payload_size  # noqa: E402
from san.topology import load_topology  # noqa: E402
from san.volume_info import VolumeInfo  # noqa: E402

from ..integration.conftest import TOPOLOGIES  # noqa: E402


def test_a_rebuild_is_charged_as_fig_15s_calls_a_list_then_one_per_volume(scenario):
    # one bulk call per array runs, but modeled time is that of the patent's management calls
    reports, runner, san = scenario("""\
        - {op: write, host: host1, mount: /db, offset: 0, size: 1MiB, seed: 1}
        - {op: backup, definition: db-mirror}
        - {op: backup, definition: data-snap}
        """, "single-array.yaml")
    san.call("backup1", "lose_catalog")
    answer = san.call("backup1", "rebuild_catalog", ["array1"])
    listing = san.call("array1", "mgmt_volumes", "backup1")
    assert answer["added"] == 2 and len(listing["volumes"]) == 6
    expected = [lan_transfer("backup1", "array1", payload_size(())),
                lan_transfer("array1", "backup1", payload_size(listing))]
    for volume in listing["volumes"]:
        record = san.call("array1", "mgmt_read_info", "backup1", volume)
        expected += [lan_transfer("backup1", "array1", payload_size((volume,))),
                     lan_transfer("array1", "backup1", payload_size(record))]
    assert answer["transfers"] == expected


def test_a_failing_source_keeps_the_rows_of_the_sources_read_before_it(build_san):
    topology = load_topology(TOPOLOGIES / "two-arrays.yaml")
    topology.arrays[1].managers = ["array1"]               # backup1 may not manage array2
    san = build_san(topology)
    san.call("array1", "record_info", 1, VolumeInfo("one", "host1", "/db", 1).encode())
    san.call("array2", "record_info", 0, VolumeInfo("two", "host1", "/db", 2).encode())

    def rebuild(sources):
        san.call("backup1", "lose_catalog")
        with pytest.raises(SanError) as info:
            san.call("backup1", "rebuild_catalog", sources)
        assert info.value.code == "UNAUTHORIZED"
        return [(r["device_id"], r["media_id"], r["label"]) for r in san.call("backup1", "catalog_rows")]

    assert rebuild(["array1", "array2"]) == [("HTC-0001", "1", "one")]
    assert rebuild(["array2", "array1"]) == []
