"""Data services inside one disk array (a plain `DiskArray`, no Ray), beside file baselines.

- ``snapshots``: snapshot create time on thin volumes of 1 GiB to 4 TiB (each holding the same
  written data), beside a full copy of that data (what a snapshot without copy-on-write
  would cost) and the metadata floor (a small file rewritten and renamed plus a 32-byte
  journal append: what any persistent change costs); and the first write after a snapshot
  beside a plain overwrite, with redirect-on-write (the array's default: the old granules
  stay where they are) and with copy-on-write (they are first copied into the pool).
- ``mirror``: a mirror onto a secondary whose granules all differ, beside a raw file copy of
  the same bytes (pread + pwrite, granule by granule).  Both overwrite.
- ``resync``: an incremental mirror after a fraction of the primary's granules changed,
  beside a raw file copy of the same granules; a restore after 1% change and a restore of
  equal volumes (both read the whole destination to check it) beside a full copy.  All
  overwrite.

Each checks its bytes: a snapshot still reads as the data it was taken of, volume digests
are equal after a copy, a job moved exactly the granules that differ, the raw copy equals
its source.
"""
from __future__ import annotations

import itertools
import os
import time

import numpy as np

from ..pattern import pattern
from ..units import GiB, MiB, format_size
from .core import (NO_DATA, Baseline, Curve, Figure, Series, alternate, check,
                   clock, gibps, median, rate)
from .fabric import load

PIECE = 4 * MiB


def array_topology(tmp, size: int, snapshot_sizes: list[int]):
    vols = [f"      - {{number: 0, size: {size}, port: fc0, lun: 0, hosts: [h1], copy_destinations: [1]}}",
            f"      - {{number: 1, size: {size}}}"]
    vols += [f"      - {{number: {2 + i}, size: {v}}}" for i, v in enumerate(snapshot_sizes)]
    text = "\n".join([
        "name: bench-array",
        "fabric:",
        "  switches: [{name: sw1}]",
        "  zones: [{name: z, members: [h1/hba0, a1/fc0]}]",
        "arrays:",
        "  - name: a1",
        "    device_id: BENCH-1",
        "    managers: [srv]",
        "    ports: [{name: fc0, number: 0, wwpn: \"50:00:00:00:00:00:00:01\", switch: sw1}]",
        "    volumes:", *vols,
        "hosts:",
        "  - name: h1",
        "    hbas: [{name: hba0, wwpn: \"21:00:00:00:00:00:00:01\", switch: sw1}]",
        "backup_servers: [{name: srv}]", ""])
    return load(tmp, "array", text)


def open_array(s, name: str, snapshot_sizes=(), snapshot_mode: str | None = None):
    from ..elements.disk_array import DiskArray
    topo = array_topology(s.tmp, s.size, list(snapshot_sizes))
    spec = topo.arrays[0]
    if snapshot_mode is not None:
        spec = spec.model_copy(update={"snapshot_mode": snapshot_mode})
    arr = DiskArray(spec, s.tmp / name)
    arr.autostart = False          # jobs are stepped here, in this thread
    return arr


def fill(arr, number: int, offset: int, length: int, seed: int) -> None:
    for off in range(offset, offset + length, PIECE):
        arr._store_write(number, off, pattern(seed, off, min(PIECE, offset + length - off)))


def run_job(arr, order) -> dict:
    """Order a copy job and step it to its end; its final status."""
    job = arr.jobs[order()["job"]]
    while arr.step(job):
        pass
    arr.finish(job)
    return job.status()


def data_file(arr, number: int):
    return arr.directory / f"vol-{number}.data"


