"""The scenario ops: what each step of a scenario does on a built SAN.

Each op is a function `op_NAME(ctx, step) -> Work` registered in `OPS` by `@op("NAME")`.  It
does the work for real on the elements (through `ctx.san.call`, whether the SAN is actors or
plain objects) and returns what it moved: the transfers, in order (one chain per piece of
concurrent work), which the time model (`san.timemodel`) turns into modeled seconds, and its
result for the report.  A failure is a `SanError`; the runner (`san.runner`) records it.
"""
from __future__ import annotations

import datetime as dt
import heapq
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .catalog import row_key
from .elements.backup_server import record_of
from .errors import SanError
from .fat import BlockDevice, FatVolume
from .strike import strike
from .timemodel import Transfer
from .units import CLOCK_RANGE, format_time, in_clock_range
from .volume_info import IDENTITY

if TYPE_CHECKING:   # the runner imports this module
    from .runner import Clock

@dataclass
class Work:
    """What an op did: its transfers in order (`chains` of concurrent work) and its result."""
    chains: list[list[Transfer]] = field(default_factory=list)
    bytes: int = 0
    result: dict = field(default_factory=dict)
    clock_set: bool = False   # the op moved the clock itself (advance_clock)



@dataclass
class Context:
    san: object
    clock: Clock
    capacity: dict
    checkpoints: dict = field(default_factory=dict)
    backups: dict = field(default_factory=dict)       # `as:` name -> (server, catalog key)
    named: dict = field(default_factory=dict)         # `as:` name -> the row it named
    definitions: dict = field(default_factory=dict)   # definition name -> its server
    # definition name -> its schedule (None: none), as last known: what `advance_clock` goes
    # by when a definition's server is down and cannot say
    schedules: dict = field(default_factory=dict)
    # the meters of the concurrent an inner step runs in (step title -> `san.strike.StepMeter`),
    # per thread: each inner step runs in a thread of its own, and concurrents side by side
    # (inside another) each have theirs, whatever their steps' titles
    scope: threading.local = field(default_factory=threading.local)

    def server_of(self, definition: str) -> str:
        """The server of a definition a `define` step made; INVALID_INPUT if that step failed
        (the validator knows the name, but it was never defined)."""
        if definition not in self.definitions:
            raise SanError("INVALID_INPUT", f"definition {definition!r} was never defined "
                                            "(its define step failed)")
        return self.definitions[definition]

    def name_backup(self, name: str | None, server: str, row: dict) -> None:
        """`as:` `name` names the backup of catalog row `row` on `server`."""
        if name:
            self.backups[name] = (server, row_key(row))
            self.named[name] = row

    def backup(self, name: str) -> tuple[str, tuple]:
        """(server, key) of a backup named by `as:` (`backup_row`)."""
        server, key, _ = self.backup_row(name)
        return server, key

    def backup_row(self, name: str) -> tuple[str, tuple, dict]:
        """(server, key, its catalog row) of a backup named by `as:`; NO_SUCH_BACKUP if it
        has no row now, or if the row at its key is another backup's (a rebuild found another
        server's backup on the volume): a name keeps naming its own backup, wherever its row
        comes from."""
        if name not in self.backups:
            raise SanError("NO_SUCH_BACKUP", f"backup {name!r} was never made (its step failed)")
        server, key = self.backups[name]
        try:
            row = self.san.call(server, "row", key)
        except SanError as exc:
            if exc.code != "NO_SUCH_BACKUP":
                raise
            raise SanError("NO_SUCH_BACKUP", f"backup {name!r} ({key[0]} media {key[1]}) has no "
                                             f"catalog row on {server} now") from None
        named = self.named.get(name)
        if named is not None and record_of(row)[:IDENTITY] != record_of(named)[:IDENTITY]:
            raise SanError("NO_SUCH_BACKUP", (
                f"backup {name!r} ({named['label']!r} made {named['timestamp']}) is no longer on "
                f"{key[0]} media {key[1]}: its catalog row there on {server} is now "
                f"{row['label']!r} made {row['timestamp']}"))
        return server, key, row



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
    """(description, content) of a checkpoint / verify target: the files of a readable FAT,
    otherwise the volume digest."""
    if getattr(step, "host", None):
        where = f"{step.host}:{step.mount}"
        if _filesystem_of(ctx, step.host, step.mount) == "fat":
            try:
                return where, {"kind": "files", "files": _host_call(ctx, step.host, "files", step.mount)}
            except SanError as exc:
                if exc.code != "FSCK_FAILED":   # not a readable FAT: the volume digest, below
                    raise
        return where, {"kind": "volume", "digest": _host_call(ctx, step.host, "digest", step.mount)}
    if getattr(step, "array", None):
        return f"{step.array} volume {step.volume}", _stored_content(ctx, step.array, step.volume)
    server, key, row = ctx.backup_row(step.backup)
    if key[2] is not None:   # a tape copy: the volume image in its file
        library, media, file = key[0], key[1], int(key[2])
        return (f"backup {step.backup} ({library} {media} file {file})",
                _image_content(ctx, library, media, file))
    array = _array_of_device(ctx, key[0])
    held = ctx.san.call(array, "read_info", int(key[1]))
    if held is None or bytes(held)[:IDENTITY] != record_of(row)[:IDENTITY]:
        # what an order by this row would be refused (the array's check_holds), so is a read
        raise SanError("NO_SUCH_BACKUP", (
            f"backup {step.backup} ({row['label']!r} made {row['timestamp']}) is no longer on "
            f"{array} volume {key[1]}: it holds "
            + ("no volume info" if held is None else "another backup's volume info")))
    return f"backup {step.backup} ({array} volume {key[1]})", _stored_content(ctx, array, int(key[1]))


