"""Faults that strike in the middle of a step: ``fault ... when: {step: TITLE, after: SIZE}``.

Inside a ``concurrent`` step, a fault with ``when`` waits until the inner step titled TITLE has
moved SIZE bytes, then strikes.  What a step has moved is read from the counters of the
elements that move its bytes (its *movers*, `movers`): a host counts the payload its FC
transfers have had acknowledged (block writes and reads, its filesystem's I/O, a tape
stream the library reads on its path), an array the bytes its copies have moved (mirror,
restore, volume copy, a copy to another array over FC).  A step's count is the sum of its
movers' counts since the concurrent step began, over all its phases.

To strike at a chunk boundary whatever the machine's speed, each mover's tripwire
(`san.tripwire`) is armed at its count + SIZE before the concurrent's steps start
(`meters_for`): the mover's thread that counts the chunk reaching SIZE stops there, before
sending anything more, until the fault (whenever its thread runs) has struck and released
the movers (a killed one stays dead).  Each mover has one tripwire: with several faults on one
step, it is armed at the smallest SIZE and the others wait by polling.  Where several movers share the bytes, the count is also
polled, so the fault strikes at the latest one poll after the sum reaches SIZE.  If the step
ends first, the fault strikes then; either way its result says after how many of the step's
bytes it struck (``after_bytes``) and whether the step had ended (``step_ended``).

Counters are per element, not per step: two inner steps moving bytes through the same host
or array are counted together.  Give each watched step its own movers for an exact count.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .errors import SanError

__all__ = ["StepMeter", "meters_for", "movers", "release", "strike"]

POLL = 0.005      # seconds between two reads of the counters while a fault waits


def _array_of_mount(topology, host: str, mount_point: str) -> list[str]:
    spec = next((h for h in topology.hosts if h.name == host), None)
    mount = next((m for m in spec.mounts if m.mount_point == mount_point), None) if spec else None
    return [mount.port.split("/")[0]] if mount else []


def _array_of_device(topology, device_id: str) -> list[str]:
    return [a.name for a in topology.arrays if a.device_id == device_id]


def movers(ctx, step) -> list[str]:
    """The elements whose byte counters measure `step`'s work (see the module docstring);
    [] for a step that moves nothing (the fault then strikes when it ends)."""
    topo, san = ctx.san.topology, ctx.san
    op = step.op
    if op == "backup":
        server = ctx.definitions.get(step.definition)
        if server is None:
            return []
        try:
            d = san.call(server, "definition", step.definition)
        except SanError:
            return []                # the step itself will say why (a server down, say)
        if d.type == "tape":
            return [d.host]          # the library reads the volume on the host's path
        return _array_of_mount(topo, d.host, d.mount_point) if d.method == "mirror" else []
    if op in ("restore_volume", "restore_files", "copy_volume", "copy_to_tape", "migrate"):
        try:
            server, key = ctx.backup(step.backup)
            row = san.call(server, "row", key)
        except SanError:
            return []                # the step itself will say why
        if op == "restore_files" or row["type"] == "tape" or op in ("copy_to_tape", "migrate"):
            to = getattr(step, "to", None)
            return [to.host if to is not None else row["host"]]
        return _array_of_device(topo, row["device_id"])
    host = getattr(step, "host", None)
    return [host] if host else []


def _count(san, name: str) -> int | None:
    """An element's counter now, or None if it is down."""
    try:
        if san.kind(name) == "host":
            return san.call(name, "bytes_moved")
        return san.call(name, "mgmt_moved", "san")
    except SanError as exc:
        if exc.code != "ELEMENT_DOWN":
            raise
        return None


def _arm(san, name: str, at: int | None) -> None:
    """Arm (`at`) or release (None) a mover's tripwire; an element that is down is skipped."""
    try:
        san.call(name, "trip_arm", at) if at is not None else san.call(name, "trip_release")
    except SanError as exc:
        if exc.code != "ELEMENT_DOWN":
            raise
        # down: nothing of it to stop or to let go


@dataclass
class StepMeter:
    """The bytes one inner step of a concurrent has moved so far, from its movers' counters."""
    title: str
    movers: list[str]
    base: dict[str, int]
    ended: threading.Event = field(default_factory=threading.Event)
    seen: dict[str, int] = field(default_factory=dict)   # last count read of each mover

    def read(self, san) -> int:
        for name in self.movers:
            now = _count(san, name)
            if now is not None:          # a dead mover keeps what it had moved
                self.seen[name] = now
        return sum(self.seen.get(n, b) - b for n, b in self.base.items())


def meters_for(ctx, steps) -> dict[str, StepMeter]:
    """A meter for each inner step of a concurrent that a ``when`` names, read before any of
    them starts (their count begins at zero), its movers' tripwires armed at the smallest
    SIZE a fault waits for: armed before the step moves a byte, whenever the fault's own
    thread gets to run (an armed mover waits for it at SIZE)."""
    sizes: dict[str, int] = {}
    for s in steps:
        when = getattr(s, "when", None)
        if when is not None:
            sizes[when.step] = min(when.after, sizes.get(when.step, when.after))
    out = {}
    try:
        for s in steps:
            if s.title in sizes:
                names = movers(ctx, s)
                base = {n: _count(ctx.san, n) or 0 for n in names}
                out[s.title] = StepMeter(s.title, names, base, seen=dict(base))
                for name in names:
                    _arm(ctx.san, name, base[name] + sizes[s.title])
    except BaseException:
        release(ctx, out)            # armed movers would stop the next steps' bytes
        raise
    return out


def release(ctx, meters: dict[str, StepMeter]) -> None:
    """Let every mover of `meters` go on (a concurrent's end: a fault that never struck, say
    because it failed, left its movers armed, and the next step through one of them would
    stop at its mark)."""
    for meter in meters.values():
        for name in meter.movers:
            _arm(ctx.san, name, None)


def strike(ctx, meter: StepMeter, size: int, fire) -> dict:
    """Wait until the step of `meter` has moved `size` bytes (or ended), call `fire()` and
    let the movers go on; what `fire()` returned, with {step, after_bytes, step_ended}."""
    san = ctx.san
    try:
        while True:
            moved = meter.read(san)
            if moved >= size or meter.ended.is_set():
                break
            meter.ended.wait(POLL)
        moved = meter.read(san)
        ended = meter.ended.is_set()
        fired = fire()
    finally:
        for name in meter.movers:
            _arm(san, name, None)
    return {**(fired or {}), "step": meter.title, "after_bytes": moved, "step_ended": ended}

