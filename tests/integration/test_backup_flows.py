"""Every disk-backup flow end to end: rows, volume info, files, refusals.

Run here on Ray actors, and by `tests/unit/test_flows_backup.py` on plain elements in process."""
import textwrap

import pytest

from san.errors import SanError
from san.runner import Runner
from san.topology import load_scenario, load_topology
from san.volume_info import VolumeInfo

from .conftest import TOPOLOGIES


@pytest.fixture
def scenario(build_san, tmp_path):
    """scenario(steps_yaml, topology, edit) -> (reports by index, runner, san); `edit` changes
    the loaded steps (a list of step models) after validation, as the Python API may."""
    def run(steps: str, topology: str = "two-arrays.yaml", edit=None):
        path = tmp_path / "s.yaml"
        path.write_text(f"name: t\ntopology: {TOPOLOGIES / topology}\nsteps:\n"
                        + textwrap.indent(textwrap.dedent(steps), "  "))
        loaded = load_scenario(path)
        if edit is not None:
            edit(loaded.steps)
        san = build_san(loaded.topology, tmp_path / "state")
        runner = Runner(san, tmp_path / "state")
        return runner.run(loaded.steps), runner, san
    return run


def outcome(report):
    return report.error.code if report.error else "ok"


def test_the_rebuilt_catalog_equals_the_lost_one_row_for_row(scenario):
    reports, runner, san = scenario("""\
        - {op: write, host: host1, mount: /db, offset: 0, size: 8MiB, seed: 1}
        - {op: backup, definition: db-mirror, as: m}
        - {op: backup, definition: data-snap}
        - {op: advance_clock, by: 13h}
        - {op: copy_volume, backup: m, to: {array: array1, volume: 2}}
        """, "single-array.yaml")
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    before = runner.catalogs()["backup1"]
    assert len(before) == 5  # mirror, snapshot, 2 scheduled snapshots, the copy
    san.call("backup1", "lose_catalog")
    assert runner.catalogs()["backup1"] == []
    answer = san.call("backup1", "rebuild_catalog", None)
    assert answer["added"] == 5 and answer["skipped"] == []
    key = lambda r: sorted(r.items())
    assert sorted(runner.catalogs()["backup1"], key=key) == sorted(before, key=key)


def test_a_foreign_record_is_skipped_and_reported_not_fatal(scenario):
    reports, runner, san = scenario("""\
        - {op: write, host: host1, mount: /db, offset: 0, size: 1MiB, seed: 1}
        - {op: backup, definition: db-mirror}
        """, "single-array.yaml")
    san.call("array1", "mgmt_record_info", "backup1", 2, b"XXXX" + bytes(508))
    san.call("backup1", "lose_catalog")
    answer = san.call("backup1", "rebuild_catalog", ["array1"])
    assert answer["added"] == 1
    assert answer["skipped"] == [{"device_id": "HTC-1001", "volume": 2,
                                  "reason": "format ID b'XXXX' is not b'SANV'"}]


def test_backup_records_volume_info_beside_the_volume_and_a_row(scenario):
    reports, runner, san = scenario("""\
        - {op: write_files, host: host1, mount: /db, files: {x.bin: {size: 1MiB, seed: 1}}}
        - {op: backup, definition: db-nightly, as: b1}
        """)
    row = reports[1].result["row"]
    assert row == {"host": "host1", "mount_point": "/db", "type": "disk", "device_id": "HTC-0001",
                   "media_id": "1", "file": None, "label": "orders DB, nightly consistent image",
                   "timestamp": "2026-01-01T00:00:00Z"}
    info = VolumeInfo.decode(san.call("array1", "mgmt_read_info", "backup1", 1))
    assert (info.label, info.host, info.mount_point) == (row["label"], "host1", "/db")
    assert san.call("array1", "size_of", 1) == 2 << 30   # the address space never changes


