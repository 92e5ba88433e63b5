"""The backup flows of `tests/integration/test_backup_flows.py`, run on plain elements, without Ray.

Each test there builds its SAN with the `build_san` fixture; here that fixture builds a
`LocalSan` (`san.flows.local`), so the same flows, refusals and failure paths run in
process, on real state directories, and must give the same outcomes.
"""
from ..integration.test_backup_flows import *  # noqa: F401,F403 (the tests and their fixtures)
from .local_san import build_san  # noqa: F401 (the fixture: a LocalSan, not actors)

# -- the catalog rebuild's reads of an array (here only: its transfers are plain data) --------
import textwrap  # noqa: E402

import pytest  # noqa: E402

from san.errors import SanError  # noqa: E402
from san.runner import Runner  # noqa: E402
from san.topology import load_scenario  # noqa: E402
from san.flows.lan import lan_transfer, payload_size  # noqa: E402
from san.topology import load_topology  # noqa: E402
from san.units import MiB  # noqa: E402
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


# -- two flows onto one volume: the second is BUSY until the first has changed the catalog --------
import threading  # noqa: E402
import time  # noqa: E402

SNAP_OF_DB = """\
    - {op: write, host: host1, mount: /db, offset: 0, size: 1MiB, seed: 1}
    - {op: define, name: db-snap, host: host1, mount_point: /db, type: disk, method: snapshot, destination: {array: array1}, label: db snap}
    - {op: backup, definition: db-snap}
    """


