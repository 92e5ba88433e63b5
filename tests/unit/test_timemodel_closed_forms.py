"""Modeled time checked against closed forms derived by hand, exact to float precision.

`san.timemodel.simulate` on the sharing patterns the experiment scenarios rest on
(topologies/scenarios/fan-out.yaml, eight-hosts.yaml, dr-drill.yaml, backup-week.yaml):
N flows into one array port, a slow ISL shared by flows limited elsewhere (max-min fair),
tape transfers crossing host FC, LAN NICs and a drive, the fan-out of three copies out of one
port, eight hosts on four arrays, and concurrent groups mixing FC, LAN and tape work.  Where a
case is built on a shipped topology, its capacities come from `san.links.capacities`, so the
resource names and speeds are the ones a run charges.

Rules the closed forms use (docs/report.md, "Bytes and modeled time"): each transfer waits its
latency L = 100 µs, then moves its bytes; the transfers of a chain run one after another; a
resource's bandwidth is shared max-min fair among the transfers crossing it; FC links and LAN
NICs are two resources, one per direction; MB = 10^6 bytes, 8GFC = 800 MB/s, 1GbE = 125 MB/s.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from san.flows.lan import MGMT_REQUEST, lan_transfer
from san.links import capacities
from san.timemodel import LATENCY, Transfer, busiest, simulate
from san.topology import load_topology

ROOT = Path(__file__).resolve().parents[2]
MB = 1_000_000
MiB = 1 << 20
L = LATENCY
FC8, GBE, GBE10, DRIVE, ENGINE = 800 * MB, 125 * MB, 1250 * MB, 160 * MB, 1000 * MB


def exact(x):
    """Equal to float precision (the event loop adds and subtracts; nothing is approximated)."""
    return pytest.approx(x, rel=1e-12, abs=1e-15)


@pytest.fixture(scope="module")
def eight_hosts():
    return capacities(load_topology(ROOT / "topologies" / "eight-hosts.yaml"))


@pytest.fixture(scope="module")
def two_sites():
    return capacities(load_topology(ROOT / "topologies" / "two-sites.yaml"))


def test_the_shipped_experiment_topologies_have_the_speeds_the_closed_forms_use(eight_hosts, two_sites):
    assert eight_hosts["array1/fc0:rx"] == eight_hosts["host1/hba0:tx"] == FC8
    assert eight_hosts["array1/copy"] == ENGINE and eight_hosts["backup1/lan:rx"] == GBE
    assert two_sites["isl-ab:tx"] == two_sites["isl-ab:rx"] == 200 * MB     # 2GFC
    assert two_sites["arrayA/fc1:tx"] == FC8 and two_sites["arrayB/copy"] == ENGINE
    assert two_sites["lib1/drive0"] == two_sites["lib1/drive1"] == DRIVE
    assert two_sites["hostA/lan:tx"] == two_sites["backup1/lan:rx"] == GBE


# -- shared array ports ---------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 4, 8])
def test_n_equal_flows_into_one_array_port_each_get_a_share_and_end_together(n):
    """N hosts write B each into one 8GFC array port (receive): each gets 800/N MB/s, so all
    end at L + N * B / 800 MB/s; the port is busy the whole time, each HBA too."""
    b = 32 * MiB
    cap = {"array1/fc0:rx": FC8, **{f"host{i}/hba0:tx": FC8 for i in range(n)}}
    chains = [[Transfer((f"host{i}/hba0:tx", "array1/fc0:rx"), b)] for i in range(n)]
    o = simulate(chains, cap)
    assert o.chain_ends == [exact(L + n * b / FC8)] * n
    assert o.busy["array1/fc0:rx"] == exact(n * b / FC8)
    assert o.bytes["array1/fc0:rx"] == n * b


@pytest.mark.parametrize("sizes_mb", [(100, 200, 300), (50, 50, 400, 400), (10, 20, 30, 40, 500)])
def test_unequal_flows_into_one_port_end_in_the_water_filling_closed_form(sizes_mb):
    """Sorted sizes b1 <= ... <= bN sharing capacity C: the k-th ends at
    L + (b1 + ... + b(k-1) + (N - k + 1) * bk) / C (each ending frees its share for the rest)."""
    sizes = [s * MB for s in sizes_mb]
    n = len(sizes)
    cap = {"array1/fc0:rx": FC8, **{f"h{i}:tx": FC8 for i in range(n)}}
    o = simulate([[Transfer((f"h{i}:tx", "array1/fc0:rx"), b)] for i, b in enumerate(sizes)], cap)
    ordered = sorted(sizes)
    want = [L + (sum(ordered[:k]) + (n - k) * ordered[k]) / FC8 for k in range(n)]
    assert sorted(o.chain_ends) == [exact(t) for t in want]
    assert o.end == exact(L + sum(sizes) / FC8)        # the port never idles until the end


def test_a_read_and_a_write_on_one_port_do_not_share_full_duplex():
    """FC is full duplex: a write (fc0 receive) and a read (fc0 transmit) each get 800 MB/s."""
    cap = {"array1/fc0:rx": FC8, "array1/fc0:tx": FC8, "host1/hba0:tx": FC8, "host2/hba0:rx": FC8}
    b = 80 * MB
    o = simulate([[Transfer(("host1/hba0:tx", "array1/fc0:rx"), b)],
                  [Transfer(("array1/fc0:tx", "host2/hba0:rx"), b)]], cap)
    assert o.chain_ends == [exact(L + b / FC8)] * 2


# -- a slow ISL shared by flows with other bottlenecks --------------------------------------------
ISL_CAP = {
    "isl:tx": 700 * MB, "isl:rx": 700 * MB,          # per direction; slower than the 8GFC feeds
    "f1/hba0:tx": 100 * MB,                          # f1 starts on a slow (100 MB/s) HBA
    "f2/hba0:tx": FC8, "f3/hba0:tx": FC8, "f4/hba0:tx": FC8, "f5/hba0:tx": FC8,
    "arrayB/fc0:rx": 500 * MB,                       # f2 and f5 (local, no ISL) end here
    "arrayB/fc1:rx": FC8, "arrayB/fc2:rx": FC8, "arrayB/fc3:rx": FC8,
    "f6/hba0:rx": FC8, "arrayB/fc4:tx": FC8,
}
ISL_PATHS = {
    "f1": ("f1/hba0:tx", "isl:tx", "arrayB/fc1:rx"),
    "f2": ("f2/hba0:tx", "isl:tx", "arrayB/fc0:rx"),
    "f3": ("f3/hba0:tx", "isl:tx", "arrayB/fc2:rx"),
    "f4": ("f4/hba0:tx", "isl:tx", "arrayB/fc3:rx"),
    "f5": ("f5/hba0:tx", "arrayB/fc0:rx"),                     # site B, never on the ISL
    "f6": ("arrayB/fc4:tx", "isl:rx", "f6/hba0:rx"),           # the ISL's other direction
}


@pytest.mark.parametrize("case,sizes_mb,ends", [
    # Rates by progressive filling: f1 is held to 100 by its HBA (below the ISL's 700/4 = 175);
    # the ISL's other 600 go 200 each to f2, f3, f4; f5 gets what f2 leaves of arrayB/fc0,
    # 500 - 200 = 300; f6 runs the other way: 700 (the ISL), not shared.  Sizes = rate x 1 s:
    # everyone ends at 1 s.
    ("rates", {"f1": 100, "f2": 200, "f3": 200, "f4": 200, "f5": 300, "f6": 700},
     {"f1": 1.0, "f2": 1.0, "f3": 1.0, "f4": 1.0, "f5": 1.0, "f6": 1.0}),
    # f1 (50 MB) ends at 0.5 s; then the ISL's 700 is split 700/3 among f2-f4, and arrayB/fc0
    # gives f5 500 - 700/3 = 800/3.  By 0.5 s f2-f4 moved 100 MB, f5 150 MB: f2-f4 of 275 MB
    # and f5 of 350 MB need 0.75 s more.
    ("f1 ends early", {"f1": 50, "f2": 275, "f3": 275, "f4": 275, "f5": 350},
     {"f1": 0.5, "f2": 1.25, "f3": 1.25, "f4": 1.25, "f5": 1.25}),
    # f5 (150 MB) ends at 0.5 s: arrayB/fc0 then has only f2, which the ISL still holds to
    # 200: nothing speeds up.  f3 (300 MB) ends at 1.5 s; f2 and f4 (400 MB, 100 MB left)
    # then split the ISL's 700 - 100 (f1, still held by its HBA): 300 MB/s each, so they end
    # at 1.5 + 100/300 s; f1 (200 MB at 100 MB/s) at 2 s, the ISL all its own by then.
    ("staggered", {"f1": 200, "f2": 400, "f3": 300, "f4": 400, "f5": 150},
     {"f1": 2.0, "f2": 1.5 + 1 / 3, "f3": 1.5, "f4": 1.5 + 1 / 3, "f5": 0.5}),
])
def test_a_slow_isl_shared_max_min_fair_with_flows_limited_elsewhere(case, sizes_mb, ends):
    names = list(sizes_mb)
    o = simulate([[Transfer(ISL_PATHS[f], sizes_mb[f] * MB)] for f in names], ISL_CAP)
    assert dict(zip(names, o.chain_ends)) == {f: exact(L + ends[f]) for f in names}


def test_the_dr_copy_runs_at_isl_speed(two_sites):
    """dr-drill.yaml step 3: 130 granules from arrayA/fc1 over the 2GFC ISL to arrayB/fc1,
    after 4 management messages, then the 512-byte volume info: the data at 200 MB/s."""
    data = 130 * 256 * 1024
    path = ("arrayA/fc1:tx", "isl-ab:tx", "arrayB/fc1:rx")
    msgs = [lan_transfer("backup1", "arrayA", 96), lan_transfer("arrayA", "backup1", 240),
            lan_transfer("backup1", "arrayA", 16), lan_transfer("arrayA", "backup1", 288)]
    chain = msgs + [Transfer(path, data), lan_transfer("arrayA", "arrayB", 512)]
    o = simulate([chain], two_sites)
    lan_bytes = sum(t.nbytes for t in msgs) + MGMT_REQUEST + 512
    assert o.end == exact(6 * L + data / (200 * MB) + lan_bytes / GBE)
    assert o.end == pytest.approx(0.170994, rel=1e-3)      # the figure in dr-drill.yaml
    assert busiest(o.busy) == "arrayA/fc1"                  # ties with the ISL: by name


# -- LAN and tape ---------------------------------------------------------------------------------
def _tape(host: str, array: str, drive: int, nbytes: int) -> Transfer:
    """A tape backup's image: array -> FC -> host -> host's NIC -> server's NIC -> drive."""
    return Transfer((f"{array}/fc0:tx", f"{host}/hba0:rx", f"{host}/lan:tx", "backup1/lan:rx",
                     f"lib1/drive{drive}"), nbytes)


