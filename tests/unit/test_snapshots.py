"""Copy-on-write snapshots (san.snapshots) against a plain numpy reference model; no Ray."""
from __future__ import annotations

import os
import pathlib
import random
import struct
import tempfile
import threading
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from san.digest import digest_of
from san.errors import SanError
from san.pool import GranulePool
from san.snapshots import SnapshotEngine
from san.storage import ALT, HOME, VolumeStore

KiB, MiB, TiB = 1 << 10, 1 << 20, 1 << 40
G = 4 * KiB


def rand_bytes(rng, n) -> np.ndarray:
    return rng.integers(1, 256, n, dtype=np.uint8)


def journal_record(kind, *fields) -> bytes:
    """A snapshots.log record as documented, written independently of the engine: 8
    little-endian int64 (kind, 6 fields, CRC-32 of the first 56 bytes)."""
    body = struct.pack("<7q", kind, *fields, *(0,) * (6 - len(fields)))
    return body + struct.pack("<Q", zlib.crc32(body))


class Array:
    """The array's side of the contract: before_write, then write, under one lock."""

    def __init__(self, root, sizes: dict[int, int], capacity: int | None = None, redirect: bool = True):
        self.root, self.sizes, self.capacity, self.redirect = root, dict(sizes), capacity, redirect
        self.stores: dict[int, VolumeStore] = {}
        self.lock = threading.Lock()
        self._open_stores()
        self._open_engine()

    def _open_stores(self):
        for n, size in self.sizes.items():
            self.stores[n] = VolumeStore(self.root / "vols", f"v{n}", size, G)

    def _open_engine(self):
        self.pool = GranulePool(self.root / "snap", G, self.capacity)
        self.eng = SnapshotEngine(self.root / "snap", self.pool, self.stores, redirect=self.redirect)

    def reopen(self, stores_too: bool = False):
        """What an actor restarted after a crash does: everything from disk again."""
        self.eng.close()
        self.pool.close()
        if stores_too:
            for s in self.stores.values():
                s.close()
            self._open_stores()      # same dict object: the engine holds it
        self._open_engine()

    def write(self, vol, offset, data) -> int:
        with self.lock:
            saved = self.eng.before_write(vol, offset, len(data))
            self.stores[vol].write(offset, data)
            return saved

    def discard(self, vol, offset, length) -> int:
        with self.lock:
            saved = self.eng.before_write(vol, offset, length)
            self.stores[vol].discard(offset, length)
            return saved

    def restore(self, number) -> list[int]:
        """Copy a snapshot back onto its source through the ordinary write path."""
        plan = self.eng.restore_plan(number)
        view = self.eng.view(number)
        for g in plan:
            ln = min(G, view.size - g * G)
            self.write(view.source, g * G, view.read(g * G, ln))
        return plan


