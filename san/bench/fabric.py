"""Throughput through the fabric (Ray actors), beside raw-Ray movers of the same bytes.

- ``fabric``: one host writing to and reading from one array volume, per chunk size (the
  `--chunk-size` of `san run`), beside one raw sender and receiver (`san.bench.raw`),
  with and without the receiver's file I/O.  Writes overwrite (a warm-up wrote the space);
  reads come from the page cache on both sides.
- ``hosts``: N hosts at once (1-8), each writing `stream` bytes to a volume of its own array,
  beside N raw senders and N raw receivers moving the same bytes.  Overwrites.
- ``fanout``: one array copying a volume to N other arrays at once over FC (Fig. 19's copy,
  N jobs in the source array), beside N raw senders and receivers.  A copy over FC UNMAPs its
  destination first, so these runs write new space, and so does the file baseline (its
  files are emptied before each run).

Every fabric figure is checked: the host reads its volume back and compares every byte, a
destination array's volume digest equals the source's, a raw receiver's file is compared
with the pattern and a raw receiver counts the bytes it took.
"""
from __future__ import annotations

import itertools
import shutil
import textwrap

from ..units import DEFAULT_CHUNK, MiB, format_size
from .core import (NEW_SPACE, OVERWRITE, READS, Baseline, Curve, Figure, Series, alternate,
                   check, clock, gibps, rate)

WINDOW = 8
PASS_COMMANDS = 512     # a pass of the chunk sweep is at most this many commands
RAW, RAW_FILE = "raw Ray", "raw Ray + file"

ONE = """
name: bench-fabric
fabric:
  switches: [{name: sw1, speed: 32GFC}]
  zones: [{name: z, members: [h1/hba0, a1/fc0]}]
arrays:
  - name: a1
    device_id: BENCH-1
    ports: [{name: fc0, number: 0, wwpn: "50:00:00:00:00:00:00:01", switch: sw1}]
    volumes: [{number: 0, size: SIZE, port: fc0, lun: 0, hosts: [h1]}]
hosts:
  - name: h1
    hbas: [{name: hba0, wwpn: "21:00:00:00:00:00:00:01", switch: sw1}]
    mounts: [{mount_point: /v, port: a1/fc0, lun: 0}]
"""


def load(tmp, name: str, text: str):
    from ..topology import load_topology
    path = tmp / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return load_topology(path)


def scale_topology(tmp, hosts: int, arrays: int, stream: int):
    """a0 (the fan-out source, mounted on h1 as /src), a1..aM (volume 0 for host hi, volume 1
    a fan-out destination), h1..hH, one switch; every pair zoned."""
    zones = [f"    - {{name: h{i}, members: [h{i}/hba0, a{i}/fc0]}}" for i in range(1, hosts + 1)]
    zones.append("    - {name: src, members: [h1/hba0, a0/fc0]}")
    zones.append("    - {name: fan, members: [a0/fc0, "
                 + ", ".join(f"a{i}/fc0" for i in range(1, arrays + 1)) + "]}")
    lines = ["name: bench-scale", "fabric:",
             f"  switches: [{{name: sw1, speed: 32GFC, ports: {max(16, hosts + arrays + 1)}}}]", "  zones:",
             *zones, "arrays:"]
    for i in range(arrays + 1):
        vols = ([f"{{number: 0, size: {stream}, port: fc0, lun: 0, hosts: [h1]}}"] if i == 0 else
                [f"{{number: 0, size: {stream}, port: fc0, lun: 0, hosts: [h{i}]}}",
                 f"{{number: 1, size: {stream}, port: fc0, lun: 1, hosts: [a0]}}"])
        lines += [f"  - name: a{i}", f"    device_id: BENCH-{i}",
                  f"    managers: [{'h1' if i == 0 else 'a0'}]",
                  f"    ports: [{{name: fc0, number: 0, wwpn: \"50:00:00:00:00:00:{i:02x}:01\", switch: sw1}}]",
                  f"    volumes: [{', '.join(vols)}]"]
    lines.append("hosts:")
    for i in range(1, hosts + 1):
        mounts = [f"{{mount_point: /v, port: a{i}/fc0, lun: 0}}"]
        if i == 1:
            mounts.append("{mount_point: /src, port: a0/fc0, lun: 0}")
        lines += [f"  - name: h{i}",
                  f"    hbas: [{{name: hba0, wwpn: \"21:00:00:00:00:00:{i:02x}:01\", switch: sw1}}]",
                  f"    mounts: [{', '.join(mounts)}]"]
    return load(tmp, "scale", "\n".join(lines) + "\n")