def _image_content(ctx, library: str, media: str, file: int) -> dict:
    size = ctx.san.call(library, "image_size", media, file)
    return _content_of(size, lambda off, n: ctx.san.call(library, "read_image", media, file, off, n),
                       lambda: ctx.san.call(library, "image_digest", media, file),
                       f"tape {media} (file {file}) of {library}")


def _filesystem_of(ctx, host: str, mount: str) -> str:
    spec = next(h for h in ctx.san.topology.hosts if h.name == host)
    found = next((m for m in spec.mounts if m.mount_point == mount), None)
    if found is None:
        raise SanError("NO_SUCH_MOUNT", f"{host} has no mount {mount!r}")
    return found.filesystem


def _array_of_device(ctx, device_id: str) -> str:
    for array in ctx.san.topology.arrays:
        if array.device_id == device_id:
            return array.name
    raise SanError("NO_SUCH_VOLUME", f"no array has device ID {device_id}")


def _stored_content(ctx, array: str, volume: int) -> dict:
    """The content of a volume as the array stores it (no host, no access control)."""
    return _content_of(ctx.san.call(array, "size_of", volume),
                       lambda off, n: ctx.san.call(array, "read_volume", volume, off, n),
                       lambda: ctx.san.call(array, "digest_volume", volume),
                       f"{array} volume {volume}")


def _content_of(size: int, read_fn, digest_fn, name: str) -> dict:
    """The files of a readable FAT image, else (FSCK_FAILED: no FAT there) its volume digest.
    Any other failure, reading the volume say, is the caller's: a checkpoint quietly taken of
    the volume instead of its files would fail its `verify` with a misleading mismatch."""
    device = BlockDevice(size, read_fn, readonly=True, name=name)
    try:
        fs = FatVolume(device, readonly=True)
    except SanError as exc:
        if exc.code != "FSCK_FAILED":      # (a bug, InternalError, is INVALID_INPUT: raised)
            raise
        fs = None
    if fs is None:
        return {"kind": "volume", "digest": digest_fn()}
    try:
        return {"kind": "files", "files": {p: list(v) for p, v in fs.files().items()}}
    finally:
        fs.close()


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
                                          f"taken of {taken_of}: {_difference(expected, actual)}")
    return Work(result={"target": where, "checkpoint": step.checkpoint, **actual})


