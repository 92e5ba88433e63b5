"""san.fat.volume: the mounted FAT filesystem (pyfatfs) on a block device: files, names,
space, flush / close / discard, read-only mounts, replacing a file safely."""
from __future__ import annotations

import pytest

from san.errors import SanError
from san.fat import BlockDevice, FatVolume, format_volume, fsck, fsck_repair, is_formatted, normalize

from .fat_support import (FSCK, KiB, MiB, Volume, assert_fsck_clean, content, needs_fsck,
                               sha, vol64)  # noqa: F401 (fixture)


# ---------------------------------------------------------------- files
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


@needs_fsck
def test_a_long_name_s_alias_is_never_another_file_s_own_name(vol64, tmp_path):
    """A name its 8.3 alias shortens or changes gets ``~N`` (INDEX~1.HTM), as Windows and
    Linux give it: the file whose own name is the bare alias (index.htm) is another file,
    and writing or removing it leaves the long-named one alone (before, it replaced it)."""
    v, dev, fs = vol64
    pairs = [("index.html", "index.htm"), ("ab cd.txt", "abcd.txt"), ("stra\u00dfe.txt", "STRASSE.TXT"),
             ("a.b.c", "A.B"), ("longfilename.txt", "LONGFILE.TXT")]
    for i, (long, short) in enumerate(pairs):
        fs.write_file(long, 1000 + i, 2 * i + 1)
        fs.write_file(short, 10 + i, 2 * i + 2)
    assert {p: s for p, (s, _) in fs.files().items()} == {
        f"/{name}": (1000 + i if k == 0 else 10 + i)
        for i, pair in enumerate(pairs) for k, name in enumerate(pair)}
    for i, (long, short) in enumerate(pairs):
        fs.remove_file(short)
        assert fs.read_file(long) == content(1000 + i, 2 * i + 1)
    with pytest.raises(SanError) as info:
        fs.remove_file("STRASSE.TXT")
    assert info.value.code == "NO_SUCH_FILE"
    fs.flush()
    assert_fsck_clean(v, tmp_path)
    fs.close()
    again = FatVolume(dev)
    assert sorted(again.files()) == sorted(f"/{long}" for long, _ in pairs)


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


# ---------------------------------------------------------------- flush, mounts
@pytest.mark.parametrize("cut_after", [1, 2, 3])      # a whole flush makes 3 writes
def test_a_flush_cut_short_leaves_the_volume_marked_dirty_never_clean_and_incomplete(cut_after):
    """The clean mark is written once what it vouches for is on the volume: the write-back
    goes in offset order, and the mark (the boot sector) is at offset 0.  Before, a flush cut
    after its first write left a volume that said "cleanly unmounted" with the files' data
    and FAT missing."""
    v = Volume(64 * MiB)
    format_volume(v.device(), "test")
    writes = []

    def write(offset, data):
        if len(writes) == cut_after:
            raise SanError("ELEMENT_DOWN", "the array died")
        writes.append(offset)
        v.write(offset, data)

    fs = FatVolume(BlockDevice(v.size, v.read, write))
    fs.write_file("dir/a.bin", 6 * MiB, 1)     # all of it still in the host's cache
    fs.write_file("b.bin", 5000, 2)
    cut = True
    try:
        fs.flush()
        cut = False
    except SanError as exc:
        assert exc.code == "ELEMENT_DOWN"
    again = FatVolume(v.readonly_device(), readonly=True)
    assert cut == again.found_dirty, (cut, len(writes))
    if not again.found_dirty:
        assert again.read_file("dir/a.bin") == content(6 * MiB, 1)
        assert again.read_file("b.bin") == content(5000, 2)


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


@needs_fsck
def test_a_filesystem_found_dirty_stays_dirty_until_fsck_repairs_it(vol64, tmp_path):
    v, dev, fs = vol64
    fs.write_file("a.bin", 300 * KiB, 1)
    dev.flush()                               # what a host that died before its flush leaves
    again = FatVolume(v.device())             # the host restarted: a new cache, the same volume
    again.write_file("b.bin", 10, 2)
    again.close()                             # its flush does not hide the crash
    ok, out = fsck(v.image(tmp_path / "dirty"))
    assert not ok and "Dirty bit" in out
    assert set(FatVolume(v.device()).files()) == {"/a.bin", "/b.bin"}


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


# ---------------------------------------------------------------- big files
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


