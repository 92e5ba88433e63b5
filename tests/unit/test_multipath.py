"""Multipath and idempotent retries (issue 13, items 3 and 4), on plain elements (no Ray).

A host with two HBAs on two switches keeps writing when one path goes down mid-transfer: the
chunks not yet acknowledged are sent again, in order, on the other path, and every byte reads
back.  When the preferred path comes back, I/O uses it again (failback); with no path left,
LINK_DOWN.  An ISL going down moves a transfer to another ISL.  Each route is charged the
bytes it carried.  WRITEs carry sequence numbers, so the array applies each once: a WRITE
sent twice is acknowledged once, one from the past that was never applied is refused, and an
array restarted between a WRITE and its retry still knows it applied it.
"""
import textwrap
import threading
import time

import numpy as np
import pytest

from san.elements.client_host import Sequencer
from san.elements.disk_array import DiskArray
from san.elements.fc_switch import rscn_arrays, rscn_hosts
from san.errors import SanError
from san.flows.local import LocalSan
from san.pattern import pattern
from san.runner import Runner
from san.topology import load_scenario, load_topology
from san.units import MiB

from ..integration.conftest import TOPOLOGIES

CHUNK = 4 * MiB
WINDOW = 8

# host1 has an HBA on each switch, both zoned with array1/fc0 (on fcsw1): hba0 reaches it
# directly, hba1 over an ISL.  host2 has one HBA on fcsw1 and reaches array2 (on fcsw2) over
# isl1, or isl2 when isl1 is down.
TOPOLOGY = """
name: multipath
start: 2026-01-01T00:00:00Z
lan: {speed: 1GbE}
fabric:
  switches:
    - {name: fcsw1, ports: 8, speed: 8GFC}
    - {name: fcsw2, ports: 8, speed: 8GFC}
  isls:
    - {name: isl1, a: fcsw1, b: fcsw2}
    - {name: isl2, a: fcsw1, b: fcsw2}
  zones:
    - {name: host1-db, members: [host1/hba0, host1/hba1, array1/fc0]}
    - {name: host2-far, members: [host2/hba0, array2/fc0]}
arrays:
  - name: array1
    device_id: HTC-3001
    managers: [host1]
    ports:
      - {name: fc0, number: 0, wwpn: "50:06:0e:80:00:00:30:01", switch: fcsw1}
    volumes:
      - {number: 0, size: 256MiB, port: fc0, lun: 0, hosts: [host1]}
  - name: array2
    device_id: HTC-3002
    managers: [host2]
    ports:
      - {name: fc0, number: 0, wwpn: "50:06:0e:80:00:00:30:02", switch: fcsw2}
    volumes:
      - {number: 0, size: 256MiB, port: fc0, lun: 0, hosts: [host2]}
hosts:
  - name: host1
    hbas:
      - {name: hba0, wwpn: "21:00:00:e0:8b:00:30:01", switch: fcsw1}
      - {name: hba1, wwpn: "21:00:00:e0:8b:00:30:02", switch: fcsw2}
    mounts:
      - {mount_point: /db, device: /dev/sda, port: array1/fc0, lun: 0, filesystem: none}
  - name: host2
    hbas:
      - {name: hba0, wwpn: "21:00:00:e0:8b:00:30:03", switch: fcsw1}
    mounts:
      - {mount_point: /far, device: /dev/sda, port: array2/fc0, lun: 0, filesystem: none}
"""

MOUNTS = {"host1": ("/db", "array1"), "host2": ("/far", "array2")}


def topology_file(tmp_path):
    path = tmp_path / "multipath.yaml"
    path.write_text(textwrap.dedent(TOPOLOGY))
    return path


def scenario(tmp_path, steps: str):
    topo = topology_file(tmp_path)
    (tmp_path / "s.yaml").write_text(f"name: mp\ntopology: {topo}\nsteps:\n"
                                     + textwrap.indent(textwrap.dedent(steps), "  "))
    return load_scenario(tmp_path / "s.yaml")


@pytest.fixture
def san(tmp_path):
    with LocalSan(load_topology(topology_file(tmp_path)), tmp_path / "state",
                  chunk_size=CHUNK, window=WINDOW) as built:
        yield built


def run(san, tmp_path, steps: str):
    runner = Runner(san, tmp_path / "state")
    return runner.run(scenario(tmp_path, steps).steps), runner