def test_refused_backup_adds_no_row_records_nothing_and_drops_nothing(scenario):
    reports, runner, san = scenario("""\
        - {op: write, host: host1, mount: /db, offset: 0, size: 1MiB, seed: 1}
        - {op: backup, definition: db-mirror, as: good}
        - {op: define, name: wrong, host: host1, mount_point: /db, type: disk, method: mirror, destination: {array: array1, volume: 3}, label: "not a destination"}
        - {op: backup, definition: wrong, expect_error: NOT_A_COPY_DESTINATION}
        - {op: define, name: elsewhere, host: host2, mount_point: /data, type: disk, method: mirror, destination: {array: array1, volume: 1}, label: "host2 into volume 1"}
        - {op: backup, definition: elsewhere, expect_error: NOT_A_COPY_DESTINATION}
        - {op: expect_catalog, server: backup1, count: 1, rows: [{media_id: "1", label: "host1 /db, mirror"}]}
        """, "single-array.yaml")
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    assert san.call("array1", "mgmt_read_info", "backup1", 3) is None
    assert VolumeInfo.decode(san.call("array1", "mgmt_read_info", "backup1", 1)).label == "host1 /db, mirror"


def test_backup_during_application_writes_is_consistent_and_checks_clean(scenario):
    files = {f"app/f{i}.dat": {"size": (i + 1) * 300_000, "seed": 100 + i} for i in range(8)}
    listing = ", ".join(f"{p}: {{size: {v['size']}, seed: {v['seed']}}}" for p, v in files.items())
    new = ", ".join(f"{p}: {{size: {v['size'] + 4096}, seed: {v['seed'] + 50}}}" for p, v in files.items())
    reports, runner, san = scenario(f"""\
        - {{op: write_files, host: host1, mount: /db, files: {{{listing}}}}}
        - {{op: checkpoint, as: old, host: host1, mount: /db}}
        - op: concurrent
          steps:
            - {{op: backup, definition: db-nightly, as: b1}}
            - {{op: write_files, host: host1, mount: /db, files: {{{new}}}}}
        - {{op: checkpoint, as: new, host: host1, mount: /db}}
        - {{op: checkpoint, as: backup, backup: b1}}
        """)
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    old, new, backup = (runner.ctx.checkpoints[n][1]["files"] for n in ("old", "new", "backup"))
    assert set(backup) == set(old) == set(new)
    # each application write is in the backup whole, or not at all: per file, all or nothing,
    # and the write_files step as a whole too (the gate let it in, or kept it out)
    assert backup == old or backup == new
    # the backup volume, attached at host1's restore port, passes fsck.fat -n
    san.call("array1", "mgmt_attach", "backup1", 1, "fc0", 9, "host1")
    report = san.call("host1", "fsck", "/db", "array1/fc0", 9)
    assert report["clean"], report["output"]


def test_file_restore_brings_back_exactly_the_named_files(scenario):
    reports, runner, san = scenario("""\
        - {op: write_files, host: host1, mount: /db, files: {keep.txt: {size: 5000, seed: 1}, lost.txt: {size: 7000, seed: 2}, changed.txt: {size: 100, seed: 3}}}
        - {op: backup, definition: db-nightly, as: b1}
        - {op: remove_files, host: host1, mount: /db, files: [lost.txt]}
        - {op: write_files, host: host1, mount: /db, files: {changed.txt: {size: 200, seed: 4}, new.txt: {size: 10, seed: 5}}}
        - {op: checkpoint, as: now, host: host1, mount: /db}
        - {op: restore_files, backup: b1, files: [lost.txt]}
        - {op: checkpoint, as: after, host: host1, mount: /db}
        - {op: checkpoint, as: backup, backup: b1}
        """)
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    now, after, backup = (runner.ctx.checkpoints[n][1]["files"] for n in ("now", "after", "backup"))
    assert after["/lost.txt"] == backup["/lost.txt"]
    assert {p: v for p, v in after.items() if p != "/lost.txt"} == now
    assert after["/changed.txt"] != backup["/changed.txt"]
    # the backup volume is detached again: the restore port LUN is free
    assert san.call("array1", "report_luns", "host1/hba0", "fc0") == [0]


@pytest.mark.parametrize("step,code", [
    ("{op: remove_files, host: host1, mount: /db, files: [absent.txt]}", "NO_SUCH_FILE"),
    ("{op: write_files, host: host1, mount: /db, files: {../../x: {size: 1, seed: 1}}}", "INVALID_INPUT"),
    ("{op: write_files, host: host1, mount: /db, files: {huge.bin: {size: 3GiB, seed: 1}}}", "NO_SPACE"),
    ("{op: backup, definition: db-nightly, as: x}", "ok"),
])
def test_file_refusals(scenario, step, code):
    reports, _, _ = scenario(f"- {step}\n")
    assert outcome(reports[0]) == code, reports[0].error