def _tape_cap(lan: float, drive: float = DRIVE) -> dict:
    cap = {}
    for host, array in (("hostA", "arrayA"), ("hostB", "arrayB")):
        cap.update({f"{array}/fc0:tx": FC8, f"{host}/hba0:rx": FC8, f"{host}/lan:tx": lan})
    cap.update({"backup1/lan:rx": lan, "lib1/drive0": drive, "lib1/drive1": drive})
    return cap


B_TAPE = 100 * MB


@pytest.mark.parametrize("case,lan,tapes,each_end", [
    # one tape: its slowest link is the 1GbE LAN (125 MB/s), not the 160 MB/s drive
    ("one tape, 1GbE", GBE, [("hostA", "arrayA", 0)], B_TAPE / GBE),
    # with a 10GbE LAN the drive is the bottleneck
    ("one tape, 10GbE", GBE10, [("hostA", "arrayA", 0)], B_TAPE / DRIVE),
    # two hosts, one drive, 1GbE: the server's NIC (receive) is shared: 62.5 MB/s each
    ("two on one drive, 1GbE", GBE, [("hostA", "arrayA", 0), ("hostB", "arrayB", 0)],
     2 * B_TAPE / GBE),
    # a second drive buys nothing while the server's NIC is the bottleneck
    ("two on two drives, 1GbE", GBE, [("hostA", "arrayA", 0), ("hostB", "arrayB", 1)],
     2 * B_TAPE / GBE),
    # with 10GbE the one drive is shared: 80 MB/s each
    ("two on one drive, 10GbE", GBE10, [("hostA", "arrayA", 0), ("hostB", "arrayB", 0)],
     2 * B_TAPE / DRIVE),
    # two drives: each tape at its drive's full 160 MB/s
    ("two on two drives, 10GbE", GBE10, [("hostA", "arrayA", 0), ("hostB", "arrayB", 1)],
     B_TAPE / DRIVE),
    # one host's two tapes on two drives, 1GbE: the host's NIC (transmit) is the bottleneck
    ("one host, two drives, 1GbE", GBE, [("hostA", "arrayA", 0), ("hostA", "arrayA", 1)],
     2 * B_TAPE / GBE),
])
def test_tape_transfers_share_lan_nics_and_drives(case, lan, tapes, each_end):
    o = simulate([[_tape(h, a, d, B_TAPE)] for h, a, d in tapes], _tape_cap(lan))
    assert o.chain_ends == [exact(L + each_end)] * len(tapes)


