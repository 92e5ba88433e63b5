"""Scenario files: the step models, and every problem a bad scenario has, located."""
from __future__ import annotations

from pathlib import Path

import pytest

from san.errors import ValidationFailed
from san.topology import OPS, Scenario, Topology, load_scenario, validate_files
from san.topology.steps import WriteStep

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"

TOPO = """\
name: topo
fabric:
  switches: [{name: fcsw1}]
  isls: []
  zones: [{name: z1, members: [host1/hba0, array1/fc0]}]
arrays:
  - name: array1
    device_id: DEV-1
    managers: [backup1]
    ports: [{name: fc0, number: 0, wwpn: "50:06:0e:80:00:00:00:01", switch: fcsw1}]
    volumes:
      - {number: 0, size: 1GiB, port: fc0, lun: 0, hosts: [host1], copy_destinations: [1]}
      - {number: 1, size: 1GiB}
  - name: array2
    device_id: DEV-2
    ports: [{name: fc0, number: 0, wwpn: "50:06:0e:80:00:00:00:02", switch: fcsw1}]
    volumes: [{number: 0, size: 1GiB}]
hosts:
  - name: host1
    hbas: [{name: hba0, wwpn: "21:00:00:e0:8b:00:00:01", switch: fcsw1}]
    mounts: [{mount_point: /db, port: array1/fc0, lun: 0}]
backup_servers:
  - name: backup1
    tape_library: lib1
    definitions:
      - {name: d1, host: host1, mount_point: /db, type: disk, destination: {array: array1, volume: 1}, label: nightly}
tape_libraries:
  - {name: lib1, media: [T00001]}
"""

HEAD = "name: s\ntopology: topo.yaml\nsteps:\n"       # steps[0] is on line 4


def scenario_problems(tmp_path, monkeypatch, steps: str, head: str = HEAD,
                      topo: str = TOPO) -> list[str]:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "topo.yaml").write_text(topo)
    (tmp_path / "bad.yaml").write_text(head + steps)
    return [str(p) for p in validate_files(["bad.yaml"])]


def assert_reported(lines, expected):
    for fragment in expected:
        assert any(fragment in line for line in lines), \
            f"{fragment!r} not in:\n" + "\n".join(lines)


# ------------------------------------------------------------------------------ good files

def test_contract_quickstart_loads():
    s = load_scenario(DATA / "good-scenario.yaml")
    assert isinstance(s, Scenario) and isinstance(s.topology, Topology)
    assert s.name == "quickstart" and s.topology.name == "two-arrays"
    assert s.source.endswith("good-scenario.yaml")
    assert [st.op for st in s.steps] == ["write_files", "checkpoint", "backup", "write_files",
                                         "restore_volume", "verify", "write"]
    wf, cp, bk, _, rv, vf, wr = s.steps
    assert wf.files["orders.db"].size == 200 * 2**20 and wf.files["orders.db"].seed == 1
    assert cp.as_ == "before" and (cp.host, cp.mount) == ("host1", "/db")
    assert bk.definition == "db-nightly" and bk.as_ == "b1"
    assert rv.to is None and rv.pre == [] and rv.post == []
    assert vf.checkpoint == "before"
    assert (wr.offset, wr.size, wr.seed, wr.expect_error) == (2 * 2**30, 2**20, 3,
                                                              "LBA_OUT_OF_RANGE")
    assert isinstance(wr, WriteStep)