@pytest.mark.parametrize("step", [
    "{op: write_files, host: host1, mount: /db, files: {a: {size: 1, seed: 1}}}",
    "{op: list_destinations, host: host1, mount: /db}",
])
def test_a_mount_its_host_lacks_is_no_such_mount(scenario, step):
    """validate refuses such a step (tests/unit/test_scenario_schema.py); one made past it,
    as the Python API can, meets the host's own refusal."""
    def elsewhere(steps):
        steps[0] = steps[0].model_copy(update={"mount": "/nope"})
    reports, _, _ = scenario(f"- {step}\n", edit=elsewhere)
    assert outcome(reports[0]) == "NO_SUCH_MOUNT", reports[0].error
    assert "'/nope'" in reports[0].error.message


def test_list_destinations_and_define(scenario):
    reports, runner, san = scenario("""\
        - {op: list_destinations, host: host1, mount: /db}
        - {op: define, name: db-copy2, host: host1, mount_point: /db, type: disk, method: mirror, destination: {array: array1, volume: 2}, label: second copy}
        - {op: write_files, host: host1, mount: /db, files: {a: {size: 1000, seed: 1}}}
        - {op: backup, definition: db-copy2, as: c2}
        - {op: expect_catalog, server: backup1, count: 1, rows: [{media_id: "2", label: second copy}]}
        """)
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    assert reports[0].result == {"device_id": "HTC-0001", "destinations": [1, 2]}
    assert [l.startswith("host1/lan") or l.startswith("backup1/lan") or l.startswith("array1/lan")
            for l in [reports[0].busiest_link]] == [True]


def test_unauthorized_host_cannot_order_its_array(scenario, tmp_path):
    topo = (TOPOLOGIES / "two-arrays.yaml").read_text().replace(
        "managers: [backup1, host1]", "managers: [backup1]")
    (tmp_path / "t.yaml").write_text(topo)
    reports, _, _ = scenario("""\
        - {op: list_destinations, host: host1, mount: /db}
        - {op: backup, definition: db-nightly, expect_error: UNAUTHORIZED}
        - {op: expect_catalog, server: backup1, count: 0}
        """, str(tmp_path / "t.yaml"))
    assert outcome(reports[0]) == "UNAUTHORIZED"
    assert all(r.ok for r in reports[1:]), [(r.op, r.error) for r in reports]


def test_fsck_failure_stops_a_backup_and_resumes_the_application(scenario):
    reports, runner, san = scenario("""\
        - {op: write_files, host: host1, mount: /db, files: {a.txt: {size: 1000, seed: 1}}}
        - {op: define, name: checked, host: host1, mount_point: /db, type: disk, method: mirror, destination: {array: array1, volume: 2}, pre: [quiesce, fsck], post: [resume], label: checked first}
        - {op: backup, title: fsck before flush sees the dirty bit, definition: checked, expect_error: FSCK_FAILED}
        - {op: write_files, title: the application was resumed, host: host1, mount: /db, files: {b.txt: {size: 10, seed: 2}}}
        - {op: expect_catalog, server: backup1, count: 0}
        """)
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]


def test_restore_to_another_hosts_mount_and_across_arrays_is_refused(scenario):
    reports, _, _ = scenario("""\
        - {op: write, host: host1, mount: /db, offset: 0, size: 4MiB, seed: 1}
        - {op: backup, definition: db-mirror, as: b}
        - {op: restore_volume, backup: b, to: {host: host2, mount: /data}, expect_error: CAPACITY_MISMATCH}
        - {op: restore_volume, backup: b, to: {host: host2, mount: /nope}, expect_error: NO_SUCH_MOUNT}
        - {op: delete_backup, backup: b}
        - {op: restore_volume, backup: b, expect_error: NO_SUCH_BACKUP}
        """, "single-array.yaml")
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]


def test_a_backup_failing_after_the_array_accepted_it_leaves_no_row_for_its_destination(scenario):
    reports, runner, san = scenario("""\
        - {op: write, host: host1, mount: /db, offset: 0, size: 4MiB, seed: 1}
        - {op: backup, definition: db-mirror, as: old}
        - {op: write, host: host1, mount: /db, offset: 0, size: 4MiB, seed: 2}
        - {op: fault, title: a byte rots on the primary, kind: corrupt, target: array1, volume: 0, offset: 8192}
        - {op: backup, title: the copy reads it and fails, definition: db-mirror, expect_error: CHECKSUM_MISMATCH}
        - {op: expect_catalog, server: backup1, count: 0}
        - {op: checkpoint, as: x, backup: old, expect_error: NO_SUCH_BACKUP}
        """, "single-array.yaml")
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    assert san.call("array1", "mgmt_read_info", "backup1", 1) is None


