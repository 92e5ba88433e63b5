"""san.fat.dosfsck: ``fsck.fat -n`` on volume images, and the images themselves."""
from __future__ import annotations

import os

import numpy as np
import pytest

from san.errors import SanError
from san.fat import dosfsck, fsck, image_to_file

from .fat_support import KiB, MiB, Volume, needs_fsck, vol64  # noqa: F401 (fixture)


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
    monkeypatch.setattr(dosfsck, "fsck_binary", lambda: None)
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


@pytest.mark.parametrize("changes, expected", [
    ([100], [(0, 64 * KiB)]),                            # two extents share the first piece
    ([40000], [(0, 64 * KiB)]),
    ([100, 70 * KiB], [(0, 128 * KiB)]),                 # adjacent pieces merged
    ([300 * KiB], [(256 * KiB, 64 * KiB)]),
    ([], []),
])
def test_changed_ranges_names_each_piece_once(tmp_path, changes, expected):
    """Each 64 KiB piece is compared once, even when several data extents of the image lie
    in it (before, the piece came back once per extent, and its bytes were written back and
    counted twice)."""
    before, after = tmp_path / "before.img", tmp_path / "after.img"
    for path in (before, after):
        with open(path, "wb") as f:
            f.truncate(1 * MiB)
            for at, fill in ((0, 1), (32 * KiB, 2), (70 * KiB, 3), (300 * KiB, 4)):
                f.seek(at)
                f.write(bytes([fill]) * 4096)
    with open(after, "r+b") as f:
        for at in changes:
            f.seek(at)
            f.write(b"X")
    assert dosfsck.changed_ranges(str(before), str(after)) == expected
