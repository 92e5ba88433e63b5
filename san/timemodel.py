"""Modeled time: transfers over shared links, with max-min fair bandwidth sharing.

The contract ("Time"): every transfer is charged on the links it crosses; a link's bandwidth
is shared max-min fair among the transfers crossing it at that moment; each transfer pays a
100 µs latency once; for one transfer on an idle path, ``modeled_s = bytes / slowest link +
100 µs``; a ``concurrent`` step takes until its last inner step ends.

Here a *resource* is one direction of a link (e.g. ``'host1/hba0:tx'``) or anything else with
a bandwidth in bytes/s (an array's internal copy engine, a tape drive).  A `Transfer` crosses
a tuple of resources.  A *chain* is a list of transfers run one after another (one scenario
step); `simulate` runs chains concurrently from `start`:

* a transfer first waits its latency (using no bandwidth), then moves its bytes;
* the transfers moving at a moment get max-min fair rates (progressive filling: repeatedly
  find the resource whose remaining capacity divided by its unfrozen transfers is smallest,
  give that share to those transfers and subtract it everywhere they cross);
* rates are recomputed at every event (a transfer entering its data phase or finishing), and
  a finishing transfer starts the next one of its chain.

Cost: O(events x moving transfers x resources per transfer); at most one transfer per chain
moves at a time, so 10,000 transfers in 8 chains take a few tens of milliseconds.

>>> o = simulate([[Transfer(("l:tx",), 100_000_000)]], {"l:tx": 100e6})
>>> round(o.end, 6)
1.0001
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

from san.errors import SanError

__all__ = ["LATENCY", "Transfer", "Outcome", "simulate", "busiest"]

LATENCY = 100e-6
_EPS_BYTES = 1e-6


@dataclass(frozen=True)
class Transfer:
    """`nbytes` moved across `resources` (ids in the capacity map) after `latency` seconds.

    `counted` is False for work that takes time but moves no payload (reading a destination
    only to check it, a scrub): it is charged on its resources but not in a step's `bytes`.
    """
    resources: tuple[str, ...]
    nbytes: int
    latency: float = LATENCY
    counted: bool = True


@dataclass
class Outcome:
    end: float                                          # start + makespan
    chain_ends: list[float]                             # absolute end time of each chain
    busy: dict[str, float] = field(default_factory=dict)   # resource -> seconds moving bytes
    bytes: dict[str, int] = field(default_factory=dict)    # resource -> bytes that crossed it


def _maxmin(paths: dict[int, int], path_res: list[tuple[str, ...]], capacity: dict[str, float]) -> dict[int, float]:
    """Max-min fair rate per path, by progressive filling.

    `paths` maps a path id (index into `path_res`, a tuple of resources) to how many moving
    transfers follow it; transfers on the same path get the same rate.
    """
    count: dict[str, int] = {}
    users: dict[str, list[int]] = {}
    for p, k in paths.items():
        for r in path_res[p]:
            count[r] = count.get(r, 0) + k
            users.setdefault(r, []).append(p)
    left = {r: capacity[r] for r in count}
    rates: dict[int, float] = {}
    while count:
        # the bottleneck: smallest fair share among resources still carrying unfrozen transfers
        r_star = min(count, key=lambda r: (left[r] / count[r], r))
        share = left[r_star] / count[r_star]
        for p in users[r_star]:
            if p in rates:
                continue
            rates[p] = share
            k = paths[p]
            for r in path_res[p]:
                left[r] -= share * k
                c = count[r] - k
                if c:
                    count[r] = c
                else:
                    del count[r]
    return rates


def simulate(chains: list[list[Transfer]], capacity: dict[str, float], start: float = 0.0) -> Outcome:
    """Run `chains` concurrently from `start` over resources of `capacity` bytes/s."""
    # validate and flatten: transfer id -> resources (deduplicated), bytes, latency
    res: list[tuple[str, ...]] = []
    path_ids: dict[tuple[str, ...], int] = {}  # distinct resource tuples
    path_res: list[tuple[str, ...]] = []
    pid: list[int] = []                        # transfer id -> path id
    nbytes: list[float] = []
    lat: list[float] = []
    chain_ids: list[list[int]] = []
    bytes_by: dict[str, int] = {}
    for ci, chain in enumerate(chains):
        ids = []
        for tr in chain:
            rs = tuple(dict.fromkeys(tr.resources))
            for r in rs:
                cap = capacity.get(r)
                if cap is None:
                    raise SanError("INVALID_INPUT", f"transfer crosses unknown resource {r!r} (no capacity given)")
                if not cap > 0:
                    raise SanError("INVALID_INPUT", f"resource {r!r} has capacity {cap!r}; expected > 0 bytes/s")
            if tr.nbytes < 0:
                raise SanError("INVALID_INPUT", f"transfer over {rs} has negative size {tr.nbytes}")
            if not tr.latency >= 0:
                raise SanError("INVALID_INPUT", f"transfer over {rs} has latency {tr.latency!r}; expected >= 0")
            for r in rs:
                bytes_by[r] = bytes_by.get(r, 0) + int(tr.nbytes)
            ids.append(len(res))
            # a transfer crossing nothing, or moving nothing, takes only its latency
            res.append(rs if tr.nbytes > 0 else ())
            p = path_ids.get(res[-1])
            if p is None:
                p = path_ids[res[-1]] = len(path_res)
                path_res.append(res[-1])
            pid.append(p)
            nbytes.append(float(tr.nbytes) if rs else 0.0)
            lat.append(float(tr.latency))
        chain_ids.append(ids)

    busy: dict[str, float] = {r: 0.0 for r in bytes_by}
    n_chains = len(chains)
    chain_ends = [0.0] * n_chains             # times are relative to `start` until the end
    pos = [0] * n_chains                      # index of the current transfer in each chain
    remaining: dict[int, float] = {}          # moving transfer id -> bytes left
    chain_of: dict[int, int] = {}
    waiting: list[tuple[float, int, int]] = []  # heap of (data phase start, chain, transfer)
    now = 0.0

    def begin(ci: int, t_at: float) -> None:
        """Start the transfer at pos[ci] of chain ci at time t_at (or end the chain)."""
        ids = chain_ids[ci]
        if pos[ci] >= len(ids):
            chain_ends[ci] = t_at
            return
        t = ids[pos[ci]]
        heapq.heappush(waiting, (t_at + lat[t], ci, t))

    for ci in range(n_chains):
        begin(ci, now)

    moving: list[int] = []                   # transfer ids moving bytes now
    rate_of: list[float] = []                 # their rates, in the same order
    cache: dict[tuple[int, ...], tuple[dict[int, float], tuple[str, ...]]] = {}
    busy_by_key: dict[tuple[int, ...], float] = {}   # moving paths -> time they moved together
    key: tuple[int, ...] = ()
    dirty = True
    while waiting or moving:
        if dirty:
            key = tuple(sorted(pid[t] for t in moving))
            entry = cache.get(key)
            if entry is None:
                paths: dict[int, int] = {}
                for p in key:
                    paths[p] = paths.get(p, 0) + 1
                crossed = tuple({r: None for p in paths for r in path_res[p]})
                entry = cache[key] = (_maxmin(paths, path_res, capacity), crossed)
            prates = entry[0]
            rate_of = [prates[pid[t]] for t in moving]
            dirty = False
        t_next = waiting[0][0] if waiting else math.inf
        fins = [now + remaining[t] / r for t, r in zip(moving, rate_of)]
        first_fin = min(fins, default=math.inf)
        if first_fin < t_next:
            t_next = first_fin
        dt = t_next - now
        if dt > 0 and moving:
            for t, r in zip(moving, rate_of):
                remaining[t] -= r * dt
            busy_by_key[key] = busy_by_key.get(key, 0.0) + dt
        now = t_next
        # transfers that finish now start the next of their chain (after its latency)
        tol = 1e-12 * max(1.0, now)
        if first_fin <= now + tol:
            still = []
            for t, f in zip(moving, fins):
                if f <= now + tol or remaining[t] < _EPS_BYTES:
                    del remaining[t]
                    ci = chain_of.pop(t)
                    pos[ci] += 1
                    begin(ci, now)
                else:
                    still.append(t)
            moving = still
            dirty = True
        # transfers whose latency is over enter their data phase (zero-size ones finish at once)
        while waiting and waiting[0][0] <= now:
            _, ci, t = heapq.heappop(waiting)
            if res[t] and nbytes[t] > 0:
                remaining[t] = nbytes[t]
                chain_of[t] = ci
                moving.append(t)
                dirty = True
            else:
                pos[ci] += 1
                begin(ci, now)
    for k, spent in busy_by_key.items():
        for r in cache[k][1]:
            busy[r] += spent
    start = float(start)
    ends = [start + e for e in chain_ends]
    return Outcome(end=max(ends, default=start), chain_ends=ends, busy=busy, bytes=bytes_by)


def busiest(busy: dict[str, float], link_of: Callable[[str], str] = lambda r: r.split(":")[0]) -> Optional[str]:
    """The link with the most busy time (max over its resources), ties by name; None if idle.

    Busy times within a relative 1e-9 of the most (float noise of the event sums) are ties.

    >>> busiest({"a:tx": 1.0, "a:rx": 2.0, "b:tx": 2.0})
    'a'
    """
    per: dict[str, float] = {}
    for r, s in busy.items():
        link = link_of(r)
        if s > per.get(link, 0.0):
            per[link] = s
    if not per:
        return None
    top = max(per.values())
    return min(k for k, s in per.items() if s >= top * (1 - 1e-9))
