"""`san bench`: the benchmarks behind one command, each figure beside its same-run baseline.

`san.bench.cli` parses and checks the arguments and runs the benchmarks; each benchmark is
a function ``bench_NAME(settings, resources) -> (figures, curves)`` in `fabric` (the fabric
by chunk size, N hosts, fan-out copies; over Ray), `array` (snapshots, mirror, resync and
restores in a plain `DiskArray`), `tape`, `checksums`, `scenarios` (modeled against wall
time of the shipped scenarios) and `targets` (the performance targets, each row beside its
baseline and its target ratio); `raw` has the raw-Ray baseline actors, `core` the figures,
curves and alternating runs, `table` the printed table and `plots` the PNGs (matplotlib,
loaded only there).  The scripts in ``benchmarks/`` are thin wrappers over `main`.
"""
from .cli import BENCHMARKS, main

__all__ = ["BENCHMARKS", "main"]
