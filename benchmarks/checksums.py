"""Per-granule checksum candidates for `san.storage`, and the store's write/read throughput.

Why: the store checksums every 256 KiB granule on every write and verifies it on every read,
and copies trust "same stored checksum" as "same bytes", so the checksum must be
collision-resistant (>= 128 bits) *and* cheap next to the ~1 GB/s of the store's write path.
This measures, on this machine, each candidate hashing a buffer granule by granule:

- ``xxh3-128``: `xxhash.xxh3_128_intdigest` per granule (what `san.checksums.checksums` does);
- ``blake3``:   `blake3.blake3(granule).digest()` per granule (256-bit, cryptographic);
- ``pair``:     the old linear (sum, index-weighted sum) pair, `san.storage_v1._pair_checksums`
  (kept only to convert v1 state dirs; not collision-resistant, shown as the baseline);
- ``store``:    `checksums()` as the store calls it (XXH3-128 into an (n, 2) uint64 array).

GB/s = bytes hashed / wall seconds, median of `--runs` runs over a `--buffer` of random
bytes (bigger than the caches, so the data comes from memory as on the write path).

``--store`` also times `VolumeStore.write` of `--store-size` in 4 MiB pieces over granules
already written (after a first pass) and `VolumeStore.read` of it back, in MB/s (median of
`--runs`); ``--old PATH`` runs the same against another storage.py (e.g. the previous
version, ``git show HEAD:san/storage.py > /tmp/old/storage_old.py``) for a before/after.

Run:  python benchmarks/checksums.py [--buffer 64MiB] [--granule 256KiB] [--runs 5]
                                     [--store] [--store-size 1GiB] [--old /tmp/old/storage_old.py]
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from san.checksums import checksums  # noqa: E402
from san.storage_v1 import _pair_checksums  # noqa: E402
from san.units import format_size, parse_size  # noqa: E402


def _xxh3_128(buf: np.ndarray, granule: int) -> None:
    import xxhash
    h = xxhash.xxh3_128_intdigest
    mv = memoryview(buf)
    for i in range(0, len(buf), granule):
        h(mv[i:i + granule])


def _blake3(buf: np.ndarray, granule: int) -> None:
    import blake3
    mv = memoryview(buf)
    for i in range(0, len(buf), granule):
        blake3.blake3(mv[i:i + granule]).digest()


def _pair(buf: np.ndarray, granule: int) -> None:
    _pair_checksums(buf, granule)


def _store(buf: np.ndarray, granule: int) -> None:
    checksums(buf, granule)


CANDIDATES = {"xxh3-128": _xxh3_128, "blake3": _blake3, "pair": _pair, "store": _store}


def median_rate(fn, nbytes: int, runs: int) -> float:
    """Median bytes per second of `runs` calls of `fn()` each handling `nbytes`."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return nbytes / statistics.median(times)


def bench_hashes(buffer: int, granule: int, runs: int) -> dict[str, float]:
    buf = np.random.default_rng(1).integers(0, 256, buffer, dtype=np.uint8)
    out = {}
    for name, fn in CANDIDATES.items():
        fn(buf[: 4 * granule], granule)         # warm up (imports, numpy's first call)
        out[name] = median_rate(lambda: fn(buf, granule), buffer, runs)
    return out


def load_storage(path: str):
    """Import a storage.py from `path` as its own module (for the before/after run)."""
    spec = importlib.util.spec_from_file_location("storage_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def bench_store(mod, size: int, runs: int, piece: int = 4 << 20) -> tuple[float, float]:
    """(write MB/s, read MB/s) of `mod.VolumeStore`: overwrites of written granules, reads."""
    data = np.random.default_rng(2).integers(0, 256, piece * 4, dtype=np.uint8)
    pieces = [data[i * piece:(i + 1) * piece] for i in range(4)]
    with tempfile.TemporaryDirectory() as tmp:
        s = mod.VolumeStore(Path(tmp), "bench", size)

        def write_all():
            for k, off in enumerate(range(0, size, piece)):
                s.write(off, pieces[k % 4])

        def read_all():
            for off in range(0, size, piece):
                s.read(off, piece)

        write_all()                 # first pass: allocate every granule
        w = median_rate(write_all, size, runs)
        r = median_rate(read_all, size, runs)
        s.close()
    return w / 1e6, r / 1e6


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--buffer", default="64MiB")
    p.add_argument("--granule", default="256KiB")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--store", action="store_true", help="also time VolumeStore write/read")
    p.add_argument("--store-size", default="1GiB")
    p.add_argument("--old", help="a previous storage.py to time beside the current one")
    a = p.parse_args(argv)
    buffer, granule = parse_size(a.buffer), parse_size(a.granule)
    if buffer % granule:
        p.error(f"--buffer {a.buffer} is not a whole number of {a.granule} granules")
    rates = bench_hashes(buffer, granule, a.runs)
    print(f"per-granule checksums: {format_size(granule)} granules over {format_size(buffer)}, "
          f"median of {a.runs} runs")
    print(f"{'candidate':<10} {'GB/s':>7}")
    for name, rate in rates.items():
        print(f"{name:<10} {rate / 1e9:>7.2f}")
    if a.store or a.old:
        size = parse_size(a.store_size)
        rows = [("current", storage)]
        if a.old:
            rows.insert(0, ("old", load_storage(a.old)))
        print(f"\nVolumeStore: {format_size(size)} in 4 MiB pieces (overwrite), median of {a.runs}")
        print(f"{'store':<10} {'write MB/s':>11} {'read MB/s':>10}")
        for label, mod in rows:
            w, r = bench_store(mod, size, a.runs)
            print(f"{label:<10} {w:>11.0f} {r:>10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