def test_every_op_with_inline_topology():
    s = load_scenario(DATA / "good-inline.yaml")
    assert s.topology.name == "inline" and s.topology.source.endswith("good-inline.yaml")
    ops = {st.op for st in s.steps}
    ops |= {inner.op for st in s.steps if st.op == "concurrent" for inner in st.steps}
    assert ops == set(OPS)
    by_op = {}
    for st in s.steps:
        by_op.setdefault(st.op, []).append(st)
    assert by_op["lose_catalog"][0].server == "backup1"           # the only server
    assert by_op["rebuild_catalog"][0].from_ == ["array1", "lib1"]
    assert by_op["rebuild_catalog"][1].from_ is None
    assert by_op["expect_catalog"][0].rows == [
        {"type": "tape", "media_id": "T00001", "file": "1"}, {"file": None}]
    assert by_op["advance_clock"][0].by == 86400.0
    snap, tape = by_op["define"]
    assert snap.method == "snapshot" and snap.schedule.kind == "weekly"
    assert tape.method is None and tape.definition.destination.media == "T00002"
    assert snap.definition.name == "db-snap"
    corrupt = [f for f in by_op["fault"] if f.kind == "corrupt"]
    assert (corrupt[0].volume, corrupt[0].offset) == (0, 4096)
    assert corrupt[1].media == "T00001"
    conc = by_op["concurrent"][0]
    assert conc.title == "together"
    assert [i.op for i in conc.steps] == ["backup", "fault", "concurrent"]
    assert conc.steps[1].when.step == "big backup" and conc.steps[1].when.after == 64 * 2**20
    assert conc.steps[2].steps[0].by == 30.0
    assert by_op["copy_volume"][0].to.array == "array2"
    assert by_op["restore_volume"][0].to.host == "host1"
    assert by_op["restore_volume"][0].post == ["fsck", "mount"]
    assert s.topology.arrays[0].device_id == "0001"


def test_scenario_detected_by_steps_key(tmp_path, monkeypatch):
    lines = scenario_problems(tmp_path, monkeypatch, "  - {op: lose_catalog}\n")
    assert lines == []
    s = load_scenario(tmp_path / "bad.yaml")
    assert s.topology.source == str(tmp_path / "topo.yaml")


@pytest.mark.parametrize("head, expected", [
    # a typo in `steps`: still a scenario (it has `topology`), its own problems named
    ("name: s\ntopology: topo.yaml\nstep:\n", ["bad.yaml:1:1: steps: missing required key",
                                              "bad.yaml:3:1: step: unknown key, did you mean 'steps'? (got 'step'; "
                                              "expected one of name, topology, steps)"]),
    # a typo in `topology`: still a scenario (it has `steps`)
    ("name: s\ntopolgy: topo.yaml\nsteps:\n", ["bad.yaml:1:1: topology: missing required key",
                                              "bad.yaml:2:1: topolgy: unknown key, did you mean 'topology'?"]),
])
def test_a_scenario_with_one_of_its_keys_misspelt_is_still_judged_a_scenario(tmp_path, monkeypatch,
                                                                             head, expected):
    lines = scenario_problems(tmp_path, monkeypatch, "  - {op: lose_catalog}\n", head=head)
    assert_reported(lines, expected)
    assert not any("topology: unknown key" in line for line in lines), lines


def test_earlier_define_is_usable(tmp_path, monkeypatch):
    steps = ("  - {op: define, name: d2, host: host1, mount_point: /db, type: disk, "
             "destination: {array: array1, volume: 1}, label: x}\n"
             "  - {op: backup, definition: d2, as: b}\n"
             "  - {op: delete_backup, backup: b}\n")
    assert scenario_problems(tmp_path, monkeypatch, steps) == []


def test_a_step_expecting_no_such_mount_may_name_a_mount_its_host_lacks(tmp_path, monkeypatch):
    # a drill shows the refusal on purpose (the bad cases: a typo, or another error expected)
    steps = ("  - {op: write, host: host1, mount: /dbx, offset: 0, size: 1MiB, seed: 1, "
             "expect_error: NO_SUCH_MOUNT}\n"
             "  - {op: restore_volume, backup: b, to: {host: host1, mount: /x}, "
             "expect_error: NO_SUCH_MOUNT}\n"
             "  - {op: define, name: d2, host: host1, mount_point: /y, type: disk, "
             "destination: {array: array1, volume: 1}, label: x, expect_error: NO_SUCH_MOUNT}\n")
    lines = scenario_problems(tmp_path, monkeypatch, steps)
    assert [line for line in lines if "mount" in line] == []


def test_snapshot_volumes_may_be_named(tmp_path, monkeypatch):
    # a snapshot definition on array1 makes new volume numbers; they are checked at run time
    steps = ("  - {op: define, name: snap, host: host1, mount_point: /db, type: disk, "
             "method: snapshot, destination: {array: array1}, label: x}\n"
             "  - {op: backup, definition: snap, as: s1}\n"
             "  - {op: checkpoint, as: c, array: array1, volume: 2}\n"
             "  - {op: checkpoint, as: c2, array: array2, volume: 2}\n")
    lines = scenario_problems(tmp_path, monkeypatch, steps)
    assert lines == ["bad.yaml:7:53: steps[3].volume: unknown volume of array2 (got '2'; "
                     "expected one of 0)"]


