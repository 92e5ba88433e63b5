"""Clean unmount, on plain elements (LocalSan, no Ray): a host's `unmount` / `unmount_all`, and
the end of a run (`Runner.unmount_hosts`), which leaves every FAT volume passing
``fsck.fat -n`` as the state dir holds it, says which hosts or arrays were down, and adds
nothing to any step's report."""
from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from san import report as report_mod
from san.errors import SanError
from san.fat import fsck_binary
from san.flows.local import LocalSan
from san.runner import Runner
from san.topology import load_scenario

from ..goldens import without_wall_time
from .fat_support import MiB, content, needs_fsck, sha

ROOT = Path(__file__).resolve().parents[2]

WRITES = """
- {op: write_files, host: HOST, mount: /db, files: {orders.db: {size: 3MiB, seed: 1}, log/a.log: {size: 10000, seed: 2}, gone.txt: {size: 1, seed: 3}}}
- {op: remove_files, host: HOST, mount: /db, files: [gone.txt]}
- {op: write_files, host: HOST, mount: /db, files: {log/a.log: {size: 20000, seed: 4}}}
"""
FILES = {"/orders.db": [3 * MiB, sha(content(3 * MiB, 1))],
         "/log/a.log": [20000, sha(content(20000, 4))]}


def scenario(tmp_path, topology: str, steps: str):
    path = tmp_path / "s.yaml"
    path.write_text(f"name: end\ntopology: {ROOT / 'topologies' / topology}\nsteps:\n"
                    + textwrap.indent(textwrap.dedent(steps).strip("\n") + "\n", "  "))
    return load_scenario(path)


def fsck_n(data_file: Path) -> tuple[int, str]:
    """``fsck.fat -n`` on a volume's data file in the state dir, read as an image: (exit
    status, output)."""
    done = subprocess.run([fsck_binary(), "-n", str(data_file)], capture_output=True, text=True,
                          timeout=120)
    return done.returncode, done.stdout + done.stderr


def run(tmp_path, topology, steps):
    """The scenario's steps run on a LocalSan (still up): (san, runner, reports)."""
    sc = scenario(tmp_path, topology, steps)
    san = LocalSan(sc.topology, tmp_path / "state").start()
    runner = Runner(san, tmp_path / "state")
    reports = runner.run(sc.steps)
    assert [(r.index, r.error) for r in reports if not r.ok] == []
    return sc, san, runner, reports


@needs_fsck
def test_the_end_of_a_run_leaves_every_fat_volume_clean_and_the_report_as_it_was(tmp_path):
    sc, san, runner, reports = run(tmp_path, "two-arrays.yaml", WRITES.replace("HOST", "host1"))
    volume = tmp_path / "state" / "arrays" / "array1" / "vol-0.data"
    try:
        status, out = fsck_n(volume)
        assert status == 1 and "Dirty bit is set" in out        # write_files left it in use
        report = without_wall_time(report_mod.build(sc, reports, runner.catalogs(), runner))
        assert runner.unmount_hosts() == []
        status, out = fsck_n(volume)
        assert status == 0, out
        assert "/db" not in san.element("host1").fs                # the view is dropped
        again = without_wall_time(report_mod.build(sc, reports, runner.catalogs(), runner))
        assert again == report                                  # nothing of it in the report
        assert runner.unmount_hosts() == []                     # nothing left to unmount
    finally:
        san.shutdown()
    # the next run mounts a volume that was cleanly unmounted, and finds the files
    with LocalSan(sc.topology, tmp_path / "state") as later:
        host = later.element("host1")
        assert host.files("/db") == FILES
        fs = host.filesystem("/db")
        assert not fs.found_dirty and fs.warnings == []


@needs_fsck
def test_unmount_writes_back_marks_clean_drops_the_view_and_the_next_call_mounts_again(tmp_path):
    sc, san, runner, _ = run(tmp_path, "two-arrays.yaml", WRITES.replace("HOST", "host1"))
    try:
        host = san.element("host1")
        assert not host.fsck("/db")["clean"]
        stored = san.call("array1", "digest_volume", 0)
        done = host.unmount("/db")
        assert done["mount"] == "/db" and done["unmounted"] and not done["left_dirty"]
        # the clean marks: FAT[1]'s sector in each of the two FATs, the boot sector (pyfatfs
        # writes both 128 KiB FATs whole; the host's cache sends only the sectors that changed)
        assert done["bytes_written"] == 3 * 512
        assert sum(t.nbytes for t in done["transfers"]) >= done["bytes_written"]
        assert san.call("array1", "digest_volume", 0) != stored         # it reached the array
        assert host.fsck("/db")["clean"] and "/db" not in host.fs
        assert host.unmount("/db") == {"mount": "/db", "unmounted": False, "left_dirty": False,
                                       "bytes_written": 0, "transfers": []}
        assert host.files("/db") == FILES                               # mounted again
        assert host.unmount_all()[0]["unmounted"] and host.fsck("/db")["clean"]
    finally:
        san.shutdown()


