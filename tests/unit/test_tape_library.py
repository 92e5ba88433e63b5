"""The tape library element (no Ray): thin volume images, drives, media, rebuild scans."""
import os
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from san.elements.tape_library import TapeLibrary, image_header, parse_header
from san.errors import SanError
from san.pattern import pattern


@pytest.fixture
def lib(tmp_path):
    spec = SimpleNamespace(name="lib1", drives=2, drive_speed=160e6,
                           media=["T00001", "T00002", "T00003"], media_capacity=16 << 20)
    return TapeLibrary(spec, tmp_path)


ROW = {"host": "h", "mount_point": "/m", "type": "tape", "device_id": "lib1", "media_id": "T00001",
       "file": None, "label": "L", "timestamp": "2026-01-01T00:00:00Z"}


def write(lib, media, size, extents, seed=1):
    chunks = [pattern(seed, off, length) for off, length in extents]
    return lib.write_image(media, {**ROW, "media_id": media}, size, extents, iter(chunks))


def test_header_round_trip_and_bad_magic():
    extents = [(0, 4096), (1 << 30, 512)]
    head = image_header(2 << 30, extents)
    assert len(head) % 512 == 0
    assert parse_header(head, "x") == (2 << 30, extents, len(head))
    with pytest.raises(SanError) as info:
        parse_header(b"NOTANIMG" + bytes(100), "T00001 file 1")
    assert info.value.code == "MEDIA_ERROR" and "T00001 file 1" in info.value.message


def test_a_thin_image_reads_back_with_its_holes(lib):
    size, extents = 8 << 20, [(0, 64 << 10), (3 << 20, 1 << 20)]
    done = write(lib, "T00001", size, extents)
    assert done["file"] == 1 and done["row"]["file"] == "1" and done["bytes"] == 512 + (1088 << 10)
    image = lib.read_image("T00001", 1, 0, size)
    expected = np.zeros(size, np.uint8)
    for off, length in extents:
        expected[off:off + length] = pattern(1, off, length)
    assert np.array_equal(image, expected)
    assert np.array_equal(lib.read_image("T00001", 1, (3 << 20) - 512, 1024), expected[(3 << 20) - 512:(3 << 20) + 512])
    from san.digest import digest_of
    assert lib.image_digest("T00001", 1) == digest_of(expected)
    with pytest.raises(SanError) as info:
        lib.read_image("T00001", 1, size - 512, 1024)
    assert info.value.code == "LBA_OUT_OF_RANGE"


@pytest.mark.parametrize("count", [30, 31, 32, 200])
def test_an_image_of_many_extents_reads_back(lib, count):
    """From 31 extents on the header takes more than its first 512-byte block: a backup
    of 31 scattered writes could not be read, verified or restored (MEDIA_ERROR: image
    header cut short), its tape intact."""
    size, extents = 64 << 20, [(i * (256 << 10), 4096) for i in range(count)]
    write(lib, "T00001", size, extents)
    assert lib.image_size("T00001", 1) == size
    assert lib.image_extents("T00001", 1) == extents
    image = lib.read_image("T00001", 1, 0, size)
    for off, length in extents:
        assert np.array_equal(image[off:off + length], pattern(1, off, length))
    assert np.count_nonzero(image) == np.count_nonzero(np.concatenate(
        [pattern(1, off, length) for off, length in extents]))


def test_an_image_header_cut_short_is_a_media_error(lib):
    """A file holding only the first block of a header of 40 extents."""
    extents = [(i * 4096, 512) for i in range(40)]
    head = image_header(1 << 20, extents)
    lib.medium("T00001").append({**ROW}, iter([np.frombuffer(head[:512], np.uint8)]), 512)
    with pytest.raises(SanError) as info:
        lib.image_size("T00001", 1)
    assert info.value.code == "MEDIA_ERROR" and "cut short" in info.value.message


def test_files_append_numbered_and_the_scan_returns_every_row(lib):
    write(lib, "T00001", 1 << 20, [(0, 4096)])
    write(lib, "T00001", 1 << 20, [(0, 8192)], seed=2)
    write(lib, "T00002", 1 << 20, [])
    rows = lib.scan()
    assert rows["errors"] == []
    assert [(r["media_id"], r["file"]) for r in rows["rows"]] == [("T00001", "1"), ("T00001", "2"), ("T00002", "1")]
    assert lib.next_file("T00001") == 3 and lib.next_file("T00003") == 1


