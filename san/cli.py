"""The command line: `san validate`, `san run`, `san inspect` (CONTRACT.md, "Commands").

Exit codes: 0 all as expected, 1 a step not as expected (or the SAN failed to run), 2 invalid
input.  No Python traceback ever reaches the user: problems are printed as located lines,
failures as ``CODE: message``; set SAN_DEBUG=1 to see the traceback of an internal error.
"""
from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from .errors import SanError, ValidationFailed

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="san", description="Simulate a storage area network on Ray.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    v = sub.add_parser("validate", help="check topology / scenario files without starting Ray")
    v.add_argument("files", nargs="+", metavar="FILE")
    r = sub.add_parser("run", help="build the SAN as Ray actors and run a scenario")
    r.add_argument("scenario", metavar="SCENARIO")
    r.add_argument("--json", metavar="OUT", help="write the JSON report here")
    r.add_argument("--state-dir", metavar="DIR", help="keep the SAN's data here (reused by later runs)")
    r.add_argument("--keep-state", action="store_true", help="keep the temporary state directory")
    r.add_argument("--address", metavar="ADDR", help="run on this Ray cluster instead of a local one")
    r.add_argument("--chunk-size", metavar="SIZE", default="4MiB", help="payload per command (default 4MiB)")
    r.add_argument("--quiet", action="store_true", help="print nothing but problems")
    i = sub.add_parser("inspect", help="show a topology as tables")
    i.add_argument("file", metavar="FILE")
    return p


class _Err:
    """Problems and failures go to stderr as exact lines (never wrapped: they are parsed)."""

    @staticmethod
    def print(text: str, **_ignored) -> None:
        print(text, file=sys.stderr)


def _console() -> Console:
    # piped output gets wide tables rather than rich's 80-column default
    return Console() if sys.stdout.isatty() else Console(width=160)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    out, err = _console(), _Err()
    try:
        return {"validate": cmd_validate, "run": cmd_run, "inspect": cmd_inspect}[args.command](args, out, err)
    except ValidationFailed as exc:
        for problem in exc.problems:
            err.print(str(problem), markup=False, highlight=False)
        return EXIT_INVALID
    except SanError as exc:
        err.print(str(exc), markup=False, highlight=False)
        return EXIT_FAILED
    except KeyboardInterrupt:
        err.print("interrupted")
        return EXIT_FAILED
    except Exception as exc:  # a bug: say so in one line, never a traceback
        if os.environ.get("SAN_DEBUG"):
            raise
        err.print(f"internal error: {type(exc).__name__}: {exc} (set SAN_DEBUG=1 for the traceback)",
                  markup=False, highlight=False)
        return EXIT_FAILED


def cmd_validate(args, out, err) -> int:
    from .topology import validate_files
    problems = validate_files(args.files)
    for problem in problems:
        err.print(str(problem), markup=False, highlight=False)
    if not problems:
        out.print(f"{len(args.files)} file(s) valid", highlight=False)
    return EXIT_INVALID if problems else EXIT_OK


def cmd_inspect(args, out, err) -> int:
    from .topology import load_scenario, load_topology, validate_files
    from .topology.inspect import render_inspect
    problems = validate_files([args.file])
    if problems:
        raise ValidationFailed(problems)
    try:
        topology = load_topology(args.file)
    except ValidationFailed:
        topology = load_scenario(args.file).topology
    render_inspect(topology, out)
    return EXIT_OK


def _chunk_size(text: str) -> int:
    from .units import parse_size
    try:
        size = parse_size(text)
    except ValueError as exc:
        raise SanError("INVALID_INPUT", f"--chunk-size: {exc} (got {text!r})") from None
    if size <= 0 or size % 512 or size > (256 << 20):
        raise SanError("INVALID_INPUT", f"--chunk-size must be a multiple of 512 bytes between "
                                        f"512 and 256MiB (got {text!r})")
    return size


def _open_state_dir(args, topology_name: str):
    """(path, temporary?, lock fd): a private state directory that one run holds at a time."""
    if args.state_dir:
        path = Path(args.state_dir)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = False
    else:
        path = Path(tempfile.mkdtemp(prefix="san-state-"))
        temporary = not args.keep_state
    lock = os.open(path / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        raise SanError("INVALID_INPUT", f"state dir {path} is in use by another san run") from None
    marker = path / "topology"
    if marker.exists() and marker.read_text().strip() != topology_name:
        os.close(lock)
        raise SanError("INVALID_INPUT", f"state dir {path} holds the SAN of topology "
                                        f"{marker.read_text().strip()!r}, not {topology_name!r}")
    marker.write_text(topology_name + "\n")
    return path, temporary, lock


def cmd_run(args, out, err) -> int:
    from .topology import load_scenario
    scenario = load_scenario(args.scenario)          # exit 2 before Ray starts
    try:                                              # so is every other invalid input
        chunk = _chunk_size(args.chunk_size)
        state, temporary, lock = _open_state_dir(args, scenario.topology.name)
    except SanError as exc:
        err.print(str(exc))
        return EXIT_INVALID
    quiet = args.quiet
    if quiet:
        out = Console(quiet=True)
    try:
        return _run(scenario, args, out, state, chunk, quiet)
    finally:
        os.close(lock)
        if temporary:
            shutil.rmtree(state, ignore_errors=True)
        elif not args.state_dir and not quiet:
            out.print(f"state kept in {state}", highlight=False)


def _run(scenario, args, out, state: Path, chunk: int, quiet: bool) -> int:
    import ray
    from rich.progress import Progress
    from . import report as report_mod
    from .fabric import San, start_ray
    from .runner import Runner

    started_here = start_ray(args.address)
    san = San(scenario.topology, state, chunk_size=chunk)
    try:
        with out.status(f"building {scenario.topology.name}", spinner="dots") if out.is_terminal and not quiet else _null():
            san.start()
        show = out.is_terminal and not quiet
        with Progress(console=out, transient=True, disable=not show) as progress:
            task = progress.add_task(scenario.name, total=len(scenario.steps))
            runner = Runner(san, state, on_step=lambda r: progress.advance(task))
            reports = runner.run(scenario.steps)
        catalog = runner.catalogs()
        rep = report_mod.build(scenario, reports, catalog)
        out.print(report_mod.table(scenario, reports))
        tot = rep["totals"]
        out.print(f"{'ok' if rep['ok'] else 'NOT OK'}: {sum(r.ok for r in reports)}/{len(reports)} "
                  f"steps as expected; modeled {tot['modeled_s']:.4f} s, wall {tot['wall_s']:.2f} s, "
                  f"{tot['bytes']} bytes moved", highlight=False)
        if args.json:
            report_mod.write_json(rep, Path(args.json))
        return EXIT_OK if rep["ok"] else EXIT_FAILED
    finally:
        san.shutdown()
        if started_here:
            ray.shutdown()


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
