"""The performance targets of issue 12: every row of its table, beside its same-run baseline.

Each figure is the median of at least 5 runs of each side (``max(5, --repeat)``; with
``--quick`` the start-up row takes 3 and no warm-up, see `start_runs`), the two sides
alternating (`core.alternate`, `os.sync()` before each run), 4 MiB chunks and 8 in flight
wherever bytes move, `size` bytes (1 GiB; 16 MiB with ``--quick``), no fsync unless the
row says so.  Rows whose runs write new file space (1, 4, 5 and 8) touch and free twice
`size` of memory right before each run of either side (`core.warm_memory`: on this VM a
run given memory its host had taken back ran 3-4x slower), and row 9 1 GiB (its runs
start 7 processes).  `san`'s side goes through the SAN's actors: the host actor for host
I/O, the array's management operations (over the LAN, as a host orders them) for copies, a
scenario step for the tape backup.  Each figure's params carry the issue's target of its
ratio (figure / baseline) and its direction (``target_is``: ``min``, the ratio must be at
least the target, or ``max``, at most), and whether this run met it.

 1. ``targets.write_new``: a host writes `size` into a never-written volume (a few taken in
    turn, each UNMAPped right before it is written again), beside raw Ray writing new space
    the fastest way (the receiver's file emptied, each chunk's range `posix_fallocate`d,
    then pwritten).  Target >= 0.8.
 2. ``targets.write_overwrite``: the host overwrites a written volume, beside raw Ray + file
    overwriting its written file.  >= 0.9.
 3. ``targets.read``: the host reads it, beside raw Ray + file reading its file.  >= 0.85.
 4. ``targets.mirror``, ``targets.restore``, ``targets.copy``: a mirror, a restore and an
    in-array volume copy of the written volume into a never-written volume, each beside
    runs of its own (the two taking turns) of a plain Python copy of the same written
    extents that reads each chunk, computes the store's checksum of its granules (XXH3-128
    per 256 KiB granule, `san.checksums`) and writes it into a file `posix_fallocate`d
    extent by extent (`ChecksumCopy`).  >= 0.8.
 5. ``targets.fc_copy_new``: an inter-array copy over FC into a never-written volume, beside
    the host write of row 1 (the same bytes into new space, same run, in an alternation of
    its own: see `MainBench.new_space`).  >= 0.8.
 6. ``targets.first_write_after_snapshot``: a host write over a volume just snapshotted,
    beside the same write again.  <= 1.3.
 7. ``targets.resync_1pct``: a mirror after 1% of a volume's granules changed, beside a
    full copy (a mirror after every granule changed).  <= 0.03, every run.  Its floor
    rides along: the same two copies done with bare system calls, same pattern, same
    length of setup (`PlainMirror`, `MainBench.resync_floor`).
 8. ``targets.tape_backup``: a tape backup (a scenario step), beside raw Ray streaming the
    same bytes array -> host -> library actors into a file with the tape's syncs
    (`san.bench.raw.Appender`), one file growing run after run as the medium does.  >= 0.8.
 9. ``targets.san_start``: a 7-element SAN started (`San(...).start()`), beside 7 bare actors
    created and answering.  <= 1.2.
10. ``targets.catalog_rebuild``: a backup server's catalog rebuilt from 4 arrays holding
    2,500 snapshots with volume info each (10,000 backup volumes; 4 x 25 with ``--quick``),
    made in the state dir by in-process arrays, beside plain Python reading the same
    10,000 512-byte records from files.  <= 3.

Every figure checks its data: volumes are read back and compared with what was written,
copies' digests equal their source's, the raw files are compared with the pattern, the tape
image's digest equals the volume's, the catalog holds every backup volume with its label.
"""
from __future__ import annotations

import importlib.util
import itertools
import mmap
import os
import shutil
import struct
import textwrap
import time
import traceback
from pathlib import Path

import numpy as np

from ..checksums import granule_checksums
from ..elements.client_host import chunks
from ..errors import SanError
from ..granules import granules_nbytes, runs
from ..pattern import first_mismatch, pattern
from ..units import BLOCK, DEFAULT_CHUNK, format_size
from .core import (NEW_SPACE, NO_DATA, OVERWRITE, READS, Baseline, Curve, DataCheckFailed,
                   read_exact, write_all,
                   Figure, Series, alternate, check, clock, gibps, median, rate)

CHUNK = DEFAULT_CHUNK            # 4 MiB per command
WINDOW = 8                       # commands in flight
MIN_RUNS = 5                     # the issue's "median of at least 5 runs of each side"
QUICK_START_RUNS = 3             # ... but SAN start-up with --quick: see `start_runs`
EXIT_PAUSE = 0.5                 # s between a start-up run's kills and the next run (row 9)
START_WARM = 1 << 30             # memory warmed before each start-up run: 7 processes' worth
PIECE = 16 << 20                 # what the checks read at a time
COMMIT = bytes(80)               # the tape's commit record (an 80-byte HDR1 label)

# key: (row of the issue's table, target of the ratio, "min" (at least) or "max" (at most),
#       short label for the plot)
TARGETS = {
    "write_new": (1, 0.8, "min", "1 write, new"),
    "write_overwrite": (2, 0.9, "min", "2 write, overwr."),
    "read": (3, 0.85, "min", "3 read"),
    "mirror": (4, 0.8, "min", "4 mirror"),
    "restore": (4, 0.8, "min", "4 restore"),
    "copy": (4, 0.8, "min", "4 volume copy"),
    "fc_copy_new": (5, 0.8, "min", "5 FC copy"),
    "first_write_after_snapshot": (6, 1.3, "max", "6 write after snap"),
    "resync_1pct": (7, 0.03, "max", "7 resync 1%"),
    "tape_backup": (8, 0.8, "min", "8 tape backup"),
    "san_start": (9, 1.2, "max", "9 SAN start"),
    "catalog_rebuild": (10, 3.0, "max", "10 catalog rebuild"),
}


def runs_of(settings) -> int:
    """Timed runs of each side: at least 5, more if --repeat asks for more."""
    return max(MIN_RUNS, settings.repeat)


def start_runs(settings) -> int:
    """Timed runs of each side of the start-up row: as `runs_of`, but with --quick only 3,
    and no warm-up: each run starts 7 actors (a second or more each on a busy 2-core
    machine), which would make it most of a quick run's time."""
    return QUICK_START_RUNS if settings.quick else runs_of(settings)


def meets(ratio: float | None, target: float, target_is: str) -> bool | None:
    """Whether a ratio meets its target (None: no ratio)."""
    if ratio is None:
        return None
    return ratio >= target if target_is == "min" else ratio <= target


def target_figure(key: str, value: float, unit: str, measured: str, baseline: Baseline,
                  runs: list, space: str, repeat: int, params: dict | None = None,
                  other_baselines: list | None = None) -> Figure:
    """A figure of row `key` of the table, its target and whether it met it in its params."""
    row, target, target_is, label = TARGETS[key]
    sign = "≥" if target_is == "min" else "≤"
    fig = Figure("targets", f"targets.{key}", f"{label.split(' ', 1)[1]} ({sign}{target:g}×)",
                 value, unit, measured, baseline,
                 better="higher" if target_is == "min" else "lower", space=space, runs=runs,
                 other_baselines=other_baselines or [])
    fig.params = {"row": row, "target": target, "target_is": target_is,
                  "repeat": repeat, **(params or {})}
    fig.params["meets_target"] = meets(fig.ratio, target, target_is)
    return fig


