"""Throughput through the fabric: by chunk size, by number of hosts, by fan-out destinations.

A thin wrapper over `san bench` (san/bench/): the same as
``san bench --only fabric,hosts,fanout [ARGS]``, which says what each figure measures and checks.
Each beside raw Ray (the same bytes actor to actor) and raw Ray plus a file write/read,
measured in the same run.

Run:  python benchmarks/fabric_throughput.py [--quick] [--size SIZE] [--repeat N] [--json OUT] [--plot DIR]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from san.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--only", "fabric,hosts,fanout", *sys.argv[1:]]))
