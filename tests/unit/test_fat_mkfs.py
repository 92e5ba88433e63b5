"""san.fat.mkfs: FAT filesystems made on SAN volumes (the FAT type per size), their times,
their geometry (so that mtools reads them as they are)."""
from __future__ import annotations

import datetime
import os
import shutil
import struct
import subprocess

import numpy as np
import pytest

from san.errors import SanError
from san.fat import FAT_EPOCH, FatVolume, format_volume, fsck, is_formatted
from san.fat import mkfs
from san.fat.mkfs import chs_geometry
from san.fat.pyfatfs_adapter import DosDateTime

from .fat_support import (GiB, KiB, MiB, Volume, assert_fsck_clean, content, needs_fsck,
                               sha, sparse_volume)


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


@pytest.mark.parametrize("size", [2 * MiB, 64 * MiB])
def test_volume_bytes_follow_the_simulated_clock_not_the_machines(monkeypatch, size):
    """Every time written (serial number, label, files, directories and their ``.``/``..``)
    comes from the `now` given, so the same steps give the same bytes whenever they run."""
    moment = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)

    def volume_bytes(machine_now):
        monkeypatch.setattr(DosDateTime, "now", lambda *a, **k: machine_now)
        v = Volume(size)
        dev = v.device()
        format_volume(dev, "clock", now=moment)
        fs = FatVolume(dev, now=lambda: moment)
        fs.write_file("dir/sub/a long name.txt", 1000, 1)
        fs.write_file("top.bin", 10, 2)
        fs.close()
        return v.data.copy()

    one = volume_bytes(DosDateTime(2001, 2, 3, 4, 5, 6))
    assert np.array_equal(one, volume_bytes(DosDateTime(2030, 12, 31, 23, 59, 58)))
    assert not np.array_equal(one, Volume(size).data)
    assert FAT_EPOCH == datetime.datetime(1980, 1, 1, tzinfo=datetime.timezone.utc)


# ---------------------------------------------------------------- geometry, mtools
def needs(tool: str, package: str):
    """Skipped when `tool` is missing, except in CI (scripts/test.sh installs `package`)."""
    return pytest.mark.skipif(shutil.which(tool) is None and not os.environ.get("CI"),
                              reason=f"{tool} is not installed (apt-get install {package})")


def mtools(*args, check=True):
    """Run an mtools command with its checks on (MTOOLS_SKIP_CHECK unset): (status, output)."""
    env = {k: v for k, v in os.environ.items() if k != "MTOOLS_SKIP_CHECK"}
    done = subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=60)
    assert not check or done.returncode == 0, (args, done.stdout, done.stderr)
    return done.returncode, done.stdout + done.stderr


def geometry_on(v, offset=0) -> tuple[int, int]:
    """(heads, sectors per track) in the boot sector at `offset` of a volume."""
    sector = bytes(v.data[offset:offset + 512])
    return struct.unpack_from("<H", sector, 26)[0], struct.unpack_from("<H", sector, 24)[0]


GEOMETRIES = [      # volume size: (heads, sectors per track), as mkfs.fat 4.2 writes them
    (1 * MiB, (2, 16)), (2 * MiB, (2, 16)), (2 * MiB + 512, (2, 32)), (16 * MiB, (2, 32)),
    (32 * MiB, (4, 32)), (64 * MiB, (8, 32)), (128 * MiB, (8, 32)), (256 * MiB, (16, 32)),
    (256 * MiB + 512, (16, 63)), (504 * MiB, (16, 63)), (1 * GiB, (64, 63)),
    (2 * GiB, (128, 63)), (4 * GiB, (255, 63)), (40 * GiB, (255, 63)),
]


