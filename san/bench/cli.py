"""`san bench`: every benchmark behind one command, each figure beside its same-run baseline.

    san bench [--quick] [--only NAMES] [--size SIZE] [--repeat N] [--json OUT] [--plot DIR]

Exit codes: 0 every benchmark ran and its data checks passed (however slow it was), 1 a
benchmark raised or a data check failed (one ``DATA_CHECK_FAILED: NAME: ...`` or
``BENCH_FAILED: NAME: ...`` line each, on stderr; the others still run and are reported, and
so are the figures a failed benchmark measured before it failed, if its exception carries
them as ``measured = (figures, curves)``), 2 bad arguments (one ``INVALID_INPUT: ...`` line,
before anything runs).

Ray is started once (`san.fabric.start_ray`; an initialized Ray is used as it is) and only
when a selected benchmark needs it; matplotlib is loaded only for `--plot`.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ..errors import SanError
from ..units import GiB, MiB, format_size, parse_size, plural
from .core import DataCheckFailed, Settings, plain

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2

# name: (module:function, needs Ray, what it measures)
BENCHMARKS = {
    "fabric": ("fabric:bench_fabric", True, "host write/read through the fabric by chunk size"),
    "hosts": ("fabric:bench_hosts", True, "N hosts writing at once (1-8)"),
    "fanout": ("fabric:bench_fanout", True, "one array copying to N arrays at once"),
    "snapshots": ("array:bench_snapshots", False, "snapshot create by volume size; first write after"),
    "mirror": ("array:bench_mirror", False, "a full mirror inside an array"),
    "resync": ("array:bench_resync", False, "resync by changed fraction; restores"),
    "tape": ("tape:bench_tape", True, "tape backup throughput; catalog rebuild from N media"),
    "checksums": ("checksums:bench_checksums", False, "granule checksums; the volume store"),
    "scenarios": ("scenarios:bench_scenarios", True, "modeled against wall time per shipped scenario"),
    "serve": ("serve:bench_serve", True, "nbdcopy through san serve (NBD) beside host I/O of the same bytes"),
    "targets": ("targets:bench_targets", True, "issue 12's figures, each beside its baseline and target"),
}
QUICK_SIZE = 16 * MiB
FULL_SIZE = GiB


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--quick", action="store_true",
                   help=f"small sizes and short lists, for CI (about a minute; --size {format_size(QUICK_SIZE)})")
    p.add_argument("--only", metavar="NAMES",
                   help="comma-separated benchmarks to run (default: all): " + ", ".join(BENCHMARKS))
    p.add_argument("--size", metavar="SIZE",
                   help=f"bytes per pass / volume size (default {format_size(FULL_SIZE)}, "
                        f"{format_size(QUICK_SIZE)} with --quick)")
    p.add_argument("--repeat", metavar="N", default="3",
                   help="alternating timed runs per figure, the median kept (default 3)")
    p.add_argument("--json", metavar="OUT", help="write every figure with its baseline here")
    p.add_argument("--plot", metavar="DIR", help="write PNG plots into this folder")
    return p


def parser() -> argparse.ArgumentParser:
    from ..cli import ArgParser
    return add_arguments(ArgParser(prog="san bench", description=__doc__.splitlines()[0]))


# -- refusing bad arguments ------------------------------------------------------------------
def _invalid(message: str) -> SanError:
    return SanError("INVALID_INPUT", message)


def selected(text: str | None) -> list[str]:
    if text is None:
        return list(BENCHMARKS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if not names or unknown:
        raise _invalid(f"--only {text!r}: unknown benchmark {unknown[0] if unknown else '(none given)'!r} "
                       f"(expected some of: {', '.join(BENCHMARKS)})")
    return [n for n in BENCHMARKS if n in names]


def size_of(text: str | None, quick: bool) -> int:
    if text is None:
        return QUICK_SIZE if quick else FULL_SIZE
    try:
        size = parse_size(text)
    except ValueError as exc:
        raise _invalid(f"--size: {exc} (got {text!r})") from None
    if size < 4 * MiB or size % MiB or size > 256 * GiB:
        raise _invalid(f"--size must be a whole number of MiB from 4MiB to 256GiB (got {text!r})")
    return size


def repeat_of(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= 99:
        raise _invalid(f"--repeat must be a whole number from 1 to 99 (got {text!r})")
    return n


def check_plot_dir(text: str | None) -> None:
    if text is None:
        return
    path = Path(text)
    try:
        if path.exists() and not path.is_dir():
            raise _invalid(f"--plot {text} is a file, not a folder")
        if not path.exists():
            parent = next((p for p in path.parents if p.exists()), None)
            if parent is not None and not parent.is_dir():
                raise _invalid(f"--plot {text} cannot be created: {parent} is a file, not a folder")
            if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
                raise _invalid(f"--plot {text} cannot be created: {parent} is not writable")
        elif not os.access(path, os.W_OK | os.X_OK):
            raise _invalid(f"--plot {text} is not writable")
    except OSError as exc:
        raise _invalid(f"--plot {text} cannot be used: {exc.strerror or exc}") from None
    if importlib.util.find_spec("matplotlib") is None:
        raise _invalid("--plot needs matplotlib, which is not installed (pip install matplotlib)")


def settings_of(args) -> tuple[Settings, list[str]]:
    """The checked settings and benchmark names; SanError INVALID_INPUT on a bad argument."""
    from ..cli import _check_json_out
    names = selected(args.only)
    settings = Settings(quick=args.quick, size=size_of(args.size, args.quick),
                        repeat=repeat_of(args.repeat))
    _check_json_out(args.json)
    check_plot_dir(args.plot)
    return settings, names


# -- running -----------------------------------------------------------------------------------
def _function(name: str):
    module, function = BENCHMARKS[name][0].split(":")
    return getattr(importlib.import_module(f"san.bench.{module}"), function)


def run_benchmarks(settings: Settings, names: list[str], progress=None) -> dict:
    """Run the named benchmarks; {figures, curves, failures, seconds} (figures and curves as
    objects).  Ray starts here if one needs it (and stops here if it was started here)."""
    figures, curves, failures, seconds = [], [], [], {}
    started_here = False
    if any(BENCHMARKS[n][1] for n in names):
        from ..fabric import start_ray
        started_here = start_ray()
    root = Path(tempfile.mkdtemp(prefix="san-bench-"))
    shared = dataclasses.replace(settings, tmp=root / "shared")
    shared.tmp.mkdir()
    from .fabric import Resources
    resources = Resources(shared)
    try:
        for name in names:
            if progress:
                progress(name)
            mine = dataclasses.replace(settings, tmp=root / name)
            mine.tmp.mkdir()
            start = time.perf_counter()
            try:
                got_figures, got_curves = _function(name)(mine, resources)
                figures += got_figures
                curves += got_curves
            except Exception as exc:       # noqa: BLE001 -- reported, and the others still run
                # a benchmark may fail after some of its figures were measured: they count
                # (`measured`: not `SanError.partial`, what a failed flow moved)
                measured = getattr(exc, "measured", None)
                if measured is not None:
                    figures += measured[0]
                    curves += measured[1]
                if isinstance(exc, DataCheckFailed):
                    code, message = "DATA_CHECK_FAILED", str(exc)
                elif isinstance(exc, SanError) or measured is not None:
                    code, message = "BENCH_FAILED", str(exc)
                else:
                    if os.environ.get("SAN_DEBUG"):
                        raise
                    code, message = "BENCH_FAILED", f"{type(exc).__name__}: {exc}"
                failures.append({"benchmark": name, "code": code, "message": message})
            finally:
                seconds[name] = round(time.perf_counter() - start, 2)
                shutil.rmtree(mine.tmp, ignore_errors=True)
    finally:
        try:
            resources.close()
        finally:
            shutil.rmtree(root, ignore_errors=True)
            if started_here:
                import ray
                ray.shutdown()
    return {"figures": figures, "curves": curves, "failures": failures, "seconds": seconds}


def report(settings: Settings, names: list[str], result: dict, plots: list) -> dict:
    from .. import __version__
    return plain({
        "tool": "san bench", "version": __version__,
        "ok": not result["failures"],
        "settings": {"quick": settings.quick, "size": settings.size, "repeat": settings.repeat,
                     "benchmarks": names},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "seconds": result["seconds"],
        "figures": [f.to_dict() for f in result["figures"]],
        "curves": [c.to_dict() for c in result["curves"]],
        "failures": result["failures"],
        "plots": [str(p) for p in plots],
    })


def run(args, out, err) -> int:
    """`san bench` as `san.cli` calls it: `out` a rich Console, `err` prints lines."""
    try:
        settings, names = settings_of(args)
    except SanError as exc:
        err.print(str(exc))
        return EXIT_INVALID
    from .table import QUICK_VERDICTS, header, render
    out.print(header(settings, names), highlight=False)
    if "targets" in names:
        from .targets import runs_of, start_runs
        out.print(f"targets: median of {runs_of(settings)} alternating runs of each side "
                  f"({start_runs(settings)} for SAN start-up)", highlight=False)
    show = getattr(out, "is_terminal", False)
    started = time.perf_counter()
    if show:
        with out.status("", spinner="dots") as status:
            result = run_benchmarks(settings, names,
                                    lambda n: status.update(f"running {n}: {BENCHMARKS[n][2]}"))
    else:
        result = run_benchmarks(settings, names)
    plots = []
    if args.plot and result["curves"]:
        try:
            from .plots import plot_all
            plots = plot_all(result["curves"], args.plot)
        except Exception as exc:          # noqa: BLE001
            result["failures"].append({"benchmark": "plots", "code": "BENCH_FAILED",
                                       "message": f"{type(exc).__name__}: {exc}"})
    render(out, result["figures"], settings.quick)
    for f in result["failures"]:
        err.print(f"{f['code']}: {f['benchmark']}: {f['message']}")
    n_fail = len(result["failures"])
    judged = [f.params["meets_target"] for f in result["figures"]
              if f.params.get("meets_target") is not None]
    seconds = time.perf_counter() - started
    out.print(f"{'ok' if not n_fail else 'NOT OK'}: {plural(len(result['figures']), 'figure')} from "
              f"{plural(len(names), 'benchmark')}, {n_fail} failed; "
              f"{seconds:.{0 if seconds >= 10 else 1}f} s"
              + (f"; targets met: {sum(judged)} of {len(judged)}"
                 + (f" ({QUICK_VERDICTS})" if settings.quick else "") if judged else "")
              + (f"; {plural(len(plots), 'plot')} in {args.plot}" if plots else
                 f"; no plots: {', '.join(names)} {'draws' if len(names) == 1 else 'draw'} none"
                 if args.plot and not n_fail else ""),
              highlight=False)
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(report(settings, names, result, plots), indent=1) + "\n")
        except OSError as exc:
            err.print(f"BENCH_FAILED: json: --json {args.json} could not be written: {exc.strerror or exc}")
            return EXIT_FAILED
    return EXIT_FAILED if n_fail else EXIT_OK


def main(argv=None) -> int:
    """`python -m san.bench` and the wrappers in benchmarks/: `san bench` on its own."""
    from ..cli import _console, _Err
    try:
        args = parser().parse_args(argv)
    except SanError as exc:         # a bad command line: one line, exit 2
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    try:
        return run(args, _console(), _Err())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_FAILED
