"""The dense checksum tables behind VolumeStore.compare: equal to comparing the maps."""
import numpy as np
from hypothesis import given, settings, strategies as st

from san.checksum_table import CHUNK, ChecksumTable
from san.storage import VolumeStore, zero_checksum

G = 4096


def rows(*values):
    return np.array([[v, v + 1] for v in values], dtype=np.uint64)


def test_set_clear_and_compare_across_tables():
    a, b = ChecksumTable(), ChecksumTable()
    far = 3 * CHUNK + 7                                   # a third table, two skipped
    a.set(np.array([0, CHUNK - 1, CHUNK, far]), rows(1, 2, 3, 4))
    b.set(np.array([0, CHUNK, far]), rows(1, 9, 4))
    assert a.compare(b) == ([CHUNK - 1, CHUNK], [0, far])
    assert b.compare(a) == ([CHUNK - 1, CHUNK], [0, far])
    a.clear([far, CHUNK - 1])
    assert a.compare(b) == ([CHUNK, far], [0])
    a.clear([5 * CHUNK])                                  # a table never made: nothing to clear
    a.set(np.array([far]), rows(4))                       # written again: held again
    assert a.compare(b) == ([CHUNK], [0, far])
    assert ChecksumTable().compare(ChecksumTable()) == ([], [])
    c = ChecksumTable()                                   # any order, across tables
    c.set(np.array([far, CHUNK, 0, CHUNK - 1]), rows(4, 3, 1, 2))
    assert c.compare(a) == ([CHUNK - 1], [0, CHUNK, far])
    c.clear(np.array([far, 0]))
    assert c.compare(a) == ([0, CHUNK - 1, far], [CHUNK])
    assert a.compare(b, same=False) == ([CHUNK], [])      # the equal ones not listed


def test_a_snapshot_does_not_follow_later_changes():
    a = ChecksumTable()
    a.set(np.array([1]), rows(1))
    snap = a.snapshot()
    a.set(np.array([1, 2]), rows(7, 8))
    assert snap.compare(ChecksumTable()) == ([1], [])
    assert a.compare(snap) == ([1, 2], [])


ops = st.lists(st.tuples(st.sampled_from(["write", "discard", "reopen"]),
                         st.integers(0, 7), st.integers(1, 3), st.integers(0, 3)),
               max_size=25)


@settings(max_examples=40, deadline=None)
@given(ops_a=ops, ops_b=ops)
def test_store_compare_equals_comparing_the_maps(tmp_path_factory, ops_a, ops_b):
    """Writes, discards and reopening (the table rebuilt from the journal) on two stores that
    span several tables: `compare` answers what comparing their maps granule by granule does."""
    folder = tmp_path_factory.mktemp("cmp")
    size = 10 * CHUNK * G                                   # 10 tables' worth, thin
    stores = {"a": VolumeStore(folder, "a", size, granule=G), "b": VolumeStore(folder, "b", size, granule=G)}
    stride = CHUNK // 2 - 1                               # 8 places over 2 tables, 2047 apart
    for name, ops_ in (("a", ops_a), ("b", ops_b)):
        for op, at, n, seed in ops_:
            s = stores[name]
            g = at * stride
            n = min(n, s.n_granules - g)
            if op == "write":
                s.write(g * G, np.full(n * G, seed, np.uint8))
            elif op == "discard":
                s.discard(g * G, n * G)
            else:
                s.close()
                stores[name] = VolumeStore(folder, name, size, granule=G)
    a, b = stores["a"], stores["b"]
    ma = {g: a.checksum(g) for g in a.written_granules()}
    mb = {g: b.checksum(g) for g in b.written_granules()}
    zero = zero_checksum(G)

    def held(m, g):         # a granule written with zeros (seed 0) holds what an unwritten one does
        return None if m.get(g) in (None, zero) else m[g]
    want = (sorted(g for g in ma.keys() | mb.keys() if held(ma, g) != held(mb, g)),
            sorted(g for g in mb if held(ma, g) == held(mb, g)))     # b's bytes, to check
    assert a.compare(b) == want
    for s in stores.values():
        s.close()
