"""The scenario runner: runs a scenario's steps on a built SAN and reports each one.

Each step is done by its op (`san.ops`), which returns what it moved; a step that fails
gives its `SanError`, and it is "ok" when its outcome is what the step expected
(`expect_error`).  `concurrent` runs its inner steps at the same time (one driver thread
each), then simulates all their transfers together, so links they share are shared max-min
fair in modeled time too.  The simulated clock moves by each top-level step's modeled time
and by `advance_clock`, is told to the hosts before each step (the time they stamp on
files), and is persisted in ``STATE_DIR/clock``.
"""
from __future__ import annotations

import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InternalError, SanError
from .fileio import write_replace
from .links import capacities, link_of
from .ops import OPS, Context
from .strike import meters_for, release
from .timemodel import Transfer, busiest, simulate
from .units import CLOCK_RANGE, format_time, in_clock_range, parse_time


@dataclass
class StepReport:
    index: int
    title: str | None
    op: str
    ok: bool = False
    wall_s: float = 0.0
    modeled_s: float = 0.0
    bytes: int = 0
    busiest_link: str | None = None
    error: SanError | None = None
    result: dict = field(default_factory=dict)
    expected: str | None = None
    children: list["StepReport"] = field(default_factory=list)
    clock_set: bool = False

    def to_dict(self) -> dict:
        result = dict(self.result)
        if self.children:
            result["steps"] = [c.to_dict() for c in self.children]
        return {"index": self.index, "title": self.title, "op": self.op, "ok": self.ok,
                "wall_s": round(self.wall_s, 4), "modeled_s": round(self.modeled_s, 6),
                "bytes": self.bytes, "busiest_link": self.busiest_link,
                "error": self.error.to_dict() if self.error else None, "result": result}



class Clock:
    """The simulated UTC clock: starts at the topology's `start`, persisted in the state dir."""

    def __init__(self, state_dir: Path, start: dt.datetime):
        self.path = Path(state_dir) / "clock"
        self.now = self._stored() if self.path.exists() else start
        # how far scheduled definitions have run (`advance_clock`): a due time a step's
        # modeled time carried the clock past, since, runs late at the next advance_clock
        self.scheduled_path = Path(state_dir) / "scheduled"
        self.scheduled = (self._stored(self.scheduled_path) if self.scheduled_path.exists()
                          else self.now)

    def _stored(self, path: Path | None = None) -> dt.datetime:
        """The time a state dir's clock file (or `path`) holds; INVALID_INPUT naming it if it
        holds none."""
        path = path or self.path
        try:
            text = path.read_bytes().decode("utf-8", "replace").strip()
        except OSError as exc:
            raise SanError("INVALID_INPUT", f"{path} (the simulated clock) cannot be read: "
                                            f"{exc.strerror or exc}") from None
        try:
            moment = parse_time(text)
        except (ValueError, OverflowError):
            raise SanError("INVALID_INPUT", f"{path} holds {text[:40]!r}, not the simulated "
                                            "clock's time (a UTC time like 2026-01-01T00:00:00Z)") from None
        if not in_clock_range(moment):
            raise SanError("INVALID_INPUT", f"{path} holds {format_time(moment)}, outside the "
                                            f"simulated clock's range ({CLOCK_RANGE})")
        return moment

    def set_scheduled(self, moment: dt.datetime) -> None:
        """Scheduled definitions have run up to `moment`."""
        self.scheduled = moment
        write_replace(self.scheduled_path, (moment.isoformat() + "\n").encode())

    def advance(self, seconds: float) -> None:
        try:
            moment = self.now + dt.timedelta(seconds=seconds)
        except OverflowError:
            moment = None
        if moment is None or not in_clock_range(moment):
            raise SanError("INVALID_INPUT", f"the simulated clock, at {self.stamp()}, cannot move "
                                            f"{seconds:g} s on: it stays {CLOCK_RANGE}")
        self.set(moment)

    def set(self, moment: dt.datetime) -> None:
        if not in_clock_range(moment):
            raise SanError("INVALID_INPUT", f"the simulated clock cannot show {format_time(moment)}: "
                                            f"it stays {CLOCK_RANGE}")
        self.now = moment
        write_replace(self.path, (self.now.isoformat() + "\n").encode())

    def stamp(self) -> str:
        return format_time(self.now)



