"""The tape library end to end: every kind of tape copy, mtdump, rebuild, full and damaged media."""
import re
import shutil
import subprocess
import textwrap

import pytest

from san.runner import Runner
from san.topology import load_scenario

from .conftest import TOPOLOGIES


@pytest.fixture
def scenario(build_san, tmp_path):
    def run(steps: str, capacity: str = "4GiB"):
        topo = (TOPOLOGIES / "single-array.yaml").read_text().replace(
            "media_capacity: 4GiB", f"media_capacity: {capacity}")
        (tmp_path / "topo.yaml").write_text(topo)
        path = tmp_path / "s.yaml"
        path.write_text("name: t\ntopology: topo.yaml\nsteps:\n"
                        + textwrap.indent(TAPE_DEF + textwrap.dedent(steps), "  "))
        loaded = load_scenario(path)
        san = build_san(loaded.topology, tmp_path / "state")
        runner = Runner(san, tmp_path / "state")
        return runner.run(loaded.steps), runner, san
    return run


TAPE_DEF = ("- {op: define, name: data-tape, host: host2, mount_point: /data, type: tape, "
            "destination: {media: T00001}, label: host2 to tape}\n")


def ok(reports):
    return [(r.index, r.op, r.error) for r in reports if not r.ok]


def test_every_kind_of_tape_copy_round_trips(scenario):
    reports, runner, san = scenario("""\
        - {op: write, host: host2, mount: /data, offset: 0, size: 12MiB, seed: 1}
        - {op: write, host: host2, mount: /data, offset: 200MiB, size: 1MiB, seed: 2}
        - {op: checkpoint, as: data1, host: host2, mount: /data}
        - {op: backup, definition: data-tape, as: t-backup}
        - {op: backup, definition: data-snap, as: snap}
        - {op: write, host: host1, mount: /db, offset: 0, size: 5MiB, seed: 3}
        - {op: checkpoint, as: db1, host: host1, mount: /db}
        - {op: backup, definition: db-mirror, as: mirror}
        - {op: copy_to_tape, backup: mirror, media: T00002, as: t-copy}
        - {op: migrate, backup: snap, media: T00002, as: t-migrated}
        - {op: write, host: host2, mount: /data, offset: 0, size: 64MiB, seed: 4}
        - {op: write, host: host1, mount: /db, offset: 0, size: 64MiB, seed: 5}
        - {op: verify, checkpoint: data1, backup: t-backup}
        - {op: verify, checkpoint: db1, backup: t-copy}
        - {op: verify, checkpoint: data1, backup: t-migrated}
        - {op: restore_volume, backup: t-backup}
        - {op: verify, checkpoint: data1, host: host2, mount: /data}
        - {op: restore_volume, backup: t-copy}
        - {op: verify, checkpoint: db1, host: host1, mount: /db}
        - {op: write, host: host2, mount: /data, offset: 0, size: 64MiB, seed: 6}
        - {op: restore_volume, backup: t-migrated}
        - {op: verify, checkpoint: data1, host: host2, mount: /data}
        - {op: checkpoint, as: x, backup: snap, expect_error: NO_SUCH_BACKUP}
        """)
    assert not ok(reports)
    rows = runner.catalogs()["backup1"]
    tape = sorted((r["media_id"], r["file"], r["label"]) for r in rows if r["type"] == "tape")
    assert tape == [("T00001", "1", "host2 to tape"), ("T00002", "1", "host1 /db, mirror"),
                    ("T00002", "2", "host2 /data, snapshot every 6 hours")]
    # tape work is charged on the drive and limited by the slowest link (the 1GbE LAN)
    backup = reports[4]
    assert backup.modeled_s == pytest.approx(backup.bytes / 125e6 + 100e-6, rel=0.01)


def test_mtdump_lists_every_record(scenario, tmp_path):
    if shutil.which("mtdump") is None:
        pytest.fail("mtdump (Debian package simh) is not installed: run scripts/test.sh as root")
    reports, runner, san = scenario("""\
        - {op: write, host: host2, mount: /data, offset: 0, size: 300KiB, seed: 1}
        - {op: backup, definition: data-tape, as: a}
        - {op: backup, definition: data-tape, as: b}
        """)
    assert not ok(reports)
    image = tmp_path / "state" / "tapes" / "lib1" / "T00001.tap"
    out = subprocess.run(["mtdump", str(image)], capture_output=True, text=True).stdout
    objects = re.findall(r"Obj (\d+), position (\d+), (?:record \d+, length = (\d+)|(end of tape file \d+)|(end of logical tape))", out)
    raw = image.read_bytes()
    kinds = []
    for _, pos, length, mark, end in objects:
        if length:
            body = raw[int(pos) + 4:int(pos) + 4 + int(length)]
            kinds.append(body[:4].decode() if int(length) == 80 else f"data{length}")
        else:
            kinds.append("TM" if mark else "END")
    # per file: HDR1 HDR2 UHL.. TM data.. TM EOF1 EOF2 UTL.. TM; no data section is empty
    text = " ".join(kinds)
    # the volume image: a 512-byte header, then the written granules (thin), in 64 KiB blocks
    stored = sum(length for _, length in san.call("array1", "extents", 3))
    full, rest = divmod(512 + stored, 65536)
    data = " ".join(["data65536"] * full + ([f"data{rest}"] if rest else []))
    assert text.startswith("VOL1 UVL1 HDR1 HDR2 UHL")
    assert text.count(f"TM {data} TM EOF1 EOF2") == 2
    assert text.endswith("TM END") and text.count("HDR1") == 2


