"""Array data services: snapshot create, first write after a snapshot, mirror, resync, copies.

A thin wrapper over `san bench` (san/bench/): the same as
``san bench --only snapshots,mirror,resync,fanout [ARGS]``, which says what each figure measures and checks.
Snapshot create time on 1 GiB to 4 TiB thin volumes beside a full copy of their data, the first
write after a snapshot beside a plain overwrite, a mirror beside a raw file copy, resync by
changed fraction beside a raw copy of the same granules, inter-array copies beside raw Ray.

Run:  python benchmarks/array_services.py [--quick] [--size SIZE] [--repeat N] [--json OUT] [--plot DIR]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from san.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--only", "snapshots,mirror,resync,fanout", *sys.argv[1:]]))