class RawCopy:
    """pread + pwrite of granules from a volume's data file into a file of its own."""

    def __init__(self, src, dst, size: int, granule: int):
        self.src = os.open(src, os.O_RDONLY)
        self.dst = os.open(dst, os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(self.dst, size)
        self.g = granule
        self.buf = np.empty(granule, np.uint8)

    def copy(self, granules) -> None:
        g, buf = self.g, self.buf
        for k in granules:
            os.preadv(self.src, [buf], k * g)
            os.pwrite(self.dst, buf, k * g)

    def same(self, granules) -> bool:
        other = np.empty(self.g, np.uint8)
        for k in granules:
            os.preadv(self.src, [self.buf], k * self.g)
            os.preadv(self.dst, [other], k * self.g)
            if not np.array_equal(self.buf, other):
                return False
        return True

    def close(self) -> None:
        os.close(self.src)
        os.close(self.dst)


# -- snapshots --------------------------------------------------------------------------------
def _metadata_floor(folder, table_bytes: int):
    """A mover doing what any persistent metadata change costs: a small file rewritten and
    renamed over the old one, and a 32-byte record appended to a journal."""
    path, journal = folder / "floor.json", os.open(folder / "floor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    payload = b"x" * table_bytes

    def once():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(payload)
        os.replace(tmp, path)
        os.write(journal, b"r" * 32)
    return once, lambda: os.close(journal)


def bench_snapshots(s, res=None) -> tuple[list, list]:
    sizes, data = s.snapshot_sizes, s.snapshot_data
    per_run = 10 if s.quick else 50                # snapshots per timed run (their mean)
    arr = open_array(s, "snap-state", sizes)
    folder = s.tmp / "snap-floor"
    folder.mkdir(exist_ok=True)
    floor, close_floor = _metadata_floor(folder, len((arr.directory / "table.json").read_bytes())
                                         if (arr.directory / "table.json").exists() else 64)
    figures, rows = [], []
    try:
        for i, vsize in enumerate(sizes):
            number = 2 + i
            fill(arr, number, 0, data, seed=1)
            raw = RawCopy(data_file(arr, number), folder / "copy.data", data, arr.granule)
            granules = range(data // arr.granule)
            raw.copy(granules)                                      # warm-up: the copy's space
            taken: list[int] = []

            def snap():
                start = time.perf_counter()
                for _ in range(per_run):
                    taken.append(arr.snapshot(number))
                return (time.perf_counter() - start) / per_run

            def drop(name):
                while taken:
                    arr.delete_snapshot(taken.pop())

            def floor_run():
                start = time.perf_counter()
                for _ in range(per_run):
                    floor()
                return (time.perf_counter() - start) / per_run

            times = alternate({"snapshot": snap, "copy": clock(lambda: raw.copy(granules)),
                               "floor": floor_run}, s.repeat, setup=drop)
            drop(None)
            check(raw.same(granules), f"snapshots {format_size(vsize)}: the raw copy differs from its source")
            raw.close()
            # the data check: a snapshot keeps the data it was taken of when the volume changes
            snap_no = arr.snapshot(number)
            fill(arr, number, 0, min(data, MiB), seed=99)
            kept = arr.read_volume(snap_no, 0, min(data, MiB))
            check(np.array_equal(kept, pattern(1, 0, min(data, MiB))),
                  f"snapshots {format_size(vsize)}: the snapshot lost the data it was taken of")
            check(np.array_equal(arr.read_volume(number, 0, min(data, MiB)), pattern(99, 0, min(data, MiB))),
                  f"snapshots {format_size(vsize)}: the volume does not read as written")
            arr.delete_snapshot(snap_no)
            fill(arr, number, 0, min(data, MiB), seed=1)
            us = {k: [t * 1e6 for t in v] for k, v in times.items()}
            label = format_size(vsize)
            figures.append(Figure(
                "snapshots", f"snapshots.create.{label.replace(' ', '')}", f"snapshot create, {label} vol",
                median(us["snapshot"]), "µs",
                f"taking a snapshot of a {label} thin volume holding {format_size(data)} "
                f"(mean of {per_run} per run)",
                Baseline("full copy of the data", median(us["copy"]),
                         f"pread + pwrite of the {format_size(data)} written, granule by granule "
                         f"(a snapshot without copy-on-write)", us["copy"]),
                better="lower", space=NO_DATA, runs=us["snapshot"],
                other_baselines=[Baseline("metadata floor", median(us["floor"]),
                                          "a small file rewritten + renamed and a 32-byte "
                                          "journal append", us["floor"])],
                params={"volume_size": vsize, "written": data, "per_run": per_run}))
            rows.append((vsize, {k: median(v) for k, v in us.items()}))
        figures.append(_first_write(s, arr))
    finally:
        close_floor()
        arr.close()
    cow = open_array(s, "snap-cow-state", snapshot_mode="copy-on-write")
    try:
        figures.append(_first_write(s, cow))
    finally:
        cow.close()
    curve = Curve("snapshot_create_vs_size", f"Snapshot create time by volume size "
                  f"({format_size(data)} written in each)", "volume size (thin)", "time (µs, log)",
                  [v / GiB for v, _ in rows],
                  [Series("snapshot create", [r["snapshot"] for _, r in rows]),
                   Series(f"full copy of the {format_size(data)} (baseline)", [r["copy"] for _, r in rows], True),
                   Series("metadata floor: file rename + journal append (baseline)",
                          [r["floor"] for _, r in rows], True)],
                  note=f"median of {s.repeat} alternating runs, each the mean of {per_run} snapshots; "
                       f"snapshots write metadata only, the copy overwrites",
                  y_log=True, x_ticks=[format_size(v) for v, _ in rows])
    return figures, [curve]


def _first_write(s, arr) -> Figure:
    """The first write after a snapshot beside a plain overwrite of the same range, on volume
    0, in the array's snapshot mode: redirect-on-write leaves each old granule where it is
    and writes the new one in its other place, copy-on-write first copies the old one into
    the pool."""
    redirect = arr.spec.snapshot_mode == "redirect-on-write"
    n = min(s.size, 4 * MiB if s.quick else 256 * MiB)
    seeds = itertools.count(200)
    state = {"seed": next(seeds), "snap": None, "before": None}
    fill(arr, 0, 0, n, state["seed"])

    def setup(name):
        if state["snap"] is not None:
            arr.delete_snapshot(state["snap"])
            state["snap"] = None
        if name == "after":
            state["snap"], state["before"] = arr.snapshot(0), state["seed"]

    def write():
        state["seed"] = next(seeds)
        data = [pattern(state["seed"], off, PIECE) for off in range(0, n, PIECE)]  # untimed
        start = time.perf_counter()
        for k, piece in enumerate(data):
            arr._store_write(0, k * PIECE, piece)
        return time.perf_counter() - start

    times = alternate({"after": write, "plain": write}, s.repeat, setup=setup)
    if state["snap"] is None:        # the last run was a plain one: one more, to check
        setup("after")
        write()
    head = min(n, MiB)
    check(np.array_equal(arr.read_volume(state["snap"], 0, head), pattern(state["before"], 0, head)),
          "snapshots: after the first write the snapshot does not hold the old data")
    check(np.array_equal(arr.read_volume(0, 0, head), pattern(state["seed"], 0, head)),
          "snapshots: after the first write the volume does not hold the new data")
    setup(None)
    how = ("the old granules stay where they are, the new ones go to each granule's other "
           "place (redirect-on-write)" if redirect else
           "each old granule is first copied into the snapshot pool (copy-on-write)")
    return Figure("snapshots", "snapshots.first_write" if redirect else "snapshots.first_write_copy",
                  "first write after a snapshot" + ("" if redirect else ", copy-on-write"),
                  rate(n, times["after"]), "GiB/s",
                  f"overwriting {format_size(n)} of a volume right after a snapshot: {how}",
                  Baseline("plain overwrite", rate(n, times["plain"]),
                           "the same overwrite with no snapshot", gibps(n, times["plain"])),
                  space="overwrite" if redirect else "overwrite; the pool takes new space",
                  runs=gibps(n, times["after"]), params={"bytes": n, "piece": PIECE})


# -- mirror -----------------------------------------------------------------------------------
def bench_mirror(s, res=None) -> tuple[list, list]:
    size = s.size
    arr = open_array(s, "mirror-state")
    seeds = itertools.count(1)
    try:
        fill(arr, 0, 0, size, next(seeds))
        run_job(arr, lambda: arr.mgmt_mirror("srv", "fc0", 0, 1))      # warm-up: vol 1's space
        raw = RawCopy(data_file(arr, 0), s.tmp / "mirror-raw.data", size, arr.granule)
        granules = range(-(-size // arr.granule))
        raw.copy(granules)                                            # warm-up: the file's space
        done = {}

        def setup(name):
            if name == "mirror":              # every granule now differs from the secondary
                fill(arr, 0, 0, size, next(seeds))

        def mirror():
            start = time.perf_counter()
            done["status"] = run_job(arr, lambda: arr.mgmt_mirror("srv", "fc0", 0, 1))
            return time.perf_counter() - start

        times = alternate({"mirror": mirror, "raw": clock(lambda: raw.copy(granules))}, s.repeat,
                          setup=setup)
        check(done["status"]["copied"] == size,
              f"mirror: copied {done['status']['copied']} bytes, not all {size}")
        check(arr.digest_volume(0) == arr.digest_volume(1), "mirror: the secondary's digest differs")
        check(raw.same(granules), "mirror: the raw copy differs from its source")
        raw.close()
    finally:
        arr.close()
    return [Figure("mirror", "mirror.full", "mirror, all granules differ", rate(size, times["mirror"]),
                   "GiB/s", f"a mirror of a {format_size(size)} volume onto a secondary whose "
                            f"granules all differ (checksums compared, every byte moves)",
                   Baseline("raw file copy", rate(size, times["raw"]),
                            "pread + pwrite of the same bytes file to file, granule by granule",
                            gibps(size, times["raw"])),
                   runs=gibps(size, times["mirror"]), params={"size": size})], []


# -- resync and restores ----------------------------------------------------------------------
def _spread(n_granules: int, fraction: float, shift: int) -> list[int]:
    """`fraction` of the granules, evenly spread, starting at `shift` (at least one)."""
    n = max(1, round(n_granules * fraction))
    if n >= n_granules:
        return list(range(n_granules))
    step = n_granules / n
    return sorted({(int(k * step) + shift) % n_granules for k in range(n)})


def _change(arr, granules: list[int], seed: int) -> None:
    g = arr.granule
    block = np.random.default_rng(seed).integers(0, 256, g, dtype=np.uint8)
    for k in granules:
        block[:8] = np.frombuffer(np.int64(k + seed * 1_000_003).tobytes(), np.uint8)
        arr._store_write(0, k * g, block)


def _pct(f: float) -> str:
    return f"{f * 100:g}%"


def bench_resync(s, res=None) -> tuple[list, list]:
    size = s.size
    arr = open_array(s, "resync-state")
    n_g = -(-size // arr.granule)
    seeds = itertools.count(1)
    shifts = itertools.count(0)
    try:
        fill(arr, 0, 0, size, next(seeds))
        run_job(arr, lambda: arr.mgmt_mirror("srv", "fc0", 0, 1))      # warm-up: vol 1's space
        raw = RawCopy(data_file(arr, 0), s.tmp / "resync-raw.data", size, arr.granule)
        raw.copy(range(n_g))                                          # warm-up: the file's space
        chosen: dict[str, list[int]] = {}
        status: dict[str, dict] = {}
        movers = {}

        def setup(name):
            kind, _, f = name.partition(" ")
            if kind in ("resync", "restore") and f != "0%":
                fraction = 1.0 if kind == "resync" and f == "100%" else float(f[:-1]) / 100
                chosen[f] = _spread(n_g, fraction, next(shifts))
                if fraction >= 1.0:
                    fill(arr, 0, 0, size, next(seeds))
                else:
                    _change(arr, chosen[f], next(seeds))

        def job(name, order):
            def run():
                start = time.perf_counter()
                status[name] = run_job(arr, order)
                return time.perf_counter() - start
            return run

        for f in s.fractions:
            movers[f"resync {_pct(f)}"] = job(f"resync {_pct(f)}", lambda: arr.mgmt_mirror("srv", "fc0", 0, 1))
            movers[f"raw {_pct(f)}"] = (lambda key: lambda: clock(lambda: raw.copy(chosen[key]))())(_pct(f))
        if 1.0 not in s.fractions:
            movers["resync 100%"] = job("resync 100%", lambda: arr.mgmt_mirror("srv", "fc0", 0, 1))
        for f in ("1%", "0%"):
            movers[f"restore {f}"] = job(f"restore {f}", lambda: arr.mgmt_restore("srv", 1, "fc0", 0))
        for f in s.fractions:           # the raw copies need their granules from the first round
            chosen.setdefault(_pct(f), _spread(n_g, f, 0))
        times = alternate(movers, s.repeat, setup=setup)
        G = arr.granule
        for name, st in status.items():
            kind, _, f = name.partition(" ")
            want = 0 if f == "0%" else min(size, len(chosen[f]) * G)
            check(st["copied"] == want, f"resync: {name} copied {st['copied']} bytes, expected {want}")
            if kind == "restore":
                check(st["copied"] + st["checked"] >= size - G,
                      f"resync: {name} neither copied nor checked the whole destination")
        check(arr.digest_volume(0) == arr.digest_volume(1), "resync: primary and secondary differ")
        check(raw.same(range(n_g)), "resync: the raw copy differs from its source")
        raw.close()
    finally:
        arr.close()
    full = times["resync 100%"]
    figures = []
    for f in s.fractions:
        key = _pct(f)
        figures.append(Figure(
            "resync", f"resync.mirror.{key}", f"resync after {key} changed",
            median(times[f"resync {key}"]) * 1e3, "ms",
            f"a mirror of a {format_size(size)} volume after {key} of its granules changed "
            f"(checksums compared; only those granules move)",
            Baseline(f"raw copy of the {key}", median(times[f"raw {key}"]) * 1e3,
                     "pread + pwrite of the same granules file to file",
                     [t * 1e3 for t in times[f"raw {key}"]]),
            better="lower", runs=[t * 1e3 for t in times[f"resync {key}"]],
            other_baselines=[Baseline("full copy", median(full) * 1e3,
                                      "a mirror onto a secondary whose granules all differ",
                                      [t * 1e3 for t in full])],
            params={"fraction": f, "size": size}))
    for f, what in (("1%", "after 1% of the primary changed: 1% moves, the other 99% of the "
                           "destination is read to check it"),
                    ("0%", "of equal volumes: nothing moves, the whole destination is read to check it")):
        figures.append(Figure(
            "resync", f"resync.restore.{f}", f"restore, {f} changed",
            median(times[f"restore {f}"]) * 1e3, "ms",
            f"a restore of the secondary onto a {format_size(size)} primary {what}",
            Baseline("full copy", median(full) * 1e3,
                     "a mirror onto a secondary whose granules all differ", [t * 1e3 for t in full]),
            better="lower", runs=[t * 1e3 for t in times[f"restore {f}"]], params={"size": size}))
    curve = Curve("resync_vs_changed", f"Incremental resync time by changed fraction "
                  f"({format_size(size)} volume)", "granules changed since the last mirror (%)",
                  "time (ms, log)", [f * 100 for f in s.fractions],
                  [Series("resync (mirror)", [median(times[f"resync {_pct(f)}"]) * 1e3 for f in s.fractions]),
                   Series("raw copy of the changed granules (baseline)",
                          [median(times[f"raw {_pct(f)}"]) * 1e3 for f in s.fractions], True),
                   Series("full copy, every granule differs (baseline)",
                          [median(full) * 1e3] * len(s.fractions), True)],
                  note=f"median of {s.repeat} alternating runs; all overwrite written granules",
                  y_log=True, x_ticks=[_pct(f) for f in s.fractions])
    return figures, [curve]
