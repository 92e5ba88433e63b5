"""Faults that strike mid-step (san.strike, san.tripwire): `fault ... when: {step, after}`
inside `concurrent`, on plain elements (LocalSan, no Ray).  Each case checks where the fault
struck (bytes, at a chunk boundary), what the struck step reports, and what the storage
holds afterwards: every acknowledged write, no catalog row for an unfinished backup, nothing
left BUSY, and the operation succeeding when run again."""
import textwrap
import threading
from pathlib import Path

import pytest

from san.errors import SanError
from san.flows.local import LocalSan
from san.runner import Runner
from san.strike import movers
from san.topology import load_scenario
from san.tripwire import Tripwire
from san.units import MiB

TOPOLOGY = "topologies/single-array.yaml"
CHUNK = 4 * MiB


def scenario(tmp_path, steps: str):
    root = Path(__file__).resolve().parents[2]
    (tmp_path / "s.yaml").write_text(f"name: strike\ntopology: {root / TOPOLOGY}\nsteps:\n"
                                     + textwrap.indent(textwrap.dedent(steps), "  "))
    return load_scenario(tmp_path / "s.yaml")


def run(tmp_path, steps: str, san=None):
    sc = scenario(tmp_path, steps)
    own = san is None
    san = san or LocalSan(sc.topology, tmp_path / "state", chunk_size=CHUNK).start()
    try:
        runner = Runner(san, tmp_path / "state")
        return runner.run(sc.steps), san
    finally:
        if own:
            san.shutdown()


# -- the tripwire ---------------------------------------------------------------------------------
def test_a_tripwire_stops_the_thread_that_reaches_it_until_released():
    t = Tripwire()
    t.arm(10)
    assert not t.passed(4)
    stopped, done = threading.Event(), threading.Event()

    def mover():
        stopped.set()
        t.passed(12)
        done.set()
    threading.Thread(target=mover, daemon=True).start()
    assert stopped.wait(1) and not done.wait(0.2)       # held at the boundary
    t.release()
    assert done.wait(1)
    assert not t.passed(100)                            # one strike per arming


# -- when: on steps ---------------------------------------------------------------------------------
def test_a_kill_strikes_a_write_at_the_chunk_boundary_and_every_acknowledged_write_survives(tmp_path):
    sc = scenario(tmp_path, """
        - op: concurrent
          steps:
            - {op: write, title: load, host: host1, mount: /db, offset: 0, size: 64MiB, seed: 5}
            - {op: fault, kind: kill, target: array1, when: {step: load, after: 10MiB}}
        - {op: write, host: host1, mount: /db, offset: 0, size: 1MiB, seed: 6, expect_error: ELEMENT_DOWN}
        - {op: fault, kind: restart, target: array1}
    """)
    with LocalSan(sc.topology, tmp_path / "state", chunk_size=CHUNK) as san:
        reports = Runner(san, tmp_path / "state").run(sc.steps)
        write, fault = reports[0].children
        # 10 MiB falls inside the third 4 MiB chunk: the fault strikes once that one is acknowledged
        assert fault.ok and fault.result == {"kind": "kill", "target": "array1", "step": "load",
                                             "after_bytes": 12 * MiB, "step_ended": False}
        assert not write.ok and write.error.code == "ELEMENT_DOWN"
        assert [r.ok for r in reports[1:]] == [True, True]
        got = san.call("host1", "read_compare", "/db", 0, 12 * MiB, 5)
        assert got["first_mismatch"] is None            # every acknowledged chunk is there


def test_commands_in_flight_when_a_link_goes_down_still_land_as_documented(tmp_path):
    # 8 chunks in flight (peers.WINDOW): a 32 MiB write has sent them all before the fault
    # strikes after its first 8 MiB are acknowledged; they all land, the step still fails
    sc = scenario(tmp_path, """
        - op: concurrent
          steps:
            - {op: write, title: w, host: host1, mount: /db, offset: 0, size: 32MiB, seed: 1, expect_error: LINK_DOWN}
            - {op: fault, kind: link_down, target: host1/hba0, when: {step: w, after: 8MiB}}
        - {op: fault, kind: link_up, target: host1/hba0}
    """)
    with LocalSan(sc.topology, tmp_path / "state", chunk_size=CHUNK) as san:
        reports = Runner(san, tmp_path / "state").run(sc.steps)
        write, fault = reports[0].children
        assert fault.result["after_bytes"] == 8 * MiB and not fault.result["step_ended"]
        assert write.ok and write.error.code == "LINK_DOWN"
        # it is charged what was acknowledged before the link went: 8 MiB on host1's link
        assert write.bytes == 8 * MiB and write.modeled_s == pytest.approx(8 * MiB / 800e6 + 100e-6)  # 8GFC
        assert write.busiest_link is not None                    # charged on its path
        got = san.call("host1", "read_compare", "/db", 0, 32 * MiB, 1)
        assert got["first_mismatch"] is None                     # yet all 32 MiB landed