def carried(runner) -> dict:
    """Bytes each link direction carried in the run so far."""
    return {res: int(n) for res, (n, _) in runner.link_use.items() if n}


def writes_applied(san, array: str) -> list:
    """Spy on an array's volume writes: the list grows by one per WRITE applied."""
    obj, seen = san.element(array), []
    original = obj._store_write

    def spy(number, offset, data):
        seen.append(offset)
        return original(number, offset, data)
    obj._store_write = spy
    return seen


# -- a path going down (or coming back) mid-transfer ------------------------------------------------
# (name, host, state before the step, fault striking at 16 MiB, bytes each link carried,
#  chunks sent again after the fault)
MIDWAY = [
    ("the preferred HBA goes down: the rest goes over the other HBA and the ISL",
     "host1", [], "link_down host1/hba0",
     {"host1/hba0:tx": 16 * MiB, "host1/hba1:tx": 48 * MiB, "isl1:rx": 48 * MiB,
      "array1/fc0:rx": 64 * MiB}, WINDOW - 1),
    ("the preferred HBA comes back: failback, the rest goes over it again",
     "host1", ["link_down host1/hba0"], "link_up host1/hba0",
     {"host1/hba1:tx": 16 * MiB, "isl1:rx": 16 * MiB, "host1/hba0:tx": 48 * MiB,
      "array1/fc0:rx": 64 * MiB}, WINDOW - 1),
    ("the spare HBA goes down: nothing changes, nothing is sent again",
     "host1", [], "link_down host1/hba1",
     {"host1/hba0:tx": 64 * MiB, "array1/fc0:rx": 64 * MiB}, 0),
    ("the ISL in use goes down: the rest goes over the other ISL",
     "host2", [], "link_down isl1",
     {"host2/hba0:tx": 64 * MiB, "isl1:tx": 16 * MiB, "isl2:tx": 48 * MiB,
      "array2/fc0:rx": 64 * MiB}, WINDOW - 1),
]


@pytest.mark.parametrize("name,host,before,fault,links,resent", MIDWAY, ids=[m[0] for m in MIDWAY])
def test_a_path_change_mid_transfer_moves_the_rest_to_the_path_granted_now_without_loss(
        san, tmp_path, name, host, before, fault, links, resent):
    mount, array = MOUNTS[host]
    setup = "".join(f"- {{op: fault, kind: {f.split()[0]}, target: {f.split()[1]}}}\n" for f in before)
    kind, target = fault.split()
    applied = writes_applied(san, array)
    reports, runner = run(san, tmp_path, setup + textwrap.dedent(f"""
        - op: concurrent
          steps:
            - {{op: write, title: load, host: {host}, mount: {mount}, offset: 0, size: 64MiB, seed: 5}}
            - {{op: fault, kind: {kind}, target: {target}, when: {{step: load, after: 16MiB}}}}
    """))
    assert all(r.ok for r in reports), [(r.index, r.error) for r in reports]
    write, struck = reports[-1].children
    assert write.bytes == 64 * MiB
    assert struck.result["after_bytes"] == 16 * MiB and not struck.result["step_ended"]
    assert carried(runner) == links
    # each chunk applied once, in order; those in flight when the path changed were sent again
    # and acknowledged without being applied twice
    assert applied == list(range(0, 64 * MiB, CHUNK))
    assert san.element(array).sequences.duplicates == resent
    got = san.call(host, "read_compare", mount, 0, 64 * MiB, 5)
    assert got["first_mismatch"] is None


def test_a_new_write_uses_the_preferred_hba_again_once_it_is_back(san, tmp_path):
    reports, _ = run(san, tmp_path, """
        - op: concurrent
          steps:
            - {op: write, title: load, host: host1, mount: /db, offset: 0, size: 64MiB, seed: 5}
            - {op: fault, kind: link_down, target: host1/hba0, when: {step: load, after: 16MiB}}
    """)
    assert reports[0].ok
    on_spare = san.call("host1", "write", "/db", 64 * MiB, 8 * MiB, 6)
    assert [t.resources for t in on_spare] == [("host1/hba1:tx", "isl1:rx", "array1/fc0:rx")]
    san.set_link("host1/hba0", True)
    back = san.call("host1", "write", "/db", 72 * MiB, 8 * MiB, 7)
    assert [(t.resources, t.nbytes) for t in back] == [(("host1/hba0:tx", "array1/fc0:rx"), 8 * MiB)]
    data, transfers = san.call("host1", "read", "/db", 64 * MiB, 16 * MiB)
    assert transfers[0].resources == ("array1/fc0:tx", "host1/hba0:rx")
    assert np.array_equal(data[:8 * MiB], pattern(6, 64 * MiB, 8 * MiB))
    assert np.array_equal(data[8 * MiB:], pattern(7, 72 * MiB, 8 * MiB))


