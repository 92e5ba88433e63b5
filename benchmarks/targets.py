"""The performance targets of issue 12: every row of its table beside its same-run baseline.

A thin wrapper over `san bench` (san/bench/): the same as ``san bench --only targets [ARGS]``,
which says what each figure measures and checks (san/bench/targets.py).  Host writes into new
space and overwrites, host reads, mirror / restore / volume copy, a copy over FC, the first
write after a snapshot, resync after 1% change, a tape backup, SAN start-up and a catalog
rebuild from 10,000 backup volumes, each the median of at least 5 alternating runs beside
its baseline, with the issue's target of its ratio.

Run:  python benchmarks/targets.py [--quick] [--size SIZE] [--repeat N] [--json OUT] [--plot DIR]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from san.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--only", "targets", *sys.argv[1:]]))
