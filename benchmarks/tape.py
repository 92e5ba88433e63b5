"""Tape: backup throughput (real, and modeled against the drive) and catalog rebuild time.

A thin wrapper over `san bench` (san/bench/): the same as
``san bench --only tape [ARGS]``, which says what each figure measures and checks.
A tape backup beside a plain file append of the same bytes; a catalog rebuild from N media
beside the same labels read in-process.

Run:  python benchmarks/tape.py [--quick] [--size SIZE] [--repeat N] [--json OUT] [--plot DIR]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from san.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--only", "tape", *sys.argv[1:]]))
