"""Granule checksums (XXH3-128, the old linear pair, BLAKE3 if installed) and the volume store.

A thin wrapper over `san bench` (san/bench/): the same as ``san bench --only checksums [ARGS]``:
each checksum in GB/s beside a memory copy of the same buffer, the store's write and read
beside plain pwrite / pread of the same bytes, measured in the same run.

``--old PATH`` also times the `VolumeStore` of another version's storage.py beside this one
(e.g. ``git show HEAD~1:san/storage.py > /tmp/old/storage_old.py``), for a before/after.

Run:  python benchmarks/checksums.py [--quick] [--size SIZE] [--repeat N] [--json OUT]
                                     [--old /tmp/old/storage_old.py]
"""
import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from san.bench import main  # noqa: E402


def before_after(path: str, argv: list) -> None:
    """The store's write / read MB/s of the storage.py at `path` and of this one."""
    from san import storage
    from san.bench.checksums import store_rates
    from san.bench.cli import parser, size_of
    from san.bench.core import median
    args = parser().parse_args(argv)
    size = size_of(args.size, args.quick)
    spec = importlib.util.spec_from_file_location("storage_under_test", path)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    print(f"VolumeStore: {size >> 20} MiB in 4 MiB pieces (overwrite), median of {args.repeat}")
    print(f"{'store':<10} {'write MB/s':>11} {'read MB/s':>10}")
    for label, mod in (("old", old), ("current", storage)):
        rates = store_rates(mod, size, int(args.repeat))
        print(f"{label:<10} {median(rates['write']['store']) / 1e6:>11.0f} "
              f"{median(rates['read']['store']) / 1e6:>10.0f}")


if __name__ == "__main__":
    argv = [a for a in sys.argv[1:] if a != "--store"]   # the store's figures are always measured
    if "--old" in argv:
        i = argv.index("--old")
        path, argv = argv[i + 1], argv[:i] + argv[i + 2:]
        before_after(path, argv)
    sys.exit(main(["--only", "checksums", *argv]))
