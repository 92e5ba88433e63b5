"""Modeled time: closed forms of max-min fair sharing, chains, busy time."""
from __future__ import annotations

import random

import pytest

from san.errors import SanError
from san.timemodel import LATENCY, Outcome, Transfer, busiest, simulate

MB = 1_000_000
L = LATENCY


def approx(x):
    return pytest.approx(x, rel=1e-9, abs=1e-12)


def test_one_transfer_on_idle_path():
    cap = {"host/hba0:tx": 100 * MB, "sw/p1:rx": 200 * MB, "array/fc0:rx": 50 * MB}
    o = simulate([[Transfer(tuple(cap), 10 * MB)]], cap)
    assert o.end == approx(10 * MB / (50 * MB) + 100e-6)
    assert o.chain_ends == [approx(0.2001)]
    # busy time is the data phase only, not the latency
    assert o.busy == {r: approx(0.2) for r in cap}
    assert o.bytes == {r: 10 * MB for r in cap}
    assert busiest(o.busy) in {"host/hba0", "sw/p1", "array/fc0"}


def test_start_offset():
    cap = {"l:tx": 100 * MB}
    o = simulate([[Transfer(("l:tx",), 100 * MB)]], cap, start=1_767_225_600.0)
    assert o.end - 1_767_225_600.0 == pytest.approx(1.0 + L, abs=1e-6)
    assert o.chain_ends == [o.end]


def test_two_transfers_sharing_a_link_end_together():
    cap = {"isl:tx": 100 * MB, "a:tx": 1000 * MB, "b:tx": 1000 * MB}
    b = 30 * MB
    o = simulate([[Transfer(("a:tx", "isl:tx"), b)], [Transfer(("b:tx", "isl:tx"), b)]], cap)
    assert o.chain_ends == [approx(2 * b / (100 * MB) + L)] * 2
    assert o.end == approx(0.6 + L)
    assert o.busy["isl:tx"] == approx(0.6)
    assert o.bytes["isl:tx"] == 2 * b
    assert o.busy["a:tx"] == approx(0.6)
    assert busiest(o.busy) == "a"          # a, b and isl were all busy 0.6 s: ties by name


def test_different_bottlenecks_give_unequal_rates():
    # A crosses X (50 MB/s) and Y (200 MB/s); B crosses only Y.  Max-min: A is held to 50 by X,
    # so B gets the remaining 150 of Y.  A (50 MB) ends after 1 s; B (300 MB) has moved 150 MB
    # by then and moves the other 150 MB alone at 200 MB/s: 0.75 s more.
    cap = {"X:tx": 50 * MB, "Y:tx": 200 * MB}
    o = simulate([[Transfer(("X:tx", "Y:tx"), 50 * MB)], [Transfer(("Y:tx",), 300 * MB)]], cap)
    assert o.chain_ends[0] == approx(L + 1.0)
    assert o.chain_ends[1] == approx(L + 1.75)
    assert o.end == approx(L + 1.75)
    assert o.busy == {"X:tx": approx(1.0), "Y:tx": approx(1.75)}
    assert o.bytes == {"X:tx": 50 * MB, "Y:tx": 350 * MB}
    assert busiest(o.busy) == "Y"


def test_three_level_water_filling():
    # R1 (90): f1, f2, f3; R2 (100): f3, f4.  R1 is the tightest (30 each), then f4 gets the
    # remaining 70 of R2.  Check by the time each chain takes to move rate x 1 s of bytes.
    cap = {"R1": 90 * MB, "R2": 100 * MB}
    chains = [[Transfer(("R1",), 30 * MB, latency=0)], [Transfer(("R1",), 30 * MB, latency=0)],
              [Transfer(("R1", "R2"), 30 * MB, latency=0)], [Transfer(("R2",), 70 * MB, latency=0)]]
    o = simulate(chains, cap)
    assert o.chain_ends == [approx(1.0)] * 4


def test_chain_runs_transfers_one_after_another():
    cap = {"a:tx": 100 * MB, "b:tx": 200 * MB}
    o = simulate([[Transfer(("a:tx",), 10 * MB), Transfer(("b:tx",), 20 * MB)]], cap)
    assert o.end == approx(0.1 + L + 0.1 + L)
    assert o.busy == {"a:tx": approx(0.1), "b:tx": approx(0.1)}


