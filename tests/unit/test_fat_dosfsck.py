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