def test_a_fault_whose_step_ends_first_strikes_then_and_says_after_how_many_bytes(tmp_path):
    reports, _ = run(tmp_path, """
        - op: concurrent
          steps:
            - {op: write, title: small, host: host2, mount: /data, offset: 0, size: 6MiB, seed: 1}
            - {op: fault, kind: link_down, target: host2/hba0, when: {step: small, after: 1GiB}}
        - {op: write, host: host2, mount: /data, offset: 0, size: 1MiB, seed: 1, expect_error: LINK_DOWN}
    """)
    conc = reports[0]
    assert conc.ok and conc.children[0].ok and conc.children[0].bytes == 6 * MiB
    assert conc.children[1].result["after_bytes"] == 6 * MiB and conc.children[1].result["step_ended"]
    assert reports[1].ok                                # the fault did strike


def test_a_step_that_moves_nothing_is_struck_when_it_ends(tmp_path):
    reports, _ = run(tmp_path, """
        - op: concurrent
          steps:
            - {op: checkpoint, title: look, as: c, host: host1, mount: /archive}
            - {op: fault, kind: kill, target: host2, when: {step: look, after: 1MiB}}
    """)
    fault = reports[0].children[1]
    assert fault.ok and fault.result["step_ended"] and fault.result["after_bytes"] == 0