# ---------------------------------------------------------------- replacing a file safely
def replacing(tmp_path):
    """An 8 MiB volume holding keep.bin and f.bin (old content), flushed: (volume, device,
    mount); the device writes back every 256 KiB, so data reaches the volume mid-write, and
    through ``v.write`` as it is at each call (a test replaces it)."""
    v = Volume(8 * MiB)
    format_volume(v.device(), "safe")
    dev = BlockDevice(v.size, v.read, lambda offset, data: v.write(offset, data),
                      max_dirty=256 * KiB)
    fs = FatVolume(dev)
    fs.write_file("keep.bin", 100 * KiB, 1)
    fs.write_file("d/f.bin", 1 * MiB, 2)
    fs.flush()
    return v, dev, fs


OLD, NEW = {"/keep.bin": (100 * KiB, sha(content(100 * KiB, 1))),
            "/d/f.bin": (1 * MiB, sha(content(1 * MiB, 2)))}, \
    {"/keep.bin": (100 * KiB, sha(content(100 * KiB, 1))),
     "/d/f.bin": (2 * MiB, sha(content(2 * MiB, 3)))}


@needs_fsck
def test_a_replacement_cut_at_any_write_leaves_the_old_or_the_new_file(tmp_path):
    v, dev, fs = replacing(tmp_path)
    before = v.data.copy()
    recorded = []
    real = v.write

    def record(offset, data):
        recorded.append((offset, data.copy()))
        real(offset, data)
    v.write = record
    fs.write_file("d/f.bin", 2 * MiB, 3)
    fs.flush()
    seen = []
    for cut in range(len(recorded) + 1):        # the volume as a stop after `cut` writes left it
        img = Volume(v.size, before.copy())
        for offset, data in recorded[:cut]:
            img.data[offset:offset + len(data)] = data
        files = FatVolume(img.readonly_device()).files()
        assert files in (OLD, NEW), f"cut after {cut} of {len(recorded)} writes: {files}"
        seen.append(files == NEW)
        status, out = fsck_repair(img.image(tmp_path / "cut.img"))
        found = [ln.strip() for ln in out.splitlines()[1:] if ln.strip() and not ln.startswith("/")]
        # (a stop between the write-backs of the two FATs' changed sectors leaves the FATs
        # differing, the first one new: fsck uses the first, as it says)
        allowed = ("Dirty bit is set", "Automatically removing dirty bit", "Reclaimed ",
                   "*** Filesystem was changed ***", "Writing changes.", "Performing changes.",
                   "Leaving filesystem unchanged.", "FATs differ but appear to be intact.",
                   "Using first FAT.")
        assert status in (0, 1) and all(ln.startswith(allowed) for ln in found), (cut, out)
    assert seen[0] is False and seen[-1] is True and seen == sorted(seen)   # old, then new


@needs_fsck
@pytest.mark.parametrize("fail_at", range(6))     # 4 write-backs, then the flush's
def test_a_replacement_whose_write_back_fails_keeps_the_old_file(tmp_path, fail_at):
    v, dev, fs = replacing(tmp_path)
    free = fs.free_bytes()
    real, calls = v.write, [0]

    def dying(offset, data):                    # the array dies at write-back call `fail_at`
        calls[0] += 1
        if calls[0] > fail_at:
            raise SanError("ELEMENT_DOWN", "array1 went down")
        real(offset, data)
    v.write = dying
    try:
        fs.write_file("d/f.bin", 2 * MiB, 3)
    except SanError as err:
        assert err.code == "ELEMENT_DOWN"
        assert fs.files() == OLD and fs.free_bytes() == free
    else:
        assert fs.files() == NEW                # it got past its last write-back
    v.write = real                              # back: the next flush writes what it kept
    expected = fs.files()
    fs.flush()
    assert_fsck_clean(v, tmp_path)
    assert FatVolume(v.device()).files() == expected


def test_a_replacement_needs_room_beside_the_old_file_and_leaves_it_when_there_is_none():
    v = Volume(8 * MiB)
    dev = v.device()
    format_volume(dev, "small")
    fs = FatVolume(dev)
    fs.write_file("a.bin", 4 * MiB, 1)
    free = fs.free_bytes()
    with pytest.raises(SanError) as err:
        fs.write_file("a.bin", free + fs.cluster_size, 2)
    assert err.value.code == "NO_SPACE" and "/a.bin" in err.value.message
    assert f"beside the {4 * MiB} bytes of the file it replaces" in err.value.message
    assert fs.read_file("a.bin") == content(4 * MiB, 1) and fs.free_bytes() == free
    fs.write_file("a.bin", free, 3)             # exactly the free space fits beside it
    assert fs.read_file("a.bin") == content(free, 3)
    assert fs.free_bytes() == 4 * MiB               # the old chain freed once replaced