def unmount_hosts(san) -> list[str]:
    """The end of a run (or of a serve session): every host unmounts its FAT filesystems as
    a host that shuts down does (`Host.unmount_all`: written back, marked clean, dropped), so each volume
    passes ``fsck.fat -n`` as it is left.  What this moves is in no step's report.  Returns
    one warning line per host that is down (its mounts stay as its last write-back left
    them: marked dirty if it wrote files since) and per mount that could not be written
    back (its array or path is down)."""
    warnings = []
    for host in san.topology.hosts:
        if not any(m.filesystem == "fat" for m in host.mounts):
            continue
        if host.name in san.down:
            warnings.append(f"warning: {host.name} is down: its mounts were not unmounted "
                            "cleanly")
            continue
        try:
            done = san.call(host.name, "unmount_all")
        except SanError as exc:
            warnings.append(f"warning: {host.name} did not answer ({exc}): its mounts were "
                            "not unmounted cleanly")
            continue
        for mount in done:
            if "error" in mount:
                error = mount["error"]
                warnings.append(f"warning: {host.name}:{mount['mount']} was not unmounted "
                                f"cleanly ({error['code']}: {error['message']})")
    return warnings


# -- running steps -------------------------------------------------------------------------------
def _definitions(san) -> dict[str, str]:
    """Definition name -> its server: the topology's, and those a `define` step of an earlier
    run stored in the state dir (their schedules run at `advance_clock` too).  A server that
    cannot say (down) has the topology's."""
    out = {d.name: server.name for server in san.topology.backup_servers
           for d in server.definitions}
    for server in san.topology.backup_servers:
        try:
            names = san.call(server.name, "describe")["definitions"]
        except SanError as exc:
            if exc.code != "ELEMENT_DOWN":
                raise
            continue
        out.update({name: server.name for name in names if name not in out})
    return out