def _difference(expected: dict, actual: dict) -> str:
    if expected["kind"] != actual["kind"]:
        return f"it holds {actual['kind']}, the checkpoint {expected['kind']}"
    if expected["kind"] == "volume":
        return f"digest {actual['digest'][:16]}... vs {expected['digest'][:16]}..."
    want, have = expected["files"], actual["files"]
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    changed = sorted(p for p in set(want) & set(have) if want[p] != have[p])
    parts = [f"{label} {', '.join(paths[:5])}" for label, paths in
             (("missing", missing), ("unexpected", extra), ("changed", changed)) if paths]
    return "; ".join(parts)


def _transfers_bytes(transfers) -> int:
    return sum(t.nbytes for t in transfers if t.counted)


def _work(answer: dict, **result) -> Work:
    transfers = answer.pop("transfers", [])
    return Work([transfers], _transfers_bytes(transfers), result)


@op("write_files")
def op_write_files(ctx, step) -> Work:
    files = {path: (spec.size, spec.seed) for path, spec in step.files.items()}
    answer = _host_call(ctx, step.host, "write_files", step.mount, files)
    return _work(answer, files=answer["files"], file_bytes=answer["bytes"])


@op("remove_files")
def op_remove_files(ctx, step) -> Work:
    answer = _host_call(ctx, step.host, "remove_files", step.mount, list(step.files))
    return _work(answer, files=answer["files"])


def _only_server(ctx) -> str:
    servers = ctx.san.topology.backup_servers
    if not servers:
        raise SanError("INVALID_INPUT", "the topology has no backup server")
    return servers[0].name


@op("list_destinations")
def op_list_destinations(ctx, step) -> Work:
    answer = ctx.san.call(_only_server(ctx), "list_destinations", step.host, step.mount)
    return _work(answer, device_id=answer["device_id"], destinations=answer["destinations"])


@op("define")
def op_define(ctx, step) -> Work:
    answer = ctx.san.call(step.server, "define", step.definition)
    ctx.definitions[step.name] = step.server
    ctx.schedules[step.name] = step.schedule
    return _work(answer, definition=step.name)


def _making(ctx, server: str, name: str | None, method: str, *args) -> dict:
    """Call `server`'s flow `method` that makes a backup; name it `name` (``as:``) once it
    is made, even if what follows it failed (a tape backup whose post-processing failed is
    made and catalogued: its error carries the key)."""
    try:
        answer = ctx.san.call(server, method, *args)
    except SanError as exc:
        row = ((exc.partial or {}).get("result") or {}).get("row")
        if row:
            ctx.name_backup(name, server, row)
        raise
    ctx.name_backup(name, server, answer["row"])
    return answer


def _run_backup(ctx, definition: str, name: str | None) -> Work:
    server = ctx.server_of(definition)
    answer = _making(ctx, server, name, "backup", definition, int(ctx.clock.now.timestamp()))
    return _work(answer, row=answer["row"])


@op("backup")
def op_backup(ctx, step) -> Work:
    return _run_backup(ctx, step.definition, step.as_)


@op("restore_volume")
def op_restore_volume(ctx, step) -> Work:
    server, key = ctx.backup(step.backup)
    to = step.to
    answer = ctx.san.call(server, "restore_volume", key, to.host if to else None,
                          to.mount if to else None, list(step.pre), list(step.post))
    return _work(answer, row=answer["row"], copied=answer["copied"],
                 checked=answer.get("checked", 0))


@op("restore_files")
def op_restore_files(ctx, step) -> Work:
    server, key = ctx.backup(step.backup)
    answer = ctx.san.call(server, "restore_files", key, list(step.files), list(step.pre),
                          list(step.post))
    return _work(answer, files=answer["files"], file_bytes=answer["bytes"])


@op("delete_backup")
def op_delete_backup(ctx, step) -> Work:
    server, key = ctx.backup(step.backup)
    answer = ctx.san.call(server, "delete_backup", key)
    stale = {"stale": answer["stale"]} if "stale" in answer else {}
    return _work(answer, row=answer["row"], **stale)


