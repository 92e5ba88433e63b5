"""What exactness costs a restore and a resync, beside a full copy measured in the same run.

On one plain `DiskArray` (no Ray; the copies run inside the array), a volume of `--size` is
written, then mirrored onto a secondary.  Each figure is the median of `--repeat` runs, each
started after `os.sync()`; every run overwrites granules already written (no new file space):

- full copy:      a mirror onto a secondary whose granules all differ (every byte moves);
- resync 1%:      a mirror after 1% of the primary's granules changed (checksums compared,
                  1% moves; a mirror does not read the destination);
- restore 1%:     a restore of the secondary onto the primary after 1% of it changed: 1% moves,
                  and the other 99% of the primary is read to make sure it has not rotted;
- restore 0%:     the same with nothing changed (the whole destination is checked).

The script runs against any checkout (``PYTHONPATH=OTHER_TREE python benchmarks/integrity.py``)
so a version before the exact restores can be measured on the same machine.

Run:  python benchmarks/integrity.py [--size 1GiB] [--repeat 5] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

if "san" not in sys.modules and not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from san.elements.disk_array import DiskArray  # noqa: E402
from san.topology import load_topology  # noqa: E402
from san.units import format_size, parse_size  # noqa: E402

G = 256 * 1024


def topology(tmp: Path, size: int):
    path = tmp / "t.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: bench
        fabric:
          switches: [{{name: sw1}}]
          zones: [{{name: z, members: [h1/hba0, a1/fc0]}}]
        arrays:
          - name: a1
            device_id: HTC-0100
            managers: [srv]
            ports: [{{name: fc0, number: 0, wwpn: "50:00:00:00:00:00:00:01", switch: sw1}}]
            volumes:
              - {{number: 0, size: {size}, port: fc0, lun: 0, hosts: [h1], copy_destinations: [1]}}
              - {{number: 1, size: {size}}}
        hosts:
          - name: h1
            hbas: [{{name: hba0, wwpn: "21:00:00:00:00:00:00:01", switch: sw1}}]
        backup_servers: [{{name: srv}}]
        """))
    return load_topology(path)


def write(arr, offset: int, length: int, seed: int) -> None:
    block = np.random.default_rng(seed).integers(0, 256, 4 << 20, dtype=np.uint8)
    for off in range(offset, offset + length, 4 << 20):
        n = min(4 << 20, offset + length - off)
        block[:8] = np.frombuffer(np.int64(off + seed).tobytes(), np.uint8)   # every chunk new
        arr.write("h1/hba0", "fc0", 0, off // 512, block[:n])


def change(arr, size: int, fraction: float, seed: int) -> None:
    """Overwrite `fraction` of the primary's granules, spread over the volume."""
    n = int(size // G * fraction)
    if not n:
        return
    step = size // G // n
    block = np.random.default_rng(seed).integers(0, 256, G, dtype=np.uint8)
    for k in range(n):
        block[:8] = np.frombuffer(np.int64(k + seed * 1_000_003).tobytes(), np.uint8)
        arr.write("h1/hba0", "fc0", 0, k * step * G // 512, block)


def timed(arr, start) -> tuple[float, dict]:
    """Seconds from the order (planning and checking included) to the job's end; its status."""
    t0 = time.perf_counter()
    job = arr.jobs[start()["job"]]
    while arr.step(job):
        pass
    arr.finish(job)
    return time.perf_counter() - t0, job.status()


def measure(size: int, repeat: int) -> dict:
    figures: dict[str, list] = {"full copy": [], "resync 1%": [], "restore 1%": [], "restore 0%": []}
    moved: dict[str, dict] = {}
    seeds = iter(range(1, 1 << 30))
    with tempfile.TemporaryDirectory(prefix="san-bench-") as tmp:
        arr = DiskArray(topology(Path(tmp), size).arrays[0], Path(tmp) / "state")
        arr.autostart = False
        write(arr, 0, size, next(seeds))                    # warm-up: both volumes' space exists,
        timed(arr, lambda: arr.mgmt_mirror("srv", "fc0", 0, 1))   # every run overwrites it
        for _ in range(repeat):
            write(arr, 0, size, next(seeds))                # every granule differs from the secondary
            for name, fraction, kind in (("full copy", None, "mirror"), ("resync 1%", 0.01, "mirror"),
                                         ("restore 1%", 0.01, "restore"), ("restore 0%", 0.0, "restore")):
                if fraction is not None:
                    change(arr, size, fraction, next(seeds))
                os.sync()
                order = ((lambda: arr.mgmt_mirror("srv", "fc0", 0, 1)) if kind == "mirror"
                         else (lambda: arr.mgmt_restore("srv", 1, "fc0", 0)))
                seconds, done = timed(arr, order)
                figures[name].append(seconds)
                moved[name] = {"copied": done["copied"], "checked": done.get("checked", 0)}
        arr.close()
    return {name: {"seconds": statistics.median(v), "runs": v, **moved[name]} for name, v in figures.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    size = parse_size(args.size)
    results = measure(size, args.repeat)
    full = results["full copy"]["seconds"]
    print(f"volume {format_size(size)}, median of {args.repeat} runs (overwriting written granules)")
    for name, r in results.items():
        print(f"  {name:<11} {r['seconds'] * 1e3:8.1f} ms  {r['seconds'] / full * 100:6.1f}% of a full copy"
              f"   copied {format_size(r['copied'])}, checked {format_size(r['checked'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