# ====================================================================== reference model
class Model:
    """Sources as numpy images with a per-granule version counter; snapshots as frozen copies.

    The pool usage is exactly predictable: one slot per distinct (source, granule, version) that
    a live unbroken snapshot sees, that the source has since overwritten, and that is not zeros.
    """

    def __init__(self, arr: Array, rng: np.random.Generator):
        self.a, self.rng = arr, rng
        self.img = {n: np.zeros(s, np.uint8) for n, s in arr.sizes.items()}
        self.ver = {n: np.zeros(-(-s // G), np.int64) for n, s in arr.sizes.items()}
        self.snaps: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}   # number -> (source, img, ver)
        self.order: dict[int, list[int]] = {n: [] for n in arr.sizes}
        self.broken: set[int] = set()
        self.next_number = max(arr.sizes) + 1
        self.breaks_seen = 0

    def glen(self, vol, g):
        return min(G, len(self.img[vol]) - g * G)

    def gslice(self, vol, g):
        return slice(g * G, g * G + self.glen(vol, g))

    def expected_slots(self) -> set[tuple[int, int, int]]:
        out = set()
        for n, (vol, img, ver) in self.snaps.items():
            if n in self.broken:
                continue
            for g in np.flatnonzero(ver != self.ver[vol]).tolist():
                if img[self.gslice(vol, g)].any():
                    out.add((vol, g, int(ver[g])))
        return out

    def saves_needed(self, vol, granules) -> int:
        need = set()
        for n, (v, img, ver) in self.snaps.items():
            if v != vol or n in self.broken:
                continue
            for g in granules:
                if ver[g] == self.ver[vol][g] and self.img[vol][self.gslice(vol, g)].any():
                    need.add(g)
        return len(need)

    def _guarded(self, vol, granules, apply, do):
        """Run one write/discard; check breaking happens exactly when the pool overflows."""
        used_before = self.a.pool.used_bytes
        needed = self.saves_needed(vol, granules)
        before = {n for n in self.snaps if n not in self.broken}
        saved = do()
        apply()
        for g in granules:
            self.ver[vol][g] += 1
        newly = {n for n in before if self.a.eng.is_broken(n)}
        if self.a.capacity is None or used_before + needed * G <= self.a.capacity:
            assert not newly, f"snapshots {newly} broke although the pool had room"
            assert saved == needed * G
        for n in newly:        # only snapshots that needed an overwritten granule may break
            assert self.snaps[n][0] == vol
        self.broken |= newly
        self.breaks_seen += len(newly)

    def write(self, vol, offset, data):
        g0, g1 = offset // G, (offset + len(data) - 1) // G

        def apply():
            self.img[vol][offset: offset + len(data)] = data
        self._guarded(vol, range(g0, g1 + 1), apply, lambda: self.a.write(vol, offset, data))

    def discard_granules(self, vol, ga, gb):
        offset, end = ga * G, min((gb + 1) * G, len(self.img[vol]))

        def apply():
            self.img[vol][offset:end] = 0
        self._guarded(vol, range(ga, gb + 1), apply, lambda: self.a.discard(vol, offset, end - offset))

    def create(self, vol) -> int:
        n = self.next_number
        self.next_number += 1
        view = self.a.eng.create(vol, n)
        assert (view.number, view.source, view.size, view.granule) == (n, vol, len(self.img[vol]), G)
        self.snaps[n] = (vol, self.img[vol].copy(), self.ver[vol].copy())
        self.order[vol].append(n)
        return n

    def delete(self, n):
        self.a.eng.delete(n)
        vol = self.snaps.pop(n)[0]
        self.order[vol].remove(n)
        self.broken.discard(n)

    def restore(self, n):
        vol, img, _ = self.snaps[n]
        cur = self.img[vol]
        want = [g for g in range(len(self.ver[vol])) if not np.array_equal(img[self.gslice(vol, g)], cur[self.gslice(vol, g)])]
        plan = self.a.eng.restore_plan(n)
        assert plan == want
        view = self.a.eng.view(n)
        for g in plan:
            self.write(vol, g * G, view.read(g * G, self.glen(vol, g)))
        if n not in self.broken:
            assert np.array_equal(self.img[vol], img)
            assert np.array_equal(self.a.stores[vol].read(0, len(img)), img)
            assert self.a.eng.restore_plan(n) == []

    def check(self, full: bool = True):
        eng, pool = self.a.eng, self.a.pool
        exp = self.expected_slots()
        assert pool.used_bytes == len(exp) * G
        for vol in self.img:
            assert eng.pool_bytes_of(vol) == sum(1 for v, _, _ in exp if v == vol) * G
            assert eng.snapshots_of(vol) == self.order[vol]
            assert np.array_equal(self.a.stores[vol].read(0, len(self.img[vol])), self.img[vol])
        assert sorted(eng.snapshots()) == sorted(self.snaps)
        for n, (vol, img, _) in self.snaps.items():
            assert eng.is_snapshot(n) and eng.source_of(n) == vol
            assert eng.is_broken(n) == (n in self.broken)
            view = eng.view(n)
            if n in self.broken:
                with pytest.raises(SanError) as ei:
                    view.read(0, 512)
                assert ei.value.code == "POOL_FULL"
                continue
            if full:
                assert np.array_equal(view.read(0, len(img)), img)
                nz = {g for g in range(len(self.ver[vol])) if img[self.gslice(vol, g)].any()}
                assert nz <= set(view.written_granules())
            o = int(self.rng.integers(0, len(img) // 512)) * 512
            ln = int(self.rng.integers(0, (len(img) - o) // 512 + 1)) * 512
            assert np.array_equal(view.read(o, ln), img[o:o + ln])

    # one random step
    def step(self):
        r = self.rng.random()
        vols = sorted(self.img)
        vol = vols[int(self.rng.integers(len(vols)))]
        size = len(self.img[vol])
        if r < 0.45:
            if self.rng.random() < 0.3:      # whole, aligned granules
                g = int(self.rng.integers(0, -(-size // G)))
                k = int(self.rng.integers(1, 4))
                offset, end = g * G, min((g + k) * G, size)
            else:                              # anything 512-aligned, partial granules included
                offset = int(self.rng.integers(0, size // 512)) * 512
                end = min(size, offset + int(self.rng.integers(1, 3 * G // 512 + 1)) * 512)
            n = end - offset
            data = np.zeros(n, np.uint8) if self.rng.random() < 0.15 else rand_bytes(self.rng, n)
            self.write(vol, offset, data)
        elif r < 0.50:
            ng = -(-size // G)
            ga = int(self.rng.integers(0, ng))
            self.discard_granules(vol, ga, min(ng - 1, ga + int(self.rng.integers(0, 3))))
        elif r < 0.68:
            self.create(vol)
        elif r < 0.80 and self.snaps:
            self.delete(random.Random(int(self.rng.integers(1 << 30))).choice(sorted(self.snaps)))
        elif r < 0.88:
            live = sorted(n for n in self.snaps if n not in self.broken)
            if live:
                self.restore(live[int(self.rng.integers(len(live)))])
        elif r < 0.93:
            self.a.reopen(stores_too=self.rng.random() < 0.5)
        self.check(full=self.rng.random() < 0.3)


SIZES = {0: 64 * KiB, 1: 50 * KiB + 512}      # volume 1 ends with a short granule


@pytest.mark.parametrize("redirect", [True, False], ids=["redirect", "copy"])
@pytest.mark.parametrize("seed,capacity", [(1, None), (2, None), (3, None), (4, 6 * G), (5, 10 * G), (6, 3 * G)])
def test_random_operations_match_the_model(tmp_path, seed, capacity, redirect):
    arr = Array(tmp_path, SIZES, capacity, redirect)
    m = Model(arr, np.random.default_rng(seed))
    for vol in SIZES:                          # start from non-empty volumes
        m.write(vol, 0, rand_bytes(m.rng, SIZES[vol]))
    for _ in range(220):
        m.step()
    arr.reopen(stores_too=True)
    m.check(full=True)
    if capacity is not None and capacity <= 6 * G:
        assert m.breaks_seen > 0               # the small pools really overflowed


class SnapshotMachine(RuleBasedStateMachine):
    """The same model, explored (and shrunk) by hypothesis."""

    def __init__(self):
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.arr = Array(pathlib.Path(self.tmp.name), {0: 32 * KiB, 1: 18 * KiB + 512}, capacity=5 * G)
        self.m = Model(self.arr, np.random.default_rng(0))

    def teardown(self):
        self.arr.eng.close()
        self.arr.pool.close()
        for s in self.arr.stores.values():
            s.close()
        self.tmp.cleanup()

    @rule(vol=st.sampled_from([0, 1]), blk=st.integers(0, 63), nblk=st.integers(1, 20), zero=st.booleans(),
          fill=st.integers(1, 255))
    def write(self, vol, blk, nblk, zero, fill):
        size = len(self.m.img[vol])
        offset = min(blk * 512, size - 512)
        n = min(nblk * 512, size - offset)
        self.m.write(vol, offset, np.full(n, 0 if zero else fill, np.uint8))

    @rule(vol=st.sampled_from([0, 1]))
    def create(self, vol):
        self.m.create(vol)

    @precondition(lambda self: self.m.snaps)
    @rule(i=st.integers(0, 1000))
    def delete(self, i):
        self.m.delete(sorted(self.m.snaps)[i % len(self.m.snaps)])

    @precondition(lambda self: any(n not in self.m.broken for n in self.m.snaps))
    @rule(i=st.integers(0, 1000))
    def restore(self, i):
        live = sorted(n for n in self.m.snaps if n not in self.m.broken)
        self.m.restore(live[i % len(live)])

    @rule(stores_too=st.booleans())
    def reopen(self, stores_too):
        self.arr.reopen(stores_too)

    @invariant()
    def matches(self):
        self.m.check(full=True)


TestSnapshotMachine = SnapshotMachine.TestCase
TestSnapshotMachine.settings = settings(max_examples=25, stateful_step_count=25, deadline=None,
                                        suppress_health_check=list(HealthCheck))


# ====================================================================== costs
def _create_many(tmp_path, size, n=1024):
    arr = Array(tmp_path, {0: size})
    reads = []
    orig = arr.stores[0].read
    arr.stores[0].read = lambda *a: reads.append(a) or orig(*a)
    for i in range(n):
        arr.eng.create(0, 1 + i)
    assert reads == [] and arr.pool.used_bytes == 0
    return arr, arr.eng.journal_records


def test_1024_snapshots_are_cheap_and_o1(tmp_path):
    small, records_small = _create_many(tmp_path / "small", 1 * MiB)
    big, records_big = _create_many(tmp_path / "big", 1 * TiB)
    # O(1) in the volume size: no data read, no pool used, the same journal for both
    assert records_small == records_big
    assert big.eng.snapshots_of(0) == list(range(1, 1025))
    assert all(big.eng.view(n).read(TiB - 4 * G, 4 * G).sum() == 0 for n in (1, 512, 1024))
    # the first write after 1024 snapshots saves one granule for all of them; later ones nothing
    data = rand_bytes(np.random.default_rng(0), G)
    assert big.write(0, 7 * G, data) == 0                        # the old content was zeros: a marker
    assert big.write(0, 7 * G, rand_bytes(np.random.default_rng(1), G)) == 0
    small.write(0, 0, data)
    assert small.pool.used_bytes == 0                            # it was zeros for all 1024: a marker
    small.eng.create(0, 5000)
    assert small.write(0, 512, rand_bytes(np.random.default_rng(2), 1024)) == G
    assert small.pool.used_bytes == G
    assert np.array_equal(small.eng.view(5000).read(0, G), data)
    assert not small.eng.view(1024).read(0, G).any()


def test_first_write_after_snapshots_saves_one_granule_once(tmp_path):
    arr = Array(tmp_path, {0: 64 * KiB})
    rng = np.random.default_rng(7)
    base = rand_bytes(rng, 64 * KiB)
    arr.write(0, 0, base)
    for i in range(10):
        arr.eng.create(0, 100 + i)
    assert arr.write(0, 3 * G + 512, rand_bytes(rng, 1024)) == G     # partial write: whole granule saved
    assert arr.pool.used_bytes == G
    assert arr.write(0, 3 * G, rand_bytes(rng, G)) == 0              # later writes cost nothing
    assert arr.write(0, 3 * G + 2048, rand_bytes(rng, 512)) == 0
    assert arr.pool.used_bytes == G
    assert arr.write(0, 3 * G, rand_bytes(rng, 2 * G)) == G          # granule 4 is new work
    assert arr.pool.used_bytes == 2 * G
    for i in range(10):
        assert np.array_equal(arr.eng.view(100 + i).read(0, 64 * KiB), base)
    arr.eng.create(0, 200)                                            # a new generation: saves again
    assert arr.write(0, 3 * G, rand_bytes(rng, G)) == G
    assert arr.pool.used_bytes == 3 * G


def test_delete_frees_exactly_what_only_that_snapshot_used(tmp_path):
    arr = Array(tmp_path, {0: 64 * KiB}, redirect=False)   # the pool's slots
    rng = np.random.default_rng(3)
    v0 = rand_bytes(rng, 64 * KiB)
    arr.write(0, 0, v0)
    arr.eng.create(0, 1)                         # A
    arr.write(0, 0, rand_bytes(rng, G))          # g0 saved for A
    arr.eng.create(0, 2)                         # B
    arr.write(0, 0, rand_bytes(rng, G))          # g0 saved again, for B only
    arr.write(0, G, rand_bytes(rng, G))          # g1 saved once, shared by A and B
    assert arr.pool.used_bytes == 3 * G
    assert arr.eng.pool_bytes_of(0) == 3 * G
    arr.eng.delete(2)
    assert arr.pool.used_bytes == 2 * G          # only B's g0 went
    assert np.array_equal(arr.eng.view(1).read(0, 64 * KiB), v0)
    arr.eng.create(0, 3)
    arr.write(0, 0, rand_bytes(rng, G))
    assert arr.pool.used_slots() == [0, 1, 2]    # the freed slot is reused, lowest first
    arr.reopen()
    assert arr.pool.used_bytes == 3 * G and arr.eng.snapshots_of(0) == [1, 3]
    arr.eng.delete(1)
    assert arr.pool.used_bytes == G              # what C (3) needs: its g0
    arr.eng.delete(3)
    assert arr.pool.used_bytes == 0 and arr.eng.snapshots_of(0) == []
    with pytest.raises(SanError) as ei:
        arr.eng.view(1)
    assert ei.value.code == "NO_SUCH_VOLUME"


def test_pool_full_breaks_the_snapshots_not_the_write(tmp_path):
    arr = Array(tmp_path, {0: 64 * KiB, 1: 64 * KiB}, capacity=2 * G + 100)   # rounds down to 2 slots
    rng = np.random.default_rng(4)
    a0, a1 = rand_bytes(rng, 64 * KiB), rand_bytes(rng, 64 * KiB)
    arr.write(0, 0, a0)
    arr.write(1, 0, a1)
    arr.eng.create(0, 10)
    arr.eng.create(1, 11)
    assert arr.write(1, 0, rand_bytes(rng, G)) == G             # B (11) holds one slot
    new = rand_bytes(rng, 3 * G)
    arr.write(0, 0, new)                                         # needs 3 saves, 1 slot left
    assert np.array_equal(arr.stores[0].read(0, 3 * G), new)     # the host write succeeded
    assert arr.eng.is_broken(10) and not arr.eng.is_broken(11)
    for call in (lambda v: v.read(0, 512), lambda v: v.digest(), lambda v: arr.eng.restore_plan(10)):
        with pytest.raises(SanError) as ei:
            call(arr.eng.view(10))
        assert ei.value.code == "POOL_FULL"
    assert np.array_equal(arr.eng.view(11).read(0, 64 * KiB), a1)
    assert arr.pool.used_bytes == G                              # A's slot was given back
    arr.eng.create(0, 12)                                        # a new snapshot works again
    assert arr.write(0, 5 * G, rand_bytes(rng, G)) == G
    arr.reopen()
    assert arr.eng.is_broken(10) and arr.eng.snapshots_of(0) == [10, 12]
    arr.eng.delete(10)
    assert arr.eng.snapshots_of(0) == [12] and arr.pool.used_bytes == 2 * G


def test_zero_pool_and_unwritten_granules(tmp_path):
    arr = Array(tmp_path, {0: 64 * KiB}, capacity=0)
    arr.eng.create(0, 1)
    assert arr.write(0, 0, rand_bytes(np.random.default_rng(0), 8 * G)) == 0   # zeros: markers only
    assert not arr.eng.is_broken(1) and arr.pool.used_bytes == 0
    assert not arr.eng.view(1).read(0, 64 * KiB).any()
    assert arr.eng.view(1).written_granules() == [] and arr.eng.view(1).extents() == []
    arr.eng.create(0, 2)
    arr.write(0, 0, np.ones(512, np.uint8))                      # g0 had data: no room, 2 breaks
    assert arr.eng.is_broken(2) and not arr.eng.is_broken(1)


def test_view_digest_equals_the_store_digest_of_the_same_content(tmp_path):
    size = 600 * KiB                              # 3 digest blocks, the last one short
    arr = Array(tmp_path, {0: size})
    rng = np.random.default_rng(5)
    img = np.zeros(size, np.uint8)
    for off in (0, 100 * KiB, 300 * KiB, 596 * KiB):
        d = rand_bytes(rng, 4 * KiB)
        arr.write(0, off, d)
        img[off: off + len(d)] = d
    arr.eng.create(0, 1)
    for off in (0, 64 * KiB, 300 * KiB + 512, 512 * KiB):
        arr.write(0, off, rand_bytes(rng, 8 * KiB))
    view = arr.eng.view(1)
    fresh = VolumeStore(tmp_path / "fresh", "f", size, G)
    for start, ln in view.extents():
        fresh.write(start, view.read(start, ln))
    assert np.array_equal(view.read(0, size), img)
    assert view.digest() == fresh.digest() == digest_of(img)
    assert view.written_granules() == fresh.written_granules()
    assert view.digest() != arr.stores[0].digest()


def test_errors_for_unknown_numbers_and_bad_requests(tmp_path):
    arr = Array(tmp_path, {0: 64 * KiB})
    eng = arr.eng
    for call in (lambda: eng.view(7), lambda: eng.source_of(7), lambda: eng.delete(7),
                 lambda: eng.is_broken(7), lambda: eng.restore_plan(7), lambda: eng.create(9, 7)):
        with pytest.raises(SanError) as ei:
            call()
        assert ei.value.code == "NO_SUCH_VOLUME"
    assert not eng.is_snapshot(7) and eng.snapshots_of(9) == [] and eng.pool_bytes_of(9) == 0
    view = eng.create(0, 1)
    for call, code in ((lambda: eng.create(0, 1), "INVALID_INPUT"), (lambda: eng.create(0, 0), "INVALID_INPUT"),
                       (lambda: eng.create(1, 2), "INVALID_INPUT"), (lambda: view.write(0, b"\0" * 512), "READ_ONLY"),
                       (lambda: view.discard(0, 512), "READ_ONLY"), (lambda: view.read(1, 512), "INVALID_INPUT"),
                       (lambda: view.read(64 * KiB - 512, 1024), "LBA_OUT_OF_RANGE"),
                       (lambda: eng.before_write(0, 64 * KiB, 512), "LBA_OUT_OF_RANGE")):
        with pytest.raises(SanError) as ei:
            call()
        assert ei.value.code == code
    eng.delete(1)
    with pytest.raises(SanError) as ei:
        view.read(0, 512)
    assert ei.value.code == "NO_SUCH_VOLUME"


def test_restore_keeps_newer_snapshots_intact(tmp_path):
    arr = Array(tmp_path, {0: 64 * KiB})
    rng = np.random.default_rng(6)
    old = rand_bytes(rng, 64 * KiB)
    arr.write(0, 0, old)
    arr.eng.create(0, 1)
    arr.write(0, 2 * G, rand_bytes(rng, 3 * G))
    arr.write(0, 10 * G + 512, np.zeros(512, np.uint8))
    mid = arr.stores[0].read(0, 64 * KiB)
    arr.eng.create(0, 2)
    assert arr.eng.restore_plan(1) == [2, 3, 4, 10]
    assert arr.eng.restore_plan(2) == []
    assert arr.restore(1) == [2, 3, 4, 10]
    assert np.array_equal(arr.stores[0].read(0, 64 * KiB), old)
    assert np.array_equal(arr.eng.view(2).read(0, 64 * KiB), mid)
    assert arr.eng.restore_plan(1) == [] and arr.eng.restore_plan(2) == [2, 3, 4, 10]
    assert arr.eng.restore_plan(2, exact=False) == [2, 3, 4, 10]


def test_reopen_replays_and_ignores_a_torn_last_record(tmp_path):
    arr = Array(tmp_path, {0: 64 * KiB})
    rng = np.random.default_rng(8)
    base = rand_bytes(rng, 64 * KiB)
    arr.write(0, 0, base)
    arr.eng.create(0, 1)
    arr.write(0, 0, rand_bytes(rng, 2 * G))
    arr.eng.create(0, 2)
    arr.eng.delete(2)                            # the last record
    log = tmp_path / "snap" / "snapshots.log"
    arr.eng.close()
    size = log.stat().st_size
    with open(log, "ab") as f:                   # a torn append
        f.write(b"\x07" * 30)
    arr.reopen()
    assert log.stat().st_size == size and arr.eng.snapshots_of(0) == [1]
    arr.eng.close()
    os.truncate(log, size - 20)                  # the DELETE itself torn: as if never written
    arr.reopen()
    assert arr.eng.snapshots_of(0) == [1, 2]
    assert np.array_equal(arr.eng.view(2).read(0, 64 * KiB), arr.stores[0].read(0, 64 * KiB))
    assert np.array_equal(arr.eng.view(1).read(0, 64 * KiB), base)
    arr.eng.close()
    raw = bytearray(log.read_bytes())
    raw[64 + 10] ^= 0xFF                         # damage in the middle is not a torn tail
    log.write_bytes(bytes(raw))
    with pytest.raises(SanError) as ei:
        arr.reopen()
    assert ei.value.code == "INVALID_INPUT"


def test_a_journal_in_the_documented_format_opens(tmp_path):
    """snapshots.log as san 0.2 wrote it: 64-byte records, 8 little-endian int64 (kind, 6
    fields, CRC-32 of the first 56 bytes); a header (kind b"ANSSNP01", granule), EPOCH,
    CREATE, COW (source, granule, lo, hi, slot; -1 for zeros), BROKEN, DELETE."""
    arr = Array(tmp_path, {0: 64 * KiB})
    old = rand_bytes(np.random.default_rng(14), G)
    arr.write(0, 0, np.concatenate([old, np.zeros(G, np.uint8)]))
    arr.eng.close()
    slot = arr.pool.save(old)                     # what the COW record below names
    (tmp_path / "snap" / "snapshots.log").write_bytes(b"".join([
        journal_record(0x3130504E53534E41, G),            # header
        journal_record(2, 5, 0, 1, 64 * KiB),             # CREATE snapshot 5 of volume 0, epoch 1
        journal_record(2, 6, 0, 2, 64 * KiB),             # CREATE snapshot 6, epoch 2
        journal_record(3, 0, 0, 0, 2, slot),              # COW: granule 0 for epochs (0, 2] in `slot`
        journal_record(3, 0, 1, 0, 2, -1),                # COW: granule 1 read as zeros
        journal_record(4, 6),                             # BROKEN 6
        journal_record(5, 6),                             # DELETE 6
        journal_record(1, 0, 2),                          # EPOCH of volume 0: 2
    ]))
    arr.write(0, 0, np.ones(2 * G, np.uint8))     # written after both snapshots (not journaled)
    arr.pool.close()
    arr._open_engine()
    assert arr.eng.snapshots() == [5]
    # rewritten once under the version-2 header: one record per live fact
    assert arr.eng.journal_records == 4
    assert (tmp_path / "snap" / "snapshots.log").read_bytes()[:8] == b"ANSSNP02"
    assert np.array_equal(arr.eng.view(5).read(0, 2 * G), np.concatenate([old, np.zeros(G, np.uint8)]))
    assert arr.eng.view(5).written_granules() == [0] and arr.pool.used_slots() == [slot]
    assert arr.eng.create(0, 7).number == 7 and arr.eng._sources[0].epoch == 3   # epochs go on


def test_crash_between_save_and_record_leaks_nothing(tmp_path):
    arr = Array(tmp_path, {0: 64 * KiB}, redirect=False)   # the pool's slots
    arr.write(0, 0, rand_bytes(np.random.default_rng(9), 64 * KiB))
    arr.eng.create(0, 1)
    arr.write(0, 0, np.ones(G, np.uint8))
    orphan = arr.pool.save(np.full(G, 5, np.uint8))          # saved, record never appended
    assert orphan == 1 and arr.pool.used_bytes == 2 * G
    arr.reopen()
    assert arr.pool.used_bytes == G and arr.pool.used_slots() == [0]


def test_a_pool_slot_lost_under_the_engine_breaks_its_snapshots(tmp_path):
    arr = Array(tmp_path, {0: 64 * KiB}, redirect=False)   # the pool's slots
    arr.write(0, 0, rand_bytes(np.random.default_rng(10), 64 * KiB))
    arr.eng.create(0, 1)
    arr.eng.create(0, 2)
    arr.write(0, 0, np.ones(G, np.uint8))
    arr.eng.create(0, 3)
    arr.write(0, G, np.ones(G, np.uint8))
    arr.pool.free(0)                                          # someone discarded g0's saved copy
    arr.reopen()
    assert arr.eng.is_broken(1) and arr.eng.is_broken(2) and not arr.eng.is_broken(3)


def test_journal_compaction_keeps_the_state(tmp_path):
    arr = Array(tmp_path, {0: 64 * KiB})
    arr.eng.COMPACT_MIN = 16
    rng = np.random.default_rng(11)
    arr.write(0, 0, rand_bytes(rng, 64 * KiB))
    keep = arr.eng.create(0, 1).number
    img = arr.stores[0].read(0, 64 * KiB)
    n = 2
    for i in range(200):
        arr.eng.create(0, n)
        arr.write(0, (i % 16) * G, rand_bytes(rng, G))
        arr.eng.delete(n)
        n += 1
    assert arr.eng.journal_records < 100
    used = arr.pool.used_bytes
    arr.reopen()
    assert arr.eng.snapshots_of(0) == [keep] and arr.pool.used_bytes == used == 16 * G
    assert np.array_equal(arr.eng.view(keep).read(0, 64 * KiB), img)
    arr.eng.create(0, n)                                      # epochs continue after compaction
    assert arr.write(0, 0, rand_bytes(rng, G)) == G


def test_views_read_consistently_while_the_source_is_written(tmp_path):
    arr = Array(tmp_path, {0: 256 * KiB})
    rng = np.random.default_rng(12)
    arr.write(0, 0, rand_bytes(rng, 256 * KiB))
    snaps = {}
    for k in range(3):
        snaps[arr.eng.create(0, 10 + k).number] = arr.stores[0].read(0, 256 * KiB)
        arr.write(0, k * 8 * G, rand_bytes(rng, 8 * G))
    bad, stop = [], threading.Event()

    def reader():
        r = np.random.default_rng(13)
        reads = 0
        while not stop.is_set() or reads < 50:
            n = 10 + int(r.integers(3))
            o = int(r.integers(0, 61)) * G
            try:
                if not np.array_equal(arr.eng.view(n).read(o, 4 * G), snaps[n][o:o + 4 * G]):
                    bad.append((n, o))
            except Exception as e:  # noqa: BLE001 - reported below
                bad.append(repr(e))
            reads += 1

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(300):
            arr.write(0, int(rng.integers(0, 63)) * G + 512, rand_bytes(rng, G))
            if i == 150:
                arr.eng.create(0, 20)
    finally:
        stop.set()
        t.join()
    assert bad == []


def test_pool_reopens_with_another_capacity(tmp_path):
    pool = GranulePool(tmp_path, G, None)
    slots = [pool.save(np.full(G, i + 1, np.uint8)) for i in range(5)]
    assert slots == [0, 1, 2, 3, 4] and pool.capacity is None
    pool.free(1)
    pool.free(3)
    pool.close()
    pool = GranulePool(tmp_path, G, 4 * G)
    assert pool.used_slots() == [0, 2, 4] and pool.used_bytes == 3 * G and pool.slots == 4
    assert pool.save(np.ones(10, np.uint8)) == 1
    assert pool.save(np.ones(10, np.uint8)) is None          # 4 used, cap 4 granules
    pool.free(0)
    assert pool.save(np.ones(10, np.uint8)) == 3             # free since the reopen: lowest first
    pool.free(3)
    assert pool.save(np.ones(10, np.uint8)) == 0             # then those freed since, lowest first
    assert pool.read(1)[:10].tolist() == [1] * 10 and not pool.read(1)[10:].any()
    assert pool.read(4)[0] == 5
    with pytest.raises(SanError):
        GranulePool(tmp_path, G, -1)


def test_a_freed_slot_is_reused_only_after_the_reuse_barrier(tmp_path):
    """The record that freed a slot must be on disk before another granule lands there."""
    pool = GranulePool(tmp_path, G, 3 * G)
    events = []
    pool.reuse_barrier = lambda: events.append("barrier")
    assert [pool.save(np.full(G, i + 1, np.uint8)) for i in range(3)] == [0, 1, 2]
    pool.free(1)
    pool.free(0)
    assert events == []                                      # freeing alone syncs nothing
    events.append("save")
    assert pool.save(np.full(G, 9, np.uint8)) == 0           # lowest first, once released
    assert events == ["save", "barrier"]
    assert pool.save(np.full(G, 8, np.uint8)) == 1           # already released: no barrier
    assert events == ["save", "barrier"]
    assert pool.save(np.full(G, 7, np.uint8)) is None        # cap 3


def test_the_engine_syncs_its_journal_before_a_freed_slot_is_reused(tmp_path):
    stores = {0: VolumeStore(tmp_path / "vols", "v0", 16 * G, G)}
    pool = GranulePool(tmp_path / "snap", G, None)
    eng = SnapshotEngine(tmp_path / "snap", pool, stores, redirect=False)
    seen = []
    real_sync = eng._journal.sync
    eng._journal.sync = lambda: (seen.append(eng.journal_records), real_sync())[1]
    pool.reuse_barrier = eng._journal.sync
    rng = np.random.default_rng(1)
    stores[0].write(0, rand_bytes(rng, G))
    eng.create(0, 10)
    eng.before_write(0, 0, G)                     # saves granule 0 for snapshot 10
    stores[0].write(0, rand_bytes(rng, G))
    eng.delete(10)                                # frees its slot: pending
    eng.create(0, 11)
    records = eng.journal_records
    eng.before_write(0, 0, G)                     # reuses the slot: the DELETE is synced first
    assert seen == [records]
    assert eng.view(11).read(0, G).tobytes() == stores[0].read(0, G).tobytes()


def test_a_barrier_makes_freed_slots_reusable_without_another_fsync(tmp_path):
    stores = {0: VolumeStore(tmp_path / "vols", "v0", 16 * G, G)}
    pool = GranulePool(tmp_path / "snap", G, None)
    eng = SnapshotEngine(tmp_path / "snap", pool, stores, redirect=False)
    rng = np.random.default_rng(2)
    stores[0].write(0, rand_bytes(rng, G))
    eng.create(0, 10)
    eng.before_write(0, 0, G)
    eng.delete(10)
    eng.sync()                                     # the DELETE is on disk: slot 0 is free now
    calls = []
    pool.reuse_barrier = lambda: calls.append("barrier")
    eng.create(0, 11)
    eng.before_write(0, 0, G)
    assert calls == [] and pool.used_slots() == [0]


# ====================================================================== redirect-on-write
def test_a_write_after_a_snapshot_moves_no_byte_and_keeps_the_old_one_where_it_was(tmp_path):
    arr = Array(tmp_path, {0: 16 * G})
    rng = np.random.default_rng(21)
    old = rand_bytes(rng, 16 * G)
    arr.write(0, 0, old)
    arr.eng.create(0, 1)
    new = rand_bytes(rng, 4 * G)
    assert arr.write(0, 0, new) == 4 * G               # 4 granules kept for the snapshot...
    assert arr.pool.used_slots() == []                 # ...none of them copied into the pool
    assert arr.pool.used_bytes == 4 * G and arr.eng.pool_bytes_of(0) == 4 * G   # but counted
    assert [arr.stores[0].place(g) for g in range(5)] == [ALT] * 4 + [HOME]
    assert arr.write(0, G, rand_bytes(rng, G)) == 0    # a second write keeps nothing more
    assert np.array_equal(arr.eng.view(1).read(0, 16 * G), old)
    assert arr.eng.view(1).written_granules() == list(range(16))
    arr.eng.delete(1)                                  # the places go back to the store
    assert arr.pool.used_bytes == 0 and arr.stores[0].granule_states([0])[0][2] == 0


def test_a_granule_with_a_version_kept_in_each_place_copies_the_next_into_the_pool(tmp_path):
    arr = Array(tmp_path, {0: 4 * G})
    v = [np.full(G, k, np.uint8) for k in range(1, 6)]
    arr.write(0, 0, v[0])
    arr.eng.create(0, 1)
    arr.write(0, 0, v[1])                              # v0 stays at home, v1 goes to ALT
    arr.eng.create(0, 2)
    arr.write(0, 0, v[2])                              # v1 is copied into the pool, v2 in ALT
    assert arr.pool.used_slots() == [0] and arr.stores[0].place(0) == ALT
    arr.eng.delete(1)                                  # home is free again
    arr.eng.create(0, 3)
    arr.write(0, 0, v[3])                              # v2 stays in ALT, v3 goes home
    assert arr.stores[0].place(0) == HOME and arr.pool.used_slots() == [0]
    for number, want in ((2, v[1]), (3, v[2])):
        assert np.array_equal(arr.eng.view(number).read(0, G), want)
    assert np.array_equal(arr.stores[0].read(0, G), v[3])
    arr.reopen(stores_too=True)
    arr.write(0, 0, v[4])                              # no new snapshot: in place, at home
    assert arr.stores[0].place(0) == HOME
    for number, want in ((2, v[1]), (3, v[2])):
        assert np.array_equal(arr.eng.view(number).read(0, G), want)


def test_places_count_against_the_pool_cap_and_a_full_cap_breaks_the_snapshots(tmp_path):
    arr = Array(tmp_path, {0: 8 * G}, capacity=2 * G)
    rng = np.random.default_rng(22)
    arr.write(0, 0, rand_bytes(rng, 8 * G))
    arr.eng.create(0, 1)
    arr.write(0, 0, rand_bytes(rng, 2 * G))            # two granules kept in place: the cap
    assert not arr.eng.is_broken(1) and arr.pool.used_bytes == 2 * G
    new = rand_bytes(rng, G)
    arr.write(0, 2 * G, new)                           # a third: no room, the snapshot breaks
    assert arr.eng.is_broken(1) and arr.pool.used_bytes == 0
    with pytest.raises(SanError) as e:
        arr.eng.view(1).read(0, G)
    assert e.value.code == "POOL_FULL"
    assert np.array_equal(arr.stores[0].read(2 * G, G), new)
    assert arr.stores[0].granule_states([0, 1])[0][2] == 0    # nothing held any more


def test_an_array_reopened_holds_the_places_again(tmp_path):
    arr = Array(tmp_path, {0: 4 * G})
    rng = np.random.default_rng(23)
    old = rand_bytes(rng, 4 * G)
    arr.write(0, 0, old)
    arr.eng.create(0, 1)
    arr.write(0, 0, rand_bytes(rng, 2 * G))
    arr.reopen(stores_too=True)
    assert arr.pool.used_bytes == 2 * G
    arr.eng.create(0, 2)
    last = rand_bytes(rng, 4 * G)
    arr.write(0, 0, last)          # 0, 1: ALT kept for 2, HOME for 1: copied; 2, 3: redirected
    assert np.array_equal(arr.eng.view(1).read(0, 4 * G), old)
    assert np.array_equal(arr.stores[0].read(0, 4 * G), last)
    assert arr.pool.used_slots() == [0, 1]


def test_a_crash_between_the_record_and_the_write_leaves_the_snapshot_whole(tmp_path):
    arr = Array(tmp_path, {0: 4 * G})
    rng = np.random.default_rng(24)
    old = rand_bytes(rng, 4 * G)
    arr.write(0, 0, old)
    arr.eng.create(0, 1)
    arr.eng.before_write(0, 0, G)                      # recorded; the write never came
    arr.reopen(stores_too=True)
    assert arr.stores[0].place(0) == HOME              # the old bytes, now held for snapshot 1
    arr.eng.create(0, 2)
    new = rand_bytes(rng, G)
    arr.write(0, 0, new)                               # held twice at home: the write goes to ALT
    for number in (1, 2):
        assert np.array_equal(arr.eng.view(number).read(0, 4 * G), old)
    arr.eng.delete(1)
    assert np.array_equal(arr.eng.view(2).read(0, G), old[:G])
    arr.eng.delete(2)
    assert arr.pool.used_bytes == 0 and np.array_equal(arr.stores[0].read(0, G), new)


def test_a_place_written_over_after_a_lost_delete_breaks_its_snapshot(tmp_path):
    """A power loss that drops the DELETE (and what came after it in the journal) but keeps a
    later write into the place the deleted snapshot held: the snapshot comes back, its place
    holds other bytes, and it is broken instead of failing its checksum on every read."""
    arr = Array(tmp_path, {0: 4 * G})
    rng = np.random.default_rng(25)
    arr.write(0, 0, rand_bytes(rng, 4 * G))
    arr.eng.create(0, 1)
    arr.write(0, 0, rand_bytes(rng, G))                # home kept for 1, the write in ALT
    arr.eng.sync()
    log = (tmp_path / "snap" / "snapshots.log").read_bytes()
    arr.eng.delete(1)
    arr.eng.create(0, 2)
    arr.write(0, 0, rand_bytes(rng, G))                # ALT kept for 2, the write back home
    assert arr.stores[0].place(0) == HOME
    arr.eng.close()
    (tmp_path / "snap" / "snapshots.log").write_bytes(log)   # DELETE 1, CREATE 2, ROW lost
    arr.pool.close()
    arr._open_engine()
    assert arr.eng.snapshots() == [1] and arr.eng.is_broken(1)
    assert arr.pool.used_bytes == 0 and arr.stores[0].granule_states([0])[0][2] == 0


def test_a_discard_after_a_snapshot_keeps_the_old_bytes_in_place(tmp_path):
    arr = Array(tmp_path, {0: 4 * G})
    rng = np.random.default_rng(26)
    old = rand_bytes(rng, 4 * G)
    arr.write(0, 0, old)
    arr.eng.create(0, 1)
    assert arr.discard(0, 0, 2 * G) == 2 * G
    assert not arr.stores[0].read(0, 2 * G).any()
    assert np.array_equal(arr.eng.view(1).read(0, 4 * G), old)
    new = rand_bytes(rng, G)
    arr.write(0, 0, new)                               # home is still kept: written in ALT
    assert arr.stores[0].place(0) == ALT and np.array_equal(arr.stores[0].read(0, G), new)
    assert np.array_equal(arr.eng.view(1).read(0, 4 * G), old)


def test_a_version_2_journal_in_the_documented_format_opens(tmp_path):
    """snapshots.log with a ROW record: (kind 6 for home, 7 for ALT; source, granule, lo, hi,
    and the kept bytes' XXH3-128 as two int64 halves)."""
    import xxhash

    def s64(v):
        return v - (1 << 64) if v >> 63 else v

    arr = Array(tmp_path, {0: 4 * G})
    old = rand_bytes(np.random.default_rng(27), G)
    arr.write(0, 0, old)
    arr.eng.close()
    h = xxhash.xxh3_128_intdigest(old.tobytes())
    arr.stores[0].pin(0, HOME)
    arr.stores[0].write(0, np.ones(G, np.uint8))       # in ALT, as the engine would have it
    arr.stores[0].unpin(0, HOME)
    (tmp_path / "snap" / "snapshots.log").write_bytes(b"".join([
        journal_record(int.from_bytes(b"ANSSNP02", "little"), G),
        journal_record(2, 5, 0, 1, 4 * G),                     # CREATE snapshot 5 of volume 0, epoch 1
        journal_record(6, 0, 0, 0, 1, s64(h & (2 ** 64 - 1)), s64(h >> 64)),   # ROW_HOME: granule 0
        journal_record(1, 0, 1),                               # EPOCH of volume 0: 1
    ]))
    arr.pool.close()
    arr._open_engine()
    assert arr.eng.snapshots() == [5] and arr.eng.journal_records == 3
    assert np.array_equal(arr.eng.view(5).read(0, G), old)
    assert arr.pool.used_bytes == G and arr.stores[0].granule_states([0])[0][2] == 1 << HOME
    arr.write(0, 0, np.full(G, 2, np.uint8))           # home held: stays in ALT
    assert np.array_equal(arr.eng.view(5).read(0, G), old)


def test_a_cap_reached_inside_one_write_gives_back_every_place_of_the_broken_snapshot(tmp_path):
    arr = Array(tmp_path, {0: 8 * G}, capacity=2 * G)
    rng = np.random.default_rng(28)
    arr.write(0, 0, rand_bytes(rng, 8 * G))
    arr.eng.create(0, 1)
    new = rand_bytes(rng, 4 * G)
    arr.write(0, 0, new)                               # 2 kept, the 3rd breaks the snapshot
    assert arr.eng.is_broken(1) and arr.pool.used_bytes == 0
    assert arr.stores[0].granule_states(range(4)) == [(arr.stores[0].checksum(g), arr.stores[0].place(g), 0)
                                                      for g in range(4)]      # nothing held
    assert np.array_equal(arr.stores[0].read(0, 4 * G), new)
    arr.eng.create(0, 2)                               # the space is there for the next one
    arr.write(0, 0, rand_bytes(rng, 2 * G))
    assert not arr.eng.is_broken(2) and np.array_equal(arr.eng.view(2).read(0, 4 * G), new)


# -- power-loss windows of slot reuse and of the epoch marker (found by a review) -----------------
class Fsyncs:
    """Tracks what `os.fsync` made durable: each watched file's size (or first bytes) at its
    last fsync, so a test can cut files back to it as a power loss may."""

    def __init__(self, monkeypatch, sizes=(), heads=()):
        self.size, self.head = {}, {}
        real = os.fsync

        def fsync(fd):
            real(fd)
            path = os.readlink(f"/proc/self/fd/{fd}")
            if path in sizes:
                self.size[path] = os.fstat(fd).st_size
            if path in heads:
                self.head[path] = os.pread(fd, 4 * G, 0)
        monkeypatch.setattr(os, "fsync", fsync)


def open_cow(root, redirect=False):
    stores = {0: VolumeStore(root, "vol-0", 16 * G, G)}
    pool = GranulePool(root, G, None)
    return stores, pool, SnapshotEngine(root, pool, stores, redirect=redirect)


def put(stores, engine, g, byte):
    engine.before_write(0, g * G, G)
    stores[0].write(g * G, np.full(G, byte, np.uint8))


def close_all(stores, pool, engine):
    engine.close()
    pool.close()
    for store in stores.values():
        store.close()


def test_a_slot_freed_before_a_restart_is_reused_only_once_its_delete_is_durable(tmp_path, monkeypatch):
    """A snapshot deleted (its DELETE appended, not synced), the array killed and restarted:
    the freed slot must not take new bytes before the DELETE is on disk, or a power loss
    brings the snapshot back reading them, under their valid checksum."""
    log = str(tmp_path / "snapshots.log")
    durable = Fsyncs(monkeypatch, sizes=(log,))
    stores, pool, engine = open_cow(tmp_path)
    put(stores, engine, 0, 0xAA)
    engine.create(0, 10)
    put(stores, engine, 0, 0xBB)               # 0xAA saved into pool slot 0
    engine.sync()
    stores[0].sync()
    engine.delete(10)                          # slot 0 freed; the DELETE not yet durable
    close_all(stores, pool, engine)            # killed; restarted on the same files
    stores, pool, engine = open_cow(tmp_path)
    engine.create(0, 11)
    put(stores, engine, 0, 0xCC)               # 0xBB saved: into the freed slot
    close_all(stores, pool, engine)
    os.truncate(log, durable.size[log])        # power loss: the log as last synced
    stores, pool, engine = open_cow(tmp_path)
    assert engine.snapshots() == [11]          # 10 stays deleted
    try:                                       # 11's save may be lost: broken, never wrong
        assert engine.view(11).read(0, G)[0] == 0xBB
    except SanError as exc:
        assert exc.code == "POOL_FULL"
    close_all(stores, pool, engine)


def test_no_durable_record_names_a_reused_slot_before_its_new_bytes(tmp_path, monkeypatch):
    """Every barrier of the snapshot journal (a reuse, a volume map's compaction) syncs the
    pool first: else a record naming a reused slot may reach the disk while the slot still
    holds a deleted snapshot's granule under its old, valid checksum."""
    pmap, pdata = str(tmp_path / "pool.map"), str(tmp_path / "pool.data")
    durable = Fsyncs(monkeypatch, sizes=(pmap,), heads=(pdata,))
    stores, pool, engine = open_cow(tmp_path)
    put(stores, engine, 0, 0xAA)
    put(stores, engine, 1, 0x11)
    engine.create(0, 10)
    put(stores, engine, 0, 0xBB)               # slot 0 <- 0xAA, for snapshot 10
    engine.sync()
    stores[0].sync()
    engine.delete(10)                          # slot 0 freed
    engine.create(0, 11)                       # snapshot 11 sees granule 1 = 0x11
    put(stores, engine, 1, 0x22)               # a reuse barrier, then slot 0 <- 0x11
    records = stores[0].journal_records
    while stores[0].journal_records >= records:    # rewritten until the map compacts (a barrier)
        records = stores[0].journal_records
        put(stores, engine, 1, 0x22)
    close_all(stores, pool, engine)
    os.truncate(pmap, durable.size[pmap])      # power loss: the pool as last synced
    with open(pdata, "r+b") as data:
        data.write(durable.head[pdata])
    stores, pool, engine = open_cow(tmp_path)
    assert engine.view(11).read(G, G)[0] == 0x11
    close_all(stores, pool, engine)


@pytest.mark.parametrize("compacts", [True, False], ids=["create-compacts-the-map", "no-compaction"])
def test_a_write_after_a_snapshot_whose_save_was_lost_breaks_it(tmp_path, monkeypatch, compacts):
    """The snapshot's epoch marker in its source's map lets the engine see, after a power
    loss, a write whose save record did not land; a create whose marker sets off the map's
    compaction must keep it (the compacted map ends with it), or the snapshot reads the
    later write as its own."""
    log = str(tmp_path / "snapshots.log")
    durable = Fsyncs(monkeypatch, sizes=(log,))
    stores, pool, engine = open_cow(tmp_path, redirect=True)
    store = stores[0]
    put(stores, engine, 0, 0xAA)
    put(stores, engine, 1, 0x11)
    while compacts and store.journal_records < 4 * 2 + store.COMPACT_MIN:
        put(stores, engine, 0, 0xAA)           # rewritten in place until the next record compacts
    records = store.journal_records
    engine.create(0, 10)
    assert (store.journal_records < records) == compacts
    engine.sync()
    store.sync()
    put(stores, engine, 0, 0xBB)               # after the snapshot; its save record is lost
    close_all(stores, pool, engine)
    os.truncate(log, durable.size[log])
    stores, pool, engine = open_cow(tmp_path, redirect=True)
    assert engine.is_broken(10)
    close_all(stores, pool, engine)


def allocated(path, start, length) -> bool:
    """Whether any byte of [start, start+length) of a file has disk space (is not a hole)."""
    with open(path, "rb") as f:
        try:
            return os.lseek(f.fileno(), start, os.SEEK_DATA) < start + length
        except OSError:         # ENXIO: no data from `start` to the end
            return False


@pytest.mark.parametrize("how", ["deleted", "broken"])
def test_unmapped_granules_a_snapshot_kept_are_freed_once_no_snapshot_needs_them(tmp_path, how):
    """The host unmapped them while the snapshot still read them in place: the volume is thin
    again once the snapshot is gone (deleted, or broken by a full pool).  A place a rewritten
    granule was redirected away from keeps its blocks, for the next redirect (storage.py)."""
    arr = Array(tmp_path, {0: 4 * G}, capacity=3 * G)
    rng = np.random.default_rng(28)
    arr.write(0, 0, rand_bytes(rng, 4 * G))
    arr.eng.create(0, 1)
    arr.discard(0, 0, 2 * G)                           # granules 0, 1: held at home for 1
    arr.write(0, 3 * G, rand_bytes(rng, G))            # granule 3: home held, written in ALT
    data = tmp_path / "vols" / "v0.data"
    assert allocated(data, 0, G) and allocated(data, G, G)
    new = rand_bytes(rng, G)
    if how == "deleted":
        arr.eng.delete(1)
    else:
        arr.write(0, 2 * G, new)                       # a fourth granule to keep: no room
        assert arr.eng.is_broken(1)
    assert not allocated(data, 0, 2 * G)               # nothing reaches them: given back
    assert allocated(data, 3 * G, G) and arr.stores[0].place(3) == ALT
    assert not arr.stores[0].read(0, 2 * G).any()
    assert arr.stores[0].granule_states([0, 1, 3]) == [(None, HOME, 0), (None, HOME, 0),
                                                       (arr.stores[0].checksum(3), ALT, 0)]
    if how == "broken":
        assert np.array_equal(arr.stores[0].read(2 * G, G), new)
    arr.write(0, 0, new)                               # written again: at home, a hole filled
    assert np.array_equal(arr.stores[0].read(0, G), new) and allocated(data, 0, G)


def test_a_store_reopened_after_a_kill_keeps_its_epoch_markers_until_a_barrier(tmp_path, monkeypatch):
    """A write killed half-way leaves a doubt record; if that took the journal past its
    compaction threshold, the restarted store compacted at once, durably, dropping the
    snapshot-epoch markers before the snapshot engine (not yet open) had made its saves
    durable.  A power loss then lost the save of granule 0 and left nothing to tell: the
    snapshot read the data written after it.  Now the compaction waits for the engine."""
    import san.journal as journal
    import san.storage as storage
    G = 4096
    durable = {"log": b""}           # snapshots.log as of its last fsync
    sync, rewrite = journal.Journal.sync, journal.Journal.rewrite

    def synced(self, *args, **kw):
        done = (sync if not args and not kw else rewrite)(self, *args, **kw)
        if self.path.name == "snapshots.log":
            durable["log"] = self.path.read_bytes()
        return done
    monkeypatch.setattr(journal.Journal, "sync", lambda self: synced(self))
    monkeypatch.setattr(journal.Journal, "rewrite", lambda self, *a, **k: synced(self, *a, **k))

    def open_all():
        stores = {0: VolumeStore(tmp_path, "vol-0", 16 * G, G)}
        pool = GranulePool(tmp_path, G, None)
        return stores, pool, SnapshotEngine(tmp_path, pool, stores)

    def write(stores, engine, g, byte):
        engine.before_write(0, g * G, G)
        stores[0].write(g * G, np.full(G, byte, np.uint8))

    def close(stores, pool, engine):
        for s in stores.values():
            s.close()
        pool.close()
        engine.close()

    stores, pool, engine = open_all()
    for g in range(4):
        write(stores, engine, g, 1)
    engine.create(0, 100)
    engine.sync()
    stores[0].sync()                                    # a barrier, in DiskArray.sync's order
    write(stores, engine, 0, 2)                         # saved first, not yet durably
    store = stores[0]
    while store.journal_records < 4 * len(store._map) + store.COMPACT_MIN - 1:
        write(stores, engine, 1, 3)                     # just short of a compaction

    class Killed(BaseException):
        pass

    def die(*args):
        raise Killed()
    with monkeypatch.context() as m:
        m.setattr(storage, "pwrite_all", die)
        with pytest.raises(Killed):
            write(stores, engine, 2, 4)                 # its doubt record is in the journal
    close(stores, pool, engine)
    stores, pool, engine = open_all()                   # the array restarted
    assert np.array_equal(engine.view(100).read(0, G), np.full(G, 1, np.uint8))
    close(stores, pool, engine)
    (tmp_path / "snapshots.log").write_bytes(durable["log"])    # a power loss
    stores, pool, engine = open_all()
    try:
        with pytest.raises(SanError) as info:           # the lost save is seen: broken
            engine.view(100).read(0, G)
        assert info.value.code == "POOL_FULL" and engine.is_broken(100)
    finally:
        close(stores, pool, engine)
