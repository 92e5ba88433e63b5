"""Array data services: snapshot create, first write after a snapshot, mirror, resync, copy.

Each figure beside a baseline measured in the same run:
- snapshot create time on thin volumes of 1 GiB, 64 GiB and 1 TiB (each holding 64 MiB of
  data): should stay flat (O(1) in volume size);
- the first write after a snapshot (it saves the old granules) as a ratio to a plain write;
- mirror copy throughput inside an array beside a raw baseline (pread + pwrite of the same
  bytes between two files, in the same granule-sized pieces);
- incremental resync time after changing 1%, 10% and 100% of the granules (should scale
  with the change);
- inter-array copy through the fabric (Ray actors) beside host write throughput.

Run:  python benchmarks/array_services.py [--size 1GiB] [--json OUT]
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from san.elements.disk_array import DiskArray  # noqa: E402
from san.pattern import pattern  # noqa: E402
from san.topology import load_topology  # noqa: E402
from san.units import GiB, MiB, format_size, parse_size  # noqa: E402

ARRAY = """
name: bench
fabric:
  switches: [{name: sw1, speed: 32GFC}]
  zones:
    - {name: z, members: [h1/hba0, a1/fc0]}
    - {name: r, members: [a1/fc1, a2/fc0]}
arrays:
  - name: a1
    device_id: BENCH-1
    managers: [srv]
    ports:
      - {name: fc0, number: 0, wwpn: "50:00:00:00:00:00:00:01", switch: sw1}
      - {name: fc1, number: 1, wwpn: "50:00:00:00:00:00:00:02", switch: sw1}
    volumes:
      - {number: 0, size: SIZE, port: fc0, lun: 0, hosts: [h1], copy_destinations: [1]}
      - {number: 1, size: SIZE}
      - {number: 2, size: 1GiB, port: fc0, lun: 2, hosts: [h1]}
      - {number: 3, size: 64GiB, port: fc0, lun: 3, hosts: [h1]}
      - {number: 4, size: 1TiB, port: fc0, lun: 4, hosts: [h1]}
  - name: a2
    device_id: BENCH-2
    managers: [a1, srv]
    ports: [{name: fc0, number: 0, wwpn: "50:00:00:00:00:00:01:01", switch: sw1}]
    volumes: [{number: 0, size: SIZE, port: fc0, lun: 0, hosts: [a1]}]
hosts:
  - name: h1
    hbas: [{name: hba0, wwpn: "21:00:00:00:00:00:00:01", switch: sw1}]
    mounts: [{mount_point: /v, port: a1/fc0, lun: 0}]