# -- no path left ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("before,fault,acknowledged", [
    (["host1/hba0", "host1/hba1"], None, 0),               # no path from the start
    (["host1/hba1"], "host1/hba0", 16 * MiB),               # the last path goes mid-transfer
    (["isl1", "isl2"], "host1/hba0", 16 * MiB),             # the spare path had no ISL left
    ([], "fcsw1", 16 * MiB),                                # the switch of the array port dies
], ids=["both-hbas-down", "last-hba-midway", "spare-without-isl", "array-switch-dies"])
def test_with_no_path_left_a_write_fails_link_down_or_element_down_and_keeps_what_was_acknowledged(
        san, tmp_path, before, fault, acknowledged):
    for link in before:
        san.set_link(link, False)
    if fault is None:
        reports, _ = run(san, tmp_path, """
            - {op: write, host: host1, mount: /db, offset: 0, size: 64MiB, seed: 5, expect_error: LINK_DOWN}
        """)
        assert reports[0].ok and "host1/hba0" in reports[0].error.message
        return
    kind = "kill" if san.kind(fault) == "switch" else "link_down"
    code = "ELEMENT_DOWN" if kind == "kill" else "LINK_DOWN"
    reports, _ = run(san, tmp_path, f"""
        - op: concurrent
          steps:
            - {{op: write, title: load, host: host1, mount: /db, offset: 0, size: 64MiB, seed: 5, expect_error: {code}}}
            - {{op: fault, kind: {kind}, target: {fault}, when: {{step: load, after: 16MiB}}}}
    """)
    write, struck = reports[0].children
    assert write.ok and write.error.code == code, write.error
    assert struck.result["after_bytes"] == acknowledged
    for link in before:
        san.set_link(link, True)
    if kind == "kill":
        san.restart(fault)
    else:
        san.set_link(fault, True)
    got = san.call("host1", "read_compare", "/db", 0, acknowledged, 5)
    assert got["first_mismatch"] is None        # what was acknowledged is there


def test_a_path_lost_once_every_byte_is_acknowledged_fails_nothing(san, tmp_path):
    """The last path of host2 goes down as its write's last chunk is answered: the write is
    complete (it failed LINK_DOWN, the fabric change heard before the loop saw it was done),
    and only the next transfer meets the change."""
    reports, _ = run(san, tmp_path, """
        - op: concurrent
          steps:
            - {op: write, title: load, host: host2, mount: /far, offset: 0, size: 64MiB, seed: 5}
            - {op: fault, kind: link_down, target: host2/hba0, when: {step: load, after: 64MiB}}
        - {op: write, host: host2, mount: /far, offset: 0, size: 4MiB, seed: 6, expect_error: LINK_DOWN}
    """)
    assert all(r.ok for r in reports), [(r.index, r.error) for r in reports]
    write, struck = reports[0].children
    assert write.bytes == 64 * MiB and struck.result["after_bytes"] == 64 * MiB
    san.set_link("host2/hba0", True)
    assert san.call("host2", "read_compare", "/far", 0, 64 * MiB, 5)["first_mismatch"] is None


# -- sequence numbers on the array ----------------------------------------------------------------------
ARRAY = """
name: t
fabric:
  switches: [{name: sw1}]
  zones: [{name: z, members: [h1/hba0, h1/hba1, a1/fc0]}]
arrays:
  - name: a1
    device_id: HTC-0042
    ports:
      - {name: fc0, number: 0, wwpn: "50:00:00:00:00:00:00:01", switch: sw1}
    volumes:
      - {number: 0, size: 8MiB, port: fc0, lun: 0, hosts: [h1, h2]}
hosts:
  - name: h1
    hbas:
      - {name: hba0, wwpn: "21:00:00:00:00:00:00:01", switch: sw1}
      - {name: hba1, wwpn: "21:00:00:00:00:00:00:03", switch: sw1}
  - name: h2
    hbas: [{name: hba0, wwpn: "21:00:00:00:00:00:00:02", switch: sw1}]
"""
S, T = 1111, 2222       # two sessions of a host: two of its transfers