@pytest.mark.parametrize("size,want", GEOMETRIES, ids=[f"{s >> 9}-sectors" for s, _ in GEOMETRIES])
def test_the_geometry_is_what_mkfs_fat_gives_a_disk_without_one(size, want):
    assert chs_geometry(size // 512) == want


@needs("mkfs.fat", "dosfstools")
@pytest.mark.parametrize("size", [2 * MiB, 64 * MiB, 2 * GiB, 40 * GiB])
def test_the_geometry_table_agrees_with_the_installed_mkfs_fat(tmp_path, size):
    image = tmp_path / "mkfs.img"
    with open(image, "wb") as f:
        f.truncate(size)
    subprocess.run(["mkfs.fat", str(image)], capture_output=True, check=True, timeout=60)
    with open(image, "rb") as f:
        head = f.read(512)
    got = struct.unpack_from("<H", head, 26)[0], struct.unpack_from("<H", head, 24)[0]
    assert got == chs_geometry(size // 512)


VOLUMES = [(2 * MiB, 12), (64 * MiB, 16), (2 * GiB, 16), (3 * GiB, 32)]
FILES = {"hello.txt": (1000, 1), "dir/Long Name.bin": (70000, 2), "dir/sub/empty": (0, 3),
         "big.dat": (1 * MiB + 7, 4)}


@needs("mdir", "mtools")
@needs_fsck
@pytest.mark.parametrize("size,fat", VOLUMES, ids=[f"FAT{t}-{s >> 20}MiB" for s, t in VOLUMES])
def test_mtools_lists_and_copies_out_the_files_of_a_volume_as_it_is(tmp_path, size, fat):
    v = sparse_volume(tmp_path, size)
    format_volume(v.device(), "tools")
    fs = FatVolume(v.device())
    assert fs.fat_type == fat
    for path, (n, seed) in FILES.items():
        fs.write_file(path, n, seed)
    fs.close()
    assert geometry_on(v) == chs_geometry(size // 512)
    image = v.image(tmp_path / "volume.img", v.extents())
    assert fsck(image)[0]
    _, listed = mtools("mdir", "-i", image, "-/", "-b", "::")
    assert sorted(ln.strip() for ln in listed.splitlines() if ln.strip()) == sorted([
        "::/hello.txt", "::/dir/", "::/dir/Long Name.bin", "::/dir/sub/", "::/dir/sub/empty",
        "::/big.dat"])
    _, volume = mtools("mdir", "-i", image, "::")
    assert "Volume in drive : is TOOLS" in volume
    for path, (n, seed) in FILES.items():
        out = tmp_path / "out.bin"
        mtools("mcopy", "-n", "-i", image, f"::{path}", str(out))
        assert out.read_bytes() == content(n, seed), path
        out.unlink()


def old_volume(monkeypatch, v) -> None:
    """Format `v` and write kept.txt as san did before it wrote a geometry (and, on a FAT12,
    FAT[1] as mkfs.fat does) or put them right on mount."""
    with monkeypatch.context() as old:
        old.setattr(mkfs, "set_geometry", lambda *args: None)
        old.setattr(mkfs, "fat12_reserved_ok", lambda pf: True)
        old.setattr(FatVolume, "_fix_for_tools", lambda self: None)
        format_volume(v.device(), "old")
        fs = FatVolume(v.device())
        fs.write_file("kept.txt", 5000, 1)
        fs.close()


@needs("mdir", "mtools")
@needs_fsck
@pytest.mark.parametrize("size,fat", VOLUMES, ids=[f"FAT{t}-{s >> 20}MiB" for s, t in VOLUMES])
def test_a_volume_formatted_by_an_older_san_is_put_right_by_a_read_write_mount(
        tmp_path, monkeypatch, size, fat):
    v = sparse_volume(tmp_path, size)
    old_volume(monkeypatch, v)
    assert geometry_on(v) == (0, 0)
    status, said = mtools("mdir", "-i", v.image(tmp_path / "old.img", v.extents()), "::", check=False)
    assert status != 0 and ("zero number of heads or sectors" in said
                            or "Initial bytes of fat is not 0xff" in said), said
    before = v.data.copy()
    ro = FatVolume(v.device(), readonly=True)              # a read-only mount puts nothing right
    assert ro.fixed == [] and ro.files()["/kept.txt"][0] == 5000
    ro.close()
    fs = FatVolume(v.device())
    heads, sectors = chs_geometry(size // 512)
    assert fs.fixed == [f"geometry set to {heads} heads, {sectors} sectors per track (the boot "
                        "sector said 0 heads, 0 sectors per track)"] + (
        ["FAT[1] set to 0xFFF (was 0xff0)"] if fat == 12 else [])
    assert (v.data == before).all()                        # in the cache until a write-back
    fs.flush()
    assert geometry_on(v) == (heads, sectors)
    if fat == 32:
        assert geometry_on(v, 6 * 512) == (heads, sectors)  # the backup boot sector agrees
    image = v.image(tmp_path / "fixed.img", v.extents())
    assert fsck(image)[0]
    out = tmp_path / "kept.txt"
    mtools("mcopy", "-n", "-i", image, "::kept.txt", str(out))
    assert out.read_bytes() == content(5000, 1)
    fs.close()
    assert FatVolume(v.device()).fixed == []              # put right once
