"""Host-to-array throughput through the fabric, beside raw-Ray baselines from the same run.

Four movers of the same bytes (the `write` op's pattern, one new `ray.put` per chunk,
`window` chunks in flight, oldest answered first), each after a warm-up pass that faults in
the object store, each timed `--repeat` times (the median is reported):

- raw Ray:        a sender actor puts chunks, a receiver actor takes each by reference;
- raw Ray + file: the same, and the receiver pwrites each chunk into a file (read: preads it);
  (raw read without a file: the receiver returns a ready chunk, copied into the object store);
- fabric write:   `host.write` through the switch grant to the array (checks, checksums, map);
- fabric read:    `host.read_discard` (the array preads and verifies every granule).

Run:  python benchmarks/fabric_throughput.py [--size 2GiB] [--chunks 1MiB,4MiB,16MiB] [--json OUT]
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
from collections import deque
from pathlib import Path

import numpy as np
import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from san.fabric import San  # noqa: E402
from san.pattern import pattern  # noqa: E402
from san.topology import load_topology  # noqa: E402
from san.units import GiB, format_size, parse_size  # noqa: E402

TOPOLOGY = """
name: bench
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


@ray.remote(num_cpus=0)
class Receiver:
    def __init__(self, path: str | None, size: int):
        self.fd = None
        self.block = pattern(1, 0, 16 << 20)
        if path:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            os.ftruncate(self.fd, size)

    def put(self, offset: int, data) -> int:
        if self.fd is not None:
            os.pwrite(self.fd, data, offset)
        return len(data)

    def get(self, offset: int, length: int):
        if self.fd is None:  # returned arrays are copied into the object store: new bytes each time
            return self.block[:length]
        buf = np.empty(length, dtype=np.uint8)
        os.preadv(self.fd, [buf], offset)
        return buf


@ray.remote(num_cpus=0)
class Sender:
    def run(self, receiver, size: int, chunk: int, window: int, write: bool) -> float:
        inflight: deque = deque()
        start = time.perf_counter()
        for off in range(0, size, chunk):
            if len(inflight) >= window:
                ray.get(inflight.popleft())
            if write:
                inflight.append(receiver.put.remote(off, ray.put(pattern(1, off, chunk))))
            else:
                inflight.append(receiver.get.remote(off, chunk))
        while inflight:
            ray.get(inflight.popleft())
        return time.perf_counter() - start


def timed(fn, repeat):
    """Median of `repeat` timings of fn() (seconds)."""
    times = sorted(fn() for _ in range(repeat))
    return times[len(times) // 2]


def raw(size, chunk, window, with_file, tmp, repeat):
    """(write, read) GiB/s of the raw-Ray movers, with or without the receiver's file I/O."""
    receiver = Receiver.remote(str(tmp / "raw.data") if with_file else None, size)
    sender = Sender.remote()
    ray.get(sender.run.remote(receiver, size, chunk, window, True))  # warm-up, fills the file
    write = timed(lambda: ray.get(sender.run.remote(receiver, size, chunk, window, True)), repeat)
    read = timed(lambda: ray.get(sender.run.remote(receiver, size, chunk, window, False)), repeat)
    ray.kill(receiver)
    ray.kill(sender)
    return size / write / GiB, size / read / GiB


def fabric(size, chunk, window, tmp, repeat):
    path = tmp / "bench.yaml"
    path.write_text(textwrap.dedent(TOPOLOGY).replace("SIZE", str(size)))
    san = San(load_topology(path), tmp / f"state-{chunk}", chunk_size=chunk, window=window).start()

    def clock(method, *args):
        start = time.perf_counter()
        san.call("h1", method, "/v", 0, size, *args)
        return time.perf_counter() - start

    try:
        san.call("h1", "write", "/v", 0, size, 1)  # warm-up
        write = timed(lambda: clock("write", 1), repeat)
        read = timed(lambda: clock("read_discard"), repeat)
        assert san.call("h1", "read_compare", "/v", 0, size, 1)["first_mismatch"] is None
    finally:
        san.shutdown()
    return size / write / GiB, size / read / GiB


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="2GiB")
    ap.add_argument("--chunks", default="4MiB")
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3, help="timed passes per mover (median kept)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    size = parse_size(args.size)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(object_store_memory=4 << 30, include_dashboard=False, logging_level=logging.ERROR,
             log_to_driver=False)
    rows = []
    with tempfile.TemporaryDirectory(prefix="san-bench-") as tmpdir:
        tmp = Path(tmpdir)
        for chunk in [parse_size(c) for c in args.chunks.split(",")]:
            row = {"chunk": chunk, "size": size}
            row["raw_write"], row["raw_read"] = raw(size, chunk, args.window, False, tmp, args.repeat)
            row["raw_file_write"], row["raw_file_read"] = raw(size, chunk, args.window, True, tmp,
                                                              args.repeat)
            row["fabric_write"], row["fabric_read"] = fabric(size, chunk, args.window, tmp,
                                                             args.repeat)
            rows.append(row)
            print(f"chunk {format_size(chunk)}, {format_size(size)} moved per pass (GiB/s):")
            for kind in ("write", "read"):
                f, r, rf = row[f"fabric_{kind}"], row[f"raw_{kind}"], row[f"raw_file_{kind}"]
                print(f"  {kind:5}  fabric {f:5.2f}   raw Ray {r:5.2f} ({f / r:4.0%})   "
                      f"raw Ray + file {rf:5.2f} ({f / rf:4.0%})")
    ray.shutdown()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