@pytest.fixture
def array_spec(tmp_path):
    (tmp_path / "t.yaml").write_text(textwrap.dedent(ARRAY))
    return load_topology(tmp_path / "t.yaml").arrays[0]


def block(seed: int) -> np.ndarray:
    return pattern(seed, 0, 4096)


# (initiator, block written to, (session, number), seed of the data) -> what the array does
# with it ("applied", "acknowledged": not applied again, or the code it refuses with);
# each case runs in order on one array.
SEQUENCE = [
    ("h1/hba0", 0, (S, 0), 1, "applied"),
    ("h1/hba0", 0, (S, 0), 2, "acknowledged"),      # the same WRITE again: applied once
    ("h1/hba1", 0, (S, 0), 3, "acknowledged"),      # ... even on the other HBA
    ("h1/hba0", 8, (S, 1), 4, "applied"),
    ("h1/hba0", 16, (S, 3), 5, "applied"),          # #2 not yet
    ("h1/hba1", 24, (S, 2), 6, "applied"),          # overtaken, never applied: applied now
    ("h1/hba0", 24, (S, 2), 17, "acknowledged"),    # ... and once only
    ("h1/hba0", 8, (S, 1), 7, "acknowledged"),
    ("h2/hba0", 32, (S, 0), 8, "applied"),          # another host numbers its own WRITEs
    ("h1/hba0", 40, (S, 4), 9, "applied"),
    ("h1/hba0", 48, (T, 0), 10, "applied"),         # another transfer: a new session
    ("h1/hba0", 16, (S, 3), 11, "acknowledged"),    # the first is still known
    ("h1/hba0", 64, (S, 5), 14, "applied"),         # ... and goes on
    ("h1/hba1", 72, (T, 1), 15, "applied"),         # each session counts on its own
    ("h1/hba1", 24, (S, 2), 16, "acknowledged"),
    ("h1/hba0", 56, None, 12, "applied"),           # no number (an array copying): applied
    ("h1/hba0", 56, None, 13, "applied"),
]


def apply(arr, case):
    initiator, lba, seq, seed, _ = case
    try:
        assert arr.write(initiator, "fc0", 0, lba, block(seed), seq) == 4096
        return None
    except SanError as exc:
        return exc.code


def expected_blocks(cases) -> dict:
    """lba -> seed of the data the array must hold after `cases`."""
    held = {}
    for _, lba, _, seed, outcome in cases:
        if outcome == "applied":
            held[lba] = seed
    return held


def check_blocks(arr, held: dict) -> None:
    for lba, seed in held.items():
        assert np.array_equal(arr.read("h1/hba0", "fc0", 0, lba, 8), block(seed)), lba


@pytest.mark.parametrize("restart_at", [None, 1, 5, 9])
def test_a_write_sent_twice_is_applied_once_and_one_overtaken_is_applied_late(
        tmp_path, array_spec, restart_at):
    """Run the table on one array; with `restart_at`, the array dies and is built again from
    its state dir before that case (a retry after a restart is still recognized)."""
    arr = DiskArray(array_spec, tmp_path / "state", granule=64 * 1024)
    try:
        for i, case in enumerate(SEQUENCE):
            if i == restart_at:
                arr.close()
                arr = DiskArray(array_spec, tmp_path / "state", granule=64 * 1024)
            got = apply(arr, case)
            outcome = case[-1]
            assert got == (outcome if outcome not in ("applied", "acknowledged") else None), case
        check_blocks(arr, expected_blocks(SEQUENCE))
    finally:
        arr.close()


def test_the_sequence_table_survives_a_restart_and_a_torn_record_is_ignored(tmp_path, array_spec):
    arr = DiskArray(array_spec, tmp_path / "state", granule=64 * 1024)
    arr.write("h1/hba0", "fc0", 0, 0, block(1), (S, 0))
    arr.write("h2/hba0", "fc0", 0, 8, block(2), (S, 0))
    arr.sync()
    arr.close()
    path = tmp_path / "state" / "arrays" / "a1" / "sequences"
    raw = bytearray(path.read_bytes())
    raw[600] ^= 0xFF                                   # h2's record, torn by a crash
    path.write_bytes(bytes(raw))
    arr = DiskArray(array_spec, tmp_path / "state", granule=64 * 1024)
    try:
        assert set(arr.sequences.seen) == {("h1", "fc0", 0)}
        arr.write("h1/hba0", "fc0", 0, 0, block(3), (S, 0))          # still known: not applied
        arr.write("h2/hba0", "fc0", 0, 8, block(4), (S, 0))          # forgotten: applied again
        check_blocks(arr, {0: 1, 8: 4})
    finally:
        arr.close()


