"""The scenario runner: runs a scenario's steps on a built SAN and reports each one.

Each op is a function `op_NAME(ctx, step) -> Work` registered in `OPS`.  It does the work for
real on the actors and returns what it moved: the transfers, in order (one chain), which the
time model (`san.timemodel`) turns into modeled seconds.  A step that fails returns its
`SanError`; it is "ok" when its outcome is what the step expected (`expect_error`).

`concurrent` runs its inner steps at the same time on the actors (one driver thread each),
then simulates all their transfers together, so links they share are shared max-min fair in
modeled time too.  The simulated clock moves by each top-level step's modeled time and by
`advance_clock`, and is persisted in ``STATE_DIR/clock``.
"""
from __future__ import annotations

import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SanError
from .links import capacities, link_of
from .timemodel import Transfer, busiest, simulate
from .units import format_time, parse_time


@dataclass
class Work:
    """What an op did: its transfers in order (`chains` of concurrent work) and its result."""
    chains: list[list[Transfer]] = field(default_factory=list)
    bytes: int = 0
    result: dict = field(default_factory=dict)


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
        self.now = parse_time(self.path.read_text().strip()) if self.path.exists() else start

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(self.now.isoformat() + "\n")
        tmp.replace(self.path)

    def stamp(self) -> str:
        return format_time(self.now)


@dataclass
class Context:
    san: object
    clock: Clock
    capacity: dict
    checkpoints: dict = field(default_factory=dict)


# -- ops ------------------------------------------------------------------------------------------
OPS = {}


def op(name):
    def register(fn):
        OPS[name] = fn
        return fn
    return register


def _host_call(ctx, host, method, *args):
    return ctx.san.call(host, method, *args)


@op("write")
def op_write(ctx, step) -> Work:
    transfers = _host_call(ctx, step.host, "write", step.mount, step.offset, step.size, step.seed)
    return Work([transfers], step.size)


def _content(ctx, step) -> tuple[str, dict]:
    """(description, content) of a checkpoint / verify target."""
    if getattr(step, "host", None):
        return (f"{step.host}:{step.mount}",
                {"kind": "volume", "digest": _host_call(ctx, step.host, "digest", step.mount)})
    if getattr(step, "array", None):
        return (f"{step.array} volume {step.volume}",
                {"kind": "volume", "digest": ctx.san.call(step.array, "digest_volume", step.volume)})
    raise SanError("NO_SUCH_BACKUP", f"backup {step.backup!r} has no catalog row "
                                     "(backups arrive with the backup software)")


@op("checkpoint")
def op_checkpoint(ctx, step) -> Work:
    where, content = _content(ctx, step)
    ctx.checkpoints[step.as_] = (where, content)
    return Work(result={"target": where, **content})


@op("verify")
def op_verify(ctx, step) -> Work:
    if step.checkpoint not in ctx.checkpoints:
        raise SanError("INVALID_INPUT", f"checkpoint {step.checkpoint!r} was not taken "
                                        "(its step failed)")
    taken_of, expected = ctx.checkpoints[step.checkpoint]
    where, actual = _content(ctx, step)
    if actual != expected:
        raise SanError("VERIFY_MISMATCH", f"{where} differs from checkpoint {step.checkpoint!r} "
                                          f"taken of {taken_of} (digest {actual['digest'][:16]}... "
                                          f"vs {expected['digest'][:16]}...)")
    return Work(result={"target": where, "checkpoint": step.checkpoint, **actual})


@op("fault")
def op_fault(ctx, step) -> Work:
    if getattr(step, "when", None) is not None:
        raise SanError("INVALID_INPUT", "fault `when:` (striking mid-step) is not available "
                                        "in this version; put the fault between steps")
    san, kind, target = ctx.san, step.kind, step.target
    element = san.kind(target)
    if kind in ("kill", "restart"):
        if element is None:
            raise SanError("INVALID_INPUT", f"{kind} takes an element (got {target!r}, a link)")
        (san.kill if kind == "kill" else san.restart)(target)
    elif kind in ("link_down", "link_up"):
        if element is not None:
            raise SanError("INVALID_INPUT", f"{kind} takes a port or an ISL (got element {target!r})")
        san.set_link(target, kind == "link_up")
    elif kind == "corrupt":
        if element != "array" or step.volume is None:
            raise SanError("INVALID_INPUT", f"corrupt in this version takes an array and a volume "
                                            f"(got target {target!r})")
        san.call(target, "corrupt", step.volume, step.offset or 0, 1)
    return Work(result={"kind": kind, "target": target})


@op("advance_clock")
def op_advance_clock(ctx, step) -> Work:
    due = _due_definitions(ctx, step.by)
    if due:
        raise SanError("INVALID_INPUT", f"scheduled backups {', '.join(due)} fall due; scheduled "
                                        "backups are not available in this version")
    ctx.clock.advance(step.by)
    return Work(result={"now": ctx.clock.stamp()})


def _due_definitions(ctx, seconds: float) -> list[str]:
    topo = ctx.san.topology
    end = ctx.clock.now + dt.timedelta(seconds=seconds)
    due = []
    for server in topo.backup_servers:
        for d in server.definitions:
            if d.schedule is not None:
                nxt = d.schedule.next_after(ctx.clock.now, topo.start)
                if nxt is not None and nxt <= end:
                    due.append(d.name)
    return due


# -- running steps -------------------------------------------------------------------------------
class Runner:
    """Runs steps in order on `san`; `on_step` is called after each top-level step."""

    def __init__(self, san, state_dir: Path, on_step=None):
        self.ctx = Context(san=san, clock=Clock(state_dir, san.topology.start),
                           capacity=capacities(san.topology))
        self.on_step = on_step

    def run(self, steps) -> list[StepReport]:
        reports = []
        for index, step in enumerate(steps):
            report, chains = self._execute(index, step)
            self._settle(report, chains)
            self.ctx.clock.advance(report.modeled_s)
            reports.append(report)
            if self.on_step:
                self.on_step(report)
        return reports

    def _execute(self, index: int, step):
        """Do a step's work; returns its report (times not yet modeled) and its chains,
        each chain tagged with the reports it belongs to."""
        report = StepReport(index, step.title, step.op, expected=step.expect_error)
        started = time.perf_counter()
        chains: list[tuple[list[StepReport], list[Transfer]]] = []
        try:
            if step.op == "concurrent":
                with ThreadPoolExecutor(max_workers=len(step.steps)) as pool:
                    inner = list(pool.map(lambda pair: self._execute(*pair),
                                          enumerate(step.steps)))
                for child, child_chains in inner:
                    report.children.append(child)
                    chains += [([report] + owners, chain) for owners, chain in child_chains]
                report.bytes = sum(c.bytes for c in report.children)
                failed = [c for c in report.children if not c.ok]
                if failed:
                    report.error = SanError("INVALID_INPUT",
                                            f"inner step(s) {', '.join(str(c.index) for c in failed)} "
                                            "did not go as expected")
            else:
                fn = OPS.get(step.op)
                if fn is None:
                    raise SanError("INVALID_INPUT", f"op {step.op!r} is not available in this "
                                                    "version of san")
                work = fn(self.ctx, step)
                report.bytes, report.result = work.bytes, work.result
                chains = [([report], chain) for chain in work.chains]
        except SanError as exc:
            report.error = exc
        report.wall_s = time.perf_counter() - started
        if step.op == "concurrent" and report.error is not None and step.expect_error is None:
            report.ok = False
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