def test_names_made_inside_concurrent_are_usable_after_it(tmp_path, monkeypatch):
    steps = ("  - op: concurrent\n"
             "    steps:\n"
             "      - {op: backup, definition: d1, as: b1}\n"
             "      - {op: checkpoint, as: c1, host: host1, mount: /db}\n"
             "  - {op: verify, checkpoint: c1, backup: b1}\n")
    assert scenario_problems(tmp_path, monkeypatch, steps) == []


# ------------------------------------------------------------------------------ bad steps

BAD_STEPS = [
    ("unknown-op", "  - {op: frobnicate}\n",
     ["bad.yaml:4:10: steps[0].op: unknown op (got 'frobnicate'; expected one of write, "
      "write_files, remove_files, checkpoint"]),
    ("missing-op", "  - {host: host1}\n",
     ["bad.yaml:4:5: steps[0].op: missing required key (expected one of write, write_files"]),
    ("op-not-a-string", "  - {op: [write]}\n", ["steps[0].op: unknown op (got a list"]),
    ("step-not-a-mapping", "  - write\n",
     ["bad.yaml:4:5: steps[0]: wrong type (got 'write'; expected a mapping"]),
    ("write-offset-not-multiple",
     "  - {op: write, host: host1, mount: /db, offset: 100, size: 1MiB, seed: 1}\n",
     ["bad.yaml:4:50: steps[0].offset: offset not a multiple of 512 (got '100'"]),
    ("write-offset-negative",
     "  - {op: write, host: host1, mount: /db, offset: -512, size: 1MiB, seed: 1}\n",
     ["steps[0].offset: offset out of range (got '-512'; expected at least 0 bytes"]),
    ("write-size-unit",
     "  - {op: write, host: host1, mount: /db, offset: 0, size: 1 parsec, seed: 1}\n",
     ["steps[0].size: invalid size (got '1 parsec'; expected a size: bytes"]),
    ("write-size-zero",
     "  - {op: write, host: host1, mount: /db, offset: 0, size: 0, seed: 1}\n",
     ["steps[0].size: size out of range (got '0'; expected more than 0 bytes and at most 1 PiB)"]),
    ("write-seed-past-64-bits",
     "  - {op: write, host: host1, mount: /db, offset: 0, size: 1MiB, seed: 18446744073709551616}\n",
     ["steps[0].seed: out of range (got '18446744073709551616'; expected a seed (a whole number "
      "below 2**64) from 0 to 18446744073709551615)"]),
    ("write-missing-seed",
     "  - {op: write, host: host1, mount: /db, offset: 0, size: 1MiB}\n",
     ["bad.yaml:4:5: steps[0].seed: missing required key (expected a 'seed' key in this mapping)"]),
    ("write-unknown-key",
     "  - {op: write, host: host1, mount: /db, offset: 0, size: 1MiB, seed: 1, speed: fast}\n",
     ["steps[0].speed: unknown key (got 'speed'; expected one of op, title, expect_error, as, "
      "host, mount, offset, size, seed)"]),
    ("write-unknown-host",
     "  - {op: write, host: host7, mount: /db, offset: 0, size: 1MiB, seed: 1}\n",
     ["bad.yaml:4:23: steps[0].host: unknown host (got 'host7'; expected one of host1)"]),
    ("write-unknown-mount",
     "  - {op: write, host: host1, mount: /dbx, offset: 0, size: 1MiB, seed: 1}\n",
     ["bad.yaml:4:37: steps[0].mount: unknown mount point of host1 (got '/dbx'; expected one "
      "of /db)"]),
    ("unknown-mount-expecting-another-error",
     "  - {op: write, host: host1, mount: /dbx, offset: 0, size: 1MiB, seed: 1, "
     "expect_error: NO_SUCH_VOLUME}\n",
     ["steps[0].mount: unknown mount point of host1 (got '/dbx'; expected one of /db)"]),
    ("define-unknown-mount",
     "  - {op: define, name: d2, host: host1, mount_point: /dbx, type: disk, "
     "destination: {array: array1, volume: 1}, label: x}\n",
     ["steps[0].mount_point: unknown mount point of host1 (got '/dbx'; expected one of /db)"]),
    ("restore-onto-unknown-mount",
     "  - {op: restore_volume, backup: b, to: {host: host1, mount: /dbx}}\n",
     ["steps[0].to.mount: unknown mount point of host1 (got '/dbx'; expected one of /db)"]),
    ("write-files-negative",
     "  - {op: write_files, host: host1, mount: /db, files: {a: {size: -1, seed: 1}}}\n",
     ["steps[0].files.a.size: size out of range (got '-1'"]),
    ("write-files-bad-spec",
     "  - {op: write_files, host: host1, mount: /db, files: {a: 5}}\n",
     ["steps[0].files.a: wrong type (got '5'; expected a mapping)"]),
    ("remove-files-not-list",
     "  - {op: remove_files, host: host1, mount: /db, files: a}\n",
     ["steps[0].files: wrong type (got 'a'; expected a list)"]),
    ("checkpoint-without-as",
     "  - {op: checkpoint, host: host1, mount: /db}\n",
     ["bad.yaml:4:5: steps[0].as: missing required key (expected an 'as' key in this mapping)"]),
    ("checkpoint-no-target",
     "  - {op: checkpoint, as: c}\n",
     ["bad.yaml:4:5: steps[0]: no target (expected exactly one of host+mount, array+volume or "
      "backup)"]),
    ("checkpoint-two-targets",
     "  - {op: backup, definition: d1, as: b}\n"
     "  - {op: checkpoint, as: c, host: host1, mount: /db, backup: b}\n",
     ["bad.yaml:5:5: steps[1]: more than one target (got 'host+mount and backup'"]),
    ("checkpoint-half-target",
     "  - {op: checkpoint, as: c, array: array1}\n",
     ["steps[0].volume: missing required key (expected a 'volume' key with array)"]),
    ("checkpoint-unknown-array",
     "  - {op: checkpoint, as: c, array: array9, volume: 0}\n",
     ["steps[0].array: unknown array (got 'array9'; expected one of array1, array2)"]),
    ("checkpoint-unknown-volume",
     "  - {op: checkpoint, as: c, array: array1, volume: 5}\n",
     ["steps[0].volume: unknown volume of array1 (got '5'; expected one of 0, 1)"]),
    ("verify-unknown-checkpoint",
     "  - {op: verify, checkpoint: c9, host: host1, mount: /db}\n"
     "  - {op: checkpoint, as: c9, host: host1, mount: /db}\n",
     ["bad.yaml:4:30: steps[0].checkpoint: unknown checkpoint (got 'c9'; expected the 'as' name "
      "of an earlier checkpoint step (there is none before this step))"]),
    ("backup-unknown-definition",
     "  - {op: backup, definition: nightly}\n",
     ["steps[0].definition: unknown definition (got 'nightly'; expected a definition of the "
      "topology or of an earlier define step: one of d1)"]),
    ("backup-defined-later",
     "  - {op: backup, definition: d2}\n"
     "  - {op: define, name: d2, host: host1, mount_point: /db, type: disk, "
     "destination: {array: array1, volume: 1}, label: x}\n",
     ["steps[0].definition: unknown definition (got 'd2'"]),
    ("restore-unknown-backup",
     "  - {op: restore_volume, backup: b1}\n",
     ["steps[0].backup: unknown backup (got 'b1'; expected the 'as' name of an earlier backup "
      "step"]),
    ("restore-bad-action",
     "  - {op: backup, definition: d1, as: b1}\n"
     "  - {op: restore_volume, backup: b1, pre: [reboot]}\n",
     ["steps[1].pre[0]: unknown action (got 'reboot'; expected one of quiesce, resume, flush, "
      "unmount, mount, fsck, repair)"]),
    ("restore-to-unknown-host",
     "  - {op: backup, definition: d1, as: b1}\n"
     "  - {op: restore_volume, backup: b1, to: {host: host5, mount: /db}}\n",
     ["steps[1].to.host: unknown host (got 'host5'"]),
    ("restore-to-missing-mount",
     "  - {op: backup, definition: d1, as: b1}\n"
     "  - {op: restore_volume, backup: b1, to: {host: host1}}\n",
     ["steps[1].to.mount: missing required key"]),
    ("restore-files-missing-files",
     "  - {op: backup, definition: d1, as: b1}\n"
     "  - {op: restore_files, backup: b1}\n",
     ["steps[1].files: missing required key"]),
    ("copy-volume-unknown-target",
     "  - {op: backup, definition: d1, as: b1}\n"
     "  - {op: copy_volume, backup: b1, to: {array: array3, volume: 0}}\n"
     "  - {op: copy_volume, backup: b1, to: {array: array2, volume: 3}}\n",
     ["steps[1].to.array: unknown array (got 'array3'",
      "steps[2].to.volume: unknown volume of array2 (got '3'; expected one of 0)"]),
    ("copy-volume-missing-to",
     "  - {op: backup, definition: d1, as: b1}\n"
     "  - {op: copy_volume, backup: b1}\n",
     ["steps[1].to: missing required key"]),
    ("copy-to-tape-missing-media",
     "  - {op: backup, definition: d1, as: b1}\n"
     "  - {op: copy_to_tape, backup: b1}\n"
     "  - {op: migrate, backup: b1}\n",
     ["steps[1].media: missing required key", "steps[2].media: missing required key"]),
    ("define-problems",
     "  - {op: define, server: backup7, name: d1, host: host9, mount_point: db, type: disk, "
     "destination: {array: array5, volume: 0}, label: x}\n",
     ["steps[0].server: unknown backup server (got 'backup7'; expected one of backup1)",
      "steps[0].name: duplicate definition name (got 'd1'",
      "steps[0].host: unknown host (got 'host9'",
      "steps[0].mount_point: invalid mount point (got 'db'",
      "steps[0].destination.array: unknown array (got 'array5'"]),
    ("define-destinations",
     "  - {op: define, name: a, host: host1, mount_point: /db, type: disk, "
     "destination: {array: array1, volume: 9}, label: x}\n"
     "  - {op: define, name: b, host: host1, mount_point: /db, type: disk, method: snapshot, "
     "destination: {array: array1, volume: 1}, label: x}\n"
     "  - {op: define, name: c, host: host1, mount_point: /db, type: tape, "
     "destination: {array: array1}, label: x}\n"
     "  - {op: define, name: d, host: host1, mount_point: /db, type: disk, "
     "destination: {volume: 1}, label: x}\n",
     ["steps[0].destination.volume: unknown volume of array1 (got '9'",
      "steps[1].destination.volume: a snapshot destination names the array only",
      "steps[2].destination.media: missing required key",
      "steps[2].destination.array: not part of a tape destination",
      "steps[3].destination.array: missing required key"]),
    ("define-missing-label",
     "  - {op: define, name: a, host: host1, mount_point: /db, type: disk, "
     "destination: {array: array1, volume: 1}}\n",
     ["bad.yaml:4:5: steps[0].label: missing required key"]),
    ("rebuild-from-unknown",
     "  - {op: rebuild_catalog, from: [array1, host1]}\n",
     ["steps[0].from[1]: unknown array or tape library (got 'host1'; expected one of array1, "
      "array2, lib1)"]),
    ("expect-catalog-problems",
     "  - {op: expect_catalog, count: -1, rows: [{host: host1, colour: red}]}\n"
     "  - {op: expect_catalog, rows: []}\n",
     ["steps[0].count: out of range (got '-1'",
      "steps[0].rows[0].colour: unknown catalog field (got 'colour'; expected one of host, "
      "mount_point, type, device_id, media_id, file, label, timestamp)",
      "steps[1].count: missing required key"]),
    ("advance-clock-bad",
     "  - {op: advance_clock, by: 3 fortnights}\n",
     ["bad.yaml:4:29: steps[0].by: invalid duration (got '3 fortnights'; expected a duration "
      "like 30s, 5m, 2h, 1d, 1w)"]),
    ("advance-clock-past-a-century",
     "  - {op: advance_clock, by: 99999999999d}\n",
     ["bad.yaml:4:29: steps[0].by: duration out of range (got '99999999999d'; expected at most "
      "100 years)"]),
    ("advance-clock-infinite",
     "  - {op: advance_clock, by: " + "9" * 400 + "s}\n",
     ["steps[0].by: duration out of range (got '99999"]),
    ("fault-kind-and-target",
     "  - {op: fault, kind: explode, target: array1/fc9}\n",
     ["steps[0].kind: unknown fault kind (got 'explode'; expected one of kill, restart, "
      "link_down, link_up, corrupt)",
      "steps[0].target: unknown target (got 'array1/fc9'; expected one of fcsw1, array1, array2, "
      "host1, backup1, lib1, array1/fc0, array2/fc0, host1/hba0 (an element, port or ISL))"]),
    ("fault-corrupt-needs-offset",
     "  - {op: fault, kind: corrupt, target: array1, volume: 0}\n",
     ["bad.yaml:4:5: steps[0].offset: missing required key (expected an 'offset' key for a "
      "corrupt fault)"]),
    ("fault-corrupt-needs-volume-or-media",
     "  - {op: fault, kind: corrupt, target: array1, offset: 0}\n"
     "  - {op: fault, kind: corrupt, target: array1, offset: 0, volume: 0, media: T00001}\n",
     ["steps[0].volume: missing required key",
      "steps[1].media: corrupt takes volume or media, not both"]),
    ("fault-corrupt-target-kind",
     "  - {op: fault, kind: corrupt, target: host1, volume: 0, offset: 0}\n"
     "  - {op: fault, kind: corrupt, target: array1, media: T00001, offset: 0}\n"
     "  - {op: fault, kind: corrupt, target: array1, volume: 7, offset: 0}\n",
     ["steps[0].target: corrupt with volume needs an array (got 'host1'; expected one of array1, "
      "array2)",
      "steps[1].target: corrupt with media needs a tape library (got 'array1'; expected one of "
      "lib1)",
      "steps[2].volume: unknown volume of array1 (got '7'"]),
    ("fault-offset-not-multiple",
     "  - {op: fault, kind: corrupt, target: array1, volume: 0, offset: 3}\n",
     ["steps[0].offset: offset not a multiple of 512"]),
    ("fault-kill-with-volume",
     "  - {op: fault, kind: kill, target: array1, volume: 0}\n",
     ["steps[0].volume: only a corrupt fault takes volume (got 'volume'; expected no volume for "
      "kind: kill)"]),
    ("fault-when-outside-concurrent",
     "  - {op: fault, kind: kill, target: host1, when: {step: x, after: 1MiB}}\n",
     ["steps[0].when: when works only inside a concurrent step"]),
    ("fault-when-bad",
     "  - op: concurrent\n"
     "    steps:\n"
     "      - {op: backup, definition: d1, title: copy}\n"
     "      - {op: fault, kind: link_down, target: host1/hba0, when: {step: kopy, after: 1 lot}}\n",
     ["bad.yaml:7:71: steps[0].steps[1].when.step: unknown step title (got 'kopy'; expected the "
      "title of another step in this concurrent: one of copy)",
      "7:84: steps[0].steps[1].when.after: invalid size (got '1 lot'"]),
    ("fault-when-ambiguous",            # two steps titled copy: which one it watches is luck
     "  - op: concurrent\n"
     "    steps:\n"
     "      - {op: backup, definition: d1, title: copy}\n"
     "      - {op: write, host: host1, mount: /db, offset: 0, size: 1MiB, seed: 1, title: copy}\n"
     "      - {op: fault, kind: link_down, target: host1/hba0, when: {step: copy, after: 1MiB}}\n",
     ["steps[0].steps[2].when.step: ambiguous step title (got 'copy'; expected a title that "
      "only one step of this concurrent has (steps 0, 1 share it))"]),
    ("fault-when-its-own-title",        # the fault shares it with the step it watches
     "  - op: concurrent\n"
     "    steps:\n"
     "      - {op: backup, definition: d1, title: copy}\n"
     "      - {op: fault, kind: link_down, target: host1/hba0, title: copy, when: {step: copy, after: 1MiB}}\n",
     ["steps[0].steps[1].when.step: ambiguous step title (got 'copy'"]),
    ("concurrent-sibling-name",
     "  - op: concurrent\n"
     "    steps:\n"
     "      - {op: backup, definition: d1, as: b1}\n"
     "      - {op: restore_volume, backup: b1}\n"
     "      - {op: checkpoint, as: c1, host: host1, mount: /db}\n"
     "      - {op: verify, checkpoint: c1, host: host1, mount: /db}\n",
     ["bad.yaml:7:38: steps[0].steps[1].backup: unknown backup (got 'b1'",
      "9:34: steps[0].steps[3].checkpoint: unknown checkpoint (got 'c1'"]),
    ("concurrent-nested-path",
     "  - op: concurrent\n"
     "    steps:\n"
     "      - op: concurrent\n"
     "        steps:\n"
     "          - {op: advance_clock, by: soon}\n",
     ["bad.yaml:8:37: steps[0].steps[0].steps[0].by: invalid duration (got 'soon'"]),
    ("concurrent-steps-not-list",
     "  - {op: concurrent, steps: {op: write}}\n",
     ["steps[0].steps: wrong type (got a mapping; expected a list)"]),
    ("expect-error-unknown",
     "  - {op: lose_catalog, expect_error: OOPS}\n",
     ["steps[0].expect_error: unknown error code (got 'OOPS'; expected one of BUSY, "
      "CAPACITY_MISMATCH"]),
    ("as-syntax",
     "  - {op: checkpoint, as: 1st, host: host1, mount: /db}\n",
     ["steps[0].as: invalid name (got '1st'"]),
    ("python-field-names-are-not-keys",
     "  - {op: rebuild_catalog, from_: [array1], as_: x}\n",
     ["steps[0].from_: unknown key, did you mean 'from'? (got 'from_'", "steps[0].as_: unknown key, did you mean 'as'? (got 'as_'"]),
    ("duplicate-key-in-step",
     "  - {op: lose_catalog, op: advance_clock, by: 1s}\n",
     ["bad.yaml:4:24: steps[0].op: duplicate key (got 'op'"]),
]


