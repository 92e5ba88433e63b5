"""The tape flows of `tests/integration/test_tape_flows.py`, run on plain elements, without Ray.

Each test there builds its SAN with the `build_san` fixture; here that fixture builds a
`LocalSan` (`san.flows.local`), so the same flows, refusals and failure paths run in
process, on real state directories, and must give the same outcomes.
"""
from ..integration.test_tape_flows import *  # noqa: F401,F403 (the tests and their fixtures)
from .local_san import build_san  # noqa: F401 (the fixture: a LocalSan, not actors)

# -- here only: what needs the library's own objects (a medium's size, a patched call) ----------
import textwrap  # noqa: E402
import threading  # noqa: E402

import pytest  # noqa: E402

from san.catalog import row_key  # noqa: E402
from san.errors import SanError  # noqa: E402
from san.runner import Runner  # noqa: E402
from san.topology import load_scenario  # noqa: E402

from ..integration.conftest import TOPOLOGIES  # noqa: E402


def test_a_file_before_a_damaged_spot_stays_restorable(scenario):
    """A rebuild gives the files before a damaged spot their rows back; a restore by such a
    row must read them (the medium keeps them readable), and a file past the damage is the
    damage's MEDIA_ERROR."""
    reports, runner, san = scenario("""\
        - {op: write, host: host2, mount: /data, offset: 0, size: 2MiB, seed: 1}
        - {op: backup, definition: data-tape, as: f1}
        """)
    assert not ok(reports)
    first_ends = san.element("lib1").medium("T00001").used_bytes()
    san.call("backup1", "backup", "data-tape", 1767225600)          # file 2
    san.call("lib1", "corrupt", "T00001", first_ends + 200, 1)     # inside file 2's labels
    san.call("backup1", "lose_catalog")
    with pytest.raises(SanError) as info:
        san.call("backup1", "rebuild_catalog", ["lib1"])
    assert info.value.code == "MEDIA_ERROR"
    rows = san.call("backup1", "catalog_rows")
    assert [(r["media_id"], r["file"]) for r in rows] == [("T00001", "1")]
    assert san.call("backup1", "restore_volume", row_key(rows[0]), None, None, [], [])["copied"] > 0
    with pytest.raises(SanError) as info:
        san.call("lib1", "image_size", "T00001", 2)
    assert info.value.code == "MEDIA_ERROR" and "medium T00001" in info.value.message


@pytest.mark.parametrize("flow", ["backup", "copy_to_tape"])
def test_a_rebuild_between_a_tape_files_commit_and_its_row_leaves_one_row(scenario, monkeypatch, flow):
    """A catalog rebuild that reads the medium after the new file is committed, before the
    flow adds its row, finds that file too: the flow's row replaces it, as a disk backup's
    does, and the catalog holds one row per tape file."""
    reports, runner, san = scenario("""\
        - {op: write, host: host2, mount: /data, offset: 0, size: 1MiB, seed: 1}
        - {op: backup, definition: data-snap, as: s}
        """)
    assert not ok(reports)
    library = san.element("lib1")
    write_from_host = library.write_from_host
    rebuilt = []

    def rebuild_right_after(*args):
        answer = write_from_host(*args)     # the file is committed on the medium here
        worker = threading.Thread(target=lambda: rebuilt.append(
            san.call("backup1", "rebuild_catalog", ["lib1"])["added"]))
        worker.start()                      # another caller, while this flow still runs
        worker.join()
        return answer

    monkeypatch.setattr(library, "write_from_host", rebuild_right_after)
    if flow == "backup":
        san.call("backup1", "backup", "data-tape", 1767225600)
    else:
        snap = next(r for r in san.call("backup1", "catalog_rows") if r["type"] == "disk")
        san.call("backup1", "copy_to_tape", row_key(snap), "T00002", [], [])
    assert rebuilt == [1]
    tape_rows = [row_key(r) for r in san.call("backup1", "catalog_rows") if r["type"] == "tape"]
    assert len(tape_rows) == len(set(tape_rows)) == 1, tape_rows