def test_two_unequal_tapes_on_one_drive_fill_the_lan_in_turn():
    """40 MB and 100 MB images at once over a 1GbE LAN: both at 62.5 MB/s until the small
    one ends (2 x 40 MB / 125 MB/s), then the big one alone at 125: it ends at 140 MB / 125."""
    cap = _tape_cap(GBE)
    o = simulate([[_tape("hostA", "arrayA", 0, 40 * MB)], [_tape("hostB", "arrayB", 0, 100 * MB)]], cap)
    assert o.chain_ends == [exact(L + 80 * MB / GBE), exact(L + 140 * MB / GBE)]
    assert o.busy["lib1/drive0"] == exact(140 * MB / GBE)


def test_the_week_of_tapes_all_modeled_together(two_sites):
    """backup-week.yaml step 7: the 8 tape images of the week (7 from hostA, 1 from hostB,
    each 66 granules and a 512-byte header) share backup1's NIC, 125/8 MB/s each."""
    image = 66 * 256 * 1024 + 512
    chains = [[_tape("hostA", "arrayA", 0, image)] for _ in range(7)] + \
             [[_tape("hostB", "arrayB", 0, image)]]
    o = simulate(chains, two_sites)
    assert o.chain_ends == [exact(L + 8 * image / GBE)] * 8
    assert o.end == pytest.approx(1.107429, rel=1e-6)       # the figure in backup-week.yaml


