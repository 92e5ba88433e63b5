"""Faults striking mid-step on the Ray actors (san.strike): the tripwire stops a threaded host
or an array's copy thread at a chunk boundary while the driver kills the array, and the
state dir then holds every acknowledged write and no claim of an unfinished backup."""
import textwrap

from san.runner import Runner
from san.topology import load_scenario
from san.units import MiB

from .conftest import TOPOLOGIES

CHUNK = 4 * MiB


def scenario(tmp_path, steps: str):
    (tmp_path / "s.yaml").write_text(f"name: strike\ntopology: {TOPOLOGIES / 'single-array.yaml'}\n"
                                     "steps:\n" + textwrap.indent(textwrap.dedent(steps), "  "))
    return load_scenario(tmp_path / "s.yaml")


def test_an_array_killed_mid_write_and_mid_mirror_keeps_what_was_acknowledged(build_san, tmp_path):
    sc = scenario(tmp_path, """
        - op: concurrent
          steps:
            - {op: write, title: load, host: host1, mount: /db, offset: 0, size: 64MiB, seed: 5}
            - {op: fault, kind: kill, target: array1, when: {step: load, after: 10MiB}}
        - {op: fault, kind: restart, target: array1}
        - {op: write, host: host1, mount: /db, offset: 0, size: 48MiB, seed: 3}
        - {op: checkpoint, as: before, host: host1, mount: /db}
        - op: concurrent
          steps:
            - {op: backup, title: mirror, definition: db-mirror, as: b1}
            - {op: fault, kind: kill, target: array1, when: {step: mirror, after: 20MiB}}
        - {op: fault, kind: restart, target: array1}
        - {op: expect_catalog, server: backup1, count: 0, rows: []}
        - {op: backup, definition: db-mirror, as: b2}
        - {op: verify, checkpoint: before, backup: b2}
    """)
    san = build_san(sc.topology, chunk_size=CHUNK)
    runner = Runner(san, tmp_path / "state")
    reports = runner.run(sc.steps[:2])
    # the three chunks acknowledged before the kill are on the restarted array
    assert san.call("host1", "read_compare", "/db", 0, 12 * MiB, 5)["first_mismatch"] is None
    reports += runner.run(sc.steps[2:])
    write, fault = reports[0].children
    assert not write.ok and write.error.code == "ELEMENT_DOWN"
    assert fault.result["after_bytes"] == 12 * MiB and not fault.result["step_ended"]
    mirror, fault2 = reports[4].children
    assert not mirror.ok and mirror.error.code == "ELEMENT_DOWN"
    assert 20 * MiB <= fault2.result["after_bytes"] < 48 * MiB
    assert [(at, r.error) for at, r in enumerate(reports) if not r.ok and at not in (0, 4)] == []


def test_a_write_cut_by_a_link_fault_is_charged_what_was_acknowledged(build_san, tmp_path):
    # the partial transfers ride on the SanError from the host actor to the driver
    sc = scenario(tmp_path, """
        - op: concurrent
          steps:
            - {op: write, title: w, host: host1, mount: /db, offset: 0, size: 32MiB, seed: 1, expect_error: LINK_DOWN}
            - {op: fault, kind: link_down, target: host1/hba0, when: {step: w, after: 8MiB}}
    """)
    san = build_san(sc.topology, chunk_size=CHUNK)
    write, fault = Runner(san, tmp_path / "state").run(sc.steps)[0].children
    assert write.ok and write.error.code == "LINK_DOWN" and fault.result["after_bytes"] == 8 * MiB
    assert write.bytes == 8 * MiB and write.modeled_s > 0
