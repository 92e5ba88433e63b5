"""What exactness costs a restore and a resync, beside copies measured in the same run.

A thin wrapper over `san bench` (san/bench/): the same as
``san bench --only resync [ARGS]``, which says what each figure measures and checks.
Resync after 0.1% to 100% change beside a raw copy of the same granules; a restore after 1%
change and a restore of equal volumes (both read the whole destination) beside a full copy.

Run:  python benchmarks/integrity.py [--quick] [--size SIZE] [--repeat N] [--json OUT] [--plot DIR]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from san.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--only", "resync", *sys.argv[1:]]))