# -- the fan-out ----------------------------------------------------------------------------------
FANOUT_B = 64 * MiB
# the management messages of one copy over FC, as san.flows sends them: copy order (with the
# 512-byte volume info the source must hold) and answer, wait order and answer (256 bytes each
# plus their arguments), then the 512-byte volume info to the destination
FANOUT_MSGS = [("backup1", "array1", 616), ("array1", "backup1", 240),
               ("backup1", "array1", 16), ("array1", "backup1", 288)]


def _fanout_chain(dest: str) -> list[Transfer]:
    return ([lan_transfer(a, b, n) for a, b, n in FANOUT_MSGS]
            + [Transfer(("array1/fc1:tx", f"{dest}/fc1:rx"), FANOUT_B),
               lan_transfer("array1", dest, 512)])


def test_fan_out_three_copies_share_the_source_port(eight_hosts):
    """fan-out.yaml step 3.  The three chains are the same and run in step: each of the 4
    messages shares backup1's and array1's NICs three ways, the data shares array1/fc1
    (transmit) three ways, the volume info shares array1's NIC three ways:
    6 L + 3 x (messages' bytes) / 125 MB/s + 3 B / 800 MB/s."""
    o = simulate([_fanout_chain(d) for d in ("array2", "array3", "array4")], eight_hosts)
    lan_bytes = sum(MGMT_REQUEST + n for *_, n in FANOUT_MSGS) + MGMT_REQUEST + 512
    assert lan_bytes == 2952
    want = 6 * L + 3 * lan_bytes / GBE + 3 * FANOUT_B / FC8
    assert o.chain_ends == [exact(want)] * 3
    assert round(o.end, 6) == 0.252329                      # the golden report's figure
    assert o.busy["array1/fc1:tx"] == exact(3 * FANOUT_B / FC8)
    assert busiest(o.busy) == "array1/fc1"      # ties with arrays 2-4's fc1: by name


