"""Integrity through Ray: no stale path after a fault, no volume BUSY forever after a crash."""
import textwrap

import pytest

from san.remote import manage
from san.errors import SanError
from san.runner import Runner
from san.topology import load_scenario, load_topology
from san.units import MiB

from .conftest import TOPOLOGIES


@pytest.fixture
def san(build_san):
    return build_san(load_topology(TOPOLOGIES / "two-arrays.yaml"))


def raises(code, fn, *args):
    with pytest.raises(SanError) as info:
        fn(*args)
    assert info.value.code == code, info.value
    return info.value


def files(san):
    return san.call("host1", "files", "/db")


# -- a FAT mount takes its path per call ---------------------------------------------------------
def test_a_fat_write_refused_with_link_down_moves_no_byte_and_works_after_link_up(san):
    san.call("host1", "write_files", "/db", {"a.txt": (300_000, 1)})
    before = san.call("array1", "digest_volume", 0)
    san.set_link("host1/hba0", False)
    raises("LINK_DOWN", san.call, "host1", "write_files", "/db", {"b.txt": (300_000, 2)})
    assert san.call("array1", "digest_volume", 0) == before      # not one byte reached it
    san.set_link("host1/hba0", True)
    san.call("host1", "write_files", "/db", {"b.txt": (300_000, 2)})
    assert set(files(san)) == {"/a.txt", "/b.txt"}
    assert san.call("array1", "digest_volume", 0) != before


def test_a_fat_mount_works_again_once_its_array_restarts(san):
    san.call("host1", "write_files", "/db", {"a.txt": (300_000, 1)})
    san.kill("array1")
    raises("ELEMENT_DOWN", san.call, "host1", "write_files", "/db", {"b.txt": (300_000, 2)})
    san.restart("array1")
    san.call("host1", "write_files", "/db", {"b.txt": (300_000, 2)})
    san.call("host1", "action", "/db", "flush")
    assert set(files(san)) == {"/a.txt", "/b.txt"}
    # what the array holds, read by a fresh mount, is what the host wrote
    san.call("host1", "action", "/db", "unmount")
    assert set(files(san)) == {"/a.txt", "/b.txt"}
    assert san.call("host1", "fsck", "/db")["clean"]


# -- no volume BUSY forever ------------------------------------------------------------------------
@pytest.mark.parametrize("comes_back", [False, True], ids=["source-down", "source-restarted"])
def test_a_reservation_left_by_a_dead_copy_source_is_released(san, comes_back):
    san.call("host1", "write", "/db", 0, 8 * MiB, 7)
    san.call("array1", "hold_copies", True)                      # the copy waits half done
    manage("backup1", san.namespace, "array1", "copy_remote", 0, "array2", 0, "fc0", 0, True)
    err = raises("BUSY", manage, "backup1", san.namespace, "array2", "reserve", 0)
    assert "running copy from array1" in err.message
    san.kill("array1")
    if comes_back:
        san.restart("array1")                                    # alive, but copying nothing
    manage("backup1", san.namespace, "array2", "reserve", 0)     # the leftover was released
    manage("backup1", san.namespace, "array2", "release", 0)


def test_an_attachment_left_by_an_array_killed_during_restore_files_goes_with_the_restart(
        build_san, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(f"name: t\ntopology: {TOPOLOGIES / 'two-arrays.yaml'}\nsteps:\n" + textwrap.indent(
        textwrap.dedent("""\
        - {op: write_files, host: host1, mount: /db, files: {a.txt: {size: 100000, seed: 1}}}
        - {op: backup, definition: db-nightly, as: b1}
        - {op: remove_files, host: host1, mount: /db, files: [a.txt]}
        - {op: restore_files, backup: b1, files: [a.txt]}
        """), "  "))
    scenario = load_scenario(path)
    san = build_san(scenario.topology, tmp_path / "state")
    runner = Runner(san, tmp_path / "state")
    assert all(r.ok for r in runner.run(scenario.steps[:3]))
    # restore_files got as far as attaching the backup at the host's restore LUN, then the
    # array died
    san.call("host1", "client_attach", "HTC-0001", 1)
    raises("BUSY", san.call, "host1", "client_attach", "HTC-0001", 1)
    san.kill("array1")
    san.restart("array1")
    [restored] = runner.run(scenario.steps[3:])
    assert restored.ok, restored.error
    assert set(files(san)) == {"/a.txt"}