def test_a_mirror_that_fails_midway_is_charged_what_it_copied_before(scenario):
    """Rot in the middle of the primary: the copy (over 16 MiB: in a thread of its own) moves
    whole batches (16 granules, 4 MiB) until the batch holding it, then fails.  The step reports those bytes and their time on
    the array's copy engine, as a successful step would for what it moved."""
    reports, runner, san = scenario("""\
        - {op: write, host: host1, mount: /db, offset: 0, size: 32MiB, seed: 1}
        - {op: fault, kind: corrupt, target: array1, volume: 0, offset: 6MiB}
        - {op: backup, definition: db-mirror, expect_error: CHECKSUM_MISMATCH}
        """, "single-array.yaml")
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    failed = reports[2]
    assert failed.bytes == 4 << 20
    assert failed.modeled_s > 0


def test_a_copy_over_fc_cut_by_a_link_down_is_charged_what_reached_the_destination(scenario):
    reports, runner, san = scenario("""\
        - {op: write, host: hostA, mount: /db, offset: 0, size: 64MiB, seed: 1}
        - {op: backup, definition: db-mirror, as: b1}
        - op: concurrent
          steps:
            - {op: copy_volume, title: c, backup: b1, to: {array: arrayB, volume: 1}, expect_error: LINK_DOWN}
            - {op: fault, kind: link_down, target: isl-ab, when: {step: c, after: 8MiB}}
        """, "two-sites.yaml")
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    cut = reports[2].children[0]
    # what was acknowledged before the link went down, and the commands then in flight
    assert 8 << 20 <= cut.bytes < 64 << 20 and cut.bytes % (4 << 20) == 0
    assert cut.modeled_s > 0 and cut.busiest_link is not None


def test_a_copy_volume_onto_a_host_s_mounted_volume_is_refused(scenario):
    """A copy makes a backup; a host's live volume is none (its cached filesystem would not
    see the copy, and the copied volume info would make its later writes a changed backup)."""
    reports, runner, san = scenario("""\
        - {op: write_files, host: host1, mount: /db, files: {a.db: {size: 1MiB, seed: 1}}}
        - {op: backup, definition: db-nightly, as: b1}
        - {op: write_files, host: host1, mount: /db, files: {new.db: {size: 1MiB, seed: 2}}}
        - {op: checkpoint, as: live, host: host1, mount: /db}
        - {op: copy_volume, backup: b1, to: {array: array1, volume: 0}, expect_error: NOT_A_COPY_DESTINATION}
        - {op: verify, checkpoint: live, host: host1, mount: /db}
        - {op: expect_catalog, count: 1}
        """)
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    assert "array1 volume 0 is host1:/db" in reports[4].error.message
    assert san.call("array1", "mgmt_read_info", "backup1", 0) is None


@pytest.mark.parametrize("sources", ["", ", from: [arrayA, arrayB]", ", from: [arrayB, arrayA]"])
def test_a_rebuild_reads_every_source_that_is_up_and_says_which_is_down(scenario, sources):
    """A DR drill: site A is lost with the catalog; the rebuild still finds site B's copy,
    whatever the order of its sources, and fails ELEMENT_DOWN saying what it rebuilt."""
    reports, runner, san = scenario(f"""\
        - {{op: write, host: hostA, mount: /db, offset: 0, size: 4MiB, seed: 1}}
        - {{op: backup, definition: db-mirror, as: b1}}
        - {{op: copy_volume, backup: b1, to: {{array: arrayB, volume: 1}}, as: c1}}
        - {{op: fault, kind: kill, target: arrayA}}
        - {{op: lose_catalog}}
        - {{op: rebuild_catalog, expect_error: ELEMENT_DOWN{sources}}}
        - {{op: expect_catalog, count: 1, rows: [{{device_id: HTC-B001, media_id: "1"}}]}}
        """, "two-sites.yaml")
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    rebuilt = reports[5]
    assert rebuilt.error.message == "rebuilt 1 row(s), but arrayA is down"
    assert rebuilt.result["added"] == 1


