"""san.filesystem: the cached block device, FAT volumes on it (pyfatfs), fsck.fat, images.

No Ray: the "volume" is a numpy array (or a sparse memmapped file) behind read / write
callbacks that check alignment and count their calls.
"""
from __future__ import annotations

import hashlib
import os
import sys

import numpy as np
import pytest

from san import filesystem as fsmod
from san.errors import SanError
from san.filesystem import (BlockDevice, FatVolume, fat_label, format_volume, fsck,
                            fsck_binary, image_to_file, is_formatted, normalize)
from san.pattern import pattern

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

FSCK = fsck_binary()
if FSCK is None:
    print("test_filesystem: fsck.fat not found (install dosfstools: apt-get install dosfstools);"
          " the fsck tests are skipped" + (" - but CI is set, so they fail" if os.environ.get("CI")
                                           else ""), file=sys.stderr)
# Skipped only when the binary is truly missing, and never in CI (which installs dosfstools).
needs_fsck = pytest.mark.skipif(FSCK is None and not os.environ.get("CI"),
                                reason="fsck.fat is not installed (apt-get install dosfstools)")


class Volume:
    """An in-memory (or memmapped) volume with SAN-like callbacks that count their calls."""

    def __init__(self, size: int, backing=None):
        self.size = size
        self.data = backing if backing is not None else np.zeros(size, dtype=np.uint8)
        self.reads: list[tuple[int, int]] = []
        self.writes: list[tuple[int, int]] = []

    def read(self, offset: int, length: int):
        assert offset % 512 == 0 and length % 512 == 0, (offset, length)
        assert 0 < length <= 4 * MiB and offset + length <= self.size, (offset, length)
        self.reads.append((offset, length))
        return np.array(self.data[offset:offset + length])

    def write(self, offset: int, data: np.ndarray):
        assert isinstance(data, np.ndarray) and data.dtype == np.uint8
        assert offset % 512 == 0 and len(data) % 512 == 0, (offset, len(data))
        assert 0 < len(data) <= 4 * MiB and offset + len(data) <= self.size, (offset, len(data))
        self.writes.append((offset, len(data)))
        self.data[offset:offset + len(data)] = data

    def device(self, **kw) -> BlockDevice:
        return BlockDevice(self.size, self.read, self.write, **kw)

    def readonly_device(self) -> BlockDevice:
        return BlockDevice(self.size, self.read, None, readonly=True)

    def extents(self) -> list[tuple[int, int]]:
        return sorted(set(self.writes))

    def image(self, path, extents=None) -> str:
        image_to_file(self.read, self.size, extents if extents is not None else [(0, self.size)],
                      str(path))
        return str(path)


