"""Tape: backup throughput (real and modeled) and catalog rebuild time, through the SAN's actors.

One SAN (array, host, backup server, tape library with 2 drives at 160 MB/s, a 10GbE LAN so
the drive is the slowest link), driven by scenario steps through `san.runner.Runner`:

- ``tape backup``: a tape backup of a host volume (modeled: array -> FC -> host -> LAN ->
  server -> drive; run: the library reads the volume through the host's path, the array's
  chunks going straight into its process, see `san.flows.tape_library`), wall time beside a
  plain file append of the same bytes in 64 KiB records with an fsync (both write new space:
  a tape image only grows); its modeled throughput beside the drive's nominal speed.  The
  baseline of issue 12 (raw Ray over the same hops, with the medium's syncs) is row 8 of
  `san.bench.targets`.  Checked: the volume is changed, restored from the last tape backup
  and verified against a checkpoint taken before the backups.
- ``catalog rebuild``: the catalog lost and rebuilt from the labels of N media (4 backup files
  each), beside the same labels read in this process (`san.tape.medium.TapeMedium.files`,
  no SAN).  Checked: the catalog has 4N rows again, and the labels list 4N files.
"""
from __future__ import annotations

import os
import textwrap
import time

from ..pattern import pattern
from ..units import GiB, MiB, format_size
from .core import (NEW_SPACE, NO_DATA, Baseline, Figure, alternate, check, gibps,
                   median, rate)

DRIVE = 160e6   # bytes/s, the library's drive_speed below

TOPOLOGY = """
name: bench-tape
lan: {speed: 10GbE}
fabric:
  switches: [{name: sw1, speed: 8GFC}]
  zones: [{name: z, members: [h1/hba0, a1/fc0]}]
arrays:
  - name: a1
    device_id: BENCH-1
    managers: [srv, h1]
    ports: [{name: fc0, number: 0, wwpn: "50:00:00:00:00:00:00:01", switch: sw1}]
    volumes:
      - {number: 0, size: SIZE, port: fc0, lun: 0, hosts: [h1]}
      - {number: 1, size: 64MiB, port: fc0, lun: 1, hosts: [h1]}
hosts:
  - name: h1
    hbas: [{name: hba0, wwpn: "21:00:00:00:00:00:00:01", switch: sw1}]
    mounts: [{mount_point: /v, port: a1/fc0, lun: 0}, {mount_point: /s, port: a1/fc0, lun: 1}]
backup_servers:
  - name: srv
    tape_library: lib1
    definitions:
      - {name: to-tape, host: h1, mount_point: /v, type: tape, destination: {media: M0000}, label: bench}
tape_libraries:
  - {name: lib1, drives: 2, drive_speed: 160MB/s, media: [MEDIA], media_capacity: 256GiB}
"""


def _media(n: int) -> list[str]:
    return [f"R{i:04d}" for i in range(1, n + 1)]


class Steps:
    """A scenario file of tagged steps, loaded once; `take(tag)` gives the parsed steps."""

    def __init__(self, tmp, size: int, media: list[str]):
        self.tmp, self.size, self.media, self.lines = tmp, size, media, []

    def add(self, tag: str, line: str) -> None:
        self.lines.append((tag, line))

    def load(self):
        from ..topology import load_scenario
        (self.tmp / "tape-topology.yaml").write_text(
            textwrap.dedent(TOPOLOGY).replace("SIZE", str(self.size))
            .replace("MEDIA", ", ".join(["M0000"] + self.media)))
        (self.tmp / "tape-steps.yaml").write_text(
            "name: bench-tape\ntopology: tape-topology.yaml\nsteps:\n"
            + "".join(f"  - {line}\n" for _, line in self.lines))
        self.scenario = load_scenario(self.tmp / "tape-steps.yaml")
        return self.scenario

    def take(self, tag: str) -> list:
        return [step for (t, _), step in zip(self.lines, self.scenario.steps) if t == tag]


def _run(runner, steps, what: str):
    reports = runner.run(steps)
    bad = [r for r in reports if not r.ok]
    check(not bad, f"tape: {what}: step {bad[0].op if bad else ''} failed: "
                   f"{bad[0].error if bad else ''}")
    return reports