class Resources:
    """What the Ray benchmarks share in one `san bench`: the raw pairs and the scaling SAN."""

    def __init__(self, settings):
        self.s = settings
        self._pairs = None
        self._scale = None

    def pairs(self):
        from .raw import RawPairs
        if self._pairs is None:
            n = max([1] + self.s.hosts + self.s.fanout)
            folder = self.s.tmp / "raw"
            folder.mkdir(exist_ok=True)
            self._pairs = RawPairs(folder, n, self.s.size)
        return self._pairs

    def scale_san(self):
        from ..fabric import San
        if self._scale is None:
            s = self.s
            topo = scale_topology(s.tmp, max(s.hosts), max(s.hosts + s.fanout), s.stream)
            self._scale = San(topo, s.tmp / "scale-state", window=WINDOW).start()
        return self._scale

    def close(self) -> None:
        try:
            if self._scale is not None:
                self._scale.shutdown()
        finally:
            if self._pairs is not None:
                self._pairs.close()
            self._scale = self._pairs = None


def _seeds():
    return itertools.count(1)


def bench_fabric(s, res) -> tuple[list, list]:
    """Host write and read through the fabric per chunk size, beside raw Ray (± file)."""
    from ..fabric import San
    pairs = res.pairs()
    figures, rows = [], []
    for chunk in s.chunks:
        size = min(s.size, chunk * PASS_COMMANDS)      # small chunks: fewer bytes, as many commands
        state = s.tmp / f"fabric-{chunk}"
        san = San(load(s.tmp, "fabric", ONE.replace("SIZE", str(size))), state,
                  chunk_size=chunk, window=WINDOW).start()
        try:
            last = {}
            seeds = _seeds()

            def write_fabric():
                last["fabric"] = next(seeds)
                return clock(lambda: san.call("h1", "write", "/v", 0, size, last["fabric"]))()

            def write_raw(to_file):
                def run():
                    seed = next(seeds)
                    if to_file:
                        last["raw"] = seed
                    return pairs.run(1, chunk, WINDOW, True, to_file, seed, size)
                return run

            write_fabric(), write_raw(True)(), write_raw(False)()      # warm-up: the space exists
            pairs.received(1)
            w = alternate({"fabric": write_fabric, RAW: write_raw(False), RAW_FILE: write_raw(True)},
                          s.repeat)
            check(pairs.received(1) == [2 * s.repeat * size],
                  f"fabric {format_size(chunk)}: the raw receiver did not get every byte")
            r = alternate({"fabric": clock(lambda: san.call("h1", "read_discard", "/v", 0, size)),
                           RAW: lambda: pairs.run(1, chunk, WINDOW, False, False, 1, size),
                           RAW_FILE: lambda: pairs.run(1, chunk, WINDOW, False, True, 1, size)},
                          s.repeat)
            bad = san.call("h1", "read_compare", "/v", 0, size, last["fabric"])["first_mismatch"]
            check(bad is None, f"fabric {format_size(chunk)}: host h1 read back a wrong byte at {bad}")
            bad = pairs.check(1, last["raw"], size)[0]
            check(bad is None, f"fabric {format_size(chunk)}: the raw receiver's file differs at {bad}")
        finally:
            san.shutdown()
            shutil.rmtree(state, ignore_errors=True)
        label = format_size(chunk)
        for kind, times, space in (("write", w, OVERWRITE), ("read", r, READS)):
            what = (f"one host {kind}s {format_size(size)} to one array volume, "
                    f"{label} per command, {WINDOW} in flight")
            figures.append(Figure(
                "fabric", f"fabric.{kind}.{label.replace(' ', '')}", f"host {kind}, {label} chunks",
                rate(size, times["fabric"]), "GiB/s", what,
                Baseline(RAW_FILE, rate(size, times[RAW_FILE]),
                         f"the same bytes sender actor -> receiver actor, which "
                         f"{'pwrites them into' if kind == 'write' else 'preads them from'} a file",
                         gibps(size, times[RAW_FILE])),
                space=space, runs=gibps(size, times["fabric"]),
                other_baselines=[Baseline(RAW, rate(size, times[RAW]),
                                          "the same bytes sender actor -> receiver actor, no file",
                                          gibps(size, times[RAW]))],
                params={"chunk": chunk, "size": size, "window": WINDOW, "repeat": s.repeat}))
        rows.append((chunk, {k: rate(size, w[k]) for k in w}, {k: rate(size, r[k]) for k in r}))
    series = []
    for panel, idx in (("host writes (overwrite)", 1), ("host reads (page cache)", 2)):
        series += [Series("fabric: host <-> array", [row[idx]["fabric"] for row in rows], panel=panel),
                   Series(f"{RAW_FILE} (baseline)", [row[idx][RAW_FILE] for row in rows], True, panel),
                   Series(f"{RAW} (baseline)", [row[idx][RAW] for row in rows], True, panel)]
    curve = Curve("throughput_vs_chunk", f"Host <-> array throughput by chunk size "
                  f"(up to {format_size(s.size)} per pass)", "chunk size", "throughput (GiB/s)",
                  [row[0] / MiB for row in rows], series,
                  note=f"median of {s.repeat} alternating runs of at most {PASS_COMMANDS} commands; "
                       f"writes overwrite, reads hit the page cache; {WINDOW} in flight",
                  x_ticks=[format_size(row[0]) for row in rows])
    return figures, [curve]