def test_a_copy_at_another_site_is_deleted_by_the_server_that_manages_its_array(scenario):
    """hostA may not manage arrayB, where its backup was copied; backup1 may, and deletes it
    (a DR review got UNAUTHORIZED: the deletion went through hostA, as Fig. 14 has it)."""
    reports, runner, san = scenario("""\
        - {op: write, host: hostA, mount: /db, offset: 0, size: 4MiB, seed: 1}
        - {op: backup, definition: db-mirror, as: b1}
        - {op: copy_volume, backup: b1, to: {array: arrayB, volume: 1}, as: c1}
        - {op: delete_backup, backup: c1}
        - {op: expect_catalog, count: 1, rows: [{device_id: HTC-A001}]}
        - {op: delete_backup, backup: b1}
        - {op: expect_catalog, count: 0}
        """, "two-sites.yaml")
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    assert san.call("arrayB", "mgmt_read_info", "backup1", 1) is None


# the post-processing fails once the array has accepted the order: fsck after resume sees
# the dirty bit an unflushed write left
POST_FAILS = """\
    - {op: write_files, host: host1, mount: /db, files: {a.db: {size: 2MiB, seed: 1}}, title: flushed below}
    - {op: checkpoint, as: v1, host: host1, mount: /db}
    - {op: backup, definition: db-nightly, as: b1}
    - {op: write_files, host: host1, mount: /db, files: {a.db: {size: 2MiB, seed: 2}}, title: not flushed}
    - {op: define, name: then-fsck, host: host1, mount_point: /db, type: disk, method: METHOD, destination: DEST, pre: [quiesce], post: [resume, fsck], label: x}
    - {op: backup, definition: then-fsck, expect_error: FSCK_FAILED}
"""


def test_a_mirror_whose_post_processing_fails_drops_the_row_of_the_backup_it_overwrites(scenario):
    """The array accepted the mirror: the old backup on the volume is being overwritten and
    its volume info is gone.  Its row must go too, or a restore by it brings back the new
    bytes (a review found `verify` of b1 failing: 'changed /a.db')."""
    reports, runner, san = scenario(POST_FAILS.replace("METHOD", "mirror").replace(
        "DEST", "{array: array1, volume: 1}") + """    - {op: expect_catalog, server: backup1, count: 0}
    - {op: verify, checkpoint: v1, backup: b1, expect_error: NO_SUCH_BACKUP}
    """)
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    assert san.call("array1", "mgmt_read_info", "backup1", 1) is None


def test_a_snapshot_whose_post_processing_fails_is_deleted(scenario):
    """Nothing would record it (no volume info, no row): it would hold its space for ever."""
    reports, runner, san = scenario(POST_FAILS.replace("METHOD", "snapshot").replace(
        "DEST", "{array: array1}") + """    - {op: expect_catalog, server: backup1, count: 1}
    """)
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    volumes = san.call("array1", "mgmt_volumes", "backup1")["volumes"]
    assert volumes == [v.number for v in load_topology(TOPOLOGIES / "two-arrays.yaml").arrays[0].volumes]


def test_copy_jobs_snapshots_and_deletes_through_the_management_interface(scenario):
    reports, runner, san = scenario("""\
        - {op: write, host: host2, mount: /data, offset: 0, size: 2MiB, seed: 1}
        """, "single-array.yaml")

    def manage(method, *args):     # the backup server's management calls to array1
        return san.call("array1", f"mgmt_{method}", "backup1", *args)

    assert manage("snapshot", "fc1", 0) == {"volume": 5}
    status = manage("mirror", "fc0", 0, 2)
    done = manage("wait", status["job"])
    polled = manage("job", status["job"])
    assert polled["state"] == done["state"] == "done" and polled["copied"] == done["copied"]
    manage("delete_backup", 5)
    assert manage("volumes")["volumes"] == [0, 1, 2, 3, 4]
    with pytest.raises(SanError) as info:
        manage("delete_snapshot", 5)
    assert info.value.code == "NO_SUCH_VOLUME"


