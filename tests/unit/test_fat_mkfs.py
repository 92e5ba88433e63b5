"""san.fat.mkfs: FAT filesystems made on SAN volumes (the FAT type per size), their times."""
from __future__ import annotations

import datetime
import os

import numpy as np
import pytest

from san.errors import SanError
from san.fat import FAT_EPOCH, FatVolume, format_volume, fsck, is_formatted
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