@pytest.mark.parametrize("steps,expected", [(s, e) for _, s, e in BAD_STEPS],
                         ids=[i for i, _, _ in BAD_STEPS])
def test_bad_steps(tmp_path, monkeypatch, steps, expected):
    lines = scenario_problems(tmp_path, monkeypatch, steps)
    assert lines, "no problem reported"
    assert_reported(lines, expected)
    assert not any("internal error" in line for line in lines)
    with pytest.raises(ValidationFailed) as info:
        load_scenario(tmp_path / "bad.yaml")
    assert info.value.problems


def test_many_step_problems_in_one_run(tmp_path, monkeypatch):
    steps = ("  - {op: frobnicate}\n"
             "  - {op: write, host: host7, mount: /db, offset: 1, size: 0, seed: x}\n"
             "  - {op: backup, definition: nope}\n"
             "  - {op: advance_clock, by: never}\n")
    lines = scenario_problems(tmp_path, monkeypatch, steps)
    assert_reported(lines, ["4:10: steps[0].op: unknown op",
                            "5:23: steps[1].host: unknown host",
                            "5:50: steps[1].offset: offset not a multiple of 512",
                            "5:59: steps[1].size: size out of range",
                            "5:68: steps[1].seed: not an integer",
                            "6:30: steps[2].definition: unknown definition",
                            "7:29: steps[3].by: invalid duration"])
    assert len(lines) == 7