def test_a_failed_restore_still_resumes_the_application(scenario):
    reports, runner, san = scenario("""\
        - {op: write_files, host: host1, mount: /db, files: {a.txt: {size: 100, seed: 1}}}
        - {op: backup, definition: db-nightly, as: b1}
        - {op: restore_files, backup: b1, files: [nope.txt], pre: [quiesce], post: [resume], expect_error: NO_SUCH_FILE}
        - {op: write_files, title: not stuck behind a closed gate, host: host1, mount: /db, files: {b.txt: {size: 10, seed: 2}}}
        - {op: restore_volume, backup: b1, to: {host: host1, mount: /db}, pre: [quiesce, unmount], post: [mount, resume]}
        - {op: write_files, host: host1, mount: /db, files: {c.txt: {size: 10, seed: 3}}}
        - {op: concurrent, steps: []}
        """)
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    assert san.call("array1", "report_luns", "host1/hba0", "fc0") == [0]   # detached again


def test_advance_clock_goes_on_after_a_failed_scheduled_backup(scenario):
    reports, runner, san = scenario("""\
        - {op: write, host: host1, mount: /db, offset: 0, size: 1MiB, seed: 1}
        - {op: define, name: broken, host: host1, mount_point: /db, type: disk, method: mirror, destination: {array: array1, volume: 3}, label: never works, schedule: daily 01:00}
        - {op: advance_clock, by: 1d, expect_error: NOT_A_COPY_DESTINATION}
        - {op: expect_catalog, server: backup1, count: 4}
        """, "single-array.yaml")
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    assert runner.ctx.clock.stamp() == "2026-01-02T00:00:00Z"
    assert "1 of 5 scheduled backups failed" in reports[2].error.message


def test_a_mirror_and_a_copy_volume_racing_onto_one_volume_leave_one_true_row(scenario):
    # whichever wins (or whether they overlap at all), the catalog must end with the one
    # backup the volume's own volume info names, and a refused step is BUSY
    reports, runner, san = scenario("""\
        - {op: write, host: host1, mount: /db, offset: 0, size: 8MiB, seed: 1}
        - {op: define, name: db-snap, host: host1, mount_point: /db, type: disk, method: snapshot, destination: {array: array1}, label: db snap}
        - {op: backup, definition: db-snap, as: s}
        - op: concurrent
          steps:
            - {op: backup, definition: db-mirror}
            - {op: copy_volume, backup: s, to: {array: array1, volume: 1}}
        """, "single-array.yaml")
    assert all(r.ok for r in reports[:3]), [(r.op, r.error) for r in reports]
    inner = reports[3].children
    refused = [r.error.code for r in inner if r.error]
    assert refused in ([], ["BUSY"]), [(r.op, r.error) for r in inner]
    info = VolumeInfo.decode(san.call("array1", "read_info", 1))
    rows = [r for r in san.call("backup1", "catalog_rows") if r["media_id"] == "1" and r["type"] == "disk"]
    assert [r["label"] for r in rows] == [info.label], (rows, info)


# -- two backup servers, one volume: a row whose backup the other server overwrote -------------
def _two_servers(tmp_path) -> str:
    """two-arrays.yaml with a second server, backup2, whose mirror of host1:/db goes onto the
    same volume as backup1's (array1 volume 1): each server's catalog knows only its own."""
    import yaml
    topology = yaml.safe_load((TOPOLOGIES / "two-arrays.yaml").read_text())
    topology["arrays"][0]["managers"].append("backup2")
    topology["backup_servers"].append({"name": "backup2", "definitions": [
        {"name": "db-other", "host": "host1", "mount_point": "/db", "type": "disk",
         "method": "mirror", "destination": {"array": "array1", "volume": 1},
         "pre": ["quiesce", "flush"], "post": ["resume"], "label": "backup2's image"}]})
    path = tmp_path / "two-servers.yaml"
    path.write_text(yaml.safe_dump(topology))
    return str(path)


OVERWRITTEN = """\
    - {op: write_files, host: host1, mount: /db, files: {a.db: {size: 1MiB, seed: 1}}}
    - {op: backup, definition: db-nightly, as: b1}
    - {op: write_files, host: host1, mount: /db, files: {a.db: {size: 1MiB, seed: 2}}}
    - {op: checkpoint, as: v2, host: host1, mount: /db}
    - {op: backup, definition: db-other, as: b2}
    - {op: write_files, host: host1, mount: /db, files: {a.db: {size: 1MiB, seed: 3}}}
    - {op: checkpoint, as: v3, host: host1, mount: /db}
"""