class Runner:
    """Runs steps in order on `san`; `on_step` is called after each top-level step."""

    def catalogs(self) -> dict:
        """Every backup server's catalog rows now (for the report); a server that is down
        has none to show (null)."""
        out = {}
        for server in self.ctx.san.topology.backup_servers:
            try:
                out[server.name] = self.ctx.san.call(server.name, "catalog_rows")
            except SanError:
                out[server.name] = None
        return out

    def unmount_hosts(self) -> list[str]:
        """The end of a run: `unmount_hosts` of its SAN."""
        return unmount_hosts(self.ctx.san)

    def __init__(self, san, state_dir: Path, on_step=None, watch=None):
        self.ctx = Context(san=san, clock=Clock(state_dir, san.topology.start),
                           capacity=capacities(san.topology),
                           definitions=_definitions(san),
                           schedules={d.name: d.schedule for server in san.topology.backup_servers
                                      for d in server.definitions})
        self.on_step = on_step
        self.watch = watch          # a `san.progress.StepProgress`, on a terminal
        self.link_use: dict[str, list[float]] = {}   # resource -> [bytes, busy seconds], whole run

    def links(self, modeled_s: float) -> dict:
        """Where the time went: per link direction (or copy engine, tape drive) of the run so
        far, the bytes it carried, the modeled seconds it was busy, and that busy time as a
        fraction of the run's `modeled_s`."""
        return {res: {"bytes": int(nbytes), "busy_s": round(busy, 6),
                      "utilization": round(busy / modeled_s, 4) if modeled_s > 0 else 0.0}
                for res, (nbytes, busy) in sorted(self.link_use.items()) if nbytes or busy}

    def run(self, steps) -> list[StepReport]:
        reports = []
        for index, step in enumerate(steps):
            report = None
            try:
                self.ctx.san.set_time(self.ctx.clock.now)
                with self.watch.step(f"{index} {step.title or step.op}") if self.watch else nullcontext():
                    report, chains = self._execute(index, step)
                    started = time.perf_counter()
                    self._barrier()
                    report.wall_s += time.perf_counter() - started
                self._settle(report, chains)
                if not report.clock_set:
                    self.ctx.clock.advance(report.modeled_s)
            except Exception as exc:  # the step's end (barrier, time, clock) failed: its error
                if report is None:
                    report = StepReport(index, step.title, step.op, expected=step.expect_error)
                report.error = exc if isinstance(exc, SanError) else InternalError.of(
                    f"the end of step {index}", exc)
                report.ok = False       # whatever the step expected: this came after it
            reports.append(report)
            if self.on_step:
                self.on_step(report)
        return reports

    def _barrier(self) -> None:
        """The end of a step is a barrier (contract, Durability): every array that is up makes
        what it acknowledged survive a power loss.  One that died meanwhile has nothing to
        sync; its death is the step's (or the next one's) error."""
        san = self.ctx.san
        for array in san.topology.arrays:
            if array.name not in san.down:
                try:
                    san.call(array.name, "sync")
                except SanError as exc:
                    if exc.code != "ELEMENT_DOWN":
                        raise

    def _execute(self, index: int, step):
        """Do a step's work; returns its report (times not yet modeled) and its chains,
        each chain tagged with the reports it belongs to."""
        report = StepReport(index, step.title, step.op, expected=step.expect_error)
        started = time.perf_counter()
        chains: list[tuple[list[StepReport], list[Transfer]]] = []
        try:
            if step.op == "concurrent":
                meters = meters_for(self.ctx, step.steps)   # before any inner step moves

                def inner_step(pair):
                    self.ctx.scope.meters = meters          # this concurrent's, in its thread
                    try:
                        return self._execute(*pair)
                    finally:        # a fault waiting on this step strikes now at the latest
                        if pair[1].title in meters:
                            meters[pair[1].title].ended.set()
                try:
                    with ThreadPoolExecutor(max_workers=max(1, len(step.steps))) as pool:
                        inner = list(pool.map(inner_step, enumerate(step.steps)))
                finally:            # a fault that never struck left its movers armed
                    release(self.ctx, meters)
                for child, child_chains in inner:
                    report.children.append(child)
                    chains += [([report] + owners, chain) for owners, chain in child_chains]
                report.bytes = sum(c.bytes for c in report.children)
                failed = [c for c in report.children if not c.ok]
                # coded as the first inner step that failed: not a problem of the input
                coded = next((c.error for c in failed if c.error is not None), None)
                if coded is not None:
                    report.error = SanError(coded.code, f"inner step(s) "
                                            f"{', '.join(str(c.index) for c in failed)} did not "
                                            f"go as expected (first: {coded})")
            else:
                fn = OPS.get(step.op)
                if fn is None:
                    raise SanError("INVALID_INPUT", f"op {step.op!r} is not available in this "
                                                    "version of san")
                work = fn(self.ctx, step)
                report.bytes, report.result = work.bytes, work.result
                report.clock_set = work.clock_set
                chains = [([report], chain) for chain in work.chains]
        except SanError as exc:
            report.error = exc
            if exc.partial and not report.children:     # what it did before it failed counts
                moved = list(exc.partial.get("transfers") or [])
                done = exc.partial.get("chains") or ([moved] if moved else [])
                report.result = dict(exc.partial.get("result") or {})
                report.bytes = exc.partial.get(
                    "bytes", sum(t.nbytes for chain in done for t in chain if t.counted))
                report.clock_set = bool(exc.partial.get("clock_set"))
                chains = [([report], chain) for chain in done]
        except Exception as exc:  # a bug: this step fails with what happened, the run goes on
            report.error = InternalError.of(step.op, exc)
        report.wall_s = time.perf_counter() - started
        if isinstance(report.error, InternalError):     # a bug is never what a step expects
            report.ok = False
        elif step.op == "concurrent" and step.expect_error is None:
            # not ok if an inner step was not, even one that succeeded expecting an error
            report.ok = report.error is None and all(c.ok for c in report.children)
        elif step.expect_error is None:
            report.ok = report.error is None
        else:
            report.ok = report.error is not None and report.error.code == step.expect_error
        return report, chains

    def _settle(self, report: StepReport, chains) -> None:
        """Model the time of a top-level step (and of its inner steps) from its chains."""
        if not chains:
            return
        outcome = simulate([chain for _, chain in chains], self.ctx.capacity)
        for res, nbytes in outcome.bytes.items():
            self.link_use.setdefault(res, [0, 0.0])[0] += nbytes
        for res, busy in outcome.busy.items():
            self.link_use.setdefault(res, [0, 0.0])[1] += busy
        per_report: dict[int, tuple[StepReport, float, dict]] = {}
        for (owners, chain), end in zip(chains, outcome.chain_ends):
            for owner in owners:
                _, best, used = per_report.get(id(owner), (owner, 0.0, {}))
                for transfer in chain:
                    for res in transfer.resources:
                        used[res] = outcome.busy.get(res, 0.0)
                per_report[id(owner)] = (owner, max(best, end), used)
        for owner, end, used in per_report.values():
            owner.modeled_s = end
            owner.busiest_link = busiest(used, link_of=link_of)