def bench_tape(s, res=None) -> tuple[list, list]:
    from ..fabric import San
    from ..runner import Runner
    from ..tape.medium import TapeMedium
    size, repeat = s.size, s.repeat
    counts = sorted(set(s.media))
    media = _media(max(counts))
    st = Steps(s.tmp, size, media)
    # catalog rebuild: 4 backups of a small volume per medium, N media at a time
    st.add("small", "{op: write, host: h1, mount: /s, offset: 0, size: 1MiB, seed: 1}")
    for m in media:
        st.add(f"fill-{m}", f"{{op: define, name: d-{m}, host: h1, mount_point: /s, type: tape, "
                            f"destination: {{media: {m}}}, label: to {m}}}")
        for _ in range(4):
            st.add(f"fill-{m}", f"{{op: backup, definition: d-{m}}}")
    st.add("rebuild", "{op: lose_catalog, server: srv}")
    st.add("rebuild", "{op: rebuild_catalog, server: srv, from: [lib1]}")
    for n in counts:
        st.add(f"expect-{n}", f"{{op: expect_catalog, server: srv, count: {4 * n}}}")
    # backup throughput, then a restore of the last backup, checked against a checkpoint
    st.add("load", f"{{op: write, host: h1, mount: /v, offset: 0, size: {size}, seed: 1}}")
    st.add("load", "{op: checkpoint, as: before, host: h1, mount: /v}")
    for k in range(repeat + 1):
        st.add(f"backup-{k}", f"{{op: backup, definition: to-tape, as: t{k}}}")
    st.add("check", f"{{op: write, host: h1, mount: /v, offset: 0, size: {size}, seed: 2}}")
    st.add("check", f"{{op: restore_volume, backup: t{repeat}}}")
    st.add("check", "{op: verify, checkpoint: before, host: h1, mount: /v}")
    scenario = st.load()
    state = s.tmp / "tape-state"
    san = San(scenario.topology, state).start()
    figures = []
    try:
        runner = Runner(san, state)
        _run(runner, st.take("small"), "writing the small volume")
        library = state / "tapes" / "lib1"
        done = 0
        for n in counts:
            for m in media[done:n]:
                _run(runner, st.take(f"fill-{m}"), f"backups onto {m}")
            done = n
            files = {}

            def rebuild():
                reports = _run(runner, st.take("rebuild") + st.take(f"expect-{n}"),
                               f"catalog rebuild from {n} media")
                return reports[1].wall_s

            def labels():
                start = time.perf_counter()
                files["n"] = sum(len(TapeMedium(library / f"{m}.tap", m, 256 * GiB).files())
                                 for m in media[:n])
                return time.perf_counter() - start

            times = alternate({"rebuild": rebuild, "labels": labels}, repeat)
            check(files["n"] == 4 * n, f"tape: the labels of {n} media list {files['n']} files, "
                                       f"not {4 * n}")
            ms = {k: [t * 1e3 for t in v] for k, v in times.items()}
            figures.append(Figure(
                "tape", f"tape.rebuild.{n}", f"catalog rebuild, {n} media",
                median(ms["rebuild"]), "ms",
                f"a lost catalog rebuilt by the backup server from the labels of {n} media "
                f"({4 * n} backup files)",
                Baseline("labels read in-process", median(ms["labels"]),
                         "the same media's labels read by this process, no SAN", ms["labels"]),
                better="lower", space=NO_DATA, runs=ms["rebuild"],
                params={"media": n, "files": 4 * n}))
        _run(runner, st.take("load"), "writing the volume")
        _run(runner, st.take("backup-0"), "the warm-up backup")
        seen = {"k": 0, "reports": []}

        def backup():
            seen["k"] += 1
            report = _run(runner, st.take(f"backup-{seen['k']}"), "tape backup")[0]
            check(report.bytes >= size, f"tape: the backup moved {report.bytes} bytes, less than "
                                        f"the {size} written")
            seen["reports"].append(report)
            return report.wall_s

        def append():
            path = s.tmp / "tape-baseline.bin"
            start = time.perf_counter()
            with open(path, "wb") as out:
                for off in range(0, size, 4 * MiB):
                    data = memoryview(pattern(1, off, min(4 * MiB, size - off)))
                    for i in range(0, len(data), 65536):
                        out.write(data[i:i + 65536])
                out.flush()
                os.fsync(out.fileno())
            seconds = time.perf_counter() - start
            check(path.stat().st_size == size, "tape: the baseline file is short")
            path.unlink()
            return seconds

        times = alternate({"backup": backup, "append": append}, repeat)
        _run(runner, st.take("check"), "restore from tape and verify")
    finally:
        san.shutdown()
    modeled = [r.modeled_s for r in seen["reports"]]
    figures.append(Figure(
        "tape", "tape.backup.real", "tape backup, wall time", rate(size, times["backup"]), "GiB/s",
        f"a tape backup of a {format_size(size)} volume: array -> FC -> host -> LAN -> server "
        f"-> drive, real time here",
        Baseline("file append + fsync", rate(size, times["append"]),
                 "the same bytes appended to a file in 64 KiB records, then fsync",
                 gibps(size, times["append"])),
        space=NEW_SPACE, runs=gibps(size, times["backup"]), params={"size": size}))
    figures.append(Figure(
        "tape", "tape.backup.modeled", "tape backup, modeled", size / median(modeled) / 1e6, "MB/s",
        "the same backups' modeled throughput on the described hardware (10GbE LAN, 8GFC)",
        Baseline("drive speed (nominal)", DRIVE / 1e6, "the library's drive_speed, the slowest link"),
        space=NEW_SPACE, runs=[size / m / 1e6 for m in modeled], params={"size": size}))
    return figures, []