def content(size: int, seed: int) -> bytes:
    return pattern(seed, 0, -(-size // 512) * 512)[:size].tobytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def vol64():
    """A formatted 64 MiB volume, mounted."""
    v = Volume(64 * MiB)
    dev = v.device()
    format_volume(dev, "test")
    fs = FatVolume(dev)
    yield v, dev, fs


def assert_fsck_clean(v: Volume, tmp_path, name="img"):
    ok, out = fsck(v.image(tmp_path / name))
    assert ok, out
    return out


# ---------------------------------------------------------------- paths
@pytest.mark.parametrize("given,expected", [
    ("a.txt", "/a.txt"),
    ("/a.txt", "/a.txt"),
    ("a/./b", "/a/b"),
    ("./a//b/c.d", "/a/b/c.d"),
    ("/x/../y", "/y"),
    ("a/b/../../c", "/c"),
    ("Mixed Case/Long file name.tar.gz", "/Mixed Case/Long file name.tar.gz"),
    ("na\u00efve \u65e5\u672c.txt", "/na\u00efve \u65e5\u672c.txt"),
    (".hidden", "/.hidden"),
    ("a+b,c;d=e[f].g", "/a+b,c;d=e[f].g"),
])
def test_normalize_good(given, expected):
    assert normalize(given) == expected


@pytest.mark.parametrize("given,why", [
    ("", "empty"),
    ("../x", "leaves the mount"),
    ("/a/../../x", "leaves the mount"),
    ("..", "names no file"),
    ("/", "names no file"),
    ("a/", "names no file"),
    ("a/.", "names no file"),
    ("a\x00b", "NUL"),
    ("a:b", "not allow"),
    ("what?", "not allow"),
    ("a/b*c", "not allow"),
    ('say"hi"', "not allow"),
    ("back\\slash", "not allow"),
    ("tab\there", "not allow"),
    ("trailing.", "ends with a dot"),
    ("trailing ", "ends with a dot or a space"),
    ("x" * 128, "longer than"),
])
def test_normalize_bad(given, why):
    with pytest.raises(SanError) as err:
        normalize(given)
    assert err.value.code == "INVALID_INPUT"
    assert why in err.value.message
    assert repr(given)[:20].strip("'") in err.value.message or given == ""


def test_long_name_limit_is_exactly_127():
    assert normalize("y" * 127) == "/" + "y" * 127


# ---------------------------------------------------------------- the block device
def test_device_is_a_file():
    v = Volume(1 * MiB)
    v.data[:] = np.arange(MiB, dtype=np.uint64).astype(np.uint8)
    dev = v.device()
    assert dev.readable() and dev.writable() and dev.seekable()
    assert dev.seek(1000) == 1000 and dev.read(24) == v.data[1000:1024].tobytes()
    assert dev.tell() == 1024
    assert dev.seek(-10, os.SEEK_END) == MiB - 10
    assert dev.read(100) == v.data[-10:].tobytes()       # short at the end, like a file
    assert dev.read(100) == b""
    buf = bytearray(300)
    dev.seek(5)
    assert dev.readinto(buf) == 300 and bytes(buf) == v.data[5:305].tobytes()
    with pytest.raises(SanError) as err:
        dev.seek(MiB - 100)
        dev.write(b"x" * 200)
    assert err.value.code == "LBA_OUT_OF_RANGE"


def test_write_back_cache_hides_writes_until_flush():
    v = Volume(8 * MiB)
    dev = v.device()
    dev.seek(12345)
    dev.write(b"hello")                  # unaligned: a read-modify-write inside the cache
    dev.seek(3 * MiB)
    dev.write(bytes(range(256)) * 4096)   # 1 MiB, sector aligned: no read needed
    assert not v.data.any() and v.writes == []
    assert dev.dirty_bytes == 512 + MiB
    reads_before = len(v.reads)
    dev.seek(3 * MiB + 100)
    assert dev.read(10) == bytes(range(100, 110))         # served from the cache
    assert len(v.reads) == reads_before
    dev.flush()
    assert dev.dirty_bytes == 0
    assert v.data[12345:12350].tobytes() == b"hello"
    assert v.data[3 * MiB:4 * MiB].tobytes() == bytes(range(256)) * 4096
    # two write_fn calls: the one dirty sector, and the 1 MiB coalesced into one call
    assert sorted(v.writes) == [(12288, 512), (3 * MiB, MiB)]
    assert dev.stats["writes"] == 2 and dev.stats["bytes_written"] == MiB + 512
    dev.flush()
    assert len(v.writes) == 2                           # nothing dirty: nothing written


def test_flush_coalesces_into_4mib_calls():
    v = Volume(32 * MiB)
    dev = v.device()
    dev.seek(MiB)
    for _ in range(160):                  # 10 MiB in 64 KiB writes: 160 dirty blocks
        dev.write(b"\xab" * (64 * KiB))
    dev.flush()
    assert v.writes == [(MiB, 4 * MiB), (5 * MiB, 4 * MiB), (9 * MiB, 2 * MiB)]
    assert (v.data[MiB:11 * MiB] == 0xAB).all() and not v.data[11 * MiB:].any()


def test_flush_writes_only_dirty_runs():
    v = Volume(4 * MiB)
    v.data[:] = 7
    dev = v.device()
    for off in (0, 4096, 70000, 3 * MiB):
        dev.pwrite(off, b"\x01" * 10)     # partial sectors: read first, then patched
    dev.flush()
    assert sorted(v.writes) == [(0, 512), (4096, 512), (69632, 512), (3 * MiB, 512)]
    assert (v.data[10:512] == 7).all() and (v.data[:10] == 1).all()


def test_drop_cache_discards_dirty_and_stale_blocks():
    v = Volume(1 * MiB)
    dev = v.device()
    assert dev.pread(0, 4) == b"\0\0\0\0"
    v.data[:4] = [1, 2, 3, 4]                 # behind the device's back
    assert dev.pread(0, 4) == b"\0\0\0\0"     # still the cached view
    dev.pwrite(8192, b"z" * 512)
    dev.drop_cache()
    assert dev.dirty_bytes == 0
    assert dev.pread(0, 4) == b"\x01\x02\x03\x04"
    dev.flush()
    assert v.writes == [] and not v.data[8192:8704].any()   # the dirty block was discarded


def test_cache_is_bounded():
    v = Volume(64 * MiB)
    dev = v.device(max_dirty=4 * MiB, max_cached=8 * MiB)
    for off in range(0, 32 * MiB, MiB):
        dev.pwrite(off, b"\x05" * MiB)
        assert dev.dirty_bytes <= 4 * MiB
        assert dev.cached_bytes <= 8 * MiB + 64 * KiB
    dev.flush()
    assert (v.data[:32 * MiB] == 5).all()
    assert max(n for _, n in v.writes) <= 4 * MiB
    assert dev.pread_array(0, 32 * MiB).min() == 5      # a large read streams past the cache
    assert dev.cached_bytes <= 8 * MiB


def test_readonly_device_refuses_writes():
    v = Volume(1 * MiB)
    dev = v.readonly_device()
    assert not dev.writable()
    with pytest.raises(SanError) as err:
        dev.write(b"x")
    assert err.value.code == "READ_ONLY"
    dev.close()
    assert v.writes == []


def test_close_writes_back_but_garbage_collection_does_not():
    v = Volume(1 * MiB)
    dev = v.device()
    dev.pwrite(0, b"a" * 512)
    dev.close()
    assert v.data[0] == ord("a") and dev.closed
    dev2 = v.device()
    dev2.pwrite(512, b"b" * 512)
    del dev2                                  # a dropped device (a crashed host) writes nothing
    assert v.data[512] == 0


# ---------------------------------------------------------------- formatting and files
@needs_fsck
def test_format_passes_fsck_and_sets_a_label(tmp_path):
    v = Volume(64 * MiB)
    dev = v.device()
    format_volume(dev, "NO NAME")
    assert is_formatted(dev)
    out = assert_fsck_clean(v, tmp_path)
    assert "0/" in out
    fs = FatVolume(dev)
    assert fs.fat_type == 16 and fs.label == "NO_NAME"
    assert fs.files() == {}
    assert v.writes and dev.dirty_bytes == 0
    # only the metadata area was written (FAT16 on 64 MiB: boot + 2 FATs + root dir)
    assert sum(n for _, n in v.writes) < 256 * KiB


@pytest.mark.parametrize("label,expected", [
    ("db", "DB"), ("NO NAME", "NO_NAME"), ("orders/db.v2", "ORDERS_D"), ("", "SAN"),
    ("\u00e9t\u00e9", "T"), ("DATA_VOLUME_1", "DATA_VOL")])
def test_fat_label(label, expected):
    assert fat_label(label) == expected


def test_round_trip_sizes_and_nested_dirs(vol64, tmp_path):
    v, dev, fs = vol64
    sizes = {"empty": 0, "one.bin": 1, "s511": 511, "s512": 512, "s513": 513,
             "a/b/c/deep.dat": 70000, "a/b/sibling.txt": 4097,
             "Mixed Case/Long file name.tar.gz": 3 * MiB + 7, "a/several.mib": 5 * MiB + 123}
    for i, (path, size) in enumerate(sizes.items()):
        assert fs.write_file(path, size, seed=i + 1) == size
    listed = fs.files()
    assert list(listed) == sorted(listed)
    assert listed == {normalize(p): (s, sha(content(s, i + 1)))
                      for i, (p, s) in enumerate(sizes.items())}
    for i, (path, size) in enumerate(sizes.items()):
        assert fs.read_file(path) == content(size, i + 1)
    assert fs.listdir("/a") == ["b", "several.mib"]
    assert fs.listdir("/a/b") == ["c", "sibling.txt"]
    if FSCK is not None:
        fs.flush()
        ok, out = fsck(v.image(tmp_path / "img"))
        assert ok, out


def test_remove_and_no_such_file(vol64):
    v, dev, fs = vol64
    fs.write_file("d/x.txt", 10, 1)
    fs.write_file("d/y.txt", 20, 2)
    free = fs.free_bytes()
    fs.remove_file("/d/x.txt")
    assert list(fs.files()) == ["/d/y.txt"]
    assert fs.free_bytes() == free + fs.cluster_size
    for bad in ("d/x.txt", "nowhere/y.txt", "d/Z"):
        for call in (fs.read_file, fs.remove_file):
            with pytest.raises(SanError) as err:
                call(bad)
            assert err.value.code == "NO_SUCH_FILE" and normalize(bad) in err.value.message
    with pytest.raises(SanError) as err:
        fs.remove_file("d")                  # a directory is not a file
    assert err.value.code == "NO_SUCH_FILE"
    with pytest.raises(SanError) as err:
        fs.write_file("d/y.txt/under", 1, 1)  # a file is not a directory
    assert err.value.code == "INVALID_INPUT"
    with pytest.raises(SanError) as err:
        fs.write_file("d", 1, 1)
    assert err.value.code == "INVALID_INPUT"
    with pytest.raises(SanError) as err:
        fs.read_file("../escape")
    assert err.value.code == "INVALID_INPUT"


@needs_fsck
def test_overwrite_replaces_and_frees(vol64, tmp_path):
    v, dev, fs = vol64
    free0 = fs.free_bytes()
    fs.write_file("f.bin", 2 * MiB, 1)
    fs.write_file("f.bin", 100, 2)               # smaller
    assert fs.read_file("f.bin") == content(100, 2)
    assert fs.free_bytes() == free0 - fs.cluster_size
    fs.write_file("f.bin", 3 * MiB, 3)           # bigger
    assert fs.read_file("f.bin") == content(3 * MiB, 3)
    fs.write_file("f.bin", 0, 4)                 # empty
    fs.write_file("f.bin", 0, 5)                 # empty over empty (pyfatfs would free FAT[0])
    fs.write_file("f.bin", 5, 6)
    assert fs.files() == {"/f.bin": (5, sha(content(5, 6)))}
    fs.write_bytes("/f.bin", b"restored bytes")
    assert fs.read_file("F.BIN") == b"restored bytes"
    fs.flush()
    assert_fsck_clean(v, tmp_path)


def test_names_are_case_insensitive_and_kept_as_stored(vol64):
    v, dev, fs = vol64
    fs.write_file("Data/Report.TXT", 10, 1)
    fs.write_file("data/REPORT.txt", 20, 2)       # the same file: replaced, stored name kept
    fs.write_file("DATA/notes.md", 30, 3)         # into the same directory
    fs.write_file("readme", 1, 1)
    fs.write_file("README", 2, 2)
    fs.write_file("na\u00efve \u65e5\u672c.txt", 3, 3)
    assert {p: s for p, (s, _) in fs.files().items()} == {
        "/Data/Report.TXT": 20, "/Data/notes.md": 30, "/readme": 2, "/na\u00efve \u65e5\u672c.txt": 3}
    assert fs.read_file("dAtA/rEpOrT.tXt") == content(20, 2)
    fs.remove_file("/DATA/NOTES.MD")
    assert "/Data/notes.md" not in fs.files()


# ---------------------------------------------------------------- running out of space
@needs_fsck
def test_no_space_leaves_earlier_files_intact(tmp_path):
    v = Volume(8 * MiB)
    dev = v.device()
    format_volume(dev, "small")
    fs = FatVolume(dev)
    fs.write_file("keep/a.bin", 3 * MiB, 1)
    fs.write_file("b.txt", 1000, 2)
    before, free = fs.files(), fs.free_bytes()
    for path, size in (("c.bin", 6 * MiB), ("new/dir/c.bin", 6 * MiB), ("keep/a.bin", 9 * MiB)):
        with pytest.raises(SanError) as err:
            fs.write_file(path, size, 3)
        assert err.value.code == "NO_SPACE" and normalize(path) in err.value.message
        assert fs.files() == before and fs.free_bytes() == free
    assert fs.read_file("keep/a.bin") == content(3 * MiB, 1)
    # exactly the free space fits (and fills every cluster, up to the very last)
    fs.write_file("fill.bin", free, 4)
    assert fs.free_bytes() == 0
    with pytest.raises(SanError) as err:
        fs.write_file("one-more", 1, 5)
    assert err.value.code == "NO_SPACE"
    fs.write_file("empty-still-fits", 0, 5)
    assert fs.read_file("fill.bin") == content(free, 4)
    fs.flush()
    out = assert_fsck_clean(v, tmp_path)
    assert "files" in out
    fs.remove_file("fill.bin")
    fs.close()
    again = FatVolume(v.device())
    assert again.files() == {**before, "/empty-still-fits": (0, sha(b""))}


@needs_fsck
def test_no_space_half_way_is_undone(tmp_path, monkeypatch):
    v = Volume(8 * MiB)
    dev = v.device()
    format_volume(dev, "small")
    fs = FatVolume(dev)
    fs.write_file("a.bin", 1 * MiB, 1)
    before, free = fs.files(), fs.free_bytes()
    monkeypatch.setattr(FatVolume, "_needed_clusters", lambda *a: 0)   # skip the pre-check
    with pytest.raises(SanError) as err:
        fs.write_file("x/y/z.bin", 8 * MiB, 2)
    assert err.value.code == "NO_SPACE"
    assert fs.files() == before and fs.free_bytes() == free
    fs.flush()
    assert_fsck_clean(v, tmp_path)
    assert FatVolume(v.device()).files() == before


@needs_fsck
def test_root_directory_full_is_no_space(tmp_path):
    v = Volume(8 * MiB)
    dev = v.device()
    format_volume(dev, "small")
    fs = FatVolume(dev)
    n = 0
    with pytest.raises(SanError) as err:
        while True:
            fs.write_file(f"F{n}.BIN", 0, 1)     # 8.3 names: one entry each, 511 fit beside the label
            n += 1
    assert err.value.code == "NO_SPACE" and "root directory" in err.value.message
    assert n == 511
    fs.remove_file("F0.BIN")
    fs.write_file("F0.BIN", 3, 1)
    fs.flush()
    assert_fsck_clean(v, tmp_path)
    assert len(FatVolume(v.device()).files()) == 511


@needs_fsck
def test_shrinking_directory_leaves_no_ghosts(vol64, tmp_path):
    v, dev, fs = vol64
    for i in range(100):                      # LFN names: ~3 entries each, several clusters
        fs.write_file(f"d/a long file name {i}.txt", 100, i)
    for i in range(90):
        fs.remove_file(f"d/a long file name {i}.txt")
    fs.close()
    again = FatVolume(v.device())
    assert len(again.files()) == 10
    assert_fsck_clean(v, tmp_path)


# ---------------------------------------------------------------- flush, fsck, mounts
@needs_fsck
def test_flush_leaves_a_clean_filesystem_while_mounted(vol64, tmp_path):
    v, dev, fs = vol64
    fs.write_file("a/b.bin", 300 * KiB, 1)
    dev.flush()                               # data on the volume, filesystem still in use
    ok, out = fsck(v.image(tmp_path / "dirty"))
    assert not ok and "Dirty bit" in out
    fs.flush()
    assert dev.dirty_bytes == 0
    assert_fsck_clean(v, tmp_path, "flushed")
    fs.write_file("a/c.bin", 10, 2)           # still mounted: the next change marks it dirty
    dev.flush()
    assert not fsck(v.image(tmp_path / "dirty2"))[0]
    fs.close()
    assert_fsck_clean(v, tmp_path, "closed")


def test_mount_writes_nothing_and_flush_without_changes_writes_nothing(vol64):
    v, dev, fs = vol64
    fs.close()
    writes = len(v.writes)
    fs2 = FatVolume(v.device())
    fs2.files()
    fs2.flush()
    fs2.close()
    assert len(v.writes) == writes


def test_remount_after_close_sees_the_same_files(vol64):
    v, dev, fs = vol64
    fs.write_file("x/y.bin", 123457, 7)
    fs.write_file("z", 1, 8)
    fs.remove_file("z")
    expected = fs.files()
    fs.close()
    again = FatVolume(v.device())              # a new host cache over the same volume
    assert again.files() == expected and again.warnings == []
    again.write_file("x/w", 5, 1)
    again.close()
    assert set(FatVolume(v.device()).files()) == {"/x/y.bin", "/x/w"}


def test_readonly_mount_reads_but_never_writes(vol64):
    v, dev, fs = vol64
    fs.write_file("snap/file.bin", 200 * KiB, 3)
    fs.write_file("dirty", 10, 4)
    dev.flush()                               # a snapshot of a filesystem in use
    expected = fs.files()
    writes = len(v.writes)
    for ro in (FatVolume(v.readonly_device()), FatVolume(v.device(), readonly=True)):
        assert ro.readonly and ro.files() == expected
        assert ro.read_file("SNAP/FILE.BIN") == content(200 * KiB, 3)
        for call in (lambda: ro.write_file("n", 1, 1), lambda: ro.remove_file("dirty"),
                     lambda: ro.write_bytes("dirty", b"x")):
            with pytest.raises(SanError) as err:
                call()
            assert err.value.code == "READ_ONLY"
        ro.flush()
        ro.close()
        assert any("not cleanly unmounted" in w for w in ro.warnings)
    assert len(v.writes) == writes


def test_blank_volume_is_not_a_filesystem():
    v = Volume(8 * MiB)
    with pytest.raises(SanError) as err:
        FatVolume(v.readonly_device())
    assert err.value.code == "FSCK_FAILED"
    assert not is_formatted(v.readonly_device())


def test_discard_drops_a_stale_view(vol64):
    v, dev, fs = vol64
    fs.write_file("a", 10, 1)
    fs.flush()
    image = v.data.copy()                     # a "backup"
    fs.write_file("b", 10, 2)
    fs.flush()
    v.data[:] = image                         # restored behind the host's back
    fs.discard()                              # forget everything, write nothing
    writes = len(v.writes)
    del fs
    assert len(v.writes) == writes
    assert list(FatVolume(dev).files()) == ["/a"]


@needs_fsck
def test_fsck_reports_damage(vol64, tmp_path):
    v, dev, fs = vol64
    fs.write_file("f.bin", 100 * KiB, 1)
    fs.close()
    fat2 = 512 + 128 * 512                    # FAT16 on 64 MiB: 1 reserved sector, 128-sector FATs
    v.data[fat2 + 6:fat2 + 8] = 0x12          # the two FATs now differ
    ok, out = fsck(v.image(tmp_path / "bad"))
    assert not ok and "FAT" in out


def test_fsck_without_dosfstools_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(fsmod, "fsck_binary", lambda: None)
    with pytest.raises(SanError) as err:
        fsck(str(tmp_path / "x.img"))
    assert err.value.code == "INVALID_INPUT" and "dosfstools" in err.value.message


def test_image_to_file_reads_only_the_extents(tmp_path):
    v = Volume(16 * MiB)
    v.data[MiB:MiB + 1000] = 9
    out = tmp_path / "v.img"
    image_to_file(v.read, v.size, [(MiB, 4096), (8 * MiB, 512)], str(out))
    assert sorted(v.reads) == [(MiB, 4096), (8 * MiB, 512)]
    data = np.fromfile(out, dtype=np.uint8)
    assert len(data) == 16 * MiB and (data == v.data).all()
    assert os.stat(out).st_blocks * 512 < MiB          # sparse
    dev = v.device()
    dev.pwrite(0, b"cached")                            # through a device: its cache included
    image_to_file(dev, v.size, [(0, 512)], str(out))
    assert np.fromfile(out, dtype=np.uint8)[:6].tobytes() == b"cached"


# ---------------------------------------------------------------- big volumes
def sparse_volume(tmp_path, size: int) -> Volume:
    path = tmp_path / "thin.data"
    with open(path, "wb") as f:
        f.truncate(size)
    return Volume(size, np.memmap(path, dtype=np.uint8, mode="r+", shape=(size,)))


@needs_fsck
def test_2gib_thin_volume(tmp_path):
    v = sparse_volume(tmp_path, 2 * GiB)
    dev = v.device()
    format_volume(dev, "big")
    fs = FatVolume(dev)
    assert fs.fat_type == 16 and fs.cluster_size == 32 * KiB
    assert fs.free_bytes() == 65524 * 32 * KiB             # FAT16's most (fsck.fat's limit)
    fs.write_file("dir/file.bin", 20 * MiB + 3, 11)
    fs.write_file("small.txt", 10, 12)
    fs.flush()
    assert sum(n for _, n in v.writes) < 22 * MiB          # thin: the cost follows the data
    assert os.stat(tmp_path / "thin.data").st_blocks * 512 < 64 * MiB
    ok, out = fsck(v.image(tmp_path / "img", v.extents()))
    assert ok, out
    fs.close()
    again = FatVolume(v.device())
    assert again.files()["/dir/file.bin"] == (20 * MiB + 3, sha(content(20 * MiB + 3, 11)))


@needs_fsck
def test_fat32_above_2gib_keeps_its_free_count(tmp_path):
    v = sparse_volume(tmp_path, 3 * GiB)
    dev = v.device()
    format_volume(dev, "bigger")
    fs = FatVolume(dev)
    assert fs.fat_type == 32
    fs.write_file("a/b.bin", 8 * MiB, 1)
    fs.write_file("a/d/e/f", 70000, 3)
    fs.write_file("c", 5000, 2)
    fs.remove_file("c")
    fs.flush()
    ok, out = fsck(v.image(tmp_path / "img", v.extents()))
    assert ok, out                                           # includes the FSInfo free count
    fs.close()
    assert list(FatVolume(v.device()).files()) == ["/a/b.bin", "/a/d/e/f"]


@needs_fsck
def test_tiny_volume_is_fat12(tmp_path):
    v = Volume(2 * MiB)
    dev = v.device()
    format_volume(dev, "tiny")
    fs = FatVolume(dev)
    assert fs.fat_type == 12
    for i in range(12):
        fs.write_file(f"d{i % 3}/file {i}.txt", 3000 * i, i)
    fs.remove_file("d1/file 4.txt")
    fs.close()
    assert_fsck_clean(v, tmp_path)
    assert len(FatVolume(v.device()).files()) == 11
    with pytest.raises(SanError) as err:
        format_volume(Volume(32 * KiB).device(), "x")
    assert err.value.code == "INVALID_INPUT"


def test_large_file_streams_with_bounded_memory():
    v = Volume(192 * MiB)
    dev = v.device()
    format_volume(dev, "stream")
    fs = FatVolume(dev)
    peak = []
    real = dev.pwrite

    def watch(offset, data):
        n = real(offset, data)
        peak.append(dev.cached_bytes)
        return n

    dev.pwrite = watch
    fs.write_file("big.bin", 120 * MiB, 5)
    assert max(peak) <= dev.max_cached + 4 * MiB
    assert max(n for _, n in v.writes) == 4 * MiB          # written back in 4 MiB calls
    assert len(v.writes) < 60
    size, digest = fs.file_digest("big.bin")
    assert (size, digest) == (120 * MiB, sha(content(120 * MiB, 5)))
    assert dev.cached_bytes <= dev.max_cached


def test_needs_no_pyfilesystem2(tmp_path):
    """pyfatfs' PyFilesystem2 layer imports `fs`, which needs setuptools' pkg_resources (gone
    from setuptools >= 81): this module must work without it."""
    import subprocess
    code = (
        "import sys; sys.modules['fs'] = None; sys.modules['pkg_resources'] = None\n"
        "import numpy as np\n"
        "from san.filesystem import BlockDevice, FatVolume, format_volume\n"
        "v = np.zeros(8 << 20, dtype=np.uint8)\n"
        "def w(o, d): v[o:o + len(d)] = d\n"
        "dev = BlockDevice(len(v), lambda o, n: v[o:o + n].copy(), w)\n"
        "format_volume(dev, 'x'); fs = FatVolume(dev); fs.write_file('a/b', 5, 1)\n"
        "fs.remove_file('a/b'); fs.close(); print(sorted(FatVolume(dev).files()))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
