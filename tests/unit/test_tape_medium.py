"""A medium (`san.tape.medium`): round trip, TAPE_FULL, crash safety, damage, random access, blank media."""
import numpy as np
import pytest

from san.errors import SanError
from san.tape import TAPE_BLOCK, TapeMedium

from .test_tape import (MiB, SIZES, damaged, data_of, fill, medium, objects, read_all,  # noqa: F401 (fixture)
                        record_of, row_for)


# ------------------------------------------------------------------ round trip

def test_round_trip_of_several_backups(medium):
    written = fill(medium)
    listed = medium.files()
    assert [f["file"] for f in listed] == list(range(1, len(SIZES) + 1))
    for f, (row, data) in zip(listed, written):
        assert f["row"] == row and f["bytes"] == len(data)
        assert f["blocks"] == max(1, -(-len(data) // TAPE_BLOCK))
        got, blocks = read_all(medium, f["file"])
        assert np.array_equal(got, data)
        assert all(len(b) == TAPE_BLOCK for b in blocks[:-1])       # re-blocked to 64 KiB
        assert all(0 < len(b) <= TAPE_BLOCK for b in blocks)
    # a fresh object on the same image (another process, a second run) sees the same
    again = TapeMedium(medium.path, "T00001", 64 * MiB)
    assert again.files() == listed and not again.blank
    assert np.array_equal(read_all(again, 6)[0], written[5][1])


def test_size_is_a_hint_for_the_up_front_check(medium):
    medium.append(row_for(1), [b"abc"], 10)        # shorter than announced: what came is kept
    medium.append(row_for(2), [b"abcdef"], 2)      # longer, still fits: kept
    assert [f["bytes"] for f in medium.files()] == [3, 6]


def test_changes_behind_the_objects_back_are_seen(medium):
    fill(medium, [10])
    medium.files()
    other = TapeMedium(medium.path, "T00001", medium.capacity)
    other.append(row_for(2), [b"second"], 6)
    assert len(medium.files()) == 2
    assert read_all(medium, 2)[0].tobytes() == b"second"


# ------------------------------------------------------------------ capacity

def test_capacity_is_exact_and_tape_full_is_checked_up_front(tmp_path):
    path = tmp_path / "T00002.tap"
    probe = TapeMedium(path, "T00002", 1 << 40)
    need = probe.projected_size(row_for(1), 100000)
    medium = TapeMedium(path, "T00002", need)                # no reserve: exactly fits
    medium.append(row_for(1), [data_of(100000, 1)], 100000)
    assert medium.used_bytes() == need
    before = path.read_bytes()
    with pytest.raises(SanError) as info:
        medium.append(row_for(2), [b"x"], 1)
    assert info.value.code == "TAPE_FULL" and "T00002" in info.value.message
    assert path.read_bytes() == before
    small = TapeMedium(tmp_path / "T00003.tap", "T00003", need - 1)
    with pytest.raises(SanError) as info:
        small.append(row_for(1), [data_of(100000, 1)], 100000)
    assert info.value.code == "TAPE_FULL"
    assert small.blank and not small.path.exists()


@pytest.mark.parametrize("announced", [None, 1000])
def test_tape_full_mid_write_leaves_the_image_as_it_was(medium, announced):
    written = fill(medium, [1000, 2 * TAPE_BLOCK + 3])
    before = medium.path.read_bytes()
    free = medium.capacity - len(before)

    def source():                                    # longer than announced, longer than the tape
        for i in range(free // TAPE_BLOCK + 10):
            yield data_of(TAPE_BLOCK, 100 + i)

    with pytest.raises(SanError) as info:
        medium.append(row_for(9), source(), announced)
    assert info.value.code == "TAPE_FULL"
    assert medium.path.read_bytes() == before
    assert medium.files() == TapeMedium(medium.path, "T00001", medium.capacity).files()
    for f, (row, data) in zip(medium.files(), written):
        assert f["row"] == row and np.array_equal(read_all(medium, f["file"])[0], data)
    assert medium.append(row_for(3), [b"after"], 5) == 3          # the tape still appends
    assert read_all(medium, 3)[0].tobytes() == b"after"


def test_trailer_that_does_not_fit_is_tape_full(tmp_path):
    path = tmp_path / "T00004.tap"
    need = TapeMedium(path, "T00004", 1 << 40).projected_size(row_for(1), 5000)
    medium = TapeMedium(path, "T00004", need - 10)               # the data fits, the end does not
    with pytest.raises(SanError) as info:
        medium.append(row_for(1), [data_of(5000, 1)], None)
    assert info.value.code == "TAPE_FULL" and medium.blank


def test_a_failing_chunk_source_leaves_nothing(medium):
    fill(medium, [10])
    before = medium.path.read_bytes()

    def source():
        yield data_of(3 * TAPE_BLOCK, 1)
        raise SanError("LINK_DOWN", "lan: no live path")

    with pytest.raises(SanError) as info:
        medium.append(row_for(2), source(), 4 * TAPE_BLOCK)
    assert info.value.code == "LINK_DOWN"
    assert medium.path.read_bytes() == before and len(medium.files()) == 1


def test_a_crash_before_the_commit_leaves_the_old_tape(medium):
    fill(medium, [10, 20])
    before = medium.path.read_bytes()
    with open(medium.path, "ab") as f:                          # what a crash mid-append leaves
        f.write(b"\x50\0\0\0garbage of a half-written file" * 1000)
    fresh = TapeMedium(medium.path, "T00001", medium.capacity)
    assert [f["bytes"] for f in fresh.files()] == [10, 20]
    fresh.append(row_for(3), [b"xyz"], 3)
    assert [f["bytes"] for f in fresh.files()] == [10, 20, 3]
    assert fresh.path.read_bytes()[:len(before) - 8] == before[:-8]
    assert fresh.path.read_bytes().endswith(b"\0" * 8 + b"\xff" * 4)     # the leftovers are gone


# ------------------------------------------------------------------ damage

def test_truncated_images_are_media_errors(medium):
    written = fill(medium, [TAPE_BLOCK * 2, 100, 5000])
    image = medium.path.read_bytes()
    third_data = [o for o in objects(image) if o[0] == "R" and len(o[2]) == 5000][0][1]
    for cut in (len(image) - 4, len(image) - 2, len(image) - 8, third_data + 10, third_data + 2, 3, 100):
        err = damaged(medium, image[:cut])
        assert "truncated" in err.message or "ends" in err.message
    err = damaged(medium, image[:third_data + 10])
    assert f"record {record_of(image, third_data)} at byte {third_data}" in err.message
    # files before the damage stay readable; the damaged one is not
    damaged_medium = TapeMedium(medium.path, "T00001", medium.capacity)
    assert [f["row"] for f in damaged_medium.files(partial=True)] == [w[0] for w in written[:2]]
    assert damaged_medium.damage().message == err.message
    assert medium.damage() is not None and TapeMedium(medium.path, "T00009", 1).damage() is not None
    assert np.array_equal(read_all(damaged_medium, 1)[0], written[0][1])
    with pytest.raises(SanError) as info:
        list(damaged_medium.read(3))
    assert info.value.code == "MEDIA_ERROR"
    with pytest.raises(SanError) as info:
        damaged_medium.append(row_for(4), [b"x"], 1)
    assert info.value.code == "MEDIA_ERROR"


def label_of_file(image: bytes, name: bytes, number: int) -> int:
    """The byte offset of label `name` (HDR1, UHL1, EOF1, UTL1...) of file `number`."""
    return [o[1] for o in objects(image) if o[0] == "R" and o[2][:4] == name][number - 1] + 4


@pytest.mark.parametrize("name, at, says", [
    (b"HDR1", 0, "expected HDR1 of file 2"),
    (b"HDR1", 34, "file sequence number"),      # the sequence number's last digit
    (b"HDR2", 0, "expected HDR2 of file 2"),
    (b"UHL1", 12, "CRC"),
    (b"EOF1", 58, "trailer says"),              # the block count
    (b"UTL1", 12, "trailer labels damaged"),
])
def test_a_file_with_damaged_labels_is_spaced_past(medium, name, at, says):
    """Its framing is intact: a drive spaces forward a file by its tape marks, so only that
    file is lost; the files before and after it stay listed and readable, and a catalog
    rebuild finds them (`files(partial=True)`).  The medium is still damaged: `files()` and
    `append` refuse it."""
    written = fill(medium, [100, TAPE_BLOCK + 1, 5000, 0])
    image = bytearray(medium.path.read_bytes())
    image[label_of_file(bytes(image), name, 2) + at] ^= 0x02
    err = damaged(medium, bytes(image))
    assert says in err.message, err.message
    again = TapeMedium(medium.path, "T00001", medium.capacity)
    assert [f["file"] for f in again.files(partial=True)] == [1, 3, 4]
    assert [f["row"] for f in again.files(partial=True)] == [written[i][0] for i in (0, 2, 3)]
    for number in (1, 3, 4):
        assert np.array_equal(read_all(again, number)[0], written[number - 1][1])
        assert again.file(number)["bytes"] == len(written[number - 1][1])
    assert np.array_equal(again.read_range(3, 10, 20), written[2][1][10:30])
    for call in (lambda: list(again.read(2)), lambda: again.file(2), lambda: again.files(),
                 lambda: again.append(row_for(5), [b"x"], 1)):
        with pytest.raises(SanError) as info:
            call()
        assert info.value.code == "MEDIA_ERROR" and info.value.message == err.message
    with pytest.raises(SanError) as info:
        again.file(5)
    assert info.value.code == "NO_SUCH_BACKUP" and "holds 4" in info.value.message


def test_damaged_framing_is_not_spaced_past(medium):
    """A damaged length word: nothing after it can be found, so no file after it is trusted
    (a stray mark would shift every later file's number)."""
    written = fill(medium, [100, TAPE_BLOCK + 1, 5000])
    image = bytearray(medium.path.read_bytes())
    image[label_of_file(bytes(image), b"UHL1", 2) - 4] ^= 0x10      # UHL1's first length word
    err = damaged(medium, bytes(image))
    assert "length word" in err.message
    again = TapeMedium(medium.path, "T00001", medium.capacity)
    assert [f["row"] for f in again.files(partial=True)] == [written[0][0]]
    for number in (2, 3):
        with pytest.raises(SanError) as info:
            again.file(number)
        assert info.value.message == err.message


def test_two_damaged_files_are_both_spaced_past_and_the_first_is_the_damage(medium):
    written = fill(medium, [100, 200, 300, 400])
    image = bytearray(medium.path.read_bytes())
    image[label_of_file(bytes(image), b"UHL1", 3) + 12] ^= 0x02
    image[label_of_file(bytes(image), b"UTL1", 1) + 12] ^= 0x02
    err = damaged(medium, bytes(image))
    assert "file 1" in err.message
    again = TapeMedium(medium.path, "T00001", medium.capacity)
    assert [f["row"] for f in again.files(partial=True)] == [written[1][0], written[3][0]]
    with pytest.raises(SanError) as info:
        again.file(3)
    assert "CRC" in info.value.message and "file 3" in info.value.message


def test_flipped_data_fails_the_digest(medium):
    written = fill(medium, [3 * TAPE_BLOCK + 5])
    image = bytearray(medium.path.read_bytes())
    pos = [o for o in objects(bytes(image)) if o[0] == "R" and len(o[2]) == TAPE_BLOCK][1][1]
    image[pos + 4 + 1000] ^= 0x80
    medium.path.write_bytes(bytes(image))
    fresh = TapeMedium(medium.path, "T00001", medium.capacity)
    assert fresh.files()[0]["bytes"] == len(written[0][1])   # the structure is intact
    got = []
    with pytest.raises(SanError) as info:
        for block in fresh.read(1):
            got.append(block)
    assert info.value.code == "MEDIA_ERROR" and "XXH3-128" in info.value.message
    assert len(got) < fresh.files()[0]["blocks"]              # the last block is never handed out
    with pytest.raises(SanError) as info:
        fresh.read_range(1, 0, 10)
    assert info.value.code == "MEDIA_ERROR"
    assert np.array_equal(fresh.read_range(1, 0, 10, verify=False), written[0][1][:10])


# ------------------------------------------------------------------ random access

def test_read_range_matches_slices(medium):
    written = fill(medium, [5 * TAPE_BLOCK + 333, 1, TAPE_BLOCK])
    rng = np.random.default_rng(7)
    for number, (_, data) in enumerate(written, start=1):
        n = len(data)
        cases = [(0, n), (0, 0), (n, 0), (n - 1, 1)]
        cases += [(int(o), int(rng.integers(0, n - o + 1))) for o in rng.integers(0, n, 30)]
        if n > TAPE_BLOCK:
            cases += [(TAPE_BLOCK - 1, 2), (TAPE_BLOCK, TAPE_BLOCK), (TAPE_BLOCK - 5, 3 * TAPE_BLOCK + 10)]
        for offset, length in cases:
            got = medium.read_range(number, offset, length)
            assert got.dtype == np.uint8 and np.array_equal(got, data[offset:offset + length])
        for offset, length in ((n, 1), (-1, 1), (0, n + 1)):
            with pytest.raises(SanError) as info:
                medium.read_range(number, offset, length)
            assert info.value.code == "LBA_OUT_OF_RANGE"
    with pytest.raises(SanError) as info:
        medium.read_range(1, 0.5, 1)
    assert info.value.code == "INVALID_INPUT"


def test_read_range_checks_the_length_words_it_touches(medium):
    fill(medium, [4 * TAPE_BLOCK])
    medium.read_range(1, 0, 1)                                # the index is built
    image = bytearray(medium.path.read_bytes())
    pos = [o for o in objects(bytes(image)) if o[0] == "R" and len(o[2]) == TAPE_BLOCK][3][1]
    with open(medium.path, "r+b") as f:                       # damage in place, same size
        f.seek(pos)
        f.write(b"\x01\x00\x01\x00")
    with pytest.raises(SanError) as info:
        TapeMedium(medium.path, "T00001", medium.capacity).read_range(1, 3 * TAPE_BLOCK, 10, verify=False)
    assert info.value.code == "MEDIA_ERROR"


# ------------------------------------------------------------------ blank media, file numbers

def test_blank_media(tmp_path):
    medium = TapeMedium(tmp_path / "lib1" / "T00009.tap", "T00009", 10 * MiB)
    assert medium.blank and medium.files() == [] and medium.used_bytes() == 0
    with pytest.raises(SanError) as info:
        medium.read(1)
    assert info.value.code == "NO_SUCH_BACKUP"
    medium.path.parent.mkdir(parents=True)
    medium.path.write_bytes(b"")
    assert medium.blank and medium.files() == []
    assert medium.append(row_for(1), [b"abc"], 3) == 1
    assert not medium.blank and medium.used_bytes() > 0
    with pytest.raises(SanError) as info:
        list(medium.read(2))
    assert info.value.code == "NO_SUCH_BACKUP"
    medium.erase()
    assert medium.blank and medium.files() == [] and medium.used_bytes() == 0
    assert TapeMedium(medium.path, "T00009", 10 * MiB).blank
    assert medium.append(row_for(1), [b"again"], 5) == 1
    assert read_all(medium, 1)[0].tobytes() == b"again"


def test_no_such_file_numbers(medium):
    fill(medium, [1, 2])
    for number in (0, 3, -1):
        with pytest.raises(SanError) as info:
            medium.read(number)
        assert info.value.code == "NO_SUCH_BACKUP"
    with pytest.raises(SanError) as info:
        medium.read("1")
    assert info.value.code == "INVALID_INPUT"


@pytest.mark.parametrize("size", [None, 3])
def test_created_dates_a_row_without_a_timestamp_with_or_without_a_size(tmp_path, size):
    """`created` sets HDR1's date when the row has no timestamp; the up-front check of a
    given size built its labels without it and refused the row."""
    import datetime as dt
    tape = TapeMedium(tmp_path / "X1.tap", "X1", 1 << 20)
    row = {"host": "h", "label": "no timestamp"}
    assert tape.append(row, [b"abc"], size, created=dt.date(2026, 1, 2)) == 1
    assert tape.append(row, [b"def"], size, created=dt.date(2026, 1, 3)) == 2
    assert [read_all(tape, n)[0].tobytes() for n in (1, 2)] == [b"abc", b"def"]
    with pytest.raises(SanError) as info:            # no date at all: refused, saying so
        tape.append(row, [b"ghi"], size)
    assert info.value.code == "INVALID_INPUT" and "timestamp" in info.value.message