def ratio_curve(figures: list, repeat: int) -> Curve:
    """One bar per figure: its ratio to its baseline, with its target beside it."""
    order = list(TARGETS)
    figures = sorted(figures, key=lambda f: order.index(f.key.split(".", 1)[1]))
    ratios = [f.ratio for f in figures]
    others = sorted({f.params["repeat"] for f in figures} - {repeat})
    runs = f"{repeat}" + (f" ({', '.join(map(str, others))} for some)" if others else "")
    at_least = [f.params["target"] if f.params["target_is"] == "min" else None for f in figures]
    at_most = [f.params["target"] if f.params["target_is"] == "max" else None for f in figures]
    floors = [f.params.get("floor_ratio") for f in figures]        # row 7's
    worst = [_worst_round(f) for f in figures]                       # row 7's, judged
    return Curve("targets_ratio_vs_target", "Issue 12's figures: ratio to the same-run baseline "
                 "beside its target", "figure (row of the issue's table)",
                 "ratio to the same-run baseline (log)", list(range(1, len(figures) + 1)),
                 [Series("measured ratio", ratios),
                  Series("target: ratio at least (≥)", at_least, True),
                  Series("target: ratio at most (≤)", at_most, True),
                  Series("floor: bare system calls, same run", floors, True),
                  Series("worst round (row 7 judges each round)", worst, True)],
                 note=f"median of {runs} alternating runs of each side, os.sync() before each; "
                      "green: target met, red: not met",
                 x_log=False, y_log=True, kind="bars",
                 x_ticks=[TARGETS[f.key.split(".", 1)[1]][3] for f in figures],
                 verdicts=[f.params["meets_target"] for f in figures])


def _worst_round(f) -> float | None:
    """The ratio of a figure's worst round, if it is judged round by round (row 7), else None."""
    per_round = f.params.get("run_ratios")
    if not per_round:
        return None
    return max(per_round) if f.params["target_is"] == "max" else min(per_round)


