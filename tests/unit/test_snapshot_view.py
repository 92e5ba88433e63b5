"""`san.snapshot_view`: where an interval's bytes are, which epochs need them, and the view's
refusals (bad reads, writes, a deleted or broken snapshot), each with the value it refuses.

The reads themselves (copy-on-write, redirect-on-write, scrub, digest) are exercised with the
engine in test_snapshots.py; this module holds the view's own small rules.
"""
import numpy as np
import pytest

from san.errors import SanError
from san.snapshot_view import IN_ALT, IN_HOME, ZERO, _Source, place_slot, slot_place
from san.storage import ALT, HOME

from .test_snapshots import G, Array, rand_bytes


def test_a_place_and_its_slot_name_each_other_and_pool_slots_name_no_place():
    assert (place_slot(HOME), place_slot(ALT)) == (IN_HOME, IN_ALT)
    assert (slot_place(IN_HOME), slot_place(IN_ALT)) == (HOME, ALT)
    assert [slot_place(s) for s in (ZERO, 0, 7)] == [None, None, None]
    assert len({ZERO, IN_HOME, IN_ALT}) == 3 and max(ZERO, IN_HOME, IN_ALT) < 0   # never a pool slot


@pytest.mark.parametrize("live, lo, hi, needed", [
    ([], 0, 10, False),
    ([3], 0, 3, True),          # (lo, hi]: hi included
    ([3], 3, 5, False),         # lo excluded
    ([2, 8], 3, 7, False),
    ([2, 5, 8], 3, 7, True),
])
def test_an_interval_is_needed_by_a_live_epoch_inside_it(live, lo, hi, needed):
    src = _Source(0)
    src.live = live
    assert src.needed(lo, hi) is needed


def test_locate_reads_the_source_after_the_last_saving_write_and_the_interval_before_it():
    src = _Source(0)
    src.cow[4] = [(0, 2, 11), (2, 5, ZERO)]      # epochs 1-2 saw slot 11; 3-5 saw zeros
    assert [src.locate(4, e) for e in (1, 2, 3, 5, 6)] == [11, 11, ZERO, ZERO, None]
    assert src.locate(9, 1) is None and src.w(4) == 5 and src.w(9) == 0
    src.cow[5] = [(3, 5, 12)]                    # epochs 1-3 were never kept: a broken snapshot's
    with pytest.raises(SanError) as info:
        src.locate(5, 2)
    assert info.value.code == "POOL_FULL" and "granule 5 of snapshot epoch 2" in info.value.message


@pytest.fixture
def view(tmp_path):
    arr = Array(tmp_path, {0: 8 * G})
    arr.write(0, 0, rand_bytes(np.random.default_rng(1), 8 * G))
    arr.eng.create(0, 1)
    return arr, arr.eng.view(1)


@pytest.mark.parametrize("offset, length, code, shows", [
    (100, 512, "INVALID_INPUT", "offset 100, length 512 is not aligned to 512"),
    (0, 700, "INVALID_INPUT", "offset 0, length 700 is not aligned"),
    (0, 8 * G + 512, "LBA_OUT_OF_RANGE", f"length {8 * G + 512} is outside the volume of {8 * G}"),
    (-512, 512, "LBA_OUT_OF_RANGE", "offset -512"),
])
def test_a_bad_read_is_refused_with_its_values(view, offset, length, code, shows):
    _, v = view
    with pytest.raises(SanError) as info:
        v.read(offset, length)
    assert info.value.code == code and shows in info.value.message


def test_a_view_is_read_only_and_reads_nothing_once_its_snapshot_is_deleted(view):
    arr, v = view
    before = arr.stores[0].read(0, 8 * G)
    for call in (lambda: v.write(0, np.zeros(512, np.uint8)), lambda: v.discard(0, 512)):
        with pytest.raises(SanError) as info:
            call()
        assert info.value.code == "READ_ONLY" and "volume 1 is a snapshot of volume 0" in info.value.message
    assert np.array_equal(arr.stores[0].read(0, 8 * G), before) and np.array_equal(v.read(0, 8 * G), before)
    assert v.read(0, 0).size == 0 and v.n_granules == 8 and v.bytes_stored == 8 * G
    arr.eng.delete(1)
    with pytest.raises(SanError) as info:
        v.read(0, 512)
    assert info.value.code == "NO_SUCH_VOLUME" and "snapshot volume 1 no longer exists" in info.value.message
