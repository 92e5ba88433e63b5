"""The command line: `san validate`, `run`, `inspect` and `schema` (README, "The command line").

Exit codes: 0 all as expected, 1 a step not as expected (or the SAN failed to run), 2 invalid
input.  No Python traceback ever reaches the user: problems are printed as located lines,
failures as ``CODE: message``; set SAN_DEBUG=1 to see the traceback of an internal error.

A bad command line (an unknown option, a missing argument) is one ``INVALID_INPUT: san
COMMAND: ...`` line, exit 2 (`ArgParser`).
`san run` refuses bad input before Ray starts, each with exit 2 and one ``INVALID_INPUT: ...``
line naming the bad value: a topology file given as the scenario, a `--state-dir` that is a
file or cannot be created or written, a `--json` whose folder is missing or not writable, and
an `--address` where no Ray cluster answers within SAN_CONNECT_TIMEOUT seconds (default 30)
or given without `--state-dir`, a SAN_START_TIMEOUT that is not seconds.  Once Ray is up and
before any step, the same way: a `placement` Ray cannot schedule, and on a cluster a state dir
some element's node does not see as the driver's (docs/cluster.md).
`san schema` refuses an unknown kind and an `-o` it cannot write the same way, `san graph` an
`-o` of an unknown extension or that it cannot write.  Only `san run` and `san bench` import
Ray; only `san graph` and `san bench --plot` load matplotlib, and only when they draw.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from . import report as report_mod
from .errors import InternalError, SanError, ValidationFailed
from .flows.state_lock import read_holder, write_holder
from .progress import StepProgress, columns as progress_columns
from .topology import is_scenario_file, load_scenario, load_topology, validate_files
from .topology.inspect import render_inspect
from .topology.json_schema import KINDS as SCHEMA_KINDS
from .topology.json_schema import schema_text
from .topology.loader import SCENARIO_MARKS, top_level_keys
from .topology.problems import Problem
from .units import parse_size

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
DEFAULT_LISTEN = ("127.0.0.1", 10809)


class ArgParser(argparse.ArgumentParser):
    """argparse's parser, refusing a bad command line as any bad input is refused: a
    `SanError` INVALID_INPUT naming the command and the argument, which `main` prints as one
    line with exit 2 (argparse itself would print a usage block and an ``error:`` line, a
    second format for one kind of mistake).  ``--help`` is argparse's own."""

    commands: dict | None = None    # a top-level parser's subcommand parsers, by name

    def error(self, message: str):
        raise SanError("INVALID_INPUT", f"{self.prog}: {message} (see {self.prog} --help)")

    def parse_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:       # named after the command they were given to, not the top-level one
            command = getattr(parsed, "command", None)
            before = args[:args.index(command)] if command in args else args
            target = self if any(e in before for e in extra) else \
                (self.commands or {}).get(command, self)
            target.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed


def _parser() -> argparse.ArgumentParser:
    p = ArgParser(prog="san", description="Simulate a storage area network on Ray.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p.commands = sub.choices
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
    sv = sub.add_parser("serve", help="serve host mounts as NBD exports for standard tools "
                                      "(qemu-img, nbdcopy, nbdinfo) until SIGINT or SIGTERM")
    sv.add_argument("file", metavar="FILE", help="a topology, or a scenario (its steps are not run)")
    sv.add_argument("--state-dir", metavar="DIR", required=True,
                    help="the SAN's data (what an earlier san run left there is served)")
    sv.add_argument("--listen", metavar="ADDR:PORT", default=f"{DEFAULT_LISTEN[0]}:{DEFAULT_LISTEN[1]}",
                    help="where to listen (default %(default)s; port 0: a free one)")
    sv.add_argument("--export", metavar="HOST:MOUNT", action="append",
                    help="serve this mount (repeatable; default every mount of every host)")
    sv.add_argument("--json", metavar="OUT", help="write the session's report here at exit")
    sv.add_argument("--address", metavar="ADDR", help="run on this Ray cluster instead of a local one")
    sv.add_argument("--chunk-size", metavar="SIZE", default="4MiB", help="payload per command (default 4MiB)")
    i = sub.add_parser("inspect", help="show a topology as tables")
    i.add_argument("file", metavar="FILE")
    s = sub.add_parser("schema", help="print the JSON Schema of topology or scenario files")
    s.add_argument("kind", metavar="KIND", help="topology or scenario")
    s.add_argument("-o", "--output", metavar="OUT", help="write it to this file instead")
    g = sub.add_parser("graph", help="draw the SAN of a topology / scenario file (png, svg, dot)")
    g.add_argument("file", metavar="FILE")
    g.add_argument("-o", "--output", metavar="OUT", required=True,
                   help="the picture: .png, .svg (matplotlib) or .dot (Graphviz text)")
    from .bench.cli import add_arguments as bench_arguments     # no Ray, no matplotlib
    bench_arguments(sub.add_parser("bench", help="run the benchmarks, each beside its baseline "
                                                 "measured in the same run"))
    return p


class _Err:
    """Problems and failures go to stderr as exact lines (never wrapped: they are parsed)."""

    @staticmethod
    def print(text: str, **_ignored) -> None:
        print(text, file=sys.stderr)


def _stdout_gone() -> None:
    """Standard output's reader went away (`san run ... | head`): from now on what the
    command prints goes nowhere, and the command goes on to its end and its own exit code.
    A scenario cut short by its reader would leave half a run, a server (`san serve | head
    -1` to learn its URI) would stop serving, and rich's default (exit 1 at once) would say
    it failed."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())        # what is still buffered goes nowhere, quietly
    os.close(devnull)


def _say(text: str) -> None:
    """`text` on standard output at once (a line a script may wait for)."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_gone()


class _Out(Console):
    """Standard output, through rich (`_stdout_gone` when its reader goes away)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        _stdout_gone()


def _console() -> Console:
    # piped output gets wide tables rather than rich's 80-column default
    return _Out() if sys.stdout.isatty() else _Out(width=160)


def main(argv=None) -> int:
    out, err = _console(), _Err()
    try:
        args = _parser().parse_args(argv)
    except SanError as exc:         # a bad command line (ArgParser)
        err.print(str(exc))
        return EXIT_INVALID
    try:
        command = {"validate": cmd_validate, "run": cmd_run, "serve": cmd_serve, "inspect": cmd_inspect,
                   "schema": cmd_schema, "graph": cmd_graph, "bench": cmd_bench}[args.command]
        return command(args, out, err)
    except ValidationFailed as exc:
        for problem in exc.problems:
            err.print(str(problem), markup=False, highlight=False)
        return EXIT_INVALID
    except InternalError as exc:     # a bug met inside an element or a step: one line too
        if os.environ.get("SAN_DEBUG"):
            raise
        err.print(f"{exc.message} (set SAN_DEBUG=1 for the traceback)", markup=False, highlight=False)
        return EXIT_FAILED
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
    problems = validate_files(args.files)
    for problem in problems:
        err.print(str(problem), markup=False, highlight=False)
    if not problems:
        out.print(f"{len(args.files)} file(s) valid", highlight=False)
    return EXIT_INVALID if problems else EXIT_OK


def cmd_inspect(args, out, err) -> int:
    problems = validate_files([args.file])
    if problems:
        raise ValidationFailed(problems)
    render_inspect(_load_topology_of(args.file), out)
    return EXIT_OK


def cmd_schema(args, out, err) -> int:
    """The JSON Schema of topology or scenario files, on stdout or into -o OUT."""
    if args.kind not in SCHEMA_KINDS:
        err.print(f"INVALID_INPUT: unknown schema kind {args.kind!r} "
                  f"(expected one of: {', '.join(SCHEMA_KINDS)})")
        return EXIT_INVALID
    text = schema_text(args.kind)
    if not args.output:
        _say(text)
        return EXIT_OK
    try:
        Path(args.output).write_text(text, encoding="utf-8")
    except OSError as exc:
        err.print(f"INVALID_INPUT: -o {args.output} cannot be written: {exc.strerror or exc}")
        return EXIT_INVALID
    return EXIT_OK


def cmd_bench(args, out, err) -> int:
    """The benchmarks, each figure beside its same-run baseline (san.bench): exit 0, 1 when a
    benchmark raised or its data check failed (never for slowness), 2 for a bad argument."""
    from .bench.cli import run as run_bench   # Ray and matplotlib load there, and late
    return run_bench(args, out, err)


def cmd_graph(args, out, err) -> int:
    """A picture of the SAN of a topology or scenario file into -o OUT (see san.graph)."""
    # loaded here: a picture needs matplotlib, which validate, inspect and run never pay for
    from .graph import FORMATS, graph_bytes, suffix_of
    suffix = suffix_of(args.output)
    if suffix not in FORMATS:
        err.print(f"INVALID_INPUT: -o {args.output}: unknown extension {suffix!r} "
                  f"(expected one of: {', '.join(FORMATS)})")
        return EXIT_INVALID
    # an invalid file raises: main prints its problems
    data = graph_bytes(_load_topology_of(args.file), suffix)
    try:
        Path(args.output).write_bytes(data)
    except OSError as exc:
        err.print(f"INVALID_INPUT: -o {args.output} cannot be written: {exc.strerror or exc}")
        return EXIT_INVALID
    return EXIT_OK


def _chunk_size(text: str) -> int:
    try:
        size = parse_size(text)
    except ValueError as exc:
        raise SanError("INVALID_INPUT", f"--chunk-size: {exc} (got {text!r})") from None
    if size <= 0 or size % 512 or size > (256 << 20):
        raise SanError("INVALID_INPUT", f"--chunk-size must be a multiple of 512 bytes between "
                                        f"512 and 256MiB (got {text!r})")
    return size


def _blocker(path: Path) -> Path | None:
    """The nearest existing ancestor of `path` when it is not a folder (so `path` cannot be one)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _check_state_dir(text: str) -> Path:
    """The --state-dir folder, created (mode 0700) if missing; refused if it cannot be used."""
    if not text:            # (an empty value is no folder, not "a temporary one")
        raise SanError("INVALID_INPUT", "--state-dir '' names no folder; expected a folder")
    path = Path(text)
    try:
        if path.exists() and not path.is_dir():
            raise SanError("INVALID_INPUT", f"--state-dir {text} is a file, not a folder")
        if not path.exists():
            blocker = _blocker(path)
            if blocker is not None:
                raise SanError("INVALID_INPUT", f"--state-dir {text} cannot be created: "
                                                f"{blocker} is a file, not a folder")
            try:
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise SanError("INVALID_INPUT", f"--state-dir {text} cannot be created: "
                                                f"{exc.strerror or exc}") from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise SanError("INVALID_INPUT", f"--state-dir {text} is not writable")
    except OSError as exc:      # e.g. a parent we may not look into
        raise SanError("INVALID_INPUT", f"--state-dir {text} cannot be used: "
                                        f"{exc.strerror or exc}") from None
    return path


def _open_state_dir(args, topology_name: str):
    """(path, temporary?, lock fd): a private state directory that one run holds at a time.
    A temporary one made here goes again if it cannot be used."""
    if args.state_dir is not None:
        path = _check_state_dir(args.state_dir)
        return path, False, _hold_state_dir(path, args, topology_name)
    path = Path(tempfile.mkdtemp(prefix="san-state-"))
    try:
        lock = _hold_state_dir(path, args, topology_name)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return path, not args.keep_state, lock


def _hold_state_dir(path: Path, args, topology_name: str) -> int:
    """The lock of state dir `path`, held, its holder named in it, the dir bound to
    `topology_name`; INVALID_INPUT (or NO_SPACE) if it cannot be."""
    try:
        lock = os.open(path / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
    except OSError as exc:      # e.g. a read-only file system: os.access does not see it
        raise SanError("INVALID_INPUT", f"state dir {path} is not writable "
                                        f"({exc.strerror or exc})") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _lock_holder(lock)
        os.close(lock)
        raise SanError("INVALID_INPUT", f"state dir {path} is in use by {holder}") from None
    except OSError as exc:
        # no locks on this file system (some NFS mounts): run unguarded, as each element's
        # own lock does (san.flows.state_lock); any other failure is the dir's
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            os.close(lock)
            raise SanError("INVALID_INPUT", f"state dir {path}: cannot lock {path / '.lock'} "
                                            f"({exc.strerror or exc})") from None
    try:        # who holds it, for the next one refused
        write_holder(lock, f"san {args.command} (pid {os.getpid()})")
    except OSError as exc:
        os.close(lock)
        raise SanError("NO_SPACE" if exc.errno == errno.ENOSPC else "INVALID_INPUT",
                       f"state dir {path}: cannot write {path / '.lock'} "
                       f"({exc.strerror or exc})") from None
    marker = path / "topology"
    try:
        held = marker.read_bytes().decode("utf-8", "replace").strip() if marker.exists() else None
        if held is not None and held != topology_name:
            raise SanError("INVALID_INPUT", f"state dir {path} holds the SAN of topology "
                                            f"{held[:60]!r}, not {topology_name!r}")
        marker.write_text(topology_name + "\n")
    except OSError as exc:      # e.g. `topology` there is a folder
        os.close(lock)
        raise SanError("INVALID_INPUT", f"state dir {path}: cannot use {marker} "
                                        f"({exc.strerror or exc})") from None
    except SanError:
        os.close(lock)
        raise
    return lock


def _lock_holder(lock: int) -> str:
    """Who holds a state dir's lock, as its holder wrote it in the lock file ("san serve
    (pid 4242)"); "another san run or san serve" if it wrote nothing readable.  A hint, not
    a proof: asked in the instant between a new holder's lock and its write, the file still
    names the last holder."""
    text = read_holder(lock)
    return text if re.fullmatch(r"san (run|serve) \(pid \d+\)", text) else "another san run or san serve"


def _check_json_out(text: str | None) -> None:
    """Refuse a --json OUT that could not be written, before the run rather than after it."""
    if text is None:
        return
    if not text:            # (an empty value is no file, not "no --json")
        raise SanError("INVALID_INPUT", "--json '' names no file; expected a file name")
    path = Path(text)
    folder = path.parent
    try:
        if path.is_dir():
            raise SanError("INVALID_INPUT", f"--json {text} is a folder; expected a file name")
        if not folder.exists():
            blocker = _blocker(path)
            if blocker is not None:
                raise SanError("INVALID_INPUT", f"--json {text}: {blocker} is a file, not a folder")
            raise SanError("INVALID_INPUT", f"--json {text}: folder {folder} does not exist")
        if not folder.is_dir():
            raise SanError("INVALID_INPUT", f"--json {text}: {folder} is a file, not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise SanError("INVALID_INPUT", f"--json {text}: folder {folder} is not writable")
        if path.exists() and not os.access(path, os.W_OK):
            raise SanError("INVALID_INPUT", f"--json {text} is not writable")
    except OSError as exc:      # e.g. a parent we may not look into
        raise SanError("INVALID_INPUT", f"--json {text} cannot be written: "
                                        f"{exc.strerror or exc}") from None


# keys only a topology has at its top level; a scenario has `topology:` and `steps:` instead
_TOPOLOGY_KEYS = frozenset({"fabric", "arrays", "hosts", "backup_servers", "tape_libraries", "lan"})


def _looks_like_topology(path) -> bool:
    """A mapping with a topology's top-level keys and without `steps` or `topology`: a
    topology file given where a scenario belongs."""
    keys = top_level_keys(path)
    return keys is not None and not keys & SCENARIO_MARKS and bool(keys & _TOPOLOGY_KEYS)


def _load_run_scenario(path):
    """The scenario of `path`; a topology file given instead is said to be one in one line,
    followed, if it has mistakes, by its own located problems (a scenario's would be "steps:
    missing" and an unknown key per topology key, hiding them)."""
    try:
        return load_scenario(path)
    except ValidationFailed:
        if not _looks_like_topology(path):
            raise
        said = (f"{path} is a topology file; san run needs a scenario (a file with topology: "
                f"and steps:)")
        try:
            load_topology(path)
        except ValidationFailed as topology:
            raise ValidationFailed([Problem(str(path), 1, 1, "", said + "; as a topology it "
                                            "has these problems:")] + topology.problems) from None
        raise SanError("INVALID_INPUT", said) from None


CONNECT_TIMEOUT_S = 30.0

# ray.init on an address that accepts TCP but never answers as Ray retries for minutes, one
# warning line per attempt, and cannot be interrupted from another thread; so the attempt
# runs in a child process that is killed at the deadline, its output kept off the terminal.
_PROBE = ("import logging, sys, ray\n"
          "ray.init(address=sys.argv[1], logging_level=logging.ERROR, log_to_driver=False)\n"
          "ray.shutdown()\n")


def _seconds_from_env(name: str, default: float) -> float:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise SanError("INVALID_INPUT", f"{name} must be a number of seconds above 0 "
                                        f"(got {text!r})")
    return value


def _connect_timeout() -> float:
    return _seconds_from_env("SAN_CONNECT_TIMEOUT", CONNECT_TIMEOUT_S)


START_TIMEOUT_S = 60.0      # san.fabric.START_TIMEOUT_S, without importing Ray


def _start_timeout() -> float:
    """How long each element may take to be placed and answer (SAN_START_TIMEOUT seconds)."""
    return _seconds_from_env("SAN_START_TIMEOUT", START_TIMEOUT_S)


def _check_address_state_dir(args) -> None:
    """On a cluster the SAN's data must be where every node sees it: --state-dir is required
    (that every node sees it is checked once the elements start, see san.fabric)."""
    if args.address and not args.state_dir:
        raise SanError("INVALID_INPUT", f"--address {args.address} needs --state-dir DIR, a folder "
                                        f"on a file system every node of the cluster mounts at "
                                        f"the same path")


def _digits(text: str) -> bool:
    """ASCII digits only ("²" is a digit to str.isdigit)."""
    return text.isascii() and text.isdigit()


def _port(text: str) -> int | None:
    """`text` as a TCP port, else None (a port of thousands of digits too: int() refuses it)."""
    return int(text) if _digits(text) and len(text) <= 5 and int(text) <= 65535 else None


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of `host:port`, `[v6]:port` or `ray://host:port`; None for e.g. `auto`."""
    rest = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or _port(port) is None:
        return None
    return host.strip("[]"), int(port)


def _check_ray_address(address: str) -> None:
    """Refuse --address unless a Ray cluster answers there before the connect deadline.

    A closed port (or an unknown host) fails at once on a plain TCP connect; anything else is
    settled by a real `ray.init` in a child process, given what is left of the deadline."""
    deadline = time.monotonic() + _connect_timeout()
    nobody = SanError("INVALID_INPUT", f"no Ray cluster at {address}")
    target = _host_port(address)
    if target is not None:
        try:
            socket.create_connection(target, timeout=max(0.1, deadline - time.monotonic())).close()
        except OSError:
            raise nobody from None
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    # its own session: ours to kill whole at the deadline, and out of reach of the terminal's ^C
    probe = subprocess.Popen([sys.executable, "-c", _PROBE, address], env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, said = probe.communicate(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise nobody from None
    finally:
        if probe.poll() is None:         # not yet reaped, so its pid is still its own
            os.killpg(probe.pid, signal.SIGKILL)
            probe.communicate()
    if probe.returncode != 0:
        if b"AuthenticationError" in said:
            raise SanError("INVALID_INPUT", f"the Ray cluster at {address} wants an authentication "
                                            f"token (set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN)")
        raise nobody


def cmd_run(args, out, err) -> int:
    try:                                              # every invalid input: exit 2 before Ray starts
        scenario = _load_run_scenario(args.scenario)
        chunk = _chunk_size(args.chunk_size)
        _check_json_out(args.json)
        _start_timeout()
        _check_address_state_dir(args)
        if args.address:                              # before the state dir: a refusal leaves no trace
            _check_ray_address(args.address)
        state, temporary, lock = _open_state_dir(args, scenario.topology.name)
        try:
            from .runner import Clock
            Clock(state, scenario.topology.start)     # a clock file that holds no time: exit 2
        except SanError:
            os.close(lock)
            if temporary:
                shutil.rmtree(state, ignore_errors=True)
            raise
    except ValidationFailed:
        raise                                         # main prints every located problem
    except SanError as exc:
        err.print(str(exc))
        return EXIT_INVALID
    quiet = args.quiet
    if quiet:
        out = Console(quiet=True)
    try:
        from .fabric import start_ray                 # Ray: only `san run` loads it, and late
        try:
            started_here = start_ray(args.address)
        except SanError as exc:                       # the cluster went away since the check
            err.print(str(exc))
            return EXIT_INVALID
        return _run(scenario, args, out, state, chunk, quiet, started_here)
    finally:
        os.close(lock)
        if temporary:
            shutil.rmtree(state, ignore_errors=True)
        elif not args.state_dir and not quiet:
            out.print(f"state kept in {state}", highlight=False)


def _run(scenario, args, out, state: Path, chunk: int, quiet: bool, started_here: bool) -> int:
    # Ray and what drives it load only here, so validate, inspect and schema never import Ray
    import ray
    from .fabric import San
    from .runner import Runner

    san = San(scenario.topology, state, chunk_size=chunk, shared_state=bool(args.address),
              start_timeout=_start_timeout())
    try:
        try:
            with out.status(f"building {scenario.topology.name}", spinner="dots") if out.is_terminal and not quiet else contextlib.nullcontext():
                san.start()
        except SanError as exc:           # a placement or state dir refused: before any step
            if not _refused(exc):
                raise
            _Err.print(str(exc))
            return EXIT_INVALID
        show = out.is_terminal and not quiet
        with Progress(*progress_columns(), console=out, transient=True, disable=not show) as progress:
            task = progress.add_task(scenario.name, total=len(scenario.steps), info="")
            watch = StepProgress(san, progress) if show else None   # long steps: bytes and rate
            runner = Runner(san, state, on_step=lambda r: progress.advance(task), watch=watch)
            reports = runner.run(scenario.steps)
        catalog = runner.catalogs()
        rep = report_mod.build(scenario, reports, catalog, runner)
        # the hosts shut down: their FAT mounts written back clean (in no step's report)
        for line in runner.unmount_hosts():
            _Err.print(line)
        if args.address:                  # on a cluster: which Ray node ran each element
            rep["nodes"] = dict(san.nodes)
        unwritten = _save_json(rep, args.json)   # first: nothing printed below can cost it
        out.print(report_mod.table(scenario, reports, rep))
        tot = rep["totals"]
        out.print(f"{'ok' if rep['ok'] else 'NOT OK'}: {sum(r.ok for r in reports)}/{len(reports)} "
                  f"steps as expected; modeled {tot['modeled_s']:.4f} s, wall {tot['wall_s']:.2f} s, "
                  f"{tot['bytes']} bytes moved", highlight=False)
        if unwritten:
            _Err.print(unwritten)
            return EXIT_FAILED
        return EXIT_OK if rep["ok"] else EXIT_FAILED
    finally:
        san.shutdown()
        if started_here:
            ray.shutdown()


def _save_json(rep: dict, text: str | None) -> str | None:
    """Write the report to --json `text`, if given; the error line if it could not be (the
    disk filled up, the folder went away during the run), else None."""
    if not text:
        return None
    try:
        report_mod.write_json(rep, Path(text))
    except OSError as exc:
        code = "NO_SPACE" if exc.errno == errno.ENOSPC else "INVALID_INPUT"
        return f"{code}: --json {text} could not be written: {exc.strerror or exc}"
    return None


def _addr_port(host: str, port: int) -> str:
    """ADDR:PORT as --listen takes it: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _refused(exc: SanError) -> bool:
    """Did starting the SAN refuse its input (a placement, the state dir: INVALID_INPUT, exit
    2), rather than meet a bug (`InternalError`, coded INVALID_INPUT too) or a failure?"""
    return exc.code == "INVALID_INPUT" and not isinstance(exc, InternalError)


# -- san serve -----------------------------------------------------------------------------------
def _listen_address(text: str) -> tuple[str, int]:
    """(host, port) of --listen ADDR:PORT (an IPv6 address in brackets: [::1]:10809)."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if sep and host and _digits(port) and _port(port) is None:
        shown = port if len(port) <= 12 else f"{port[:6]}...({len(port)} digits)"
        raise SanError("INVALID_INPUT", f"--listen: port {shown} is out of range 0-65535 "
                                        f"(got {text[:80]!r}; port 0 picks a free one)")
    if not sep or not host or _port(port) is None:
        raise SanError("INVALID_INPUT", f"--listen must be ADDR:PORT, e.g. 127.0.0.1:10809 "
                                        f"(got {text!r})")
    try:
        socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise SanError("INVALID_INPUT", f"--listen {text}: {host!r} is not an address here "
                                        f"({exc})") from None
    return host, int(port)


def _check_listen(host: str, port: int) -> None:
    """Refuse, before Ray starts, an address that cannot be listened on now (a port in use)."""
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    probe = socket.socket(info[0], socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the server will
        probe.bind(info[4])
        probe.listen(1)
    except OSError as exc:
        raise SanError("INVALID_INPUT", f"--listen {host}:{port}: cannot listen there "
                                        f"({exc.strerror or exc})") from None
    finally:
        probe.close()


def _is_loopback(host: str) -> bool:
    import ipaddress
    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback
                   for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM))
    except (OSError, ValueError):
        return False


def _load_topology_of(path):
    """The topology of FILE: a topology file, or a scenario's (whose steps inspect, graph
    and serve ignore).  ValidationFailed, with every located problem, for an invalid one."""
    if is_scenario_file(path):
        return load_scenario(path).topology
    return load_topology(path)


def cmd_serve(args, out, err) -> int:
    # set first: a signal at any time before the server is up (its start takes seconds)
    # stops it as soon as it is, cleanly, rather than killing the process with nothing said.
    # A plain flag: a handler that takes a lock (Event.set) can deadlock with the main thread
    # it interrupts inside that same lock
    stop: list[bool] = []
    previous = _stop_on_signals(stop)
    try:
        return _cmd_serve(args, out, err, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_on_signals(stop: list) -> dict:
    """SIGINT and SIGTERM append to `stop`; the handlers they had."""
    return {sig: signal.signal(sig, lambda *_: stop.append(True))
            for sig in (signal.SIGINT, signal.SIGTERM)}


def _cmd_serve(args, out, err, stop: list) -> int:
    from .serve import choose_exports
    try:                                              # every invalid input: exit 2 before Ray starts
        topology = _load_topology_of(args.file)
        chosen = choose_exports(topology, args.export)
        chunk = _chunk_size(args.chunk_size)
        listen = _listen_address(args.listen)
        _check_listen(*listen)
        _check_json_out(args.json)
        _start_timeout()
        if args.address:
            _check_ray_address(args.address)
        state, _, lock = _open_state_dir(args, topology.name)
    except ValidationFailed:
        raise
    except SanError as exc:
        err.print(str(exc))
        return EXIT_INVALID
    if not _is_loopback(listen[0]):
        err.print(f"warning: listening on {listen[0]}, not a loopback address: whoever reaches it "
                  "may read and write the exported volumes (NBD has no authentication here)")
    try:
        from .fabric import start_ray
        try:
            started_here = start_ray(args.address)
        except SanError as exc:
            err.print(str(exc))
            return EXIT_INVALID
        _stop_on_signals(stop)      # again: ray.init sets its own SIGTERM handler (exit 15)
        return _serve(topology, chosen, listen, args, out, err, state, chunk, started_here, stop)
    finally:
        os.close(lock)


def _serve(topology, chosen, listen, args, out, err, state: Path, chunk: int, started_here: bool,
           stop: list) -> int:
    import ray
    from .fabric import San
    from .serve import Serving

    san = San(topology, state, chunk_size=chunk, shared_state=bool(args.address),
              start_timeout=_start_timeout())
    try:
        try:
            san.start()
        except SanError as exc:
            if not _refused(exc):
                raise
            err.print(str(exc))
            return EXIT_INVALID
        serving = Serving(san, state, chosen, listen, warn=err.print)
        try:
            uris = serving.start()
        except SanError as exc:
            if isinstance(exc, InternalError):
                raise
            err.print(str(exc))
            return EXIT_INVALID
        try:
            for uri, export in zip(uris, serving.exports.values()):
                mode = "read-only" if export.read_only else "read-write"
                _say(f"{uri}\t{export.size} bytes, {mode}\n")
            _say(f"serving {len(uris)} export(s) on {_addr_port(*serving.address[:2])}; "
                 "SIGINT or SIGTERM stops\n")
            while not stop:
                time.sleep(0.2)
        finally:
            rep = serving.stop()
        rep = {"topology": topology.name, "listen": _addr_port(*serving.address[:2]), **rep}
        unwritten = _save_json(rep, args.json)
        _say(f"stopped: {rep['bytes']} bytes moved over {len(rep['exports'])} export(s); "
             f"modeled {rep['modeled_s']:.4f} s, wall {rep['wall_s']:.2f} s\n")
        if unwritten:
            err.print(unwritten)
            return EXIT_FAILED
        return EXIT_OK
    finally:
        san.shutdown()
        if started_here:
            ray.shutdown()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
