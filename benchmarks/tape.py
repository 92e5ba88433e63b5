"""Tape: backup throughput (real, and modeled against the drive) and catalog rebuild time.

- tape backup of a host volume through the SAN (array -> FC -> host -> LAN -> backup server
  -> drive), on a 10GbE LAN so the drive is the slowest link: real GiB/s from the wall time,
  modeled GiB/s from the report (should be the drive's 160 MB/s), beside a baseline measured
  in the same run: the same bytes appended to a plain file;
- catalog rebuild from N media (each holding 4 backup files), through the backup server.

Run:  python benchmarks/tape.py [--size 1GiB] [--media 1,4,16] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from san.fabric import San  # noqa: E402
from san.pattern import pattern  # noqa: E402
from san.runner import Runner  # noqa: E402
from san.topology import load_scenario  # noqa: E402
from san.units import GiB, format_size, parse_size  # noqa: E402

TOPOLOGY = """
name: tape-bench
lan: {speed: 10GbE}
fabric:
  switches: [{name: sw1, speed: 8GFC}]
  zones: [{name: z, members: [h1/hba0, a1/fc0]}]
arrays:
  - name: a1
    device_id: BENCH-1
    managers: [srv, h1]
    ports: [{name: fc0, number: 0, wwpn: "50:00:00:00:00:00:00:01", switch: sw1}]
    volumes: [{number: 0, size: SIZE, port: fc0, lun: 0, hosts: [h1]}]
hosts:
  - name: h1
    hbas: [{name: hba0, wwpn: "21:00:00:00:00:00:00:01", switch: sw1}]
    mounts: [{mount_point: /v, port: a1/fc0, lun: 0}]
backup_servers:
  - name: srv
    tape_library: lib1
    definitions:
      - {name: to-tape, host: h1, mount_point: /v, type: tape, destination: {media: M0000}, label: bench}
tape_libraries:
  - {name: lib1, drives: 2, drive_speed: 160MB/s, media: [MEDIA], media_capacity: 64GiB}
"""


def scenario(tmp: Path, size: int, media: list[str], steps: str):
    (tmp / "t.yaml").write_text(textwrap.dedent(TOPOLOGY).replace("SIZE", str(size))
                                .replace("MEDIA", ", ".join(media)))
    (tmp / "s.yaml").write_text("name: bench\ntopology: t.yaml\nsteps:\n" + textwrap.indent(steps, "  "))
    return load_scenario(tmp / "s.yaml")


def backup_throughput(tmp: Path, size: int) -> dict:
    steps = (f"- {{op: write, host: h1, mount: /v, offset: 0, size: {size}, seed: 1}}\n"
             "- {op: backup, definition: to-tape, as: t}\n")
    loaded = scenario(tmp, size, ["M0000"], steps)
    san = San(loaded.topology, tmp / "state").start()
    try:
        reports = Runner(san, tmp / "state").run(loaded.steps)
    finally:
        san.shutdown()
    backup = reports[1]
    assert backup.ok, backup.error
    # baseline: the same bytes appended to a plain file in 64 KiB records
    chunk = 4 << 20
    start = time.perf_counter()
    with open(tmp / "baseline.bin", "wb") as out:
        for off in range(0, size, chunk):
            data = pattern(1, off, chunk).tobytes()
            for i in range(0, chunk, 65536):
                out.write(data[i:i + 65536])
        out.flush()
        os.fsync(out.fileno())
    baseline = size / (time.perf_counter() - start) / GiB
    return {"bytes": backup.bytes, "wall_s": backup.wall_s, "modeled_s": backup.modeled_s,
            "real_GiBps": backup.bytes / backup.wall_s / GiB,
            "modeled_MBps": backup.bytes / backup.modeled_s / 1e6,
            "baseline_file_GiBps": baseline}


def rebuild_time(tmp: Path, n: int) -> dict:
    media = [f"M{i:04d}" for i in range(n)]
    steps = "- {op: write, host: h1, mount: /v, offset: 0, size: 1MiB, seed: 1}\n"
    for m in media:
        steps += f"- {{op: define, name: d-{m}, host: h1, mount_point: /v, type: tape, destination: {{media: {m}}}, label: to {m}}}\n"
        steps += "".join(f"- {{op: backup, definition: d-{m}}}\n" for _ in range(4))
    steps += "- {op: lose_catalog, server: srv}\n- {op: rebuild_catalog, server: srv, from: [lib1]}\n"
    steps += f"- {{op: expect_catalog, server: srv, count: {4 * n}}}\n"
    loaded = scenario(tmp, 64 << 20, media, steps)
    san = San(loaded.topology, tmp / "state").start()
    try:
        reports = Runner(san, tmp / "state").run(loaded.steps)
    finally:
        san.shutdown()
    assert all(r.ok for r in reports), [r.error for r in reports if not r.ok]
    rebuild = reports[-2]
    return {"media": n, "files": 4 * n, "wall_s": rebuild.wall_s}


def main(argv=None) -> int:
    import ray
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--media", default="1,4,16")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    size = parse_size(args.size)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(object_store_memory=4 << 30, include_dashboard=False, logging_level=logging.ERROR,
             log_to_driver=False)
    results = {}
    try:
        with tempfile.TemporaryDirectory(prefix="san-bench-") as tmpdir:
            results["backup"] = backup_throughput(Path(tmpdir), size)
        results["rebuild"] = []
        for n in (int(x) for x in args.media.split(",")):
            with tempfile.TemporaryDirectory(prefix="san-bench-") as tmpdir:
                results["rebuild"].append(rebuild_time(Path(tmpdir), n))
    finally:
        ray.shutdown()
    b = results["backup"]
    print(f"tape backup of {format_size(b['bytes'])}: real {b['real_GiBps']:.2f} GiB/s "
          f"(baseline file append {b['baseline_file_GiBps']:.2f} GiB/s), modeled "
          f"{b['modeled_MBps']:.0f} MB/s against a 160 MB/s drive ({b['modeled_s']:.2f} s)")
    for r in results["rebuild"]:
        print(f"catalog rebuild from {r['media']} media ({r['files']} files): {r['wall_s'] * 1e3:.0f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