def test_rebuild_from_tapes_equals_the_lost_catalog(scenario):
    reports, runner, san = scenario("""\
        - {op: write, host: host2, mount: /data, offset: 0, size: 2MiB, seed: 1}
        - {op: backup, definition: data-tape}
        - {op: backup, definition: data-snap, as: s}
        - {op: copy_to_tape, backup: s, media: T00002, as: c}
        - {op: advance_clock, by: 1h}
        - {op: migrate, backup: s, media: T00003, as: m}
        - {op: write, host: host1, mount: /db, offset: 0, size: 1MiB, seed: 2}
        - {op: backup, definition: db-mirror, as: d}
        - {op: copy_to_tape, backup: d, media: T00002, as: dt}
        """)
    assert not ok(reports)
    before = runner.catalogs()["backup1"]
    assert sorted(r["type"] for r in before) == ["disk", "tape", "tape", "tape", "tape"]
    san.call("backup1", "lose_catalog")
    answer = san.call("backup1", "rebuild_catalog", None)   # its arrays and its library
    assert answer["added"] == 5
    key = lambda r: sorted(r.items())
    assert sorted(runner.catalogs()["backup1"], key=key) == sorted(before, key=key)


def test_tape_full_leaves_no_row_and_earlier_backups_intact(scenario):
    reports, runner, san = scenario("""\
        - {op: write, host: host2, mount: /data, offset: 0, size: 2MiB, seed: 1}
        - {op: checkpoint, as: small, host: host2, mount: /data}
        - {op: backup, definition: data-tape, as: first}
        - {op: write, host: host2, mount: /data, offset: 0, size: 12MiB, seed: 2}
        - {op: backup, definition: data-tape, as: second, expect_error: TAPE_FULL}
        - {op: expect_catalog, server: backup1, count: 1, rows: [{media_id: T00001, file: "1"}]}
        - {op: restore_volume, backup: first}
        - {op: verify, checkpoint: small, host: host2, mount: /data}
        - {op: backup, title: the space the failed backup took is free again, definition: data-tape, as: third}
        - {op: expect_catalog, server: backup1, count: 2, rows: [{file: "1"}, {file: "2"}]}
        - {op: copy_to_tape, backup: first, media: T00009, as: x, expect_error: INVALID_INPUT}
        """, capacity="8MiB")
    assert not ok(reports)
    assert "needs" in reports[5].error.message and "T00001" in reports[5].error.message
    image = san.call("lib1", "medium", "T00001")
    assert image.used_bytes() <= 8 << 20 and [f["file"] for f in image.files()] == [1, 2]


def test_a_damaged_medium_is_media_error_and_the_others_still_rebuild(scenario):
    reports, runner, san = scenario("""\
        - {op: write, host: host2, mount: /data, offset: 0, size: 1MiB, seed: 1}
        - {op: backup, definition: data-tape, as: a}
        - {op: backup, definition: data-snap, as: s}
        - {op: copy_to_tape, backup: s, media: T00002, as: c}
        - {op: fault, title: a label rots, kind: corrupt, target: lib1, media: T00001, offset: 512}
        - {op: lose_catalog, server: backup1}
        - {op: rebuild_catalog, server: backup1, from: [lib1], expect_error: MEDIA_ERROR}
        - {op: expect_catalog, server: backup1, count: 1, rows: [{media_id: T00002, file: "1"}]}
        - {op: fault, title: a data block rots, kind: corrupt, target: lib1, media: T00002, offset: 1024}
        - {op: restore_volume, backup: c, expect_error: MEDIA_ERROR}
        - {op: checkpoint, as: x, backup: c, expect_error: MEDIA_ERROR}
        - {op: fault, kind: corrupt, target: lib1, media: T00003, offset: 0, expect_error: LBA_OUT_OF_RANGE}
        """)
    assert not ok(reports)
    assert reports[5].result == {"kind": "corrupt", "target": "lib1", "media": "T00001",
                                 "offset": 512, "flipped_bytes": 1}
    # the failed rebuild still says what it added
    assert reports[7].result == {"added": 1, "dropped": 0, "skipped": []}
    for index, medium in ((7, "T00001"), (10, "T00002")):
        message = reports[index].error.message
        assert f"medium {medium}" in message and "record" in message, message


def test_a_migrate_from_a_rotten_backup_fails_and_keeps_the_disk_backup(scenario):
    reports, runner, san = scenario("""\
        - {op: write, host: host1, mount: /db, offset: 0, size: 8MiB, seed: 1}
        - {op: backup, definition: db-mirror, as: mirror}
        - {op: fault, kind: corrupt, target: array1, volume: 1, offset: 5MiB}
        - {op: migrate, backup: mirror, media: T00002, as: t, expect_error: CHECKSUM_MISMATCH}
        - {op: copy_to_tape, backup: mirror, media: T00002, as: t2, expect_error: CHECKSUM_MISMATCH}
        """)
    assert not ok(reports)
    migrate = reports[-2]
    assert "array1 volume 1: bytes 5242880..5505023" in migrate.error.message
    rows = runner.catalogs()["backup1"]
    assert [(r["type"], r["media_id"]) for r in rows] == [("disk", "1")]   # no tape row, disk kept