def _many_writes(san, hosts: list[str], size: int, seed: int) -> None:
    from ..remote import get
    get([san.actor(h).write.remote("/v", 0, size, seed) for h in hosts], "hosts")


def bench_hosts(s, res) -> tuple[list, list]:
    """N hosts writing at once, each to its own array, beside N raw sender/receiver pairs."""
    san, pairs, per = res.scale_san(), res.pairs(), s.stream
    figures, rows = [], []
    for n in s.hosts:
        hosts = [f"h{i}" for i in range(1, n + 1)]
        seeds, last = _seeds(), {}

        def fabric():
            last["fabric"] = next(seeds)
            return clock(lambda: _many_writes(san, hosts, per, last["fabric"]))()

        def raw(to_file):
            def run():
                seed = next(seeds)
                if to_file:
                    last["raw"] = seed
                return pairs.run(n, DEFAULT_CHUNK, WINDOW, True, to_file, seed, per)
            return run

        fabric(), raw(True)(), raw(False)()            # warm-up: every volume and file written
        times = alternate({"fabric": fabric, RAW: raw(False), RAW_FILE: raw(True)}, s.repeat)
        for h in hosts:
            bad = san.call(h, "read_compare", "/v", 0, per, last["fabric"])["first_mismatch"]
            check(bad is None, f"hosts {n}: host {h} read back a wrong byte at {bad}")
        bad = [b for b in pairs.check(n, last["raw"], per) if b is not None]
        check(not bad, f"hosts {n}: a raw receiver's file differs at {bad[:1]}")
        total = n * per
        figures.append(Figure(
            "hosts", f"hosts.write.{n}", f"{n} host{'s' * (n > 1)} writing at once",
            rate(total, times["fabric"]), "GiB/s",
            f"{n} hosts each write {format_size(per)} to a volume of its own array, all at once "
            f"(aggregate)",
            Baseline(RAW_FILE, rate(total, times[RAW_FILE]),
                     f"{n} sender actors -> {n} receiver actors pwriting into files, the same bytes",
                     gibps(total, times[RAW_FILE])),
            runs=gibps(total, times["fabric"]),
            other_baselines=[Baseline(RAW, rate(total, times[RAW]),
                                      f"{n} sender actors -> {n} receiver actors, no file",
                                      gibps(total, times[RAW]))],
            params={"hosts": n, "bytes_per_host": per, "chunk": DEFAULT_CHUNK, "repeat": s.repeat}))
        rows.append((n, {k: rate(total, v) for k, v in times.items()}))
    curve = Curve("throughput_vs_hosts", f"Aggregate write throughput by number of hosts "
                  f"({format_size(per)} each)", "hosts writing at once (each to its own array)",
                  "aggregate throughput (GiB/s)", [n for n, _ in rows],
                  [Series("fabric: hosts -> arrays", [r["fabric"] for _, r in rows]),
                   Series(f"{RAW_FILE}: N senders -> N receivers (baseline)",
                          [r[RAW_FILE] for _, r in rows], True),
                   Series(f"{RAW}: N senders -> N receivers (baseline)", [r[RAW] for _, r in rows], True)],
                  note=f"median of {s.repeat} alternating runs; overwrites; "
                       f"{format_size(DEFAULT_CHUNK)} chunks, {WINDOW} in flight per host",
                  x_ticks=[str(n) for n, _ in rows])
    return figures, [curve]


