"""Power loss, replayed: the storage layer's writes, fsyncs and renames are recorded while it
works, then replayed onto an empty directory cut at every point, and the state dir opened.

A power loss cannot be staged on this machine (no device-mapper, no loadable modules), so the
test records every call that changes a file (`Recorder`: open with O_CREAT, pwrite, append,
truncate, fallocate, fsync, replace, unlink, mkdir) during a workload of volume writes,
discards, snapshots, snapshot deletes and barriers (`DiskArray.sync`'s order: pool,
snapshot journal, then the volumes), and replays it:

- **in order**, cut after every recorded call, and once more with the call at the cut torn
  (half of its bytes written): what the disk holds if the machine stops there.  The state dir
  must open; every volume granule must read as exactly what the last write finished before
  the cut left there, or, for the granule of the write under way, as its old content, its new
  content or CHECKSUM_MISMATCH (a torn write is never a mix that passes its checksum); every
  snapshot must read as its volume did when it was taken, or fail (CHECKSUM_MISMATCH, or
  POOL_FULL for a snapshot whose saved granules were lost).
- **out of order** between barriers, as a kernel may write back pages: after each file's last
  fsync before the cut, its later data writes are kept or dropped at random (a file's appends
  as a prefix).  What a barrier covered must all be there; a volume granule never reads as
  data no write put there; a snapshot reads as taken, or fails, or (taken since the barrier)
  as its volume held the granule at some step between the barrier and its creation: never a
  later write's data.  Copy-on-write saves a granule before the write that overwrites it
  without an fsync between them (none per write: the performance issue's baselines have
  none), so a power loss may keep the write and drop the save; the snapshot-epoch markers in
  the volume's map journal (`VolumeStore.mark`) let the engine break the snapshots that lost
  a save, and a freed pool slot is reused only after the snapshot journal is synced.
"""
from __future__ import annotations

import os
import random
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from san import fileio
from san.errors import SanError
from san.pool import GranulePool
from san.snapshots import SnapshotEngine
from san.storage import VolumeStore

G = 4096
SIZES = {0: 16 * G, 1: 8 * G + 2048}        # volume 1 ends with a short granule


# -- recording ------------------------------------------------------------------------------------
@dataclass
class Op:
    kind: str            # create pwrite append truncate punch fsync replace unlink mkdir
    path: str            # relative to the root
    offset: int = 0
    data: bytes = b""
    size: int = 0
    dest: str = ""
    step: int = -1       # index of the workload step it belongs to