def test_a_mirror_killed_mid_copy_leaves_no_row_nothing_busy_and_runs_again(tmp_path):
    sc = scenario(tmp_path, """
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
    with LocalSan(sc.topology, tmp_path / "state", chunk_size=CHUNK) as san:
        san.call("array1", "hold_copies", False)
        reports = Runner(san, tmp_path / "state").run(sc.steps)
        conc = reports[2]
        mirror, fault = conc.children
        assert not mirror.ok and mirror.error.code == "ELEMENT_DOWN"
        assert fault.ok and 20 * MiB <= fault.result["after_bytes"] < 48 * MiB
        assert fault.result["after_bytes"] % CHUNK == 0
        assert [(r.index, r.error) for r in reports[3:] if not r.ok] == []


@pytest.mark.parametrize("op,mover", [
    ("{op: copy_to_tape, title: it, backup: b0, media: T00002, as: t1}", "host1"),
    ("{op: restore_volume, title: it, backup: b0}", "array1"),
    ("{op: copy_volume, title: it, backup: b0, to: {array: array1, volume: 2}, as: c1}", "array1"),
])
def test_each_kind_of_step_is_struck_by_the_counter_of_what_moves_its_bytes(tmp_path, op, mover):
    sc = scenario(tmp_path, f"""
        - {{op: write, host: host1, mount: /db, offset: 0, size: 40MiB, seed: 8}}
        - {{op: backup, definition: db-mirror, as: b0}}
        - {{op: write, host: host1, mount: /db, offset: 0, size: 40MiB, seed: 9}}
        - op: concurrent
          steps:
            - {op}
            - {{op: fault, kind: kill, target: host2, when: {{step: it, after: 16MiB}}}}
    """)
    with LocalSan(sc.topology, tmp_path / "state", chunk_size=CHUNK) as san:
        step = sc.steps[3].steps[0]
        runner = Runner(san, tmp_path / "state")
        reports = runner.run(sc.steps[:3])
        assert all(r.ok for r in reports)
        assert movers(runner.ctx, step) == [mover]
        conc = runner.run(sc.steps[3:])[0]
        moved, fault = conc.children
        assert moved.ok and fault.ok                     # host2 had nothing to do with it
        assert not fault.result["step_ended"] and fault.result["after_bytes"] >= 16 * MiB
        assert fault.result["after_bytes"] % CHUNK == 0 and fault.result["after_bytes"] <= moved.bytes


def test_a_fault_naming_no_step_beside_it_fails_its_step(tmp_path):
    from san.ops import OPS, Context
    step = scenario(tmp_path, """
        - op: concurrent
          steps:
            - {op: write, title: w, host: host1, mount: /db, offset: 0, size: 1MiB, seed: 1}
            - {op: fault, kind: kill, target: host2, when: {step: w, after: 1MiB}}
    """).steps[0].steps[1]
    with pytest.raises(SanError) as e:
        OPS["fault"](Context(san=None, clock=None, capacity={}), step)
    assert e.value.code == "INVALID_INPUT" and "no step titled 'w'" in e.value.message


# -- a concurrent step's own outcome ----------------------------------------------------------------
def test_a_concurrent_step_that_failed_carries_the_code_of_its_first_failed_inner_step(tmp_path):
    reports, _ = run(tmp_path, """
        - op: concurrent
          steps:
            - {op: write, host: host1, mount: /db, offset: 0, size: 1MiB, seed: 1}
            - {op: write, host: host1, mount: /db, offset: 1TiB, size: 1MiB, seed: 1}
            - {op: write, host: host2, mount: /data, offset: 0, size: 1MiB, seed: 1, expect_error: LINK_DOWN}
    """)
    conc = reports[0]
    assert [c.ok for c in conc.children] == [True, False, False]
    assert not conc.ok and conc.error.code == "LBA_OUT_OF_RANGE"    # not INVALID_INPUT
    assert conc.error.message.startswith("inner step(s) 1, 2 did not go as expected (first: "
                                         "LBA_OUT_OF_RANGE: ")


def test_a_concurrent_step_whose_inner_step_succeeded_against_expectation_is_not_ok(tmp_path):
    reports, _ = run(tmp_path, """
        - op: concurrent
          steps:
            - {op: write, host: host1, mount: /db, offset: 0, size: 1MiB, seed: 1, expect_error: LINK_DOWN}
    """)
    conc = reports[0]
    assert not conc.children[0].ok and conc.children[0].error is None
    assert not conc.ok and conc.error is None       # nothing failed: no code to give
    from rich.console import Console
    from san import report as report_mod
    console = Console(width=200, record=True)
    console.print(report_mod.table(scenario(tmp_path, "[]"), reports, {}))
    row = next(line for line in console.export_text().splitlines() if "concurrent" in line)
    assert "✗" in row and "an inner step did not go as expected" in row


# -- the corrupt fault says where, and how many bytes rotted -----------------------------------------
def test_a_corrupt_fault_reports_where_and_how_many_bytes_it_flipped(tmp_path):
    reports, _ = run(tmp_path, """
        - {op: write, host: host1, mount: /db, offset: 0, size: 1MiB, seed: 1}
        - {op: fault, kind: corrupt, target: array1, volume: 0, offset: 4096}
        - {op: fault, kind: corrupt, target: array1, volume: 0, offset: 64MiB}
        - {op: scrub, array: array1, volume: 0, expect_bad: 1}
    """)
    assert all(r.ok for r in reports), [(r.op, r.error) for r in reports]
    assert reports[1].result == {"kind": "corrupt", "target": "array1", "volume": 0,
                                 "offset": 4096, "flipped_bytes": 1}
    # never written there: nothing is stored, so nothing rots (and scrub finds one range)
    assert reports[2].result["flipped_bytes"] == 0


def test_a_timed_corrupt_fault_reports_where_too(tmp_path):
    reports, _ = run(tmp_path, """
        - {op: write, host: host1, mount: /db, offset: 0, size: 8MiB, seed: 1}
        - op: concurrent
          steps:
            - {op: write, title: w, host: host2, mount: /data, offset: 0, size: 16MiB, seed: 2}
            - {op: fault, kind: corrupt, target: array1, volume: 0, offset: 512, when: {step: w, after: 4MiB}}
    """)
    assert reports[1].ok, reports[1].error
    assert reports[1].children[1].result == {
        "kind": "corrupt", "target": "array1", "volume": 0, "offset": 512, "flipped_bytes": 1,
        "step": "w", "after_bytes": 4 * MiB, "step_ended": False}


def test_a_raw_write_cut_short_drops_the_mount_s_cached_filesystem(tmp_path):
    root = Path(__file__).resolve().parents[2]
    (tmp_path / "s.yaml").write_text(f"name: cut\ntopology: {root / 'topologies/two-arrays.yaml'}\n"
                                     + textwrap.dedent("""\
        steps:
          - {op: write_files, host: host1, mount: /db, files: {a.txt: {size: 1000, seed: 1}}}
          - op: concurrent
            steps:
              - {op: write, title: w, host: host1, mount: /db, offset: 64MiB, size: 32MiB, seed: 1, expect_error: LINK_DOWN}
              - {op: fault, kind: link_down, target: host1/hba0, when: {step: w, after: 8MiB}}
        """))
    sc = load_scenario(tmp_path / "s.yaml")
    with LocalSan(sc.topology, tmp_path / "state", chunk_size=CHUNK) as san:
        reports = Runner(san, tmp_path / "state").run(sc.steps[:1])
        assert reports[0].ok and "/db" in san.element("host1").fs     # mounted, cached
        reports = Runner(san, tmp_path / "state").run(sc.steps[1:])
        assert reports[0].ok and reports[0].children[0].error.code == "LINK_DOWN"
        assert "/db" not in san.element("host1").fs                   # the raw write changed it


def _armed(san) -> dict:
    """Each element's tripwire mark (None: not armed)."""
    return {name: san.element(name).trip._at for name in ("host1", "host2", "array1")}


def test_concurrents_side_by_side_each_watch_their_own_step_of_a_shared_title(tmp_path):
    """Inner concurrents A and B each have a step titled w: the meters were one dict by
    title for the whole run, so A's fault watched B's write (struck at B's end, A's write
    cut after 0 bytes), and A's host stayed armed: the next write through it stopped for
    a minute at the mark."""
    reports, san = run(tmp_path, """
        - op: concurrent
          steps:
            - op: concurrent
              title: A
              steps:
                - {op: write, title: w, host: host1, mount: /db, offset: 0, size: 64MiB, seed: 2, expect_error: LINK_DOWN}
                - {op: fault, kind: link_down, target: host1/hba0, when: {step: w, after: 16MiB}}
            - op: concurrent
              title: B
              steps:
                - {op: write, title: w, host: host2, mount: /data, offset: 0, size: 8MiB, seed: 2}
                - {op: fault, kind: link_up, target: host2/hba0, when: {step: w, after: 4MiB}}
        - {op: fault, kind: link_up, target: host1/hba0}
        - {op: write, host: host1, mount: /db, offset: 0, size: 32MiB, seed: 3}
    """)
    assert all(r.ok for r in reports), [(r.index, r.error) for r in reports]
    (a_write, a_fault), (b_write, b_fault) = [c.children for c in reports[0].children]
    assert a_fault.result["after_bytes"] == 16 * MiB and not a_fault.result["step_ended"]
    assert a_write.bytes == 16 * MiB
    assert b_fault.result["after_bytes"] == 4 * MiB and b_write.bytes == 8 * MiB
    assert reports[2].wall_s < 30


def test_a_concurrent_whose_meters_cannot_be_read_runs_and_leaves_no_mover_armed(tmp_path):
    """A backup watched by a fault, its server down: reading the backup's definition failed
    the whole concurrent before any inner step ran (the write beside it never ran and the
    backup's expected error was never checked), with the write's host left armed."""
    sc = scenario(tmp_path, "[]")
    san = LocalSan(sc.topology, tmp_path / "state", chunk_size=CHUNK).start()
    reports, _ = run(tmp_path, """
        - {op: fault, kind: kill, target: backup1}
        - op: concurrent
          steps:
            - {op: write, title: w, host: host1, mount: /db, offset: 0, size: 32MiB, seed: 2}
            - {op: backup, title: b, definition: db-mirror, expect_error: ELEMENT_DOWN}
            - {op: fault, kind: link_down, target: host2/hba0, when: {step: w, after: 8MiB}}
            - {op: fault, kind: link_up, target: host2/hba0, when: {step: b, after: 1MiB}}
    """, san=san)
    try:
        assert all(r.ok for r in reports), [(r.index, r.error) for r in reports]
        write, backup, struck, _ = reports[1].children
        assert write.bytes == 32 * MiB and backup.error.code == "ELEMENT_DOWN"
        assert struck.result["after_bytes"] == 8 * MiB
        assert _armed(san) == {"host1": None, "host2": None, "array1": None}
    finally:
        san.shutdown()

