"""Serving volumes over NBD: nbdcopy through `san serve` beside the host's own I/O.

A thin wrapper over `san bench` (san/bench/): the same as
``san bench --only serve [ARGS]``, which says what each figure measures and checks.
nbdcopy copies an image into a served mount and reads it back; the baseline is the host
writing and reading as many bytes through the same fabric.  Needs Debian's libnbd-bin.

Run:  python benchmarks/serve.py [--quick] [--size SIZE] [--repeat N] [--json OUT]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from san.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--only", "serve", *sys.argv[1:]]))