backup_servers: [{name: srv}]
"""


def topology(tmp: Path, size: int):
    path = tmp / "bench.yaml"
    path.write_text(textwrap.dedent(ARRAY).replace("SIZE", str(size)))
    return load_topology(path)


def fill(arr, number, size, seed=1, chunk=4 * MiB):
    for off in range(0, size, chunk):
        arr._store_write(number, off, pattern(seed, off, min(chunk, size - off)))


def run_job(arr, status):
    job = arr.jobs[status["job"]]
    while arr.step(job):
        pass
    arr.finish(job)
    return job


def snapshot_create(arr) -> dict:
    out = {}
    for number, label in ((2, "1GiB"), (3, "64GiB"), (4, "1TiB")):
        fill(arr, number, 64 * MiB)
        start = time.perf_counter()
        for _ in range(100):
            arr.snapshot(number)
        out[label] = (time.perf_counter() - start) / 100
    return out


def first_write(arr, size) -> dict:
    n = min(size, 256 * MiB)
    data = [pattern(7, off, 4 * MiB) for off in range(0, n, 4 * MiB)]
    fill(arr, 2, n)  # make the plain write an overwrite too
    start = time.perf_counter()
    for i, chunk in enumerate(data):
        arr._store_write(2, i * 4 * MiB, chunk)
    plain = time.perf_counter() - start
    arr.snapshot(2)
    start = time.perf_counter()
    for i, chunk in enumerate(data):
        arr._store_write(2, i * 4 * MiB, chunk)
    after = time.perf_counter() - start
    start = time.perf_counter()
    for i, chunk in enumerate(data):
        arr._store_write(2, i * 4 * MiB, chunk)
    second = time.perf_counter() - start
    return {"plain_s": plain, "first_after_snapshot_s": after, "ratio": after / plain,
            "second_after_snapshot_ratio": second / plain}


def mirror(arr, size, tmp) -> dict:
    fill(arr, 0, size)
    start = time.perf_counter()
    job = run_job(arr, arr.mgmt_mirror("srv", "fc0", 0, 1))
    seconds = time.perf_counter() - start
    assert job.copied == size
    # raw baseline: the same bytes, file to file, granule by granule
    src = os.open(arr.directory / "vol-0.data", os.O_RDONLY)
    dst = os.open(tmp / "raw-copy", os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(dst, size)
    buf = np.empty(arr.granule, np.uint8)
    start = time.perf_counter()
    for off in range(0, size, arr.granule):
        os.preadv(src, [buf], off)
        os.pwrite(dst, buf, off)
    raw = time.perf_counter() - start
    os.close(src)
    os.close(dst)
    return {"mirror_GiBps": size / seconds / GiB, "raw_copy_GiBps": size / raw / GiB}


def resync(arr, size) -> dict:
    out = {}
    granules = size // arr.granule
    rng = np.random.default_rng(1)
    for pct in (1, 10, 100):
        chosen = rng.choice(granules, max(1, granules * pct // 100), replace=False)
        for g in chosen:
            arr._store_write(0, int(g) * arr.granule, pattern(pct + 10, int(g) * arr.granule, arr.granule))
        start = time.perf_counter()
        job = run_job(arr, arr.mgmt_mirror("srv", "fc0", 0, 1))
        out[f"{pct}%"] = {"seconds": time.perf_counter() - start, "copied": job.copied}
    return out


def inter_array(size, tmp) -> dict:
    import ray
    from san.remote import manage
    from san.fabric import San
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(object_store_memory=4 << 30, include_dashboard=False, logging_level=logging.ERROR,
             log_to_driver=False)
    san = San(topology(tmp, size), tmp / "ray-state").start()
    try:
        san.call("h1", "write", "/v", 0, size, 1)  # warm-up
        start = time.perf_counter()
        san.call("h1", "write", "/v", 0, size, 2)
        host = size / (time.perf_counter() - start) / GiB
        start = time.perf_counter()
        status, _ = manage("srv", san.namespace, "a1", "copy_remote", 0, "a2", 0, "fc0", 0, True)
        manage("srv", san.namespace, "a1", "wait", status["job"])
        copy = size / (time.perf_counter() - start) / GiB
        assert san.call("a2", "digest_volume", 0) == san.call("a1", "digest_volume", 0)
    finally:
        san.shutdown()
        ray.shutdown()
    return {"host_write_GiBps": host, "inter_array_copy_GiBps": copy}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    size = parse_size(args.size)
    results = {}
    with tempfile.TemporaryDirectory(prefix="san-bench-") as tmpdir:
        tmp = Path(tmpdir)
        arr = DiskArray(topology(tmp, size).arrays[0], tmp / "state")
        arr.autostart = False
        results["snapshot_create_s"] = snapshot_create(arr)
        results["first_write"] = first_write(arr, size)
        results["mirror"] = mirror(arr, size, tmp)
        results["resync"] = resync(arr, size)
        arr.close()
        results["inter_array"] = inter_array(size, tmp)
    print(f"volume size {format_size(size)}")
    print("snapshot create (mean of 100, 64 MiB written): " + ", ".join(
        f"{k} {v * 1e6:.0f} µs" for k, v in results["snapshot_create_s"].items()))
    fw = results["first_write"]
    print(f"first write after a snapshot: {fw['ratio']:.2f}x a plain write "
          f"(second write after it: {fw['second_after_snapshot_ratio']:.2f}x)")
    m = results["mirror"]
    print(f"mirror copy {m['mirror_GiBps']:.2f} GiB/s beside raw file copy {m['raw_copy_GiBps']:.2f} GiB/s "
          f"({m['mirror_GiBps'] / m['raw_copy_GiBps']:.0%})")
    print("incremental resync: " + ", ".join(
        f"{k} changed {v['seconds'] * 1e3:.0f} ms ({format_size(v['copied'])})" for k, v in results["resync"].items()))
    ia = results["inter_array"]
    print(f"inter-array copy {ia['inter_array_copy_GiBps']:.2f} GiB/s beside host write "
          f"{ia['host_write_GiBps']:.2f} GiB/s ({ia['inter_array_copy_GiBps'] / ia['host_write_GiBps']:.0%})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