# -- plain Python baselines ------------------------------------------------------------------
class ChecksumCopy:
    """A plain Python copy of a volume's written extents, file to file, as a copy job must
    do it: each extent's space `posix_fallocate`d, then chunk by chunk read, the chosen
    checksum computed for each of its granules (`san.checksums.granule_checksums`, XXH3-128)
    and written.  `reset()` removes the copy (so the next one writes new space)."""

    def __init__(self, source, dest, granule: int, chunk: int = CHUNK):
        self.source = os.open(source, os.O_RDONLY)
        self.dest = Path(dest)
        self.granule, self.chunk = granule, chunk
        self.buf = np.empty(chunk, dtype=np.uint8)
        self.sums: list[np.ndarray] = []

    def reset(self) -> None:
        self.dest.unlink(missing_ok=True)

    def copy(self, extents) -> int:
        """Copy the extents [(offset, length), ...] into the destination file; bytes copied."""
        fd = os.open(self.dest, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        sums, copied = [], 0
        try:
            for off, length in extents:
                os.posix_fallocate(fd, off, length)
                for at, n in chunks(off, length, self.chunk):
                    piece = read_exact(self.source, self.buf[:n], at)
                    sums.append(granule_checksums(piece, self.granule))
                    copied += write_all(fd, piece, at)
        finally:
            os.close(fd)
        self.sums = sums
        return copied

    def same(self, extents) -> bool:
        """The destination holds the source's bytes over `extents`, and the checksums the
        last copy computed are those of these bytes."""
        other = np.empty(self.chunk, dtype=np.uint8)
        fd = os.open(self.dest, os.O_RDONLY)
        try:
            k = 0
            for off, length in extents:
                for at, n in chunks(off, length, self.chunk):
                    a = read_exact(self.source, self.buf[:n], at)
                    b = read_exact(fd, other[:n], at)
                    if not np.array_equal(a, b) or k >= len(self.sums) or \
                            not np.array_equal(self.sums[k], granule_checksums(b, self.granule)):
                        return False
                    k += 1
            return k == len(self.sums)
        finally:
            os.close(fd)

    def close(self) -> None:
        os.close(self.source)


class PlainMirror:
    """Row 7's floor: a mirror done with bare system calls between two files of a volume's
    size, ``src`` and ``dst`` in `folder`.  `host_write` changes granules of the source as a
    host write does (``pwrite`` of the `write` op's pattern); `mirror` copies the granules it
    is given (it knows them: no map to compare) from the source's pages mapped, each
    hashed (XXH3-128, as a read verifies it), into the destination in place, one ``pwrite``
    per run of consecutive granules (at most 4 MiB), as `san.storage.VolumeStore.scatter`
    does.  What any store keeping a volume's bytes at their offsets in a file pays here.

    Why the same-run floor: on this VM the cost of 41 scattered 256 KiB writes depends on
    what the machine did just before, not only on the code (a resync right after a full
    copy and its flush took about twice as long as one after another resync, in bare
    system calls too)."""

    RUN = 16        # granules per pwrite at most: 4 MiB, the copy jobs' batch

    def __init__(self, folder, size: int, granule: int):
        self.folder, self.size, self.granule = Path(folder), size, granule
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sums = np.empty((0, 2), dtype=np.uint64)     # the last mirror's, one row per granule
        self.fds = {}
        for name in ("src", "dst"):
            self.fds[name] = os.open(self.folder / name, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            os.ftruncate(self.fds[name], size)

    def _glen(self, g: int) -> int:
        return min(self.granule, self.size - g * self.granule)

    def nbytes(self, gs) -> int:
        """Bytes of granules `gs` (ascending): the volume's last granule may be short."""
        return granules_nbytes(gs, self.granule, self._glen)

    def _extents(self, gs):
        """(offset, length) of each run of at most `RUN` consecutive granules of `gs`."""
        for run in runs(gs, self.RUN):
            yield run[0] * self.granule, self.nbytes(run)

    def host_write(self, gs, seed: int) -> None:
        """Write granules `gs` (ascending) of the source with `seed`'s pattern."""
        for offset, n in self._extents(gs):
            write_all(self.fds["src"], pattern(seed, offset, n), offset)

    def mirror(self, gs) -> int:
        """Copy granules `gs` (ascending) of the source onto the destination; bytes copied."""
        G, copied, sums = self.granule, 0, []
        with mmap.mmap(self.fds["src"], self.size, mmap.MAP_SHARED, mmap.PROT_READ) as m:
            data, piece = np.frombuffer(m, dtype=np.uint8), None
            for offset, n in self._extents(gs):
                piece = data[offset: offset + n]
                sums.append(granule_checksums(piece, G))
                copied += write_all(self.fds["dst"], piece, offset)
            data = piece = None     # the mapping closes only once no view of it is left
        self.sums = np.concatenate(sums) if sums else np.empty((0, 2), dtype=np.uint64)
        return copied

    def same(self) -> bool:
        """The destination holds the source's bytes, every one."""
        a, b = np.empty(CHUNK, dtype=np.uint8), np.empty(CHUNK, dtype=np.uint8)
        for at, n in chunks(0, self.size, CHUNK):
            if not np.array_equal(read_exact(self.fds["src"], a[:n], at),
                                  read_exact(self.fds["dst"], b[:n], at)):
                return False
        return True

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}
        shutil.rmtree(self.folder, ignore_errors=True)


def read_records(paths) -> list[bytes]:
    """Each file's bytes, plainly: what reading N volume-info records costs this process."""
    out = []
    for path in paths:
        with open(path, "rb") as f:
            out.append(f.read())
    return out


def write_pattern_file(path, seed: int, size: int) -> None:
    """A file holding the `write` pattern of `seed` over [0, size) (what a host wrote)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for off in range(0, size, PIECE):
            write_all(fd, pattern(seed, off, min(PIECE, size - off)), off)
    finally:
        os.close(fd)


def file_mismatch(path, seed: int, extents, start: int = 0) -> int | None:
    """The first volume offset whose byte differs from the pattern of `seed`, in a file that
    holds the volume's `extents` [(offset, length), ...] back to back from byte `start` on, as
    a volume image does (None: all equal)."""
    buf = np.empty(PIECE, dtype=np.uint8)
    fd = os.open(path, os.O_RDONLY)
    try:
        at = start
        for off, length in extents:
            for o, n in chunks(off, length, PIECE):
                bad = first_mismatch(read_exact(fd, buf[:n], at), seed, o)
                if bad is not None:
                    return bad
                at += n
    finally:
        os.close(fd)
    return None


# -- topologies -----------------------------------------------------------------------------
def _volume(number: int, size: int, lun: int | None = None, hosts=(), dests=()) -> str:
    parts = [f"number: {number}", f"size: {size}"]
    if lun is not None:
        parts += ["port: fc0", f"lun: {lun}", f"hosts: [{', '.join(hosts)}]"]
    if dests:
        parts.append(f"copy_destinations: [{', '.join(map(str, dests))}]")
    return "      - {" + ", ".join(parts) + "}"


class Layout:
    """Volume numbers of array a1 of the main SAN (a LUN is its volume's number)."""
    V, S, M, Q = 0, 1, 2, 3           # written volume (/v), snapshotted (/s), mirrored (/m), its secondary

    def __init__(self, fresh: int):
        self.k = fresh
        self.new = [10 + i for i in range(fresh)]                 # host writes into new space
        self.mirror = [10 + fresh + i for i in range(fresh)]      # mirror secondaries of /v
        self.restore = [10 + 2 * fresh + i for i in range(fresh)]  # restore targets
        self.copy = [10 + 3 * fresh + i for i in range(fresh)]    # volume copy destinations


def main_topology(size: int, layout: Layout) -> str:
    """a1 (the volumes of rows 1-8), a2 (fresh destinations of copies over FC), host h1,
    backup server srv with a tape library lib1, one switch."""
    L = layout
    a1 = [_volume(L.V, size, L.V, ["h1"], L.mirror), _volume(L.S, size, L.S, ["h1"]),
          _volume(L.M, size, L.M, ["h1"], [L.Q]), _volume(L.Q, size)]
    a1 += [_volume(n, size, n, ["h1"]) for n in L.new + L.mirror + L.restore + L.copy]
    a2 = [_volume(i, size, i, ["a1"]) for i in range(L.k)]
    mounts = [f"{{mount_point: /v, port: a1/fc0, lun: {L.V}}}",
              f"{{mount_point: /s, port: a1/fc0, lun: {L.S}}}",
              f"{{mount_point: /m, port: a1/fc0, lun: {L.M}}}"]
    mounts += [f"{{mount_point: /n{i}, port: a1/fc0, lun: {n}}}" for i, n in enumerate(L.new)]
    return "\n".join([
        "name: bench-targets",
        "lan: {speed: 10GbE}",
        "fabric:",
        "  switches: [{name: sw1, speed: 32GFC}]",
        "  zones:",
        "    - {name: z1, members: [h1/hba0, a1/fc0]}",
        "    - {name: z2, members: [a1/fc0, a2/fc0]}",
        "arrays:",
        "  - name: a1",
        "    device_id: BENCH-T1",
        "    managers: [h1, srv]",
        "    ports: [{name: fc0, number: 0, wwpn: \"50:00:00:00:00:00:01:01\", switch: sw1}]",
        "    volumes:", *a1,
        "  - name: a2",
        "    device_id: BENCH-T2",
        "    managers: [a1, h1]",
        "    ports: [{name: fc0, number: 0, wwpn: \"50:00:00:00:00:00:02:01\", switch: sw1}]",
        "    volumes:", *a2,
        "hosts:",
        "  - name: h1",
        "    hbas: [{name: hba0, wwpn: \"21:00:00:00:00:00:00:01\", switch: sw1}]",
        "    mounts:", *[f"      - {m}" for m in mounts],
        "backup_servers:",
        "  - name: srv",
        "    tape_library: lib1",
        "    definitions:",
        "      - {name: to-tape, host: h1, mount_point: /v, type: tape, destination: {media: M0000}, "
        "label: bench}",
        "tape_libraries:",
        "  - {name: lib1, drives: 2, drive_speed: 160MB/s, media: [M0000], media_capacity: 1000TB}",
        ""])


START_TOPOLOGY = """
name: bench-start
lan: {speed: 10GbE}
fabric:
  switches: [{name: sw1}]
  zones: [{name: z, members: [h1/hba0, h2/hba0, a1/fc0, a2/fc0]}]
arrays:
  - name: a1
    device_id: START-1
    managers: [srv]
    ports: [{name: fc0, number: 0, wwpn: "50:00:00:00:00:00:01:01", switch: sw1}]
    volumes: [{number: 0, size: 64MiB, port: fc0, lun: 0, hosts: [h1]}]
  - name: a2
    device_id: START-2
    managers: [srv]
    ports: [{name: fc0, number: 0, wwpn: "50:00:00:00:00:00:02:01", switch: sw1}]
    volumes: [{number: 0, size: 64MiB, port: fc0, lun: 0, hosts: [h2]}]
hosts:
  - name: h1
    hbas: [{name: hba0, wwpn: "21:00:00:00:00:00:00:01", switch: sw1}]
    mounts: [{mount_point: /v, port: a1/fc0, lun: 0}]
  - name: h2
    hbas: [{name: hba0, wwpn: "21:00:00:00:00:00:00:02", switch: sw1}]
    mounts: [{mount_point: /v, port: a2/fc0, lun: 0}]
backup_servers: [{name: srv, tape_library: lib1}]
tape_libraries: [{name: lib1, drives: 1, media: [T0001]}]
"""


def catalog_topology(arrays: int) -> str:
    lines = ["name: bench-catalog", "fabric:", "  switches: [{name: sw1}]",
             "  zones: [{name: z, members: [h1/hba0, "
             + ", ".join(f"a{i}/fc0" for i in range(1, arrays + 1)) + "]}]", "arrays:"]
    for i in range(1, arrays + 1):
        lines += [f"  - name: a{i}", f"    device_id: CATALOG-{i}", "    managers: [srv]",
                  f"    ports: [{{name: fc0, number: 0, "
                  f"wwpn: \"50:00:00:00:00:00:{i:02x}:01\", switch: sw1}}]",
                  "    volumes: [{number: 0, size: 1MiB, port: fc0, lun: 0, hosts: [h1]}]"]
    lines += ["hosts:", "  - name: h1",
              "    hbas: [{name: hba0, wwpn: \"21:00:00:00:00:00:00:01\", switch: sw1}]",
              "    mounts: [{mount_point: /v, port: a1/fc0, lun: 0}]",
              "backup_servers: [{name: srv}]", ""]
    return "\n".join(lines)


def _load(tmp: Path, name: str, text: str):
    from ..topology import load_topology
    path = tmp / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return load_topology(path)


# -- rows 1-8: one SAN -------------------------------------------------------------------------
class _Handles:
    """The SAN's elements as peers (`san.flows.peers.Peers`) through the handles it holds."""

    def __init__(self, san):
        self.san = san

    def element(self, name: str):
        from ..remote import RayPeer
        return RayPeer(name, self.san.actor(name))


class MainBench:
    """The SAN of rows 1-8, its raw-Ray pair, and the runs of each row."""

    def __init__(self, s, repeat: int):
        from ..fabric import San
        from ..runner import Runner
        from ..topology import load_scenario
        from .raw import RawPairs
        self.s, self.R, self.size = s, repeat, s.size
        self.L = Layout(repeat + 1)                     # a warm-up and `repeat` timed runs
        self.warm = 2 * self.size       # memory warmed before each run writing new space
        self.seeds = itertools.count(1)
        self.tmp = s.tmp
        (self.tmp / "targets-topology.yaml").write_text(main_topology(self.size, self.L))
        (self.tmp / "targets-steps.yaml").write_text(
            "name: bench-targets\ntopology: targets-topology.yaml\nsteps:\n"
            "  - {op: backup, definition: to-tape}\n")
        scenario = load_scenario(self.tmp / "targets-steps.yaml")
        self.backup_step = scenario.steps[0]
        self.state = self.tmp / "targets-state"
        self.san = San(scenario.topology, self.state, chunk_size=CHUNK, window=WINDOW).start()
        try:
            self.runner = Runner(self.san, self.state)
            self.G = self.san.granule
            folder = self.tmp / "targets-raw"
            folder.mkdir(exist_ok=True)
            self.pairs = RawPairs(folder, 1, self.size)
        except BaseException:
            self.san.shutdown()
            raise
        self.v_seed = None                       # what /v holds
        self.source = self.tmp / "targets-source.data"   # a file holding the same bytes

    def close(self) -> None:
        try:
            self.san.shutdown()
        finally:
            self.pairs.close()

    # -- calls
    def mgmt(self, method: str, *args, array: str = "a1"):
        """A management call from host h1 to `array` over the LAN, through the SAN's own
        handle of the array, as a session that stays open would (`san.remote.manage` looks
        the array up by name first, a call to Ray's GCS each time)."""
        from ..flows.lan import manage
        return manage("h1", _Handles(self.san), array, method, *args)[0]

    def job(self, method: str, *args, array: str = "a1") -> dict:
        """Order a copy job and wait for its end; its final status.  A job small enough to
        run within the order (a resync of a few granules) answers ``done``: no wait then,
        as a host would not ask again."""
        status = self.mgmt(method, *args, array=array)
        if status["state"] == "done":
            return status
        return self.mgmt("wait", status["job"], array=array)

    def write(self, mount: str, seed: int, offset: int = 0, size: int | None = None) -> None:
        self.san.call("h1", "write", mount, offset, self.size if size is None else size, seed)

    def mismatch(self, mount: str, seed: int) -> int | None:
        return self.san.call("h1", "read_compare", mount, 0, self.size, seed)["first_mismatch"]

    def digest(self, array: str, number: int) -> str:
        return self.san.call(array, "digest_volume", number)

    def free(self, array: str, initiator: str, lun: int) -> None:
        """UNMAP a whole volume: its space goes back to the file system (untimed)."""
        self.san.call(array, "unmap", initiator, "fc0", lun, 0, self.size // BLOCK)

    def free_before(self, used: list[tuple[str, str, int]]) -> None:
        """UNMAP the volumes a side wrote in its last run, right before its next run (untimed),
        as each baseline empties its own file right before writing it again.  Why it matters
        here: page cache pages freed moments ago are quick to take again, but pages long free
        are not (this VM's host has reclaimed them): writing 1 GiB of new file space took
        1.5-2.1 s after `drop_caches` and a 6 s wait, 0.2 s right after deleting a cached
        1 GiB file.  So both sides of a row write with the pages their own last run freed,
        freed after the `os.sync()` that starts each run (flushing the last run's 1 GiB takes
        seconds, long enough for pages freed before it to go cold: a copy run right after
        the Python copy's ran at 0.3 GiB/s, against 1.5-1.9 in the other rounds)."""
        while used:
            self.free(*used.pop())

    # -- rows 2 and 3: overwrite, read
    def overwrite_and_read(self) -> list[Figure]:
        size, pairs, last = self.size, self.pairs, {}

        def host():
            last["v"] = seed = next(self.seeds)
            return clock(lambda: self.write("/v", seed))()

        def raw():
            last["raw"] = seed = next(self.seeds)
            return pairs.run(1, CHUNK, WINDOW, True, True, seed, size)

        host(), raw()                               # warm-up: the space both overwrite exists
        w = alternate({"host": host, "raw": raw}, self.R)
        bad = self.mismatch("/v", last["v"])
        check(bad is None, f"targets write_overwrite: host h1 read back a wrong byte at {bad}")
        bad = pairs.check(1, last["raw"], size)[0]
        check(bad is None, f"targets write_overwrite: the raw receiver's file differs at {bad}")
        self.v_seed = last["v"]
        host_read = clock(lambda: self.san.call("h1", "read_discard", "/v", 0, size))
        raw_read = lambda: pairs.run(1, CHUNK, WINDOW, False, True, 1, size)   # noqa: E731
        host_read(), raw_read()
        r = alternate({"host": host_read, "raw": raw_read}, self.R)
        bad = self.mismatch("/v", self.v_seed)       # the read path, every byte compared
        check(bad is None, f"targets read: host h1 read back a wrong byte at {bad}")
        bad = pairs.check(1, last["raw"], size)[0]
        check(bad is None, f"targets read: the raw receiver's file differs at {bad}")
        what = f"{format_size(size)}, {format_size(CHUNK)} chunks, {WINDOW} in flight"
        params = {"size": size, "chunk": CHUNK, "window": WINDOW}
        return [
            target_figure("write_overwrite", rate(size, w["host"]), "GiB/s",
                          f"host h1 overwrites a written volume through the fabric (the host "
                          f"actor's write), {what}",
                          Baseline("raw Ray + file", rate(size, w["raw"]),
                                   "a sender actor -> a receiver actor pwriting the same bytes "
                                   "over its written file", gibps(size, w["raw"])),
                          gibps(size, w["host"]), OVERWRITE, self.R, params),
            target_figure("read", rate(size, r["host"]), "GiB/s",
                          f"host h1 reads the volume through the fabric (the host actor's "
                          f"read), {what}; from the page cache, checksums verified",
                          Baseline("raw Ray + file", rate(size, r["raw"]),
                                   "a receiver actor preads the same bytes from its file and "
                                   "returns them to a sender actor", gibps(size, r["raw"])),
                          gibps(size, r["host"]), READS, self.R, params)]

    # -- rows 1 and 5: new space
    def new_space(self) -> list[Figure]:
        """Rows 1 and 5, each its own alternation: the host write with raw Ray (row 1), then
        the host write with the FC copy (row 5).  Raw Ray runs only beside row 1's host runs:
        on this VM a SAN side run right after raw Ray's wrote 3-4x slower (host 2.7-3.8 s,
        FC copy 3.0-4.6 s, against 1.0-1.3 s after a SAN run, in 18 of the 22 such runs
        logged; the 4 fast ones each the first round of a row), and when the three took turns
        the FC copy followed raw Ray in 4 rounds of 5."""
        size, pairs, L = self.size, self.pairs, self.L
        # volumes are reused in turn: each is UNMAPped (all holes again) right before its next use
        host_vols, dests, last = itertools.cycle(range(L.k)), itertools.cycle(range(L.k)), {}
        source = self.digest("a1", L.V)

        used: dict[str, list[tuple[str, str, int]]] = {"host": [], "fc": []}

        def host():
            i = next(host_vols)
            seed = next(self.seeds)
            seconds = clock(lambda: self.write(f"/n{i}", seed))()
            bad = self.mismatch(f"/n{i}", seed)
            check(bad is None, f"targets write_new: host h1 read back a wrong byte of /n{i} at {bad}")
            used["host"].append(("a1", "h1/hba0", L.new[i]))
            return seconds

        def raw():
            last["raw"] = seed = next(self.seeds)
            return pairs.run(1, CHUNK, WINDOW, True, True, seed, size, allocate=True)

        def fc_copy():
            j = next(dests)
            start = time.perf_counter()
            status = self.job("copy_remote", L.V, "a2", j, "fc0", j, False)
            seconds = time.perf_counter() - start
            check(status["state"] == "done", f"targets fc_copy_new: the copy ended {status['state']}")
            check(self.digest("a2", j) == source,
                  f"targets fc_copy_new: a2 volume {j} is not a copy of a1 volume {L.V} (digests differ)")
            used["fc"].append(("a2", "a1/fc0", j))
            return seconds

        def setup(name):
            os.sync()                              # first: see `free_before`
            if name == "raw":
                pairs.punch(1)                     # the next writes take new space
            else:                                  # as raw does
                self.free_before(used[name])

        for name, mover in (("host", host), ("raw", raw), ("fc", fc_copy)):   # warm-up
            setup(name)
            mover()
        t1 = alternate({"host": host, "raw": raw}, self.R, sync=False, setup=setup, warm=self.warm)
        t5 = alternate({"host": host, "fc": fc_copy}, self.R, sync=False, setup=setup,
                       warm=self.warm)
        for side in used.values():
            self.free_before(side)
        bad = pairs.check(1, last["raw"], size)[0]
        check(bad is None, f"targets write_new: the raw receiver's file differs at {bad}")
        params = {"size": size, "chunk": CHUNK, "window": WINDOW, "warm": self.warm}
        host_base = Baseline("host write, new space", rate(size, t5["host"]),
                             "host h1 writes the same number of bytes into a never-written "
                             "volume (as in row 1), alternating with the FC copy",
                             gibps(size, t5["host"]))
        return [
            target_figure("write_new", rate(size, t1["host"]), "GiB/s",
                          f"host h1 writes {format_size(size)} into a never-written volume "
                          f"(one of {L.k} in turn, each UNMAPped right before it is "
                          f"written again) through the "
                          f"fabric, {format_size(CHUNK)} chunks, {WINDOW} in flight",
                          Baseline("raw Ray + file, new", rate(size, t1["raw"]),
                                   "a sender actor -> a receiver actor writing its emptied file "
                                   "the fastest way: posix_fallocate each chunk's range, then "
                                   "pwrite", gibps(size, t1["raw"])),
                          gibps(size, t1["host"]), NEW_SPACE, self.R, params),
            target_figure("fc_copy_new", rate(size, t5["fc"]), "GiB/s",
                          f"array a1 copies its written {format_size(size)} volume over FC "
                          f"into a never-written volume of array a2 (copy_remote, then wait)",
                          host_base, gibps(size, t5["fc"]), NEW_SPACE, self.R, params)]

    # -- row 4: mirror, restore, volume copy
    def copies(self) -> list[Figure]:
        size, L = self.size, self.L
        write_pattern_file(self.source, self.v_seed, size)      # the same bytes as /v
        extents = [tuple(e) for e in self.san.call("a1", "extents", L.V)]
        check(sum(n for _, n in extents) == size,
              f"targets copies: a1 volume {L.V} holds {sum(n for _, n in extents)} bytes, not {size}")
        source = self.digest("a1", L.V)
        plain = ChecksumCopy(self.source, self.tmp / "targets-copy.data", self.G)
        fresh = {kind: iter(getattr(L, kind)) for kind in ("mirror", "restore", "copy")}
        orders = {"mirror": lambda d: ("mirror", "fc0", L.V, d),
                  "restore": lambda d: ("restore", L.V, "fc0", d),
                  "copy": lambda d: ("copy", L.V, d, False)}

        used: dict[str, list[tuple[str, str, int]]] = {kind: [] for kind in fresh}

        def job(kind):
            def run():
                dest = next(fresh[kind])
                start = time.perf_counter()
                status = self.job(*orders[kind](dest))
                seconds = time.perf_counter() - start
                check(status["state"] == "done" and status["copied"] == size,
                      f"targets {kind}: it copied {status['copied']} bytes, not {size}")
                check(self.digest("a1", dest) == source,
                      f"targets {kind}: volume {dest} is not a copy of volume {L.V} (digests differ)")
                used[kind].append(("a1", "h1/hba0", dest))
                return seconds
            return run

        def python():
            return clock(lambda: plain.copy(extents))()

        def setup(name):
            os.sync()                               # first: see `free_before`
            if name == "python":
                plain.reset()
            else:                                   # as the Python copy does
                self.free_before(used[name])

        t: dict[str, list[float]] = {}
        try:
            setup("python")                         # warm-up
            python()
            for kind in ("mirror", "restore", "copy"):
                setup(kind)                         # warm-up
                job(kind)()
                # each copy beside Python runs of its own, the two taking turns: when the four
                # took turns, the mirror followed the Python copy in 4 rounds of 5, and ran at
                # 0.9 GiB/s in those rounds against 1.6-1.7 in the others (see `new_space`)
                pair = alternate({kind: job(kind), "python": python}, self.R, sync=False,
                                 setup=setup, warm=self.warm)
                t[kind], t[f"{kind}.python"] = pair[kind], pair["python"]
                # its last destination goes now, so that each kind's rounds start with the
                # same volumes written: the copy, last, had run beside two more GiB cached
                os.sync()
                self.free_before(used[kind])
            check(plain.same(extents), "targets copies: the plain Python copy differs from its source")
        finally:
            plain.reset()
            plain.close()

        def base(kind):
            runs = t[f"{kind}.python"]
            return Baseline("Python copy + checksum", rate(size, runs),
                            "a plain Python copy of the same written extents: posix_fallocate "
                            "each extent of a new file, then per 4 MiB chunk pread, XXH3-128 of "
                            f"each 256 KiB granule (san.checksums), pwrite; its runs took turns "
                            f"with the {kind}'s", gibps(size, runs))
        what = {"mirror": f"a mirror of a written {format_size(size)} volume onto a never-written "
                          f"secondary (mgmt mirror, then wait)",
                "restore": f"a restore of a written {format_size(size)} volume onto a "
                           f"never-written volume (mgmt restore, then wait)",
                "copy": f"a volume copy inside the array of a written {format_size(size)} "
                        f"volume into a never-written one (mgmt copy, then wait)"}
        return [target_figure(kind, rate(size, t[kind]), "GiB/s", what[kind], base(kind),
                              gibps(size, t[kind]), NEW_SPACE, self.R,
                              {"size": size, "extents": len(extents), "warm": self.warm})
                for kind in ("mirror", "restore", "copy")]

    # -- row 6: first write after a snapshot
    def first_write(self) -> Figure:
        from ..remote import get
        size, L = self.size, self.L
        state = {"snap": None, "seed": next(self.seeds), "before": None}
        self.write("/s", state["seed"])

        def setup(name):
            if name == "after":
                if state["snap"] is not None:
                    self.mgmt("delete_snapshot", state["snap"])
                state["snap"] = self.mgmt("snapshot", "fc0", L.S)["volume"]
                state["before"] = state["seed"]

        def write():
            state["seed"] = seed = next(self.seeds)
            return clock(lambda: self.write("/s", seed))()

        for name in ("after", "again"):           # warm-up
            setup(name)
            write()
        t = alternate({"after": write, "again": write}, self.R, setup=setup)
        bad = self.mismatch("/s", state["seed"])
        check(bad is None, f"targets first_write: host h1 read back a wrong byte of /s at {bad}")
        actor = self.san.actor("a1")
        for off in range(0, size, PIECE):      # the snapshot holds what it was taken of
            n = min(PIECE, size - off)
            bad = first_mismatch(get(actor.read_volume.remote(state["snap"], off, n), "a1"),
                                 state["before"], off)
            check(bad is None, f"targets first_write: the snapshot lost the data it was taken of "
                               f"(byte {bad})")
        self.mgmt("delete_snapshot", state["snap"])
        return target_figure(
            "first_write_after_snapshot", median(t["after"]), "s",
            f"host h1 writes {format_size(size)} (new data) over a written volume just "
            f"snapshotted: each A run takes a snapshot (untimed), then times the write; each B "
            f"run times the same write again; the snapshot is deleted (untimed) after each "
            f"pair, before the next A",
            Baseline("the same write again", median(t["again"]),
                     "the same host write over the same range once more, with nothing left "
                     "to save for the snapshot", t["again"]),
            t["after"], OVERWRITE, self.R,
            {"size": size, "chunk": CHUNK, "window": WINDOW})

    # -- row 7: resync after 1% change
    def resync(self) -> Figure:
        from .array import _spread
        size, G, L = self.size, self.G, self.L
        n_g = -(-size // G)
        shifts = itertools.count(0)
        expected, changed = {}, {}
        self.write("/m", next(self.seeds))
        self.job("mirror", "fc0", L.M, L.Q)                     # warm-up: the secondary's space

        setup_s: dict[str, list[float]] = {"resync": [], "full": []}

        def setup(name):
            seed, start = next(self.seeds), time.perf_counter()
            if name == "full":
                self.write("/m", seed)
                expected[name] = size
            else:
                granules = _spread(n_g, 0.01, next(shifts))
                for k in granules:
                    self.write("/m", seed, k * G, min(G, size - k * G))
                expected[name] = sum(min(G, size - k * G) for k in granules)
                changed["granules"] = len(granules)
            setup_s[name].append(time.perf_counter() - start)

        def mirror(name):
            def run():
                start = time.perf_counter()
                status = self.job("mirror", "fc0", L.M, L.Q)
                seconds = time.perf_counter() - start
                check(status["copied"] == expected[name],
                      f"targets resync: a {name} mirror copied {status['copied']} bytes, "
                      f"expected {expected[name]}")
                return seconds
            return run

        movers = {"resync": mirror("resync"), "full": mirror("full")}
        for name, mover in movers.items():         # warm-up
            setup(name)
            mover()
        t = alternate(movers, self.R, setup=setup, settle=True)
        check(self.digest("a1", L.M) == self.digest("a1", L.Q),
              "targets resync: the primary and its secondary differ after the mirrors")
        floor = self.resync_floor(n_g, {k: median(v) for k, v in setup_s.items()})
        per_run = [a / b for a, b in zip(t["resync"], t["full"])]
        target = TARGETS["resync_1pct"][1]
        ms = {k: [x * 1e3 for x in v] for k, v in t.items()}
        fig = target_figure(
            "resync_1pct", median(ms["resync"]), "ms",
            f"a mirror of a {format_size(size)} volume after 1% of its granules changed "
            f"({changed['granules']} of {n_g}, spread, written by host h1 untimed; checksums "
            f"compared, only those move); the target is met only if every round's resync "
            f"took at most {target:g} of that round's full copy",
            Baseline("full copy", median(ms["full"]),
                     "a mirror of the same volume after every granule changed (every byte "
                     "moves)", ms["full"]),
            ms["resync"], OVERWRITE, self.R,
            {"size": size, "granules_changed": changed["granules"], "granules": n_g,
             "run_ratios": per_run, "every_run_meets": all(r <= target for r in per_run),
             "setup_ms": {k: median(v) * 1e3 for k, v in setup_s.items()},
             "floor_ratio": median(floor["resync"]) / median(floor["full"]),
             "floor_run_ratios": [a / b for a, b in zip(floor["resync"], floor["full"])]},
            other_baselines=[
                Baseline("plain resync (the floor)", median(floor["resync"]),
                         "the same 1% of granules changed, then copied with bare system calls "
                         "(`PlainMirror`), in rounds of their own after the SAN's, each setup "
                         "lasting as long as the SAN's", floor["resync"]),
                Baseline("plain full copy (the floor's)", median(floor["full"]),
                         "every granule changed, then copied the same way", floor["full"])])
        # the issue asks for <= 3% in every run: round i's resync against round i's full copy
        fig.params["meets_target"] = bool(fig.params["meets_target"] and fig.params["every_run_meets"])
        return fig

    def resync_floor(self, n_g: int, setup_s: dict[str, float]) -> dict[str, list[float]]:
        """Row 7 done with bare system calls (`PlainMirror`), in the SAN's pattern: the same
        granules changed (untimed), the same alternation and syncs, and each setup lasting
        `setup_s[name]`, as long as the SAN's own (its host writes); each side's ms.

        Why the setup's length matters: on this VM, pages left untouched for a while are slow
        to touch again, and the destination's pages wait out the setup.  41 scattered
        granules copied with bare system calls took 0.026 of a full copy (median of 6 rounds)
        right after their setup, 0.041 after a 0.2 s pause, 0.060 after 1 s; the SAN's 41
        host writes take about half a second."""
        from .array import _spread
        plain = PlainMirror(self.tmp / "targets-resync-floor", self.size, self.G)
        shifts, todo = itertools.count(0), {}
        try:
            def setup(name):
                start = time.perf_counter()
                todo[name] = (range(n_g) if name == "full" else _spread(n_g, 0.01, next(shifts)))
                plain.host_write(todo[name], next(self.seeds))
                time.sleep(max(0.0, setup_s[name] - (time.perf_counter() - start)))

            def mirror(name):
                def run():
                    gs = todo[name]
                    want = plain.nbytes(gs)
                    start = time.perf_counter()
                    copied = plain.mirror(gs)
                    seconds = time.perf_counter() - start
                    check(copied == want, f"targets resync floor: a {name} copy moved {copied} "
                                          f"bytes, expected {want}")
                    return seconds * 1e3
                return run

            movers = {"resync": mirror("resync"), "full": mirror("full")}
            for name in ("full", "resync", "full"):     # warm-up, as the SAN's (space first)
                setup(name)
                movers[name]()
            t = alternate(movers, self.R, setup=setup, settle=True)
            check(plain.same(), "targets resync floor: the plain copy differs from its source")
            return t
        finally:
            plain.close()

    # -- row 8: tape backup
    def tape(self) -> Figure:
        import ray
        from .raw import Appender, Hop, Source
        size, L = self.size, self.L
        extents = [tuple(e) for e in self.san.call("a1", "extents", L.V)]
        pieces = [p for off, n in extents for p in chunks(off, n, CHUNK)]
        path = self.tmp / "targets-tape-raw.bin"
        actors = [Source.remote(str(self.source)), Hop.remote(), Appender.remote()]
        source, hop, appender = actors
        moved = sum(n for _, n in extents)

        def backup():
            reports = self.runner.run([self.backup_step])
            r = reports[0]
            check(r.ok, f"targets tape: the backup step failed: {r.error}")
            check(r.bytes >= moved, f"targets tape: the backup moved {r.bytes} bytes, less than "
                                    f"the {moved} written")
            return r.wall_s

        ends = [len(COMMIT)]                   # where each raw run's bytes end

        def raw():
            start = time.perf_counter()
            end = ray.get(appender.append.remote(hop, source, pieces, WINDOW, str(path), COMMIT))
            seconds = time.perf_counter() - start
            check(end == ends[-1] + moved, f"targets tape: a raw run ended at byte {end} of its "
                                           f"file, not at {ends[-1] + moved}")
            ends.append(end)
            return seconds

        # Both sides append to a file that grows run after run, as a medium does: neither
        # frees space before a run.  The raw side once wrote a new file each run, so each run
        # took back the 1 GiB of page cache its `unlink` had just freed; on this VM (a virtio
        # balloon with free page reporting) a write into pages freed seconds ago ran at 1.4
        # GiB/s, one into pages long free at 0.3-0.5, whatever the code above it.
        try:
            path.unlink(missing_ok=True)
            for mover in (backup, raw):                              # warm-up
                mover()
            t = alternate({"tape": backup, "raw": raw}, self.R, warm=self.warm)
            last = self.san.call("lib1", "next_file", "M0000") - 1
            check(self.san.call("lib1", "image_digest", "M0000", last) == self.digest("a1", L.V),
                  f"targets tape: the image on M0000 file {last} differs from the volume")
            bad = file_mismatch(path, self.v_seed, extents, ends[-2])
            check(bad is None, f"targets tape: the raw file differs from the volume at {bad}")
        finally:
            path.unlink(missing_ok=True)
            for actor in actors:
                ray.kill(actor)
        return target_figure(
            "tape_backup", rate(moved, t["tape"]), "GiB/s",
            f"a tape backup of a {format_size(size)} volume (a `backup` step): array -> FC -> "
            f"host -> LAN -> server -> library, appended to a medium with its syncs",
            Baseline("raw Ray, same hops, + fsyncs", rate(moved, t["raw"]),
                     "the same bytes array actor (pread) -> host actor -> library actor, "
                     f"{format_size(CHUNK)} chunks, {WINDOW} in flight, appended to one file "
                     "that grows run after run as the medium does; then fsync, an 80-byte "
                     "commit record, fsync (as a tape append)",
                     gibps(moved, t["raw"])),
            gibps(moved, t["tape"]), NEW_SPACE, self.R,
            {"size": size, "chunk": CHUNK, "warm": self.warm})


# -- row 9: SAN start-up ------------------------------------------------------------------------
def san_start(s, repeat: int) -> Figure:
    import ray
    from ..fabric import San
    from .raw import Bare
    topo = _load(s.tmp, "targets-start", START_TOPOLOGY)
    counter = itertools.count()
    names = sorted(San(topo, s.tmp / "unused").kinds)
    check(len(names) == 7, f"targets san_start: the SAN has {len(names)} elements, not 7")

    def start_san():
        state = s.tmp / f"targets-start-{next(counter)}"
        start = time.perf_counter()
        san = San(topo, state).start()
        seconds = time.perf_counter() - start
        try:
            got = [san.call(n, "ping") for n in names]
            check(got == names, f"targets san_start: the elements answered {got}, not {names}")
        finally:
            san.shutdown()
            shutil.rmtree(state, ignore_errors=True)
        return seconds

    def bare():
        start = time.perf_counter()
        actors = [Bare.options(num_cpus=0).remote(n) for n in names]
        got = ray.get([a.ping.remote() for a in actors])
        seconds = time.perf_counter() - start
        for a in actors:
            ray.kill(a)
        check(got == names, f"targets san_start: the bare actors answered {got}, not {names}")
        return seconds

    def setup(name):
        # the last run's 7 processes are killed, not yet gone (all had exited 0.26 s after
        # ray.kill): their exits must not land on this run's start.  Without the pause, 2 of
        # 15 SAN starts took 0.55-0.73 s more than their row's median; with it, none over 0.18
        time.sleep(EXIT_PAUSE)

    if not s.quick:
        start_san(), bare()                       # warm-up: classes exported, code imported
    # each run takes 7 new processes' memory (about 80 MiB each): warmed first, either side,
    # as the rows writing new space do (`core.warm_memory`); not at --quick sizes
    warm = 0 if s.quick else START_WARM
    t = alternate({"san": start_san, "bare": bare}, repeat, setup=setup, warm=warm)
    return target_figure(
        "san_start", median(t["san"]), "s",
        f"a SAN of 7 elements ({', '.join(names)}) started: San(topology, new state dir)"
        f".start() after ray.init, until every element answers",
        Baseline("7 bare actors", median(t["bare"]),
                 "7 actors of an empty class created (num_cpus=0, as the SAN's) until each "
                 "answers a ping", t["bare"]),
        t["san"], NO_DATA, repeat, {"elements": len(names), "uncompiled_modules": uncompiled(),
                                    "warm": warm})


def uncompiled(package: Path = Path(__file__).resolve().parents[1]) -> int:
    """How many of `package`'s modules have no up-to-date bytecode in ``__pycache__``.

    An actor's process compiles each such module from source when it imports it, which is
    a tenth of a second of a SAN's start on a 2-core machine: an editable install leaves
    none compiled where PYTHONDONTWRITEBYTECODE is set (``python -m compileall san``)."""
    stale = 0
    for source in package.rglob("*.py"):
        try:
            header = Path(importlib.util.cache_from_source(str(source))).read_bytes()[:16]
        except OSError:
            stale += 1
            continue
        if int.from_bytes(header[4:8], "little") & 1:      # hash-based (PEP 552)
            stale += header[8:16] != importlib.util.source_hash(source.read_bytes())
            continue
        stat = source.stat()
        stale += header[8:16] != struct.pack("<II", int(stat.st_mtime) & 0xFFFFFFFF,
                                             stat.st_size & 0xFFFFFFFF)
    return stale


# -- row 10: catalog rebuild ------------------------------------------------------------------
def catalog_rebuild(s, repeat: int) -> Figure:
    from ..elements.disk_array import DiskArray
    from ..fabric import San
    from ..volume_info import VolumeInfo
    arrays = 4
    per = 25 if s.quick else 2500
    topo = _load(s.tmp, "targets-catalog", catalog_topology(arrays))
    state = s.tmp / "targets-catalog-state"
    folder = s.tmp / "targets-records"
    expected, paths = {}, []
    for spec in topo.arrays:                     # made directly in the state dir, no SAN
        arr = DiskArray(spec, state)
        (folder / spec.name).mkdir(parents=True)
        try:
            for i in range(per):
                number = arr.snapshot(0)
                record = VolumeInfo(f"bench {spec.name} {i}", "h1", "/v", 1767225600 + i).encode()
                arr.record_info(number, record)
                expected[(spec.device_id, str(number))] = record
                paths.append(folder / spec.name / f"vol-{number}.info")
                paths[-1].write_bytes(record)
        finally:
            arr.close()
    total = arrays * per
    names = [a.name for a in topo.arrays]
    san = San(topo, state).start()
    got = {}
    try:
        def setup(name):
            if name == "rebuild":
                san.call("srv", "lose_catalog")

        def rebuild():
            start = time.perf_counter()
            answer = san.call("srv", "rebuild_catalog", names)
            seconds = time.perf_counter() - start
            check(answer["added"] == total and not answer["skipped"],
                  f"targets catalog_rebuild: {answer['added']} rows added "
                  f"({len(answer['skipped'])} skipped), expected {total}")
            return seconds

        def plain():
            start = time.perf_counter()
            got["records"] = read_records(paths)
            return time.perf_counter() - start

        for name, mover in (("rebuild", rebuild), ("plain", plain)):     # warm-up
            setup(name)
            mover()
        t = alternate({"rebuild": rebuild, "plain": plain}, repeat, setup=setup)
        rows = san.call("srv", "catalog_rows")
    finally:
        san.shutdown()
    check(got["records"] == list(expected.values()),
          "targets catalog_rebuild: the records read back are not those recorded")
    found = {(r["device_id"], r["media_id"]): r["label"] for r in rows}
    want = {k: VolumeInfo.decode(v).label for k, v in expected.items()}
    check(len(rows) == total and found == want,
          f"targets catalog_rebuild: the catalog has {len(rows)} rows, not the {total} backup "
          f"volumes with their labels")
    ms = {k: [x * 1e3 for x in v] for k, v in t.items()}
    return target_figure(
        "catalog_rebuild", median(ms["rebuild"]), "ms",
        f"a lost catalog rebuilt by backup server srv from {arrays} arrays holding {per:,} "
        f"snapshots with volume info each ({total:,} backup volumes, made in the state dir "
        f"by in-process arrays): the rebuild_catalog call, its catalog lost (untimed) before",
        Baseline(f"{total:,} records read", median(ms["plain"]),
                 f"plain Python reading the same {total:,} 512-byte records, one file each "
                 f"(copies laid out as the arrays keep them)", ms["plain"]),
        ms["rebuild"], NO_DATA, repeat, {"arrays": arrays, "snapshots_per_array": per,
                                         "records": total})


# -- the benchmark ------------------------------------------------------------------------------
class RowsFailed(Exception):
    """Some rows raised (not a data check): the others' figures are still in `measured`."""


def rows_failed(failures: list, figures: list, curves: list) -> Exception:
    """One exception for the rows that failed, carrying the figures of those that did not
    (`measured`, which `san.bench.cli` reports): DataCheckFailed if any row's data check
    failed, else RowsFailed."""
    def text(exc):
        return str(exc) if isinstance(exc, (DataCheckFailed, SanError)) else f"{type(exc).__name__}: {exc}"
    message = "; ".join(f"{name}: {text(exc)}" for name, exc in failures)
    data = any(isinstance(exc, DataCheckFailed) for _, exc in failures)
    exc = DataCheckFailed(message) if data else RowsFailed(message)
    exc.measured = (figures, curves)
    return exc


def bench_targets(s, res=None) -> tuple[list, list]:
    """Every row of issue 12's table, each beside its same-run baseline, and their plot.  A
    row that fails does not stop the others: the failures are raised at the end, with the
    figures of the rows that ran (`rows_failed`)."""
    repeat = runs_of(s)
    figures: list[Figure] = []
    failures: list[tuple[str, Exception]] = []

    def attempt(name: str, run) -> None:
        try:
            got = run()
        except Exception as exc:        # noqa: BLE001 -- reported at the end, the others run
            if os.environ.get("SAN_DEBUG"):
                traceback.print_exc()
            failures.append((name, exc))
            return
        figures.extend(got if isinstance(got, list) else [got])

    started: list[MainBench] = []
    attempt("rows 1-8 (starting their SAN)", lambda: started.append(MainBench(s, repeat)) or [])
    if started:
        bench = started[0]
        try:
            for row, method in (("rows 2-3", bench.overwrite_and_read), ("rows 1, 5", bench.new_space),
                                ("row 4", bench.copies), ("row 6", bench.first_write),
                                ("row 7", bench.resync), ("row 8", bench.tape)):
                attempt(row, method)
        finally:
            bench.close()
            shutil.rmtree(bench.state, ignore_errors=True)
    attempt("row 9", lambda: san_start(s, start_runs(s)))
    attempt("row 10", lambda: catalog_rebuild(s, repeat))
    order = list(TARGETS)
    figures.sort(key=lambda f: order.index(f.key.split(".", 1)[1]))
    curves = [ratio_curve(figures, repeat)] if figures else []
    if failures:
        raise rows_failed(failures, figures, curves)
    return figures, curves


__all__ = ["bench_targets", "TARGETS", "ChecksumCopy", "read_records", "meets", "ratio_curve",
           "runs_of", "start_runs", "target_figure", "rows_failed", "RowsFailed"]
