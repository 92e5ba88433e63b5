"""Granule checksums and the volume store, beside memory and file baselines (no Ray).

- ``checksums``: the store's XXH3-128 per 256 KiB granule (`san.checksums.checksums`) and the
  old linear pair (`san.storage_v1._pair_checksums`, kept to convert v1 state), in GB/s over
  a buffer bigger than the caches, beside a memory copy of the same buffer (numpy); BLAKE3
  too when the `blake3` package is installed.  Checked: the store's checksums equal
  `xxhash.xxh3_128_intdigest` of each granule.
- ``store``: `VolumeStore.write` (4 MiB pieces over written granules) and `VolumeStore.read`
  of `size`, beside plain pwrite / pread of the same bytes into a file.  Both overwrite.
  Checked: what is read back is what was written.

`store_rates(module, size, repeat)` also times another version's ``storage.py`` (the wrapper
``benchmarks/checksums.py --old PATH`` uses it for a before/after).
"""
from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import numpy as np

from ..units import format_size
from .core import MEMORY, OVERWRITE, READS, Baseline, Figure, alternate, check, clock, median

GRANULE = 256 << 10
PIECE = 4 << 20


def _xxh3(buf, granule):
    import xxhash
    h, mv = xxhash.xxh3_128_intdigest, memoryview(buf)
    return [h(mv[i:i + granule]) for i in range(0, len(buf), granule)]


def _blake3(buf, granule):
    import blake3
    mv = memoryview(buf)
    for i in range(0, len(buf), granule):
        blake3.blake3(mv[i:i + granule]).digest()


def gbps(nbytes: int, seconds) -> list[float]:
    return [nbytes / t / 1e9 for t in seconds]


def bench_checksums(s, res=None) -> tuple[list, list]:
    from ..checksums import checksums
    from ..storage_v1 import _pair_checksums
    n = s.hash_buffer
    buf = np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8)
    dst = np.empty_like(buf)
    ours = checksums(buf, GRANULE)
    want = _xxh3(buf, GRANULE)
    check(ours[:, 0].tolist() == [d & ((1 << 64) - 1) for d in want]
          and ours[:, 1].tolist() == [d >> 64 for d in want],
          "checksums: the store's checksums differ from XXH3-128 of the granules")
    movers = {"xxh3": clock(lambda: checksums(buf, GRANULE)),
              "pair": clock(lambda: _pair_checksums(buf, GRANULE)),
              "copy": clock(lambda: np.copyto(dst, buf))}
    if importlib.util.find_spec("blake3") is not None:     # optional: measured if installed
        movers["blake3"] = clock(lambda: _blake3(buf, GRANULE))
    for fn in movers.values():        # warm-up: imports, first calls, the copy's pages
        fn()
    times = alternate(movers, max(s.repeat, 3), sync=False)
    check(np.array_equal(dst, buf), "checksums: the memory copy differs")
    copy = Baseline("memory copy", n / median(times["copy"]) / 1e9,
                    "np.copyto of the same buffer (memory bandwidth)", gbps(n, times["copy"]))
    names = {"xxh3": ("XXH3-128 (the store's)", "XXH3-128 of each 256 KiB granule, as the store computes it"),
             "pair": ("old linear pair", "the v1 (sum, weighted sum) pair of each granule"),
             "blake3": ("BLAKE3", "BLAKE3 of each 256 KiB granule")}
    figures = [Figure("checksums", f"checksums.{k}", f"checksum: {names[k][0]}", n / median(times[k]) / 1e9,
                      "GB/s", f"{names[k][1]}, over {format_size(n)} of random bytes", copy,
                      space=MEMORY, runs=gbps(n, times[k]), params={"granule": GRANULE, "buffer": n})
               for k in names if k in times]
    return figures + store_figures(s), []


def store_rates(mod, size: int, repeat: int, folder: Path | None = None) -> dict:
    """Write and read throughput (bytes/s, median) of `mod.VolumeStore` and of plain
    pwrite / pread of the same bytes, alternating; every run overwrites written space."""
    data = np.random.default_rng(2).integers(0, 256, PIECE * 4, dtype=np.uint8)
    pieces = [data[i * PIECE:(i + 1) * PIECE] for i in range(4)]
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        store = mod.VolumeStore(Path(tmp), "bench", size)
        fd = os.open(Path(tmp) / "plain.data", os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(fd, size)
        buf = np.empty(PIECE, np.uint8)
        offsets = list(range(0, size, PIECE))
        try:
            def store_write():
                for k, off in enumerate(offsets):
                    store.write(off, pieces[k % 4])

            def plain_write():
                for k, off in enumerate(offsets):
                    os.pwrite(fd, pieces[k % 4], off)

            def store_read():
                for off in offsets:
                    store.read(off, PIECE)

            def plain_read():
                for off in offsets:
                    os.preadv(fd, [buf], off)

            store_write(), plain_write()            # the first pass takes the space
            w = alternate({"store": clock(store_write), "plain": clock(plain_write)}, repeat)
            r = alternate({"store": clock(store_read), "plain": clock(plain_read)}, repeat)
            for k, off in enumerate(offsets):
                check(np.array_equal(store.read(off, PIECE), pieces[k % 4]),
                      f"store: the bytes read back at {off} are not the ones written")
                os.preadv(fd, [buf], off)
                check(np.array_equal(buf, pieces[k % 4]), f"store: the plain file differs at {off}")
        finally:
            store.close()
            os.close(fd)
    return {"write": {k: [size / t for t in v] for k, v in w.items()},
            "read": {k: [size / t for t in v] for k, v in r.items()}}


def store_figures(s) -> list:
    from .. import storage
    rates = store_rates(storage, s.size, s.repeat, s.tmp)
    out = []
    for kind, space in (("write", OVERWRITE), ("read", READS)):
        got = rates[kind]
        out.append(Figure(
            "checksums", f"store.{kind}", f"store {kind}", median(got["store"]) / 1e9, "GB/s",
            f"VolumeStore.{kind} of {format_size(s.size)} in 4 MiB pieces (checksummed, journaled"
            f"{'' if kind == 'write' else ', verified'})",
            Baseline(f"plain p{kind}", median(got["plain"]) / 1e9,
                     f"os.p{kind} of the same bytes {'into' if kind == 'write' else 'from'} a file",
                     [v / 1e9 for v in got["plain"]]),
            space=space, runs=[v / 1e9 for v in got["store"]], params={"size": s.size, "piece": PIECE}))
    return out