def test_a_sequencer_numbers_each_transfer_from_zero_in_a_session_of_its_own():
    seq = Sequencer()
    a, b = seq.transfer(), seq.transfer()
    first = [a() for _ in range(3)]
    assert [n for _, n in first] == [0, 1, 2] and len({s for s, _ in first}) == 1
    assert b()[1] == 0 and b()[0] != first[0][0]


def test_an_array_restarted_between_a_write_and_its_retry_applies_it_once(san):
    """array1 applies WRITE #5 of a transfer, then dies before answering and is restarted at
    once: the host retries #5 (and what followed) on the array that came back, which
    acknowledges what it had applied without applying it again."""
    old = san.element("array1")
    original = old.write

    def dies_after_applying(initiator, port, lun, lba, data, seq=None):
        answer = original(initiator, port, lun, lba, data, seq)
        if seq is not None and seq[1] == 5:
            san.kill("array1")
            san.restart("array1")
            raise SanError("ELEMENT_DOWN", "array1 died before answering")
        return answer
    old.write = dies_after_applying
    reports_before = san.element("host1").bytes_moved()
    transfers = san.call("host1", "write", "/db", 0, 64 * MiB, 5)
    assert sum(t.nbytes for t in transfers) == 64 * MiB
    assert san.element("host1").bytes_moved() - reports_before == 64 * MiB
    new = san.element("array1")
    assert new is not old and new.sequences.duplicates >= 1
    got = san.call("host1", "read_compare", "/db", 0, 64 * MiB, 5)
    assert got["first_mismatch"] is None


def test_a_host_whose_array_died_and_came_back_while_it_was_stopped_midway_carries_on(san):
    """The array dies and is restarted while the host is stopped mid-transfer (at its
    tripwire): the host finds it again and carries on, on the same path; nothing is lost
    or applied twice."""
    host = san.element("host1")
    host.trip_arm(16 * MiB)
    done = {}
    writer = threading.Thread(target=lambda: done.update(
        t=san.call("host1", "write", "/db", 0, 64 * MiB, 9)), daemon=True)
    writer.start()
    deadline = time.monotonic() + 30
    while host.bytes_moved() < 16 * MiB and time.monotonic() < deadline:
        time.sleep(0.005)
    san.kill("array1")
    san.restart("array1")
    applied = writes_applied(san, "array1")
    host.trip_release()
    writer.join(30)
    assert [t.resources for t in done["t"]] == [("host1/hba0:tx", "array1/fc0:rx")]
    assert applied == list(range(11 * CHUNK, 64 * MiB, CHUNK))   # #0-#10 were applied before
    assert san.call("host1", "read_compare", "/db", 0, 64 * MiB, 9)["first_mismatch"] is None


# -- who is told of a fabric change ---------------------------------------------------------------------
@pytest.mark.parametrize("name,told", [
    ("host1/hba0", ["host1"]),          # an HBA: its own host
    ("host1", []),                      # a host: nobody's path
    ("isl1", ["host1", "host2"]),       # an ISL, a switch, an array or its port: every host
    ("fcsw2", ["host1", "host2"]),
    ("array1", ["host1", "host2"]),
    ("array1/fc0", ["host1", "host2"]),
])
def test_a_fabric_change_is_told_to_the_hosts_whose_paths_it_can_touch(san, name, told):
    assert rscn_hosts(name, san.kinds) == told
    assert told_on_fault(san, name, ("host1", "host2")) == told


def told_on_fault(san, name: str, elements) -> list[str]:
    """Take `name` down (a link, or an element killed); which of `elements`, those still up,
    heard of it (their fabric epoch moved)."""
    before = {e: san.element(e).fabric_epoch for e in elements}
    if san.kind(name) is None:
        san.set_link(name, False)
    else:
        san.kill(name)
    return sorted(e for e in elements if e not in san.down and san.element(e).fabric_epoch != before[e])