def test_a_tape_file_whose_server_died_while_it_was_read_is_not_committed(scenario, monkeypatch):
    """The host drops a dead server's quiesce (and its attachments), so the application may
    write while the library still reads: the image may be torn.  The library asks, after the
    last read and before the commit, whether the ordering flow still runs; it does not, so
    the medium is left as it was and a rebuild finds no backup there."""
    reports, runner, san = scenario("""\
        - {op: define, name: db-tape, host: host1, mount_point: /db, type: tape, destination: {media: T00002}, pre: [quiesce], post: [resume], label: db to tape}
        - {op: write, host: host1, mount: /db, offset: 0, size: 12MiB, seed: 1}
        """)
    assert not ok(reports)
    library = san.element("lib1")
    read_stream = library._read_stream

    def server_dies_midway(*args):
        for taken, data in enumerate(read_stream(*args)):
            if taken == 1:
                san.kill("backup1")         # the server dies while its image is read
            yield data

    monkeypatch.setattr(library, "_read_stream", server_dies_midway)
    with pytest.raises(SanError) as info:
        san.call("backup1", "backup", "db-tape", 1767225600)
    assert info.value.code == "ELEMENT_DOWN"
    assert "backup1, which ordered this copy onto T00002, is down or restarted since" in info.value.message
    monkeypatch.undo()
    san.restart("backup1")
    assert library.medium("T00002").files() == []
    assert san.call("backup1", "rebuild_catalog", ["lib1"])["added"] == 0
    assert san.call("backup1", "backup", "db-tape", 1767225600)["row"]["file"] == "1"


@pytest.mark.parametrize("op", ["backup", "copy_to_tape"])
def test_a_tape_copy_whose_post_processing_fails_is_made_and_catalogued(build_san, tmp_path,
                                                                        monkeypatch, op):
    """The file is committed and labelled (a tape cannot take it back), so it is a backup: a
    rebuild would find it.  It gets its row before the post-processing; the step fails with
    the post's error, saying the backup stands, and its ``as:`` name works (before, the row
    was missing until a rebuild added it)."""
    step = ("{op: backup, definition: data-tape-post, as: t1, expect_error: FSCK_FAILED}"
            if op == "backup" else
            "{op: copy_to_tape, backup: snap, media: T00001, post: [resume], as: t1, "
            "expect_error: FSCK_FAILED}")
    path = tmp_path / "s.yaml"
    path.write_text(f"name: t\ntopology: {TOPOLOGIES / 'single-array.yaml'}\nsteps:\n" + textwrap.indent(
        textwrap.dedent("""\
        - {op: write, host: host2, mount: /data, offset: 0, size: 2MiB, seed: 1}
        - {op: checkpoint, as: c1, host: host2, mount: /data}
        - {op: backup, definition: data-snap, as: snap}
        - {op: define, name: data-tape-post, host: host2, mount_point: /data, type: tape, destination: {media: T00001}, post: [resume], label: post fails}
        """) + "- " + step + "\n" + textwrap.dedent("""\
        - {op: expect_catalog, count: 2}
        - {op: verify, checkpoint: c1, backup: t1}
        """), "  "))
    scenario = load_scenario(path)
    san = build_san(scenario.topology, tmp_path / "state")
    runner = Runner(san, tmp_path / "state")
    assert ok(runner.run(scenario.steps[:4])) == []
    host = san.element("host2")
    real = host.actions

    def actions(mount_point, names, owner=None):
        if list(names) == ["resume"]:
            raise SanError("FSCK_FAILED", "the application did not come back")
        return real(mount_point, names, owner)

    monkeypatch.setattr(host, "actions", actions)
    reports = runner.run(scenario.steps[4:])
    assert ok(reports) == [], ok(reports)
    failed = reports[0]
    assert "is on T00001 file 1 and in the catalog, but its" in failed.error.message
    assert failed.result["row"]["media_id"] == "T00001" and failed.bytes > 0
    san.call("backup1", "lose_catalog")
    san.call("backup1", "rebuild_catalog", None)
    assert len(san.call("backup1", "catalog_rows")) == 2        # the same two rows