def _until(condition, what: str = "the condition never held", within: float = 30) -> None:
    """Wait until `condition()` holds (a thread of the test has got somewhere)."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _held_flow(san, call):
    """Start `call` (a flow whose array copy is held before its first batch) in a thread;
    (the thread, what it returned or raised) once the array runs its copy job."""
    array = san.element("array1")
    array.hold_copies()
    out: dict = {}

    def run():
        try:
            out["answer"] = call()
        except Exception as exc:    # noqa: BLE001 (the test reads it)
            out["error"] = exc
    thread = threading.Thread(target=run)
    thread.start()
    _until(lambda: any(j.state == "running" for j in array.jobs.values()) or "error" in out,
           "the flow's copy never started")
    return thread, out


def _rows_of_volume(san, volume: int) -> list[str]:
    device = san.element("array1").device_id
    return [r["label"] for r in san.call("backup1", "catalog_rows")
            if r["device_id"] == device and r["media_id"] == str(volume)]


def test_a_copy_volume_onto_the_destination_of_a_running_mirror_backup_is_busy(scenario):
    reports, runner, san = scenario(SNAP_OF_DB, "single-array.yaml")
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    snap = next(r for r in san.call("backup1", "catalog_rows") if r["label"] == "db snap")
    server = san.element("backup1")
    thread, out = _held_flow(san, lambda: server.backup("db-mirror", 0))
    try:
        with pytest.raises(SanError) as info:
            server.copy_volume((snap["device_id"], snap["media_id"], None), "array1", 1)
        assert info.value.code == "BUSY"
        assert info.value.message == ("array1 volume 1 is being written by the backup of "
                                      "'db-mirror'; the copy_volume of 'db snap' is refused "
                                      "until that ends")
        with pytest.raises(SanError) as info:       # nor a second backup onto it
            server.backup("db-mirror", 0)
        assert info.value.code == "BUSY"
    finally:
        san.element("array1").hold_copies(False)
        thread.join()
    assert "error" not in out, out
    assert _rows_of_volume(san, 1) == ["host1 /db, mirror"]      # one row, the mirror's
    # once it has ended, the copy goes ahead and replaces the mirror's row
    server.copy_volume((snap["device_id"], snap["media_id"], None), "array1", 1)
    assert _rows_of_volume(san, 1) == ["db snap"]


def test_a_mirror_backup_onto_a_volume_a_copy_volume_writes_is_busy(scenario):
    reports, runner, san = scenario(SNAP_OF_DB, "single-array.yaml")
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    snap = next(r for r in san.call("backup1", "catalog_rows") if r["label"] == "db snap")
    server = san.element("backup1")
    thread, out = _held_flow(san, lambda: server.copy_volume(
        (snap["device_id"], snap["media_id"], None), "array1", 1))
    try:
        with pytest.raises(SanError) as info:
            server.backup("db-mirror", 0)
        assert info.value.code == "BUSY"
        assert info.value.message == ("array1 volume 1 is being written by the copy_volume of "
                                      "'db snap'; the backup of 'db-mirror' is refused until "
                                      "that ends")
    finally:
        san.element("array1").hold_copies(False)
        thread.join()
    assert "error" not in out, out
    assert _rows_of_volume(san, 1) == ["db snap"]


def _mirrored(scenario):
    """(the SAN, its backup server, the catalog row) after one mirror backup onto volume 1."""
    reports, runner, san = scenario("""\
        - {op: write, host: host1, mount: /db, offset: 0, size: 1MiB, seed: 1}
        - {op: backup, definition: db-mirror}
        """, "single-array.yaml")
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    mirror = next(r for r in san.call("backup1", "catalog_rows") if r["media_id"] == "1")
    return san, san.element("backup1"), mirror


def test_a_mirror_backup_onto_a_volume_whose_backup_is_being_deleted_is_busy(scenario, monkeypatch):
    san, server, mirror = _mirrored(scenario)
    deleting, go = threading.Event(), threading.Event()
    client = server._client

    def slow_delete(host, method, *args):     # the delete holds while the mirror is ordered
        if method == "client_delete":
            deleting.set()
            go.wait(30)
        return client(host, method, *args)
    monkeypatch.setattr(server, "_client", slow_delete)
    thread = threading.Thread(target=server.delete_backup,
                              args=((mirror["device_id"], mirror["media_id"], None),))
    thread.start()
    try:
        assert deleting.wait(30)
        with pytest.raises(SanError) as info:
            server.backup("db-mirror", 0)
        assert info.value.code == "BUSY"
        assert info.value.message == ("array1 volume 1 is being written by the delete_backup of "
                                      "'host1 /db, mirror'; the backup of 'db-mirror' is refused "
                                      "until that ends")
    finally:
        go.set()
        thread.join()
    assert _rows_of_volume(san, 1) == []
    server.backup("db-mirror", 0)                 # the volume is free again
    assert _rows_of_volume(san, 1) == ["host1 /db, mirror"]


def test_a_mirror_backup_onto_a_volume_being_migrated_is_busy_until_the_migrate_ends(scenario, monkeypatch):
    san, server, mirror = _mirrored(scenario)
    copying, go = threading.Event(), threading.Event()
    to_tape = server.copy_to_tape

    def slow_copy(*args):                     # between the tape copy and the delete
        answer = to_tape(*args)
        copying.set()
        go.wait(30)
        return answer
    monkeypatch.setattr(server, "copy_to_tape", slow_copy)
    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(server.migrate(
        (mirror["device_id"], "1", None), "T00001", [], [])))
    thread.start()
    try:
        assert copying.wait(30)
        with pytest.raises(SanError) as info:
            server.backup("db-mirror", 0)
        assert info.value.code == "BUSY" and "the migrate of 'host1 /db, mirror'" in info.value.message
    finally:
        go.set()
        thread.join()
    rows = san.call("backup1", "catalog_rows")
    assert [(r["type"], r["media_id"]) for r in rows] == [("tape", "T00001")]   # moved to tape


# -- a snapshot backup whose host dies once the array took the snapshot -------------------------
def test_a_snapshot_whose_host_died_before_answering_is_labelled_and_found_by_a_rebuild(scenario, monkeypatch):
    """The server never learns the snapshot's number, so it cannot delete it or add its row.
    The snapshot came with its volume info, so it is not pool space held unnamed: a rebuild
    finds it and `delete_backup` frees it.  (Here only: the death is a patched host.)"""
    reports, runner, san = scenario("""\
        - {op: write, host: host2, mount: /data, offset: 0, size: 1MiB, seed: 1}
        """, "single-array.yaml")
    host = san.element("host2")
    manage = host.manage

    def dies_once_answered(array, method, *args):
        answer = manage(array, method, *args)
        if method == "snapshot":
            raise SanError("ELEMENT_DOWN", "host2 is down")
        return answer

    monkeypatch.setattr(host, "manage", dies_once_answered)
    before = san.call("array1", "mgmt_volumes", "backup1")["volumes"]
    with pytest.raises(SanError) as info:
        san.call("backup1", "backup", "data-snap", 1767225600)
    assert info.value.code == "ELEMENT_DOWN"
    monkeypatch.undo()
    (taken,) = set(san.call("array1", "mgmt_volumes", "backup1")["volumes"]) - set(before)
    record = VolumeInfo.decode(san.call("array1", "mgmt_read_info", "backup1", taken))
    assert (record.host, record.mount_point, record.timestamp) == ("host2", "/data", 1767225600)
    assert san.call("backup1", "catalog_rows") == []
    assert san.call("backup1", "rebuild_catalog", ["array1"])["added"] == 1
    key = ("HTC-1001", str(taken), None)
    san.call("backup1", "delete_backup", key)
    assert san.call("array1", "mgmt_volumes", "backup1")["volumes"] == before


def test_a_snapshot_the_pool_cannot_take_leaves_no_record(build_san):
    topology = load_topology(TOPOLOGIES / "single-array.yaml")
    san = build_san(topology)
    array = san.element("array1")
    record = VolumeInfo("x", "host2", "/data", 1).encode()
    with pytest.raises(SanError) as info:
        san.call("array1", "mgmt_snapshot", "backup1", "fc1", 0, record[:100])
    assert info.value.code == "INVALID_INPUT" and "must be 512 bytes (got 100)" in info.value.message

    def refuse(*args):
        raise SanError("POOL_FULL", "no room")

    array.snaps.create = refuse
    with pytest.raises(SanError):
        san.call("array1", "mgmt_snapshot", "backup1", "fc1", 0, record)
    assert not list(array.directory.glob("vol-5.info"))


def test_a_backup_deleted_while_a_rebuild_reads_the_arrays_does_not_come_back(scenario):
    """The rebuild read the snapshot's record, then a delete_backup removed the snapshot, its
    record and its row, before the rebuild added what it found: the rows held count from
    before the reads, so the deleted row is not added again (before, it came back naming a
    volume that no longer exists)."""
    reports, runner, san = scenario("""\
        - {op: write, host: host2, mount: /data, offset: 0, size: 1MiB, seed: 1}
        - {op: backup, definition: data-snap, as: s}
        """, "single-array.yaml")
    assert all(r.ok for r in reports)
    server = san.element("backup1")
    key = runner.ctx.backups["s"][1]
    real = server._ask_infos

    def ask(array):
        answer = real(array)()                          # read: the record is in it
        server.delete_backup(key)                       # then another flow deletes it
        return lambda: answer

    server._ask_infos = ask
    assert server.rebuild_catalog(None)["added"] == 0
    assert san.call("backup1", "catalog_rows") == []
    assert int(key[1]) not in san.call("array1", "mgmt_volumes", "backup1")["volumes"]


# -- advance_clock: ties, due times passed by other steps, a server down ------------------------
from ..integration.test_backup_flows import _two_servers  # noqa: E402


def ran(report):
    return [(r["definition"], r["at"], r.get("due"), "error" in r) for r in report.result["ran"]]


def test_definitions_due_at_the_same_moment_all_run(scenario):
    """data-snap is 'every 6h' in the topology; db-snap too: both run at 06:00 and at 12:00
    (before, the first by name took the moment and the other never ran)."""
    reports, runner, san = scenario("""\
        - {op: write, host: host1, mount: /db, offset: 0, size: 1MiB, seed: 1}
        - {op: define, name: db-snap, host: host1, mount_point: /db, type: disk, method: snapshot, destination: {array: array1}, label: db snap, schedule: every 6h}
        - {op: advance_clock, by: 12h}
        - {op: expect_catalog, server: backup1, count: 4}
        """, "single-array.yaml")
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    assert ran(reports[2]) == [("data-snap", "2026-01-01T06:00:00Z", None, False),
                               ("db-snap", "2026-01-01T06:00:00Z", None, False),
                               ("data-snap", "2026-01-01T12:00:00Z", None, False),
                               ("db-snap", "2026-01-01T12:00:00Z", None, False)]


def test_a_due_time_another_step_carried_the_clock_past_runs_late_at_the_next_advance(scenario):
    """A write's modeled time carries the clock past 06:00: data-snap's 06:00 run is not
    lost, it runs first at the next advance_clock, stamped with the time it ran and saying
    when it was due; the clock never goes back."""
    reports, runner, san = scenario("""\
        - {op: advance_clock, by: 21599.99s}
        - {op: write, host: host1, mount: /db, offset: 0, size: 64MiB, seed: 1}
        - {op: advance_clock, by: 1h}
        - {op: expect_catalog, server: backup1, count: 1}
        """, "single-array.yaml")
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    assert ran(reports[0]) == []
    [(name, at, due, error)] = ran(reports[2])
    assert (name, due, error) == ("data-snap", "2026-01-01T06:00:00Z", False)
    assert at == "2026-01-01T06:00:00Z"              # when the write ended, to the second
    assert runner.ctx.clock.stamp() == reports[2].result["now"] > at
    again = Runner(san, runner.ctx.clock.path.parent)           # the next run, same state dir
    assert again.ctx.clock.scheduled == runner.ctx.clock.scheduled


def test_a_server_down_fails_advance_clock_but_the_clock_moves_and_the_others_run(scenario, tmp_path):
    import yaml
    path = _two_servers(tmp_path)
    topology = yaml.safe_load(open(path).read())
    topology["backup_servers"][1]["definitions"][0]["schedule"] = "every 1h"
    open(path, "w").write(yaml.safe_dump(topology))
    reports, runner, san = scenario("""\
        - {op: write, host: host1, mount: /db, offset: 0, size: 1MiB, seed: 1}
        - {op: define, server: backup1, name: db-hourly, host: host1, mount_point: /db, type: disk, method: snapshot, destination: {array: array1}, label: hourly, schedule: every 1h}
        - {op: fault, kind: kill, target: backup1}
        - {op: advance_clock, by: 3h, expect_error: ELEMENT_DOWN}
        - {op: expect_catalog, server: backup2, count: 1}
        """, path)   # (one row: each hourly mirror replaces the last on volume 1)
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    advanced = reports[3]
    assert runner.ctx.clock.stamp() == advanced.result["now"] == "2026-01-01T03:00:00Z"
    assert [(d, at, e) for d, at, _, e in ran(advanced)] == [
        # their server is down: each run fails at its due time (db-hourly's schedule known
        # from its define step); db-nightly, daily at 02:00, once
        ("db-hourly", "2026-01-01T01:00:00Z", True), ("db-other", "2026-01-01T01:00:00Z", False),
        ("db-hourly", "2026-01-01T02:00:00Z", True), ("db-nightly", "2026-01-01T02:00:00Z", True),
        ("db-other", "2026-01-01T02:00:00Z", False),
        ("db-hourly", "2026-01-01T03:00:00Z", True), ("db-other", "2026-01-01T03:00:00Z", False)]
    assert "4 of 7 scheduled backups failed" in advanced.error.message
    assert advanced.bytes > 0 and advanced.modeled_s > 0          # what ran is in the report


def test_a_server_down_with_nothing_due_fails_nothing(scenario):
    """backup1 is down and none of its definitions falls due in the minute: each of them
    (db-mirror has no schedule at all) was reported a failed run, and the step failed."""
    reports, runner, _ = scenario("""\
        - {op: fault, kind: kill, target: backup1}
        - {op: advance_clock, by: 1m}
        - {op: advance_clock, by: 6h, expect_error: ELEMENT_DOWN}
        """, "single-array.yaml")
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    assert reports[1].result["ran"] == []
    assert [(d, at, e) for d, at, _, e in ran(reports[2])] == [
        ("data-snap", "2026-01-01T06:00:00Z", True)]        # every 6h: due once, and failed


# -- a rebuild settles the rows an array no longer backs ---------------------------------------
from ..integration.test_backup_flows import OVERWRITTEN  # noqa: E402


def test_a_rebuild_drops_a_row_another_servers_mirror_overwrote_and_adds_what_is_there(
        scenario, tmp_path):
    """backup1's row for b1 names array1 volume 1, which backup2's mirror has overwritten.  A
    verify by the row reads another backup: NO_SUCH_BACKUP, not a mismatch.  A rebuild drops
    the row (it used to keep it: the key was held) and adds the row of what the volume holds;
    the name b1 then names nothing, and an unchanged catalog rebuilds to itself."""
    reports, runner, san = scenario(OVERWRITTEN + """\
    - {op: verify, checkpoint: v2, backup: b1, expect_error: NO_SUCH_BACKUP}
    - {op: rebuild_catalog, server: backup1}
    - {op: expect_catalog, server: backup1, count: 1, rows: [{label: "backup2's image", media_id: "1"}]}
    - {op: verify, checkpoint: v2, backup: b1, expect_error: NO_SUCH_BACKUP}
    - {op: rebuild_catalog, server: backup1, title: again}
    - {op: expect_catalog, server: backup1, count: 1, rows: [{label: "backup2's image", media_id: "1"}]}
    """, _two_servers(tmp_path))
    assert all(r.ok for r in reports), [(r.index, r.op, r.error) for r in reports]
    assert "holds another backup's volume info" in reports[7].error.message
    assert reports[8].result["added"] == 1 and reports[8].result["dropped"] == 1
    assert "its catalog row there on backup1 is now \"backup2's image\"" in reports[10].error.message
    assert reports[11].result["added"] == 0 and reports[11].result["dropped"] == 0
    san.call("array1", "delete_info", 1)                         # no volume info: dropped too
    assert san.call("backup1", "rebuild_catalog", None)["dropped"] == 1
    assert san.call("backup1", "catalog_rows") == []


# -- a definition a define step stored, in a later run on the same state dir -----------------------
HOURLY = ("{op: define, name: db-hourly, host: host2, mount_point: /data, type: disk, "
          "method: snapshot, destination: {array: array1}, label: hourly, schedule: every 1h}")


def test_a_stored_definition_runs_its_schedule_in_a_later_run_and_may_be_defined_again(
        build_san, tmp_path):
    """The second run on the state dir knows db-hourly (the server stored it): its schedule
    runs at advance_clock, and the same define again is accepted (the scenario re-run whole);
    another definition under that name is still refused."""
    def run(steps: str, then=None):
        path = tmp_path / "s.yaml"
        path.write_text(f"name: t\ntopology: {TOPOLOGIES / 'single-array.yaml'}\nsteps:\n"
                        + textwrap.indent(textwrap.dedent(steps), "  "))
        loaded = load_scenario(path)
        san = build_san(loaded.topology, tmp_path / "state")
        try:
            reports = Runner(san, tmp_path / "state").run(loaded.steps)
            if then:
                then(san, loaded.steps[1].definition)
            return reports
        finally:
            san.shutdown()

    def another(san, definition):
        with pytest.raises(SanError) as info:
            san.call("backup1", "define", definition.model_copy(update={"label": "another"}))
        assert info.value.code == "INVALID_INPUT"
        assert "already has a definition 'db-hourly', and it differs" in info.value.message

    first = run(f"""\
        - {{op: write, host: host2, mount: /data, offset: 0, size: 1MiB, seed: 1}}
        - {HOURLY}
        """, another)
    assert all(r.ok for r in first), [(r.index, r.op, r.error) for r in first]
    second = run(f"""\
        - {{op: advance_clock, by: 2h}}
        - {HOURLY}
        - {{op: backup, definition: db-hourly}}
        """)
    assert all(r.ok for r in second), [(r.index, r.op, r.error) for r in second]
    assert [r["definition"] for r in second[0].result["ran"]] == ["db-hourly", "db-hourly"]


# -- restore_files streams each file, and a file it creates keeps the backup's name -------------
def test_restore_files_streams_each_file_and_a_new_one_takes_the_backups_stored_name(
        scenario, monkeypatch):
    """No file is read whole into memory (a 4 GiB file would have been, twice); the files
    asked for in any case come back under the names the backup stores."""
    from san.fat import FatVolume

    def whole(self, path):
        raise AssertionError(f"{path} read whole into memory")

    monkeypatch.setattr(FatVolume, "read_file", whole)
    reports, runner, san = scenario("""\
        - {op: write_files, host: host1, mount: /db, files: {Data/Report.DB: {size: 9MiB, seed: 1}, keep.txt: {size: 100, seed: 2}}}
        - {op: checkpoint, as: c1, host: host1, mount: /db}
        - {op: backup, definition: db-nightly, as: b1}
        - {op: remove_files, host: host1, mount: /db, files: [Data/Report.DB]}
        - {op: write_files, host: host1, mount: /db, files: {keep.txt: {size: 50, seed: 3}}}
        - {op: restore_files, backup: b1, files: [data/report.db, KEEP.TXT]}
        - {op: restore_files, backup: b1, files: [nope.db, keep.txt], expect_error: NO_SUCH_FILE}
        - {op: verify, checkpoint: c1, host: host1, mount: /db}
        """)
    assert all(r.ok for r in reports), [(r.index, r.op, r.error) for r in reports]
    assert reports[5].result["file_bytes"] == 9 * MiB + 100
    assert sorted(san.call("host1", "files", "/db")) == ["/Data/Report.DB", "/keep.txt"]


@pytest.mark.parametrize("restore", [
    "{op: restore_volume, backup: b1, pre: [quiesce, fsck], post: [resume], expect_error: LINK_DOWN}",
    "{op: restore_files, backup: b1, files: [a.db], pre: [quiesce, fsck], post: [resume], "
    "expect_error: LINK_DOWN}",
    "{op: restore_volume, backup: t1, pre: [quiesce, fsck], post: [resume], expect_error: LINK_DOWN}",
])
def test_a_restore_whose_pre_processing_fails_resumes_the_application(scenario, restore):
    """The pre-processing ran before the part whose failure runs `post`: a `fsck` failing after
    `quiesce` left the mount quiesced for good, and the application's next write waited ten
    minutes, then failed BUSY (a backup's failing pre-processing already resumed it)."""
    reports, _, san = scenario(f"""\
        - {{op: write_files, host: host1, mount: /db, files: {{a.db: {{size: 1MiB, seed: 1}}}}}}
        - {{op: backup, definition: db-nightly, as: b1}}
        - {{op: copy_to_tape, backup: b1, media: T00002, as: t1}}
        - {{op: fault, kind: link_down, target: array1/fc0}}
        - {restore}
        - {{op: fault, kind: link_up, target: array1/fc0}}
        """)
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    gate = san.element("host1").gates["/db"]
    assert gate._holders == [] and gate._open
    san.call("host1", "write_files", "/db", {"/b.db": (4096, 2)})


def test_a_copy_over_fc_whose_source_array_goes_down_stops_there(tmp_path):
    """In one process the copy's thread outlived its killed array: it wrote on, recorded the
    backup's volume info on the destination and set its failed job to done, while the
    copy_volume had failed ELEMENT_DOWN and no row named the labelled volume."""
    from san.catalog import row_key
    from san.flows.local import LocalSan
    san = LocalSan(load_topology(TOPOLOGIES / "two-arrays.yaml"), tmp_path / "state",
                   chunk_size=1 * MiB).start()
    try:
        san.call("host1", "write", "/db", 0, 16 * MiB, 7)
        row = san.call("backup1", "backup", "db-nightly", 1767225600)["row"]
        source = san.element("array1")
        source.trip_arm(source.moved_bytes + 16 * MiB)     # the copy stops at its last chunk
        out = {}

        def copy():
            try:
                out["ok"] = san.call("backup1", "copy_volume", row_key(row), "array2", 0)
            except SanError as exc:
                out["error"] = exc
        worker = threading.Thread(target=copy)
        worker.start()
        _until(lambda: source.trip._at is None)             # until it stopped there
        san.kill("array1")
        worker.join(30)
        time.sleep(0.2)                                     # a thread going on would land now
        assert out["error"].code == "ELEMENT_DOWN"
        assert san.element("array2").read_info(0) is None
        assert san.element("array2").reserved == {}
        job = source.jobs[max(source.jobs)]
        assert (job.state, job.error.code) == ("failed", "ELEMENT_DOWN")
        assert [r["media_id"] for r in san.call("backup1", "catalog_rows")] == ["1"]
    finally:
        san.shutdown()


def test_a_migrate_whose_delete_fails_names_its_tape_copy(tmp_path):
    """The delete of the disk backup fails (BUSY: a copy from its volume runs) after the
    tape copy was committed and catalogued: the error said nothing of the tape copy and the
    step's `as:` name was never bound, unlike a copy_to_tape whose later part fails."""
    from san import ops
    from san.catalog import row_key
    from san.flows.local import LocalSan
    san = LocalSan(load_topology(TOPOLOGIES / "two-arrays.yaml"), tmp_path / "state",
                   chunk_size=1 * MiB).start()
    try:
        san.call("host1", "write", "/db", 0, 16 * MiB, 1)
        mirror = san.call("backup1", "backup", "db-nightly", 1767225600)["row"]
        source = san.element("array1")
        source.hold_copies(True)
        copying = threading.Thread(target=lambda: san.call(
            "backup1", "copy_volume", row_key(mirror), "array2", 0))
        copying.start()
        _until(lambda: any(j.state == "running" for j in source.jobs.values()))
        ctx = ops.Context(san, None, {})
        ctx.backups["b"] = ("backup1", row_key(mirror))

        class Step:
            op, backup, media, pre, post, as_ = "migrate", "b", "T00002", [], [], "tapecopy"
        with pytest.raises(SanError) as info:
            ops.OPS["migrate"](ctx, Step())
        source.hold_copies(False)
        copying.join(30)
        assert info.value.code == "BUSY" and "is on T00002 file 1 and in the catalog" in \
            info.value.message
        server, key = ctx.backups["tapecopy"]
        assert san.call(server, "row", key)["media_id"] == "T00002"
    finally:
        san.shutdown()


TWO_MIRRORS = """\
name: two-mirrors
fabric:
  switches: [{name: fcsw1}]
  zones: [{name: db, members: [host1/hba0, array1/fc0]}]
arrays:
  - name: array1
    device_id: HTC-0001
    managers: [backup1, host1]
    ports: [{name: fc0, number: 0, wwpn: "50:06:0e:80:00:00:00:01", switch: fcsw1}]
    volumes:
      - {number: 0, size: 16MiB, port: fc0, lun: 0, hosts: [host1], copy_destinations: [1, 2]}
      - {number: 1, size: 16MiB}
      - {number: 2, size: 16MiB}
hosts:
  - name: host1
    hbas: [{name: hba0, wwpn: "21:00:00:e0:8b:00:00:01", switch: fcsw1}]
    mounts: [{mount_point: /db, port: array1/fc0, lun: 0}]
    restore_ports: [{port: array1/fc0, lun: 9}]
backup_servers:
  - name: backup1
    tape_library: lib1
    definitions:
      - {name: m1, host: host1, mount_point: /db, type: disk, method: mirror, destination: {array: array1, volume: 1}, label: m1}
      - {name: m2, host: host1, mount_point: /db, type: disk, method: mirror, destination: {array: array1, volume: 2}, label: m2}
tape_libraries:
  - {name: lib1, drives: 2, media: [T1, T2]}
"""


def test_two_copies_to_tape_at_once_each_read_their_own_backup(tmp_path):
    """The second copy's attach at the host's restore LUN came while the first's answer was
    on its way: asked whether the first attachment was still held, the host (which had not
    recorded it yet) said no, the array gave the LUN to the second backup, and the tape
    file labelled with the first held the second's bytes."""
    from san.catalog import row_key
    from san.flows.local import LocalSan
    (tmp_path / "t.yaml").write_text(TWO_MIRRORS)
    san = LocalSan(load_topology(tmp_path / "t.yaml"), tmp_path / "state", chunk_size=1 * MiB).start()
    try:
        digests, rows = {}, {}
        for seed, name, volume in ((1, "m1", 1), (2, "m2", 2)):
            san.call("host1", "write", "/db", 0, 16 * MiB, seed)
            rows[name] = san.call("backup1", "backup", name, 1767225600 + seed)["row"]
            digests[name] = san.call("array1", "digest_volume", volume)
        array = san.element("array1")
        attach, first = array.mgmt_attach, threading.Event()

        def slow_answer(*args):
            answer = attach(*args)
            if not first.is_set():
                first.set()
                time.sleep(0.5)         # the first answer is slow to reach the host
            return answer
        array.mgmt_attach = slow_answer
        out = {}

        def to_tape(name, media):
            try:
                out[name] = san.call("backup1", "copy_to_tape", row_key(rows[name]), media, [], [])
            except SanError as exc:
                out[name] = exc
        threads = [threading.Thread(target=to_tape, args=("m1", "T1"))]
        threads[0].start()
        assert first.wait(30)
        threads.append(threading.Thread(target=to_tape, args=("m2", "T2")))
        threads[1].start()
        for t in threads:
            t.join(60)
        for name, media in (("m1", "T1"), ("m2", "T2")):
            if isinstance(out[name], SanError):           # refused, not mixed up
                assert out[name].code == "BUSY", out[name]
                continue
            assert san.call("lib1", "image_digest", media, 1) == digests[name]
        assert not all(isinstance(v, SanError) for v in out.values())
        assert array.attachments == []
    finally:
        san.shutdown()


def test_two_copies_over_fc_onto_one_volume_at_once_one_is_busy(tmp_path):
    """The second copy's reservation reached the destination while the first's answer was on
    its way: asked whether a copy into the volume ran, the source (its first job not yet
    registered) said no, the destination granted the volume again, and both copies wrote
    into it and succeeded, leaving a mix of the two."""
    from san.flows.local import LocalSan
    san = LocalSan(load_topology(TOPOLOGIES / "two-arrays.yaml"), tmp_path / "state",
                   chunk_size=1 * MiB).start()
    try:
        source, dest = san.element("array1"), san.element("array2")
        digests = {}
        for seed, volume in ((1, 1), (2, 2)):
            san.call("host1", "write", "/db", 0, 16 * MiB, seed)
            job = san.call("array1", "mgmt_copy", "backup1", 0, volume, False)
            if job["state"] != "done":
                san.call("array1", "mgmt_wait", "backup1", job["job"])
            digests[volume] = san.call("array1", "digest_volume", volume)
        reserve, first = dest.mgmt_reserve, threading.Event()

        def slow_answer(*args):
            answer = reserve(*args)
            if not first.is_set():
                first.set()
                time.sleep(0.5)         # the first answer is slow to reach array1
            return answer
        dest.mgmt_reserve = slow_answer
        source.hold_copies(True)        # both would wait before their first chunk
        out = {}

        def copy(volume):
            try:
                out[volume] = source.mgmt_copy_remote("backup1", volume, "array2", 0, "fc0", 0)
            except SanError as exc:
                out[volume] = exc
        threads = [threading.Thread(target=copy, args=(1,))]
        threads[0].start()
        assert first.wait(30)
        threads.append(threading.Thread(target=copy, args=(2,)))
        threads[1].start()
        for t in threads:
            t.join(60)
        source.hold_copies(False)
        assert isinstance(out[2], SanError) and out[2].code == "BUSY", out[2]
        done = source.mgmt_wait("backup1", out[1]["job"])
        assert done["state"] == "done"
        assert san.call("array2", "digest_volume", 0) == digests[1]
    finally:
        san.shutdown()


def test_a_rebuild_beside_a_copy_refreshing_its_volume_keeps_the_copy_s_row(tmp_path):
    """A copy_volume makes the offsite copy again while a rebuild runs: the rebuild read the
    destination half done (no volume info), counted its row stale, and once the copy had
    added its row (equal to the old one, field for field) deleted it: a labelled backup with
    no row, after both steps succeeded."""
    from san.catalog import row_key
    from san.flows.local import LocalSan
    san = LocalSan(load_topology(TOPOLOGIES / "two-arrays.yaml"), tmp_path / "state",
                   chunk_size=1 * MiB).start()
    try:
        san.call("host1", "write", "/db", 0, 16 * MiB, 1)
        mirror = san.call("backup1", "backup", "db-nightly", 1767225600)["row"]
        san.call("backup1", "copy_volume", row_key(mirror), "array2", 0)
        before = sorted(row_key(r) for r in san.call("backup1", "catalog_rows"))
        source, dest, lib = san.element("array1"), san.element("array2"), san.element("lib1")
        go_read, go_scan = threading.Event(), threading.Event()
        read, scan = dest.mgmt_read_infos, lib.scan
        dest.mgmt_read_infos = lambda *a: go_read.wait(10) and read(*a)    # answers late
        lib.scan = lambda *a: go_scan.wait(10) and scan(*a)
        out = {}
        rebuilding = threading.Thread(
            target=lambda: out.update(rebuild=san.call("backup1", "rebuild_catalog", None)))
        rebuilding.start()
        time.sleep(0.2)                 # it has listed the rows it holds
        source.hold_copies(True)
        copying = threading.Thread(target=lambda: out.update(
            copy=san.call("backup1", "copy_volume", row_key(mirror), "array2", 0)))
        copying.start()
        _until(lambda: dest.read_info(0) is None)   # the copy has begun: the info is gone
        go_read.set()                   # the rebuild reads array2 now: volume 0 holds none
        time.sleep(0.2)
        source.hold_copies(False)
        copying.join(30)                # the copy ends and adds its row
        go_scan.set()
        rebuilding.join(30)
        assert out["rebuild"]["dropped"] == 0
        after = sorted(row_key(r) for r in san.call("backup1", "catalog_rows"))
        assert after == before and dest.read_info(0) is not None
    finally:
        san.shutdown()