@pytest.mark.parametrize("name,told", [
    ("host1/hba0", []),                 # an HBA: no array copies through it
    ("host1", []),
    ("isl1", ["array1", "array2"]),     # an ISL, a switch, an array or its port: every array
    ("fcsw2", ["array1", "array2"]),
    ("array1/fc0", ["array1", "array2"]),
    ("array2", ["array1", "array2"]),
])
def test_a_fabric_change_is_told_to_the_arrays_too(san, name, told):
    """Arrays are initiators of copies over FC: a copy under way must hear of a link down."""
    assert rscn_arrays(name, san.kinds) == told
    assert told_on_fault(san, name, ("array1", "array2")) == [a for a in told if a not in san.down]


# -- the window over a changing path (san.flows.peers.rerouted) ----------------------------------------
class Fabric:
    """A scripted path: `fail` maps (piece, attempt) -> the code that attempt fails with;
    `events` names the pieces while whose sending a fabric change is heard; `routes` is what
    each reroute grants (an exception: no path left)."""

    def __init__(self, fail=None, events=(), routes=("b", "c", "d")):
        self.fail, self.events, self.routes = dict(fail or {}), set(events), list(routes)
        self.sent, self.consumed, self.changes = [], [], 0
        self.route, self.seen = "a", 0

    def submit(self, piece, tag):
        from san.flows.peers import _Done
        if piece in self.events:
            self.events.discard(piece)
            self.changes += 1
        tag = tag if tag is not None else f"#{piece}"
        attempt = sum(1 for p, _, _ in self.sent if p == piece)
        self.sent.append((piece, tag, self.route))
        code = self.fail.get((piece, attempt))
        return tag, _Done(error=SanError(code, "scripted")) if code else _Done(piece * 10)

    def reroute(self):
        self.seen = self.changes
        route = self.routes.pop(0)
        if isinstance(route, Exception):
            raise route
        self.route = route
        return route

    def run(self, pieces, window=3):
        from san.flows.peers import rerouted
        rerouted(pieces, self.submit, lambda p, a, r: self.consumed.append((p, a, r)), window,
                 self.route, lambda: self.changes != self.seen, self.reroute)


@pytest.mark.parametrize("fail,events,routes,sent,consumed_routes,error", [
    # nothing happens: one command per piece, on the first route
    ({}, (), ("b",), [(0, "a"), (1, "a"), (2, "a"), (3, "a")], "aaaa", None),
    # a change is heard while piece 2 is sent: 0, 1 and 2 (unanswered) go again on route b
    ({}, (2,), ("b",), [(0, "a"), (1, "a"), (2, "a"), (0, "b"), (1, "b"), (2, "b"), (3, "b")],
     "bbbb", None),
    # a change that leaves the route as it was: nothing is sent again
    ({}, (2,), ("a",), [(0, "a"), (1, "a"), (2, "a"), (3, "a")], "aaaa", None),
    # piece 1 gets no answer: it and what followed go again, in order (on the same route)
    ({(1, 0): "ELEMENT_DOWN"}, (), ("a",),
     [(0, "a"), (1, "a"), (2, "a"), (3, "a"), (1, "a"), (2, "a"), (3, "a")], "aaaa", None),
    ({(0, 0): "LINK_DOWN"}, (), ("b",), [(0, "a"), (1, "a"), (2, "a"), (0, "b"), (1, "b"),
                                          (2, "b"), (3, "b")], "bbbb", None),
    # a refusal is not retried
    ({(1, 0): "READ_ONLY"}, (), (), None, None, "READ_ONLY"),
    # no path left
    ({(0, 0): "LINK_DOWN"}, (), (SanError("LINK_DOWN", "no path"),), None, None, "LINK_DOWN"),
    # a command that never gets an answer fails the transfer after RETRIES tries
    ({(0, i): "ELEMENT_DOWN" for i in range(10)}, (), ("a",) * 10, None, None, "ELEMENT_DOWN"),
], ids=["quiet", "change-moves", "change-same-route", "no-answer", "no-answer-moves",
        "refused", "no-path", "never-answered"])