@pytest.mark.parametrize("order", [
    "{op: restore_volume, backup: b1}",
    "{op: restore_files, backup: b1, files: [a.db]}",
    "{op: copy_volume, backup: b1, to: {array: array1, volume: 2}}",
    "{op: copy_volume, backup: b1, to: {array: array2, volume: 0}}",
    "{op: copy_to_tape, backup: b1, media: T00001}",
])
def test_a_row_whose_volume_another_server_overwrote_is_no_backup(scenario, tmp_path, order):
    """backup1's row for b1 still names array1 volume 1, which backup2's mirror has since
    overwrote.  An order by that row must not carry backup2's bytes away as b1's: the array
    finds another volume info there and refuses, and the stale row goes."""
    steps = OVERWRITTEN + f"""\
    - {order[:-1]}, expect_error: NO_SUCH_BACKUP}}
    - {{op: expect_catalog, server: backup1, count: 0}}
    - {{op: verify, checkpoint: v3, host: host1, mount: /db, title: nothing was restored}}
    - {{op: expect_catalog, server: backup2, count: 1, rows: [{{label: "backup2's image", media_id: "1"}}]}}
    - {{op: restore_volume, backup: b2}}
    - {{op: verify, checkpoint: v2, host: host1, mount: /db, title: backup2's backup is whole}}
    """
    reports, runner, san = scenario(steps, _two_servers(tmp_path))
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    refused = reports[7].error
    assert "no longer on HTC-0001 volume 1" in refused.message
    assert "another backup's volume info" in refused.message
    assert "its catalog row on backup1 is deleted" in refused.message
    assert san.call("array2", "mgmt_read_info", "backup1", 0) is None     # nothing was copied
    assert san.call("array1", "mgmt_read_info", "backup1", 2) is None


def test_deleting_a_row_whose_volume_another_server_overwrote_leaves_that_backup(scenario, tmp_path):
    """delete_backup of b1 is done (the backup is gone), but backup2's volume info, which the
    volume holds now, is not deleted in its place."""
    reports, runner, san = scenario(OVERWRITTEN + """\
    - {op: delete_backup, backup: b1}
    - {op: expect_catalog, server: backup1, count: 0}
    - {op: restore_volume, backup: b2}
    - {op: verify, checkpoint: v2, host: host1, mount: /db}
    """, _two_servers(tmp_path))
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    assert "another backup's volume info" in reports[7].result["stale"]
    held = VolumeInfo.decode(san.call("array1", "mgmt_read_info", "backup2", 1))
    assert (held.label, held.host, held.mount_point) == ("backup2's image", "host1", "/db")


def test_an_order_by_a_row_whose_volume_info_was_deleted_is_no_backup(scenario):
    """The volume's record deleted behind the catalog's back (another server's delete_backup,
    or a mirror onto it that died before it recorded its own): no backup is there now."""
    reports, runner, san = scenario("""\
    - {op: write_files, host: host1, mount: /db, files: {a.db: {size: 1MiB, seed: 1}}}
    - {op: backup, definition: db-nightly, as: b1}
    """)
    assert reports[1].result["row"]["media_id"] == "1"
    san.call("array1", "mgmt_delete_info", "backup1", 1)
    with pytest.raises(SanError) as info:
        san.call("backup1", "restore_volume", ("HTC-0001", "1", None), None, None, [], [])
    assert info.value.code == "NO_SUCH_BACKUP"
    assert "holds no backup (no volume info) now" in info.value.message
    assert san.call("backup1", "catalog_rows") == []


@pytest.mark.parametrize("order", ["restore_volume", "delete_backup"])
def test_a_row_whose_snapshot_was_deleted_is_no_backup_and_goes(scenario, order):
    """The snapshot deleted behind this catalog's back (another server rebuilt its catalog
    from the array and deleted it): the row names a volume the array no longer has.  It is
    stale like any other, not a NO_SUCH_VOLUME that would keep it forever."""
    reports, runner, san = scenario("""\
    - {op: write, host: host2, mount: /data, offset: 0, size: 1MiB, seed: 1}
    - {op: backup, definition: data-snap, as: s1}
    """, "single-array.yaml")
    row = reports[1].result["row"]
    key = (row["device_id"], row["media_id"], None)
    san.call("array1", "mgmt_delete_snapshot", "backup1", int(key[1]))
    if order == "delete_backup":
        answer = san.call("backup1", "delete_backup", key)
        assert f"array1 has no volume {key[1]} now" in answer["stale"]
    else:
        with pytest.raises(SanError) as info:
            san.call("backup1", "restore_volume", key, None, None, [], [])
        assert info.value.code == "NO_SUCH_BACKUP"
        assert f"array1 has no volume {key[1]} now" in info.value.message
        assert "its catalog row on backup1 is deleted" in info.value.message
    assert san.call("backup1", "catalog_rows") == []