# ------------------------------------------------------------------------------ servers

TWO_SERVERS = TOPO.replace("tape_libraries:", "  - name: backup2\ntape_libraries:")


def test_server_required_with_two_servers(tmp_path, monkeypatch):
    steps = ("  - {op: lose_catalog}\n"
             "  - {op: rebuild_catalog, server: backup2}\n"
             "  - {op: expect_catalog, server: backup3, count: 0}\n")
    lines = scenario_problems(tmp_path, monkeypatch, steps, topo=TWO_SERVERS)
    assert_reported(lines, [
        "bad.yaml:4:5: steps[0].server: missing required key (expected a 'server' key (the "
        "topology has 2 backup servers: backup1, backup2))",
        "steps[2].server: unknown backup server (got 'backup3'; expected one of backup1, backup2)"])
    assert len(lines) == 2


def test_server_filled_in_when_only_one(tmp_path, monkeypatch):
    steps = ("  - {op: lose_catalog}\n"
             "  - {op: define, name: d2, host: host1, mount_point: /db, type: tape, "
             "destination: {media: T00001}, label: x}\n")
    assert scenario_problems(tmp_path, monkeypatch, steps) == []
    s = load_scenario(tmp_path / "bad.yaml")
    assert [st.server for st in s.steps] == ["backup1", "backup1"]