def test_the_window_resends_what_was_not_answered_in_order_on_the_new_path(
        fail, events, routes, sent, consumed_routes, error):
    from san.flows.peers import RETRIES
    fabric = Fabric(fail, events, routes)
    if error:
        with pytest.raises(SanError) as info:
            fabric.run(range(4))
        assert info.value.code == error
        if error == "ELEMENT_DOWN":
            assert sum(1 for p, _, _ in fabric.sent if p == 0) == RETRIES + 1
        return
    fabric.run(range(4))
    assert [(p, r) for p, _, r in fabric.sent] == sent
    assert all(tag == f"#{p}" for p, tag, _ in fabric.sent)      # a piece keeps its tag
    assert [(p, a) for p, a, _ in fabric.consumed] == [(p, p * 10) for p in range(4)]
    assert "".join(r for _, _, r in fabric.consumed) == consumed_routes


def test_a_key_keeps_its_most_recent_sessions_in_a_bounded_file(tmp_path, array_spec):
    """Each transfer is a session: a key keeps the `SESSIONS` most recently used, in as many
    records (the least recently used one's record goes to the newest), across a restart."""
    from san.elements.sequences import RECORD, SESSIONS
    arr = DiskArray(array_spec, tmp_path / "state", granule=64 * 1024)
    path = tmp_path / "state" / "arrays" / "a1" / "sequences"
    try:
        arr.write("h1/hba0", "fc0", 0, 0, block(1), (1, 0))          # session 1, kept in use
        for session in range(2, SESSIONS + 6):
            arr.write("h1/hba0", "fc0", 0, 8, block(2), (session, 0))
            arr.write("h1/hba0", "fc0", 0, 0, block(1), (1, session))
        assert path.stat().st_size == SESSIONS * RECORD
        arr.close()
        arr = DiskArray(array_spec, tmp_path / "state", granule=64 * 1024)
        sessions = arr.sequences.seen[("h1", "fc0", 0)]
        assert len(sessions) == SESSIONS and 1 in sessions and 2 not in sessions
        arr.write("h1/hba0", "fc0", 0, 0, block(3), (1, 4))           # known: not applied
        arr.write("h1/hba0", "fc0", 0, 16, block(4), (SESSIONS + 5, 0))  # known: not applied
        arr.write("h1/hba0", "fc0", 0, 24, block(5), (2, 0))          # forgotten: applied
        assert np.array_equal(arr.read("h1/hba0", "fc0", 0, 0, 8), block(1))
        assert not arr.read("h1/hba0", "fc0", 0, 16, 8).any()
        assert np.array_equal(arr.read("h1/hba0", "fc0", 0, 24, 8), block(5))
    finally:
        arr.close()


def test_two_transfers_to_one_lun_after_an_array_restart_both_land(san):
    """Transfer A's first WRITE is lost with the array, which is restarted at once; transfer
    B (other blocks of the same LUN) writes before A's retry comes.  Each transfer numbers
    its own WRITEs, so A's retry is no gap in B's numbers: it is applied (before, it was
    refused INVALID_INPUT and A's bytes were never written)."""
    host, old = san.element("host1"), san.element("array1")
    original = old.write
    first = threading.Event()

    def dies_before_the_first(initiator, port, lun, lba, data, seq=None):
        if seq is not None and seq[1] == 0 and not first.is_set():
            first.set()
            san.kill("array1")
            san.restart("array1")
            raise SanError("ELEMENT_DOWN", "array1 died before applying it")
        return original(initiator, port, lun, lba, data, seq)
    old.write = dies_before_the_first
    in_reroute, b_done = threading.Event(), threading.Event()
    reroute = host._reroute

    def late(path):
        if threading.current_thread().name == "A" and not in_reroute.is_set():
            in_reroute.set()
            b_done.wait(30)
        return reroute(path)
    host._reroute = late
    out = {}

    def a():
        try:
            out["A"] = host.write("/db", 0, 8 * MiB, 1)
        except SanError as exc:
            out["A"] = exc
    thread = threading.Thread(target=a, name="A")
    thread.start()
    assert in_reroute.wait(30)
    host.write("/db", 64 * MiB, 8 * MiB, 2)
    b_done.set()
    thread.join(30)
    assert not isinstance(out["A"], SanError), out["A"]
    assert host.read_compare("/db", 0, 8 * MiB, 1)["first_mismatch"] is None
    assert host.read_compare("/db", 64 * MiB, 8 * MiB, 2)["first_mismatch"] is None