def test_a_record_with_bytes_in_its_reserved_tail_is_still_its_backup(scenario):
    """The reserved tail of a record is for later versions' extensions: a rebuild reads such
    a record, and an order by its row finds the backup there (identity is the rest)."""
    reports, runner, san = scenario("""\
    - {op: write_files, host: host1, mount: /db, files: {a.db: {size: 1MiB, seed: 1}}}
    - {op: backup, definition: db-nightly, as: b1}
    - {op: write_files, host: host1, mount: /db, files: {a.db: {size: 1MiB, seed: 2}}}
    """)
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    extended = bytearray(san.call("array1", "mgmt_read_info", "backup1", 1))
    extended[424:436] = b"extension v2"
    san.call("array1", "mgmt_record_info", "backup1", 1, bytes(extended))
    san.call("backup1", "lose_catalog")
    assert san.call("backup1", "rebuild_catalog", ["array1"])["skipped"] == []
    key = ("HTC-0001", "1", None)
    backup = san.call("array1", "digest_volume", 1)
    assert san.call("array1", "digest_volume", 0) != backup
    assert san.call("backup1", "restore_volume", key, None, None, [], [])["copied"] > 0
    assert san.call("array1", "digest_volume", 0) == backup     # /db is b1 again
    assert san.call("array1", "mgmt_read_info", "backup1", 1) == bytes(extended)


def test_a_record_with_bytes_after_a_texts_padding_is_skipped_by_a_rebuild(scenario):
    """Text fields are NUL-padded: a record with anything after a text's end is not one this
    layout wrote, and a rebuild lists it as skipped (naming the byte) rather than half-read it."""
    reports, runner, san = scenario("""\
    - {op: write_files, host: host1, mount: /db, files: {a.db: {size: 1MiB, seed: 1}}}
    - {op: backup, definition: db-nightly, as: b1}
    """)
    odd = bytearray(san.call("array1", "mgmt_read_info", "backup1", 1))
    odd[130] = ord("x")                        # the label's last byte, after its NULs
    san.call("array1", "mgmt_record_info", "backup1", 1, bytes(odd))
    san.call("backup1", "lose_catalog")
    answer = san.call("backup1", "rebuild_catalog", ["array1"])
    assert answer["added"] == 0
    assert [(s["volume"], s["reason"]) for s in answer["skipped"]] == [
        (1, "label 'orders DB, nightly consistent image' is followed by byte 130 = 0x78 in its "
            "NUL padding")]


@pytest.mark.parametrize("owner_alive", [True, False])
def test_a_volume_attached_for_a_live_flow_is_busy_for_another_servers_mirror(scenario, tmp_path,
                                                                             owner_alive):
    """A file restore or a copy to tape reads the backup it attached: another server's
    mirror onto that volume meanwhile would hand it half of another backup, so it is BUSY
    until the detach.  An attachment whose flow died (its server's session is gone) is
    dropped, and the mirror goes ahead."""
    reports, runner, san = scenario("""\
    - {op: write_files, host: host1, mount: /db, files: {a.db: {size: 1MiB, seed: 1}}}
    - {op: backup, definition: db-nightly, as: b1}
    """, _two_servers(tmp_path))
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    record = san.call("array1", "mgmt_read_info", "backup1", 1)
    session = san.call("backup1", "session") if owner_alive else "a session long gone"
    attached = san.call("host1", "client_attach", "HTC-0001", 1, ("backup1", session), record)
    if owner_alive:
        with pytest.raises(SanError) as info:
            san.call("backup2", "backup", "db-other", 1767225600)
        assert info.value.code == "BUSY"
        assert f"array1 volume 1 cannot be the destination of a mirror: it is attached at " \
               f"fc0 LUN {attached['lun']} for host1" in info.value.message
        assert san.call("array1", "mgmt_read_info", "backup1", 1) == record    # b1 untouched
        san.call("host1", "client_detach", attached["port"], attached["lun"])
    san.call("backup2", "backup", "db-other", 1767225600)
    held = VolumeInfo.decode(san.call("array1", "mgmt_read_info", "backup2", 1))
    assert held.label == "backup2's image"