# ------------------------------------------------------------------------------ the file

def test_scenario_top_level_problems(tmp_path, monkeypatch):
    lines = scenario_problems(tmp_path, monkeypatch, "", head="topology: topo.yaml\nsteps: []\n"
                              "extra: 1\n")
    assert_reported(lines, ["bad.yaml:1:1: name: missing required key",
                            "bad.yaml:3:1: extra: unknown key (got 'extra'; expected one of "
                            "name, topology, steps)"])
    lines = scenario_problems(tmp_path, monkeypatch, "", head="name: s\nsteps: 5\n")
    assert_reported(lines, ["bad.yaml:1:1: topology: missing required key",
                            "bad.yaml:2:8: steps: wrong type (got '5'; expected a list)"])
    lines = scenario_problems(tmp_path, monkeypatch, "",
                              head="name: s\ntopology: [a]\nsteps: []\n")
    assert_reported(lines, ["bad.yaml:2:11: topology: wrong type (got a list; expected a path "
                            "to a topology file, or an inline topology mapping)"])


@pytest.mark.parametrize("given, says", [
    ("nowhere.yaml", "nowhere.yaml does not exist)"),
    ("adir", "adir is a directory)"),            # it exists: not "does not exist"
    ("/dev/null", "/dev/null is not a regular file)"),
])
def test_scenario_topology_file_missing(tmp_path, monkeypatch, given, says):
    (tmp_path / "adir").mkdir()
    lines = scenario_problems(tmp_path, monkeypatch, "  - {op: lose_catalog}\n",
                              head=f"name: s\ntopology: {given}\nsteps:\n")
    assert len(lines) == 1
    assert lines[0].startswith(f"bad.yaml:2:11: topology: topology file not found "
                               f"(got '{given}'") and lines[0].endswith(says + ")"), lines[0]