@op("copy_volume")
def op_copy_volume(ctx, step) -> Work:
    server, key = ctx.backup(step.backup)
    answer = ctx.san.call(server, "copy_volume", key, step.to.array, step.to.volume)
    ctx.name_backup(step.as_, server, answer["row"])
    return _work(answer, row=answer["row"], copied=answer["copied"],
                 checked=answer.get("checked", 0))


@op("copy_to_tape")
@op("migrate")
def op_to_tape(ctx, step) -> Work:
    """copy_to_tape (Fig. 16), or migrate: the same, then the disk backup is deleted."""
    server, key = ctx.backup(step.backup)
    answer = _making(ctx, server, step.as_, step.op, key, step.media, list(step.pre), list(step.post))
    return _work(answer, row=answer["row"])


@op("lose_catalog")
def op_lose_catalog(ctx, step) -> Work:
    return _work(ctx.san.call(step.server, "lose_catalog"))


@op("rebuild_catalog")
def op_rebuild_catalog(ctx, step) -> Work:
    sources = list(step.from_) if step.from_ is not None else None
    answer = ctx.san.call(step.server, "rebuild_catalog", sources)
    return _work(answer, added=answer["added"], dropped=answer["dropped"], skipped=answer["skipped"])


@op("expect_catalog")
def op_expect_catalog(ctx, step) -> Work:
    rows = ctx.san.call(step.server, "catalog_rows")
    wanted = [{k: None if v is None else str(v) for k, v in row.items()} for row in (step.rows or [])]
    if len(rows) != step.count:
        raise SanError("CATALOG_MISMATCH", f"{step.server} has {len(rows)} catalog rows, "
                                           f"expected {step.count}")
    if not _match(wanted, rows):
        raise SanError("CATALOG_MISMATCH", f"{step.server}'s rows do not match the {len(wanted)} "
                                           f"expected (each to a different row): {wanted}")
    return Work(result={"rows": rows})


def _match(wanted: list[dict], rows: list[dict]) -> bool:
    """Whether each partial row matches a different row (a small bipartite matching)."""
    def fits(part, row):
        return all(row.get(k) == v for k, v in part.items())

    def assign(i, used):
        if i == len(wanted):
            return True
        return any(assign(i + 1, used | {j}) for j, row in enumerate(rows)
                   if j not in used and fits(wanted[i], row))
    return assign(0, frozenset())


@op("fault")
def op_fault(ctx, step) -> Work:
    """Strike now, or with ``when`` once another step of the concurrent has moved so many
    bytes (`san.strike`): then the result also says after how many."""
    when = getattr(step, "when", None)
    if when is None:
        return Work(result=_fire(ctx, step))
    meter = getattr(ctx.scope, "meters", {}).get(when.step)
    if meter is None:
        raise SanError("INVALID_INPUT", f"fault when: no step titled {when.step!r} runs beside "
                                        "this fault in its concurrent step")
    return Work(result=strike(ctx, meter, when.after, lambda: _fire(ctx, step)))


def _fire(ctx, step) -> dict:
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
    elif kind == "corrupt":     # the result says where, and how many bytes rotted
        if element == "array" and step.volume is not None:
            flipped = san.call(target, "corrupt", step.volume, step.offset or 0, 1)
            return {"kind": kind, "target": target, "volume": step.volume,
                    "offset": step.offset or 0, "flipped_bytes": flipped}
        if element == "tape_library" and step.media is not None:
            flipped = san.call(target, "corrupt", step.media, step.offset or 0, 1)
            return {"kind": kind, "target": target, "media": step.media,
                    "offset": step.offset or 0, "flipped_bytes": flipped}
        raise SanError("INVALID_INPUT", "corrupt takes an array and a volume, or a tape "
                                        f"library and a medium (got target {target!r})")
    return {"kind": kind, "target": target}