def test_a_write_older_than_the_gaps_kept_is_refused(tmp_path, array_spec):
    """Past `GAPS` gaps in a session, the oldest is forgotten: whether a WRITE there was
    applied is no longer known, so it is refused, not applied a second time over newer data."""
    from san.elements.sequences import GAPS
    arr = DiskArray(array_spec, tmp_path / "state", granule=64 * 1024)
    try:
        for n in range(0, 2 * GAPS + 4, 2):                  # 0, 2, 4, ...: a gap at each odd
            arr.write("h1/hba0", "fc0", 0, 8 * (n % 16), block(n + 1), (S, n))
        with pytest.raises(SanError) as info:
            arr.write("h1/hba0", "fc0", 0, 200, block(99), (S, 1))
        assert info.value.code == "INVALID_INPUT" and "WRITE #1 from h1" in info.value.message
        assert not arr.read("h1/hba0", "fc0", 0, 200, 8).any()
        arr.write("h1/hba0", "fc0", 0, 208, block(98), (S, 2 * GAPS + 1))   # a kept gap
        assert np.array_equal(arr.read("h1/hba0", "fc0", 0, 208, 8), block(98))
    finally:
        arr.close()


def test_a_copy_over_fc_hears_of_a_fabric_change_made_while_it_was_being_set_up(tmp_path):
    """array1/fc1 (its only port zoned with array2) goes down after the route was granted,
    while array2 takes its reservation: array1 heard of it then, and the copy takes a path
    again before its first chunk (LINK_DOWN here), rather than sending every byte over the
    dead link and succeeding (the epoch was read only once the copy thread ran)."""
    path = tmp_path / "s.yaml"
    path.write_text(f"name: t\ntopology: {TOPOLOGIES / 'two-switches.yaml'}\nsteps:\n"
                    "  - {op: write, host: host2, mount: /data, offset: 0, size: 32MiB, seed: 1}\n"
                    "  - {op: backup, definition: data-mirror, as: b1}\n"
                    "  - {op: copy_volume, backup: b1, to: {array: array2, volume: 2}, "
                    "expect_error: LINK_DOWN}\n")
    scenario = load_scenario(path)
    with LocalSan(scenario.topology, tmp_path / "state", chunk_size=4 * MiB) as san:
        a2 = san.element("array2")
        reserve = a2.mgmt_reserve

        def reserved_while_the_link_fails(caller, number):
            if caller == "array1":
                san.set_link("array1/fc1", False)
            return reserve(caller, number)
        a2.mgmt_reserve = reserved_while_the_link_fails
        runner = Runner(san, tmp_path / "state")
        reports = runner.run(scenario.steps)
        assert all(r.ok for r in reports), [(r.index, r.op, r.error) for r in reports]
        assert "array1/fc1" in reports[2].error.message
        assert not any("fc1" in link for link in runner.link_use)       # nothing crossed it
        assert san.call("array2", "read_info", 2) is None and a2.reserved == {}



class _Trip:
    """A host's tripwire that runs `act` once the host has moved `at` bytes."""

    def __init__(self, at, act):
        self.at, self.act, self.done = at, act, False

    def passed(self, moved):
        if not self.done and moved >= self.at:
            self.done = True
            self.act()

    def release(self):
        pass


def test_a_raw_write_under_a_fat_mount_cut_short_is_charged_its_write_back_too(tmp_path):
    """A raw write under a mounted FAT filesystem first writes the filesystem's view back
    (unmount); cut short, its partial result held only the stream's chunks, so the step was
    charged less than the host moved."""
    topo = textwrap.dedent(TOPOLOGY).replace(
        "/far, device: /dev/sda, port: array2/fc0, lun: 0, filesystem: none",
        "/far, device: /dev/sda, port: array2/fc0, lun: 0, filesystem: fat")
    (tmp_path / "t.yaml").write_text(topo)
    with LocalSan(load_topology(tmp_path / "t.yaml"), tmp_path / "state",
                  chunk_size=1 * MiB, window=WINDOW) as san:
        host = san.element("host2")
        host.write_files("/far", {"/a.bin": (64 * 1024, 3)})
        start = host.moved_bytes

        def cut():
            san.set_link("isl1", False)
            san.set_link("isl2", False)
        host.trip = _Trip(start + 4096 + 3 * MiB, cut)     # past the write-back and 3 MiB
        with pytest.raises(SanError) as info:
            host.write("/far", 32 * MiB, 16 * MiB, 6)
        assert info.value.code == "LINK_DOWN"
        charged = sum(t.nbytes for t in info.value.partial["transfers"])
        moved = host.moved_bytes - start
        assert charged == moved and moved % MiB                 # the write-back is in it