def test_short_and_long_transfer_share_then_long_speeds_up():
    cap = {"l:tx": 100 * MB}
    short, long_ = 10 * MB, 30 * MB
    o = simulate([[Transfer(("l:tx",), short)], [Transfer(("l:tx",), long_)]], cap)
    # both at 50 MB/s until the short one ends (0.2 s), then the long one alone at 100 MB/s
    assert o.chain_ends[0] == approx(L + 2 * short / (100 * MB))
    assert o.chain_ends[1] == approx(L + (short + long_) / (100 * MB))
    assert o.busy["l:tx"] == approx(0.4)


def test_late_joiner_after_a_latency_only_step():
    cap = {"l:tx": 100 * MB}
    # B waits 0.5 s (a latency-only transfer), then its own 100 µs, then shares the link
    a = [Transfer(("l:tx",), 100 * MB)]
    b = [Transfer((), 0, latency=0.5), Transfer(("l:tx",), 50 * MB)]
    o = simulate([a, b], cap)
    assert o.chain_ends == [approx(1.5 + L), approx(1.5 + L)]
    assert o.busy["l:tx"] == approx(1.5)


def test_latency_only_and_empty_cases():
    cap = {"l:tx": 100 * MB}
    o = simulate([[Transfer(("l:tx",), 0)], [Transfer((), 0)], [Transfer((), 12345)], []], cap, start=5.0)
    assert o.chain_ends == [approx(5 + L), approx(5 + L), approx(5 + L), 5.0]
    assert o.end == approx(5 + L)
    assert o.busy == {"l:tx": 0.0}
    assert busiest(o.busy) is None
    o = simulate([], cap, start=3.0)
    assert o == Outcome(end=3.0, chain_ends=[], busy={}, bytes={})


def test_unknown_resource_and_bad_values():
    with pytest.raises(SanError) as e:
        simulate([[Transfer(("nope:tx",), 10)]], {"l:tx": 1.0})
    assert e.value.code == "INVALID_INPUT" and "nope:tx" in e.value.message
    with pytest.raises(SanError) as e:
        simulate([[Transfer(("l:tx",), -1)]], {"l:tx": 1.0})
    assert e.value.code == "INVALID_INPUT"
    with pytest.raises(SanError) as e:
        simulate([[Transfer(("l:tx",), 1)]], {"l:tx": 0.0})
    assert e.value.code == "INVALID_INPUT" and "l:tx" in e.value.message


def test_many_small_transfers_do_not_drift():
    cap = {"l:tx": 3 * MB}
    n = 1000
    o = simulate([[Transfer(("l:tx",), 7) for _ in range(n)]] * 3, cap)
    # three chains always share the link: each transfer takes its latency + 21 bytes / 3 MB/s
    per = L + 7 * 3 / (3 * MB)
    assert o.chain_ends == [pytest.approx(n * per, rel=1e-9)] * 3
    assert o.bytes["l:tx"] == 3 * n * 7


def test_10000_transfers_in_8_chains():
    rnd = random.Random(7)
    cap = {f"h{i}:tx": 100 * MB * (1 + i % 3) for i in range(8)}
    cap |= {f"a{i}:rx": 400 * MB for i in range(2)}
    cap["isl:tx"] = 400 * MB
    chains = [[Transfer((f"h{c}:tx", "isl:tx", f"a{c % 2}:rx"), rnd.randint(1, 8 << 20)) for _ in range(1250)]
              for c in range(8)]
    o = simulate(chains, cap)
    total = sum(t.nbytes for ch in chains for t in ch)
    assert o.bytes["isl:tx"] == total
    # the ISL can never beat its bandwidth, and the link is busy at most the whole time
    assert o.end >= total / (400 * MB)
    assert o.busy["isl:tx"] <= o.end + 1e-9
    assert max(o.busy.values()) == pytest.approx(o.busy["isl:tx"], rel=1e-9)
    assert busiest(o.busy) in {"a0", "a1", "isl"}


def test_busiest():
    assert busiest({}) is None
    assert busiest({"a:tx": 0.0}) is None
    # max over a link's resources, not the sum
    assert busiest({"a:tx": 1.0, "a:rx": 1.0, "b:tx": 1.5}) == "b"
    assert busiest({"b:tx": 2.0, "a:rx": 2.0}) == "a"             # ties by name
    assert busiest({"b:tx": 2.0, "a:rx": 2.0 - 1e-13}) == "a"     # up to float noise
    assert busiest({"x/1": 1.0, "x/2": 3.0}, link_of=lambda r: r.split("/")[0]) == "x"