@op("scrub")
def op_scrub(ctx, step) -> Work:
    """Read and verify every written granule of a volume (or of the whole array); the bad
    ranges are the result.  Nothing moves over a link: the checked bytes are charged on the
    array's copy engine, and `bytes` stays 0."""
    found = ctx.san.call(step.array, "scrub", step.volume)
    result = {"checked_bytes": found["checked_bytes"], "bad": found["bad"]}
    chains = [[Transfer((f"{step.array}/copy",), found["checked_bytes"], counted=False)]] \
        if found["checked_bytes"] else []
    if step.expect_bad is not None and len(found["bad"]) != step.expect_bad:
        where = f"{step.array} volume {step.volume}" if step.volume is not None else step.array
        raise SanError("VERIFY_MISMATCH", f"scrub of {where} found {len(found['bad'])} bad "
                                          f"range(s), expected {step.expect_bad}: {found['bad']}")
    return Work(chains, 0, result)


@op("advance_clock")
def op_advance_clock(ctx, step) -> Work:
    """Move the clock; every scheduled definition falling due runs then, in time order (ties
    by name), stamped with its due time.  A due time an earlier step's modeled time carried
    the clock past (since the last `advance_clock`) runs first, late, at the current time.
    A run that fails, or a server that is down, does not stop the others, nor the clock: the
    step then fails with the first error, and what ran is in its result."""
    try:
        end = ctx.clock.now + dt.timedelta(seconds=step.by)
    except OverflowError:
        end = None
    if end is None or not in_clock_range(end):     # before any scheduled backup runs
        raise SanError("INVALID_INPUT", f"advance_clock by {step.by:g} s: the simulated clock, at "
                                        f"{ctx.clock.stamp()}, cannot move that far: it stays "
                                        f"{CLOCK_RANGE}")
    chains, moved, ran, failed = [], 0, [], []
    due = _due(ctx, ctx.clock.scheduled, end, ran, failed)
    while due:
        moment, name, schedule = heapq.heappop(due)
        if moment > ctx.clock.now:
            ctx.clock.set(moment)
        entry = {"definition": name, "at": ctx.clock.stamp()}
        if moment < ctx.clock.now:
            entry["due"] = format_time(moment)
        try:
            work = _run_backup(ctx, name, None)
        except SanError as exc:
            failed.append(exc)
            ran.append({**entry, "error": exc.to_dict()})
        else:
            chains += work.chains
            moved += work.bytes
            ran.append({**entry, "row": work.result["row"]})
        after = schedule.next_after(moment, ctx.san.topology.start)
        if after is not None and after <= end:
            heapq.heappush(due, (after, name, schedule))
    ctx.clock.set(max(end, ctx.clock.now))
    ctx.clock.set_scheduled(end)
    result = {"now": ctx.clock.stamp(), "ran": ran}
    if failed:
        error = SanError(failed[0].code, f"{len(failed)} of {len(ran)} scheduled backups failed; "
                                         f"the first: {failed[0].message}")
        error.partial = {"result": result, "chains": chains, "bytes": moved, "clock_set": True}
        raise error
    return Work(chains, moved, result, clock_set=True)


def _due(ctx, since: dt.datetime, end: dt.datetime, ran: list, failed: list) -> list:
    """A heap of (first due time after `since` and at or before `end`, definition, its
    schedule), one per scheduled definition.  A definition whose server cannot say (down)
    goes by its schedule as last known (the topology's, a `define` step's, its server's
    last answer): its runs fall due and fail then, each at its time, and one with no
    schedule is not a run at all.  One whose schedule was never known is a failed run now
    (in `ran` and `failed`).  The others still run."""
    heap = []
    for name, server in sorted(ctx.definitions.items()):
        try:
            schedule = ctx.san.call(server, "schedule_of", name)
            ctx.schedules[name] = schedule
        except SanError as exc:
            if exc.code != "ELEMENT_DOWN":
                raise
            if name not in ctx.schedules:
                failed.append(exc)
                ran.append({"definition": name, "at": ctx.clock.stamp(), "error": exc.to_dict()})
                continue
            schedule = ctx.schedules[name]
        if schedule is None:
            continue
        moment = schedule.next_after(since, ctx.san.topology.start)
        if moment is not None and moment <= end:
            heap.append((moment, name, schedule))
    heapq.heapify(heap)
    return heap