def test_scenario_topology_problems_are_reported_in_its_file(tmp_path, monkeypatch):
    topo = TOPO.replace("{name: fcsw1}", "{name: fcsw1, speed: warp}")
    lines = scenario_problems(tmp_path, monkeypatch,
                              "  - {op: write, host: host9, mount: /db, offset: 0, "
                              "size: 1MiB, seed: 1}\n", topo=topo)
    assert_reported(lines, [
        "bad.yaml:4:23: steps[0].host: unknown host (got 'host9'",
        "topo.yaml:3:35: fabric.switches[0].speed: invalid speed (got 'warp'"])
    with pytest.raises(ValidationFailed) as info:
        load_scenario("bad.yaml")
    assert {p.file for p in info.value.problems} == {"bad.yaml", "topo.yaml"}


def test_inline_topology_problems_have_the_topology_path(tmp_path, monkeypatch):
    head = ("name: s\ntopology:\n  name: t\n  fabric: {switches: [{name: s1, ports: many}]}\n"
            "  arrays: [{name: a1}]\nsteps:\n")
    lines = scenario_problems(tmp_path, monkeypatch, "  - {op: lose_catalog}\n", head=head)
    assert_reported(lines, [
        "bad.yaml:4:41: topology.fabric.switches[0].ports: not an integer (got 'many'",
        "bad.yaml:5:12: topology.arrays[0].device_id: missing required key",
        "bad.yaml:7:5: steps[0].server: missing required key (expected a 'server' key (the "
        "topology has no backup server))"])


def test_validate_files_mixes_topologies_and_scenarios(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "topo.yaml").write_text(TOPO.replace("name: topo", "name: 1topo"))
    (tmp_path / "s.yaml").write_text(HEAD + "  - {op: lose_catalog}\n")
    lines = [str(p) for p in validate_files(["topo.yaml", "s.yaml"])]
    # the topology's problem once, though both files lead to it
    assert lines == ["topo.yaml:1:7: name: invalid name (got '1topo'; expected a name: a letter, "
                     "then up to 31 letters, digits, '.', '_' or '-')"]


def test_shipped_scenarios_validate():
    scenarios = sorted((ROOT / "topologies").rglob("*.yaml"))
    for path in scenarios:
        assert [str(p) for p in validate_files([path])] == [], path