def test_unknown_media_and_tape_full(lib):
    with pytest.raises(SanError) as info:
        write(lib, "T99999", 1 << 20, [(0, 512)])
    assert info.value.code == "NO_SUCH_MEDIA" and "T00001, T00002, T00003" in info.value.message
    write(lib, "T00003", 8 << 20, [(0, 4 << 20)])
    with pytest.raises(SanError) as info:
        write(lib, "T00003", 32 << 20, [(0, 16 << 20)])
    assert info.value.code == "TAPE_FULL"
    assert [f["file"] for f in lib.medium("T00003").files()] == [1]
    assert np.array_equal(lib.read_image("T00003", 1, 0, 4096), pattern(1, 0, 4096))


def test_a_drive_serves_one_medium_and_work_beyond_the_drives_waits(lib):
    release, order = threading.Event(), []
    entered = {m: threading.Event() for m in ("T00001", "T00002", "T00003")}

    def use(media):
        with lib.drive(media) as drive:
            order.append((media, drive))
            entered[media].set()
            release.wait(10)

    threads = {m: threading.Thread(target=use, args=(m,)) for m in entered}
    threads["T00001"].start()
    threads["T00002"].start()
    assert entered["T00001"].wait(10) and entered["T00002"].wait(10)
    threads["T00003"].start()
    assert not entered["T00003"].wait(0.2)     # both drives are busy: the third waits
    release.set()
    for t in threads.values():
        t.join(10)
    assert entered["T00003"].is_set()
    assert sorted(d for _, d in order[:2]) == [0, 1] and order[2][0] == "T00003"


def test_the_files_after_one_with_damaged_labels_are_still_found_and_read(lib):
    """A drive spaces past the damaged file: a catalog rebuild finds the others, and a
    restore from them reads their bytes."""
    for seed in (1, 2, 3):
        write(lib, "T00001", 1 << 20, [(0, 4096), (8192, 512)], seed)
    image = lib.medium("T00001").path.read_bytes()
    at = [i for i in range(len(image)) if image.startswith(b"UHL1", i)][1]   # file 2's row
    lib.corrupt("T00001", at + 20)
    scanned = lib.scan()
    assert [r["file"] for r in scanned["rows"]] == ["1", "3"]
    [err] = scanned["errors"]
    assert err.code == "MEDIA_ERROR" and "file 2" in err.message
    got = lib.read_image("T00001", 3, 8192, 512)
    assert np.array_equal(got, pattern(3, 8192, 512))
    with pytest.raises(SanError) as info:
        lib.read_image("T00001", 2, 0, 512)
    assert info.value.code == "MEDIA_ERROR" and info.value.message == err.message


def test_corrupting_a_label_is_a_media_error_in_the_scan(lib):
    write(lib, "T00001", 1 << 20, [(0, 4096)])
    write(lib, "T00002", 1 << 20, [(0, 4096)])
    lib.corrupt("T00001", 512)
    scanned = lib.scan()
    assert [r["media_id"] for r in scanned["rows"]] == ["T00002"]
    assert scanned["errors"][0].code == "MEDIA_ERROR" and "T00001" in scanned["errors"][0].message
    with pytest.raises(SanError) as info:
        lib.corrupt("T00003", 0)
    assert info.value.code == "LBA_OUT_OF_RANGE"


def test_rot_is_met_even_when_the_image_looks_unchanged(lib):
    """A medium knows its image has changed by its size and times; a corrupt fault changes
    neither size nor, within a coarse kernel tick, its times: a read right after must still
    meet the rot, not an index of blocks checked before it."""
    write(lib, "T00001", 1 << 20, [(0, 64 << 10)])
    assert np.array_equal(lib.read_image("T00001", 1, 0, 4096), pattern(1, 0, 4096))
    path = lib.medium("T00001").path
    before = path.stat()
    image = path.read_bytes()
    at = image.index(pattern(1, 0, 512).tobytes()[:64])     # the first data bytes
    assert lib.corrupt("T00001", at + 100, 4) == 4
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))   # as a coarse clock shows it
    with pytest.raises(SanError) as info:
        lib.read_image("T00001", 1, 0, 4096)
    assert info.value.code == "MEDIA_ERROR"
    with pytest.raises(SanError) as info:
        lib.corrupt("T00001", len(image), 1)
    assert info.value.code == "LBA_OUT_OF_RANGE" and str(len(image)) in info.value.message