@pytest.mark.parametrize("topology,mount,expected", [
    ("two-arrays.yaml", "/db", "nothing"),            # a fat mount with no view yet
    ("single-array.yaml", "/db", "nothing"),          # a raw mount
    ("two-arrays.yaml", "/nowhere", "NO_SUCH_MOUNT"),
], ids=["fat-not-mounted", "raw", "no-such-mount"])
def test_unmount_of_a_mount_without_a_fat_view_does_nothing(tmp_path, topology, mount, expected):
    sc, san, runner, _ = run(tmp_path, topology, "- {op: checkpoint, as: c, array: array1, volume: 0}")
    try:
        host = san.element("host1")
        stored = san.call("array1", "digest_volume", 0)
        if expected == "nothing":
            assert host.unmount(mount) == {"mount": mount, "unmounted": False,
                                           "left_dirty": False, "bytes_written": 0,
                                           "transfers": []}
            assert host.unmount_all() == [] and runner.unmount_hosts() == []
        else:
            with pytest.raises(SanError) as failed:
                host.unmount(mount)
            assert failed.value.code == expected and mount in failed.value.message
        assert san.call("array1", "digest_volume", 0) == stored
    finally:
        san.shutdown()


@needs_fsck
def test_a_filesystem_found_dirty_is_unmounted_but_left_marked_for_repair(tmp_path):
    sc, san, runner, _ = run(tmp_path, "two-arrays.yaml", WRITES.replace("HOST", "host1")
                             + "- {op: fault, kind: kill, target: host1}\n"
                             + "- {op: fault, kind: restart, target: host1}\n")
    try:
        host = san.element("host1")                 # the killed host never flushed
        assert host.files("/db") == FILES and host.filesystem("/db").found_dirty
        done = host.unmount("/db")
        assert done["unmounted"] and done["left_dirty"]
        assert not host.fsck("/db")["clean"]        # as Linux leaves it: for fsck to see
        host.repair("/db")
        assert host.fsck("/db")["clean"] and runner.unmount_hosts() == []
    finally:
        san.shutdown()


@needs_fsck
@pytest.mark.parametrize("down,warning", [
    ("hostB", "warning: hostB is down: its mounts were not unmounted cleanly"),
    ("arrayB", "warning: hostB:/db was not unmounted cleanly (ELEMENT_DOWN: "),
], ids=["host", "array"])
def test_a_host_or_array_down_at_the_end_gets_one_warning_and_the_others_are_unmounted(
        tmp_path, down, warning):
    steps = WRITES.replace("HOST", "hostA") + WRITES.replace("HOST", "hostB") + \
        f"- {{op: fault, kind: kill, target: {down}}}\n"
    sc, san, runner, _ = run(tmp_path, "two-sites.yaml", steps)
    try:
        said = runner.unmount_hosts()
        assert len(said) == 1 and said[0].startswith(warning), said
        arrays = tmp_path / "state" / "arrays"
        assert fsck_n(arrays / "arrayA" / "vol-0.data")[0] == 0
        status, out = fsck_n(arrays / "arrayB" / "vol-0.data")
        assert status == 1 and "Dirty bit is set" in out
    finally:
        san.shutdown()


@needs_fsck
@pytest.mark.parametrize("raw", [
    "{op: write, host: host1, mount: /db, offset: 1GiB, size: 1MiB, seed: 9}",
    "{op: write, host: host1, mount: /db, offset: 2GiB, size: 1MiB, seed: 9, expect_error: LBA_OUT_OF_RANGE}",
], ids=["written", "refused"])
def test_a_raw_write_under_a_fat_view_unmounts_it_cleanly_first(tmp_path, raw):
    """The view is written back and marked clean before the raw write (whose bytes it would
    not know of).  Before, it was dropped unflushed: the dirty mark this host had set stayed
    on the volume, the next mount took it for a crash's, no flush ever cleared it, and a
    backup with `flush` copied a dirty image."""
    sc, san, runner, reports = run(tmp_path, "two-arrays.yaml", WRITES.replace("HOST", "host1")
                                   + "- " + raw + "\n"
                                   + "- {op: write_files, host: host1, mount: /db, files: {more.db: {size: 1MiB, seed: 5}}}\n")
    try:
        host = san.element("host1")
        host.action("/db", "flush")
        assert not host.filesystem("/db").found_dirty
        assert host.fsck("/db")["clean"]
        status, out = fsck_n(tmp_path / "state" / "arrays" / "array1" / "vol-0.data")
        assert status == 0, out                             # clean while still mounted
        assert host.files("/db") == {**FILES, "/more.db": [1 * MiB, sha(content(1 * MiB, 5))]}
    finally:
        san.shutdown()
