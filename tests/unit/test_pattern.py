"""The `write` op's data: a fixed function of (seed, offset)."""
import numpy as np
import pytest

from san.pattern import BASE, first_mismatch, pattern


def test_any_piece_equals_the_same_bytes_of_a_larger_write():
    whole = pattern(3, 0, 3 * BASE)
    for off, size in [(0, 512), (BASE - 512, 1024), (BASE + 4096, BASE + 512), (2 * BASE, BASE)]:
        assert np.array_equal(pattern(3, off, size), whole[off:off + size])


def test_sectors_are_stamped_with_their_offset_and_seed():
    data = pattern(11, 1 << 30, 4096).view(np.uint64).reshape(-1, 64)
    assert list(data[:, 0]) == [(1 << 30) + 512 * i for i in range(8)]
    assert set(data[:, 1]) == {11}


def test_other_seed_or_offset_differs_and_mismatch_is_located():
    a = pattern(1, 0, 8192)
    assert not np.array_equal(a, pattern(2, 0, 8192))
    assert first_mismatch(a, 1, 0) is None
    b = a.copy()
    b[5000] ^= 1
    assert first_mismatch(b, 1, 0) == 5000
    # read as if from offset 512: the stamp 0 vs 512 (little-endian) first differs in byte 1
    assert first_mismatch(a, 1, 512) == 512 + 1


@pytest.mark.parametrize("off,size", [(1, 512), (0, 100), (-512, 512)])
def test_misaligned_ranges_are_refused(off, size):
    with pytest.raises(ValueError, match="512-aligned"):
        pattern(1, off, size)