class Recorder:
    """Patches the os calls the storage layer changes files with, and records them."""

    def __init__(self, root: Path, monkeypatch):
        self.root, self.ops, self.fds, self.step = Path(root), [], {}, -1
        self._real = {name: getattr(os, name) for name in
                      ("open", "close", "pwrite", "write", "fsync", "replace", "truncate",
                       "ftruncate", "unlink", "mkdir")}
        self._fallocate = fileio._fallocate
        self._lock = threading.Lock()
        for name in self._real:
            monkeypatch.setattr(os, name, getattr(self, "_" + name))
        monkeypatch.setattr(fileio, "_fallocate", self._fallocate_rec)

    def rel(self, path) -> str | None:
        try:
            return str(Path(os.fsdecode(path)).resolve().relative_to(self.root.resolve()))
        except ValueError:
            return None            # outside the state dir

    def add(self, kind, path, **kw):
        if path is not None:
            with self._lock:
                self.ops.append(Op(kind, path, step=self.step, **kw))

    def _open(self, path, flags, mode=0o777, *a, **k):
        rel = self.rel(path)
        existed = os.path.exists(path)
        fd = self._real["open"](path, flags, mode, *a, **k)
        if rel is not None:
            if flags & os.O_CREAT and not existed:
                self.add("create", rel)
            if flags & os.O_TRUNC and existed:
                self.add("truncate", rel, size=0)
            self.fds[fd] = (rel, bool(flags & os.O_APPEND))
        return fd

    def _close(self, fd):
        self.fds.pop(fd, None)
        return self._real["close"](fd)

    def _pwrite(self, fd, data, offset):
        n = self._real["pwrite"](fd, data, offset)
        if fd in self.fds:
            self.add("pwrite", self.fds[fd][0], offset=offset, data=bytes(memoryview(data)[:n]))
        return n

    def _write(self, fd, data):
        if fd in self.fds:
            rel, append = self.fds[fd]
            at = None if append else os.lseek(fd, 0, os.SEEK_CUR)
        n = self._real["write"](fd, data)
        if fd in self.fds:
            chunk = bytes(memoryview(data)[:n])
            self.add("append", rel, data=chunk) if append else self.add("pwrite", rel, offset=at, data=chunk)
        return n

    def _fsync(self, fd):
        self._real["fsync"](fd)
        if fd in self.fds:
            self.add("fsync", self.fds[fd][0])

    def _replace(self, src, dst, *a, **k):
        self._real["replace"](src, dst, *a, **k)
        self.add("replace", self.rel(src), dest=self.rel(dst))

    def _truncate(self, path, size):
        self._real["truncate"](path, size)
        self.add("truncate", self.rel(path), size=size)

    def _ftruncate(self, fd, size):
        self._real["ftruncate"](fd, size)
        if fd in self.fds:
            self.add("truncate", self.fds[fd][0], size=size)

    def _unlink(self, path, *a, **k):
        self._real["unlink"](path, *a, **k)
        self.add("unlink", self.rel(path))

    def _mkdir(self, path, mode=0o777, *a, **k):
        self._real["mkdir"](path, mode, *a, **k)
        self.add("mkdir", self.rel(path))

    def _fallocate_rec(self, fd, mode, offset, length):
        got = self._fallocate(fd, mode, offset, length)
        if fd in self.fds and mode & 0x02:       # a punched hole reads as zeros
            self.add("punch", self.fds[fd][0], offset=offset, size=length)
        return got