def test_fan_out_one_copy_alone_gets_the_whole_port(eight_hosts):
    o = simulate([_fanout_chain("array2")], eight_hosts)
    lan_bytes = sum(MGMT_REQUEST + n for *_, n in FANOUT_MSGS) + MGMT_REQUEST + 512
    assert o.end == exact(6 * L + lan_bytes / GBE + FANOUT_B / FC8)


# -- eight hosts, four arrays ---------------------------------------------------------------------
HOST_B = 32 * MiB


def _array_of(host: int) -> str:
    return f"array{(host + 1) // 2}"


def test_eight_hosts_write_at_once_two_per_array_port(eight_hosts):
    """eight-hosts.yaml step 0: hosts 2k-1 and 2k share arrayk/fc0 (receive): 2 B / 800 MB/s."""
    chains = [[Transfer((f"host{h}/hba0:tx", f"{_array_of(h)}/fc0:rx"), HOST_B)] for h in range(1, 9)]
    o = simulate(chains, eight_hosts)
    assert o.chain_ends == [exact(L + 2 * HOST_B / FC8)] * 8
    assert {r: o.busy[r] for r in o.busy if r.endswith("/fc0:rx")} == \
        {f"array{k}/fc0:rx": exact(2 * HOST_B / FC8) for k in range(1, 5)}


def _backup_chain(host: int, mirror: bool) -> list[Transfer]:
    """A backup's chain as the flows make it, with its LAN messages as latency-only transfers
    (their few hundred bytes are left to the integration test): a mirror is 7 messages, the
    copy on the array's engine, 3 messages (11 transfers); a snapshot copies nothing: 8."""
    def msg():
        return Transfer(("backup1/lan:tx", f"host{host}/lan:rx"), 0)
    copy = [Transfer((f"{_array_of(host)}/copy",), HOST_B)] if mirror else []
    return [msg() for _ in range(7 if mirror else 5)] + copy + [msg() for _ in range(3)]


def test_eight_backups_at_once_mirrors_share_copy_engines_snapshots_copy_nothing(eight_hosts):
    """eight-hosts.yaml step 3: hosts 1-5 and 7 mirror, 6 and 8 snapshot.  Arrays 1 and 2 run
    two mirrors (500 MB/s each), arrays 3 and 4 one (1000 MB/s)."""
    snaps = {6, 8}
    o = simulate([_backup_chain(h, h not in snaps) for h in range(1, 9)], eight_hosts)
    want = {1: 11 * L + 2 * HOST_B / ENGINE, 2: 11 * L + 2 * HOST_B / ENGINE,
            3: 11 * L + 2 * HOST_B / ENGINE, 4: 11 * L + 2 * HOST_B / ENGINE,
            5: 11 * L + HOST_B / ENGINE, 7: 11 * L + HOST_B / ENGINE,
            6: 8 * L, 8: 8 * L}
    assert dict(zip(range(1, 9), o.chain_ends)) == {h: exact(t) for h, t in want.items()}
    assert o.end == exact(11 * L + 2 * HOST_B / ENGINE)
    assert [o.busy[f"array{k}/copy"] for k in range(1, 5)] == \
        [exact(2 * HOST_B / ENGINE)] * 2 + [exact(HOST_B / ENGINE)] * 2
    assert busiest(o.busy) == "array1/copy"