def _fan_out(san, n: int) -> None:
    from ..remote import manage
    jobs = [manage("h1", san.namespace, "a0", "copy_remote", 0, f"a{i}", 1, "fc0", 1, False)[0]["job"]
            for i in range(1, n + 1)]
    for job in jobs:
        manage("h1", san.namespace, "a0", "wait", job)


def bench_fanout(s, res) -> tuple[list, list]:
    """One array copying a volume to N arrays at once, beside N raw sender/receiver pairs."""
    san, pairs, per = res.scale_san(), res.pairs(), s.stream
    san.call("h1", "write", "/src", 0, per, 7)
    source = san.call("a0", "digest_volume", 0)
    figures, rows = [], []
    for n in s.fanout:
        seeds, last = _seeds(), {}

        def raw(to_file):
            def run():
                seed = next(seeds)
                if to_file:
                    last["raw"] = seed
                return pairs.run(n, DEFAULT_CHUNK, WINDOW, True, to_file, seed, per)
            return run

        def setup(name):
            if name == RAW_FILE:
                pairs.punch(n)

        _fan_out(san, n), raw(False)(), raw(True)()     # warm-up
        times = alternate({"fabric": clock(lambda: _fan_out(san, n)), RAW: raw(False),
                           RAW_FILE: raw(True)}, s.repeat, setup=setup)
        for i in range(1, n + 1):
            check(san.call(f"a{i}", "digest_volume", 1) == source,
                  f"fanout {n}: a{i} volume 1 is not a copy of a0 volume 0 (digests differ)")
        bad = [b for b in pairs.check(n, last["raw"], per) if b is not None]
        check(not bad, f"fanout {n}: a raw receiver's file differs at {bad[:1]}")
        total = n * per
        figures.append(Figure(
            "fanout", f"fanout.copy.{n}", f"copy to {n} arra{'ys' if n > 1 else 'y'} at once",
            rate(total, times["fabric"]), "GiB/s",
            f"array a0 copies a {format_size(per)} volume over FC to {n} arrays at once "
            f"(aggregate; each copy UNMAPs its destination first)",
            Baseline(RAW_FILE, rate(total, times[RAW_FILE]),
                     f"{n} sender actors -> {n} receiver actors pwriting into emptied files",
                     gibps(total, times[RAW_FILE])),
            space=NEW_SPACE, runs=gibps(total, times["fabric"]),
            other_baselines=[Baseline(RAW, rate(total, times[RAW]),
                                      f"{n} sender actors -> {n} receiver actors, no file",
                                      gibps(total, times[RAW]))],
            params={"destinations": n, "bytes_per_destination": per, "chunk": DEFAULT_CHUNK,
                    "repeat": s.repeat}))
        rows.append((n, {k: rate(total, v) for k, v in times.items()}))
    curve = Curve("throughput_vs_fanout", f"Fan-out copy throughput by destination arrays "
                  f"({format_size(per)} volume)", "destination arrays (one source array)",
                  "aggregate throughput (GiB/s)", [n for n, _ in rows],
                  [Series("fabric: array -> N arrays over FC", [r["fabric"] for _, r in rows]),
                   Series(f"{RAW_FILE}: N senders -> N receivers (baseline)",
                          [r[RAW_FILE] for _, r in rows], True),
                   Series(f"{RAW}: N senders -> N receivers (baseline)", [r[RAW] for _, r in rows], True)],
                  note=f"median of {s.repeat} alternating runs; writes new space (a copy UNMAPs "
                       f"its destination; baseline files are emptied before each run)",
                  x_ticks=[str(n) for n, _ in rows])
    return figures, [curve]