# -- replaying ------------------------------------------------------------------------------------
def replay(ops: list[Op], dest: Path, torn: bool = False) -> None:
    """Apply `ops` in order to an empty `dest`; with `torn`, the last one only half done."""
    dest.mkdir()
    for i, op in enumerate(ops):
        p = dest / op.path
        data = op.data
        if torn and i == len(ops) - 1 and op.kind in ("pwrite", "append"):
            data = data[: max(0, (len(data) // 2) // 512 * 512 or len(data) // 2)]
        if op.kind == "mkdir":
            p.mkdir(exist_ok=True)
        elif op.kind == "create":
            p.touch()
        elif op.kind in ("pwrite", "append"):
            with open(p, "r+b") as f:
                f.seek(op.offset if op.kind == "pwrite" else 0, 0 if op.kind == "pwrite" else 2)
                f.write(data)
        elif op.kind == "truncate":
            os.truncate(p, op.size)
        elif op.kind == "punch":
            with open(p, "r+b") as f:
                end = min(op.offset + op.size, os.fstat(f.fileno()).st_size)
                if end > op.offset:
                    f.seek(op.offset)
                    f.write(bytes(end - op.offset))
        elif op.kind == "replace":
            os.replace(p, dest / op.dest)
        elif op.kind == "unlink":
            p.unlink(missing_ok=True)


def reorder(ops: list[Op], cut: int, rnd: random.Random) -> list[Op]:
    """`ops[:cut]` as a disk may keep them: each file's data writes after its last fsync kept
    or dropped at random (its appends as a prefix); metadata and fsync-ed writes kept."""
    last_sync: dict[str, int] = {}
    for i, op in enumerate(ops[:cut]):
        if op.kind == "fsync":
            last_sync[op.path] = i
    out, dropped_appends = [], set()
    for i, op in enumerate(ops[:cut]):
        volatile = op.kind in ("pwrite", "append") and i > last_sync.get(op.path, -1)
        if volatile and op.kind == "append" and (op.path in dropped_appends or rnd.random() < 0.3):
            dropped_appends.add(op.path)
            continue
        if volatile and op.kind == "pwrite" and rnd.random() < 0.3:
            continue
        out.append(op)
    return out


# -- the workload and its model -------------------------------------------------------------------
class Array:
    """Stores, pool and engine as the array holds them, the array's order of a write."""

    def __init__(self, root: Path, redirect: bool = True):
        self.stores = {n: VolumeStore(root / "vols", f"v{n}", size, G) for n, size in SIZES.items()}
        self.pool = GranulePool(root / "snap", G, 6 * G)      # small: POOL_FULL happens
        self.eng = SnapshotEngine(root / "snap", self.pool, self.stores, redirect=redirect)

    def write(self, vol, offset, data):
        self.eng.before_write(vol, offset, len(data))
        self.stores[vol].write(offset, data)

    def discard(self, vol, offset, length):
        self.eng.before_write(vol, offset, length)
        self.stores[vol].discard(offset, length)

    def sync(self):                        # DiskArray.sync's order
        self.eng.sync()
        for s in self.stores.values():
            s.sync()

    def close(self):
        self.eng.close()
        self.pool.close()
        for s in self.stores.values():
            s.close()


def workload(arr: Array, rec: Recorder, seed: int):
    """Random writes (whole and part granules), discards, snapshots, deletes and barriers; the
    model: per step, the content of every volume after it, and which snapshots exist."""
    rnd = random.Random(seed)
    model = {n: np.zeros(size, np.uint8) for n, size in SIZES.items()}
    history, snaps, next_number = [], {}, 10
    for step in range(40):
        rec.step = step
        what = rnd.random()
        vol = rnd.choice(list(SIZES))
        size = SIZES[vol]
        if what < 0.6:
            off = rnd.randrange(0, size // 512) * 512
            n = min(size - off, rnd.choice([512, 1024, G, 2 * G, 3 * G + 512]))
            data = np.frombuffer(rnd.randbytes(n), np.uint8)
            arr.write(vol, off, data)
            model[vol][off:off + n] = data
            kind = ("write", vol, off, n)
        elif what < 0.7:
            off = rnd.randrange(0, size // G) * G
            n = min(size - off, rnd.choice([G, 2 * G]))
            arr.discard(vol, off, n)
            model[vol][off:off + n] = 0          # whole granules: they read as zeros again
            kind = ("discard", vol, off, n)
        elif what < 0.82:
            arr.eng.create(vol, next_number)
            snaps[next_number] = (vol, model[vol].copy())
            kind = ("snapshot", vol, next_number)
            next_number += 1
        elif what < 0.9 and snaps:
            number = rnd.choice(sorted(snaps))
            arr.eng.delete(number)
            del snaps[number]
            kind = ("delete", number)
        else:
            arr.sync()
            kind = ("sync",)
        history.append({"kind": kind, "model": {n: m.copy() for n, m in model.items()},
                        "snaps": dict(snaps)})
    rec.step = len(history)
    return history


def content(history, step: int, vol: int, g: int) -> bytes:
    """Granule `g` of `vol` after workload step `step` (-1: before the first)."""
    lo, hi = g * G, min((g + 1) * G, SIZES[vol])
    return bytes(hi - lo) if step < 0 else history[step]["model"][vol][lo:hi].tobytes()


def check_state(dest: Path, history, ops: list[Op], cut: int, in_order: bool, torn: bool = False) -> None:
    """Open the replayed dir and check every granule (and, in order, every snapshot).

    `done` is the step of the last call kept; it is *partial* if some of its calls come after
    the cut.  In order, each granule holds what the last finished step left, or for a partial
    step's granules the old content, the new one or CHECKSUM_MISMATCH.  Out of order, a
    granule no step touched since the last finished barrier holds exactly what it held then,
    and any other granule a content some step gave it, or CHECKSUM_MISMATCH."""
    done = max((op.step for op in ops[:cut]), default=-1)
    partial = torn or any(op.step == done for op in ops[cut:])
    finished = done - 1 if partial else done
    synced = max((i for i in range(finished + 1) if history[i]["kind"] == ("sync",)), default=-1)
    arr = Array(dest)
    try:
        for vol, store in arr.stores.items():
            for g in range(-(-SIZES[vol] // G)):
                lo, ln = g * G, min(G, SIZES[vol] - g * G)
                since = {content(history, i, vol, g) for i in range(synced, done + 1)}
                try:
                    got = store.read(lo, ln).tobytes()
                except SanError as e:
                    assert e.code == "CHECKSUM_MISMATCH", e
                    if in_order:
                        assert partial and content(history, done, vol, g) != content(history, finished, vol, g), \
                            f"cut {cut}: volume {vol} granule {g} fails its checksum, but no write was under way there"
                    else:
                        assert len(since) > 1, f"cut {cut}: volume {vol} granule {g} lost past a barrier"
                    continue
                if in_order:
                    allowed = {content(history, finished, vol, g)}
                    if partial:
                        allowed.add(content(history, done, vol, g))
                    assert got in allowed, f"cut {cut}: volume {vol} granule {g} holds neither the " \
                                           f"last finished write nor the one under way " \
                                           f"(step {done}{' partial' if partial else ''}: {history[done]['kind']})"
                else:
                    assert got in since, f"cut {cut}: volume {vol} granule {g}: lost past a barrier, " \
                                         f"or data no write put there"
        if in_order:
            taken_by = history[finished]["snaps"] if finished >= 0 else {}
            going = history[done]["snaps"] if partial else taken_by
            must = {n for n in taken_by if n in going}
        else:
            # any snapshot taken so far may be there (a dropped delete brings one back), each
            # must read as taken or fail; one a barrier covered and no step deleted must be
            taken_by = {}
            for i in range(done + 1):
                taken_by.update(history[i]["snaps"])
            must = set(history[synced]["snaps"]) if synced >= 0 else set()
            for i in range(synced + 1, done + 1):
                must &= set(history[i]["snaps"])
        taken_at = {h["kind"][2]: i for i, h in enumerate(history) if h["kind"][0] == "snapshot"}
        for number, (vol, taken) in taken_by.items():
            if not arr.eng.is_snapshot(number):
                assert number not in must, f"cut {cut}: snapshot {number} was lost"
                continue
            view = arr.eng.view(number)
            for g in range(-(-SIZES[vol] // G)):
                lo, ln = g * G, min(G, SIZES[vol] - g * G)
                try:
                    got = view.read(lo, ln).tobytes()
                except SanError as e:
                    assert e.code in ("CHECKSUM_MISMATCH", "POOL_FULL"), e
                    continue
                allowed = {taken[lo:lo + ln].tobytes()}
                if not in_order and taken_at[number] > synced:
                    # taken since the barrier: the writes before it may be lost as the volume's
                    # are, so it may show what the granule held at any step from the barrier on,
                    # up to its creation; never a later write's data
                    allowed |= {content(history, i, vol, g) for i in range(synced, taken_at[number] + 1)}
                assert got in allowed, \
                    f"cut {cut}: snapshot {number} granule {g} reads data it was not taken with"
    finally:
        arr.close()


@pytest.fixture(params=[(7, True), (17, True), (23, True), (7, False), (11, False)],
                ids=["7-redirect", "17-redirect", "23-redirect", "7-copy", "11-copy"])
def recorded(tmp_path, monkeypatch, request):
    root = tmp_path / "state"
    rec = Recorder(tmp_path, monkeypatch)
    seed, redirect = request.param
    arr = Array(root, redirect)
    history = workload(arr, rec, seed=seed)
    arr.close()
    monkeypatch.undo()
    # redirect-on-write really ran (writes into a granule's second place), or really did not
    assert any(op.kind == "pwrite" and op.path.endswith(".alt") for op in rec.ops) == redirect
    return rec.ops, history, tmp_path


def test_the_recorder_sees_every_kind_of_change_the_storage_layer_makes(recorded):
    ops, history, _ = recorded
    kinds = {op.kind for op in ops}
    assert {"mkdir", "create", "truncate", "pwrite", "append", "fsync"} <= kinds
    assert len(ops) > 80
    assert any(h["kind"] == ("sync",) for h in history) and any(h["kind"][0] == "snapshot" for h in history)


def test_a_power_loss_at_any_point_in_order_never_returns_wrong_data_nor_loses_a_finished_write(recorded):
    ops, history, tmp = recorded
    cuts = 0
    for cut in range(len(ops) + 1):
        for torn in ((False, True) if cut and ops[cut - 1].kind in ("pwrite", "append") else (False,)):
            dest = tmp / f"cut-{cut}-{int(torn)}"
            replay(ops[:cut], dest, torn)
            check_state(dest / "state", history, ops, cut, in_order=True, torn=torn)
            shutil.rmtree(dest)
            cuts += 1
    assert cuts > len(ops)


def test_a_power_loss_that_reorders_writes_between_barriers_keeps_what_a_barrier_covered(recorded):
    ops, history, tmp = recorded
    rnd = random.Random(3)
    for cut in range(0, len(ops) + 1, 3):
        kept = reorder(ops, cut, rnd)
        dest = tmp / f"reorder-{cut}"
        replay(kept, dest)
        check_state(dest / "state", history, ops, cut, in_order=False)
        shutil.rmtree(dest)


# -- the barriers: who calls them ------------------------------------------------------------------
def _fsyncs(monkeypatch) -> list[str]:
    """Patch os.fsync to record the paths it syncs (by /proc/self/fd)."""
    seen, real = [], os.fsync

    def fsync(fd):
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    return seen


def test_an_array_barrier_syncs_the_pool_the_snapshot_journal_then_every_volume(tmp_path, monkeypatch):
    from tests.unit.test_array_services import TOPO
    import textwrap
    from san.elements.disk_array import DiskArray
    from san.topology import load_topology
    (tmp_path / "t.yaml").write_text(textwrap.dedent(TOPO))
    arr = DiskArray(load_topology(tmp_path / "t.yaml").arrays[0], tmp_path / "state", granule=G)
    try:
        arr.write("h1/hba0", "fc0", 0, 0, np.ones(G, np.uint8))
        seen = _fsyncs(monkeypatch)
        arr.synchronize_cache("h1/hba0", "fc0", 0)
        names = [str(Path(p).relative_to(arr.directory)) for p in seen]
        assert names[:3] == ["pool.data", "pool.map", "snapshots.log"]
        assert names[3:-1] == [f"vol-{n}{ext}" for n in sorted(arr.stores) for ext in (".data", ".map")]
        assert names[-1] == "."                                 # the renames of table and info
        with pytest.raises(SanError) as e:                      # checked as any command
            arr.synchronize_cache("h2/hba0", "fc0", 0)
        assert e.value.code == "LUN_NOT_MAPPED"
    finally:
        arr.close()


def test_a_host_flush_and_the_end_of_every_step_are_barriers(tmp_path, monkeypatch):
    from san.flows.local import LocalSan
    from san.runner import Runner
    from tests.unit.test_strike import scenario
    sc = scenario(tmp_path, """
        - {op: write, host: host1, mount: /db, offset: 0, size: 1MiB, seed: 1}
        - {op: checkpoint, as: c, host: host1, mount: /db}
        - {op: fault, kind: kill, target: array1}
        - {op: write, host: host2, mount: /data, offset: 0, size: 1MiB, seed: 1, expect_error: ELEMENT_DOWN}
    """)
    with LocalSan(sc.topology, tmp_path / "state") as san:
        calls = []
        array = san.element("array1")
        monkeypatch.setattr(array, "sync", lambda: calls.append("sync"))
        reports = Runner(san, tmp_path / "state").run(sc.steps)
        assert all(r.ok for r in reports)
        assert calls == ["sync", "sync"]          # after steps 0 and 1; none once it is down
        calls.clear()
        san.restart("array1")
        array = san.element("array1")
        monkeypatch.setattr(array, "sync", lambda: calls.append("sync"))
        san.call("host1", "action", "/db", "flush")
        assert calls == ["sync"]