# -- concurrent groups mixing FC, LAN and tape ----------------------------------------------------
def _write(host, array, n):       # a host writes: its HBA transmits, the array port receives
    return Transfer((f"{host}/hba0:tx", f"{array}/fc0:rx"), n)


def _read(host, array, n):        # a host reads: the array port transmits, the HBA receives
    return Transfer((f"{array}/fc0:tx", f"{host}/hba0:rx"), n)


MIXED = [
    # a write and a tape backup on hostA's FC link, opposite directions: no sharing; the tape
    # runs at the LAN's 125 MB/s
    ("write beside a tape, full duplex",
     [[_write("hostA", "arrayA", 80 * MB)], [_tape("hostA", "arrayA", 0, 125 * MB)]],
     [80 * MB / FC8, 125 * MB / GBE]),
    # a read beside two tapes of the same host, the same FC direction: the tapes are held to
    # 62.5 MB/s each by hostA's NIC, so the read gets the rest of arrayA/fc0 (800 - 125 = 675)
    # and ends at 0.1 s; the tapes do not speed up after it (the NIC still limits them)
    ("read beside two tapes, max-min leftovers",
     [[_read("hostA", "arrayA", 67_500_000)], [_tape("hostA", "arrayA", 0, 125 * MB)],
      [_tape("hostA", "arrayA", 1, 125 * MB)]],
     [0.1, 2.0, 2.0]),
    # a mirror (copy engine), a copy over the ISL and a chain of 10 management messages touch
    # no common resource: each as if alone
    ("mirror, ISL copy and LAN messages, disjoint",
     [[Transfer(("arrayA/copy",), 100 * MB)],
      [Transfer(("arrayA/fc1:tx", "isl-ab:tx", "arrayB/fc1:rx"), 100 * MB)],
      [lan_transfer("backup1", "hostB", 0) for _ in range(10)]],
     [100 * MB / ENGINE, 100 * MB / (200 * MB), 10 * MGMT_REQUEST / GBE + 9 * L]),
    # a tape and a bulk LAN transfer into backup1 share its NIC (receive); a host write on
    # another host's FC does not touch it
    ("tape and LAN share the server's NIC",
     [[_tape("hostA", "arrayA", 0, 50 * MB)], [Transfer(("hostB/lan:tx", "backup1/lan:rx"), 50 * MB)],
      [_write("hostB", "arrayB", 200 * MB)]],
     [100 * MB / GBE, 100 * MB / GBE, 200 * MB / FC8]),
    # a chain mixing all three (a backup to tape after a flush: FC write, 2 messages, the tape)
    # beside a restore on the copy engine
    ("one chain of FC, LAN and tape work beside a copy",
     [[_write("hostA", "arrayA", 8 * MB), lan_transfer("backup1", "hostA", 0),
       lan_transfer("hostA", "backup1", 0), _tape("hostA", "arrayA", 0, 25 * MB)],
      [Transfer(("arrayB/copy",), 300 * MB)]],
     [8 * MB / FC8 + 2 * MGMT_REQUEST / GBE + 25 * MB / GBE + 3 * L, 300 * MB / ENGINE]),
]


@pytest.mark.parametrize("case,chains,ends", MIXED, ids=[m[0] for m in MIXED])
def test_concurrent_groups_mixing_fc_lan_and_tape(two_sites, case, chains, ends):
    o = simulate(chains, two_sites)
    assert o.chain_ends == [exact(L + t) for t in ends]
    assert o.end == exact(L + max(ends))
