"""Making a FAT filesystem on a SAN volume: what a blank `fat` mount gets when the SAN is built.

`format_volume` runs pyfatfs' ``mkfs`` on a sparse temporary file of the device's size and
copies what it wrote onto the device.  The FAT type follows the size (pyfatfs' cluster tables):

=====================  ======  ======================================================
volume size            type    notes
=====================  ======  ======================================================
< 4.1 MiB (8400 sect)  FAT12   512 B - 2 KiB clusters
4.1 MiB .. 2 GiB       FAT16   1 KiB (<= 16 MiB) .. 32 KiB clusters (> 1 GiB); at 2 GiB the
                               filesystem stops 96 KiB short of the end, so that it keeps
                               the 65524 clusters FAT16 allows (``fsck.fat`` refuses more)
> 2 GiB .. 32 GiB      FAT32   4 KiB (<= 8 GiB) .. 16 KiB clusters; bigger volumes get a
                               32 GiB filesystem (the rest of the volume is left unused)
=====================  ======  ======================================================

Known pyfatfs 1.1.0 pitfalls about mkfs, and what this module does about each:

* ``mkfs`` wants a file name, not a file object: it runs on a temporary sparse file; the
  metadata area (boot sector, FATs, root directory) is then copied whole and the data blocks
  it wrote (the FAT32 root directory cluster) when they are not zero.
* ``mkfs`` makes a 2 GiB FAT16 with 65527 clusters, which ``fsck.fat`` rejects: the
  filesystem is shrunk until it has at most 65524 (and pyfatfs agrees on its type).
* ``mkfs`` stamps the label's entry with the machine's time: it is stamped again here.
* ``mkfs`` writes 0 heads and 0 sectors per track, and gives a FAT12 0xFF0 as FAT[1], both of
  which mtools refuses: the boot sector gets the geometry ``mkfs.fat`` gives a disk it cannot
  ask for one (`chs_geometry`), and a FAT12 0xFFF as FAT[1], so mtools (``mdir``, ``mcopy``)
  reads a volume's image as it is.  A volume formatted by an older san gets both when a host
  mounts it read-write (`san.fat.volume`).

Times: a volume's bytes must not depend on when the simulation ran, so every time written
(the volume serial number, directory-entry times: `dos_stamp`) comes from the host's
simulated clock, `FAT_EPOCH` when none is given.  `is_formatted` is the cheap probe of a
volume's first sector that tells a blank volume from a formatted one.
"""
from __future__ import annotations

import datetime
import os
import struct
import tempfile
import warnings

import numpy as np

from ..errors import SanError
from .cache import MAX_IO, SECTOR, BlockDevice, round_up
from .names import fat_label
from .pyfatfs_adapter import (DosDateTime, PyFat, cluster_count, fat12_reserved_ok, raw_entries,
                              set_fat12_reserved, set_geometry)

FAT16_MAX_CLUSTERS = 65524  # what fsck.fat accepts for FAT16
FAT32_MAX_FS = 32 << 30     # pyfatfs' FAT32 cluster table ends at 32 GiB
FAT_EPOCH = datetime.datetime(1980, 1, 1, tzinfo=datetime.timezone.utc)


def dos_stamp(entry, moment: datetime.datetime, created: bool) -> None:
    """Set a directory entry's times to `moment` (the host's simulated clock, never the
    machine's: a volume's bytes must not depend on when the simulation ran)."""
    dos = DosDateTime(*moment.timetuple()[:6])
    entry.wrttime, entry.wrtdate = dos.serialize_time(), dos.serialize_date()
    entry.lstaccessdate = dos.serialize_date()
    if created:
        entry.crttime, entry.crtdate, entry.crttimetenth = dos.serialize_time(), dos.serialize_date(), 0


def chs_geometry(sectors: int) -> tuple[int, int]:
    """(heads, sectors per track) for a volume of `sectors` 512-byte sectors, as ``mkfs.fat``
    (dosfstools 4.2) chooses them for a disk without a geometry of its own (an image file, a
    SAN LUN): up to 256 MiB the SD card specification's recommendation, above it the BIOS's
    LBA-assist translation (63 sectors per track, up to 255 heads).  Nothing reads them on a
    disk addressed by LBA, but mtools refuses a boot sector where either is 0."""
    if sectors <= 524288:                       # 256 MiB
        heads = 2 if sectors <= 32768 else 4 if sectors <= 65536 else 8 if sectors <= 262144 else 16
        return heads, 16 if sectors <= 4096 else 32
    for heads in (16, 32, 64, 128):
        if sectors <= heads * 63 * 1024:        # 1024 cylinders of `heads` tracks
            return heads, 63
    return 255, 63


def _fat_type_for(size: int) -> tuple[int, int]:
    """(FAT type, filesystem size) pyfatfs should make for a volume of `size` bytes."""
    sectors = size // SECTOR
    if sectors <= 8400:
        return 12, sectors * SECTOR
    if sectors <= 4194304:
        return 16, sectors * SECTOR
    return 32, min(sectors * SECTOR, FAT32_MAX_FS)


def _volume_id(moment: datetime.datetime) -> int:
    """The serial number mkfs derives from the time of formatting (here, simulated time)."""
    cdate = ((moment.year - 1980) << 9) | (moment.month << 5) | moment.day
    ctime = (moment.hour << 11) | (moment.minute << 5) | (moment.second // 2)
    return cdate << 16 | ctime


def _mkfs_image(path: str, fat_type: int, fs_size: int, label: str, moment: datetime.datetime,
                geometry: tuple[int, int]):
    """Run pyfatfs' mkfs on the file `path`; return (header facts, pyfatfs warnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pf = PyFat()
        pf.mkfs(path, fat_type, size=fs_size, label=label, volume_id=_volume_id(moment))
        pf.close()
        stamp = PyFat()                 # mkfs stamps the label's entry with the machine's time
        stamp.open(path)
        for entry in raw_entries(stamp.root_dir):
            if entry.is_volume_id():
                dos_stamp(entry, moment, created=True)
        stamp.update_directory_entry(stamp.root_dir)
        set_geometry(stamp, *geometry)  # mkfs wrote 0 heads, 0 sectors per track
        if not fat12_reserved_ok(stamp):
            set_fat12_reserved(stamp)
        stamp.close()
        check = PyFat()
        check.open(path, read_only=True)
        facts = {"type": check.fat_type,
                 "clusters": cluster_count(check),
                 "cluster_bytes": check.bytes_per_cluster,
                 "data_start": check.first_data_sector * SECTOR}
        check.close()                   # read-only: closes the file, writes nothing
    return facts, [str(w.message) for w in caught]


def format_volume(device: BlockDevice, label: str, now: datetime.datetime = FAT_EPOCH) -> None:
    """Make a FAT filesystem on `device` (see the module doc for the FAT type per size).

    pyfatfs' mkfs runs on a sparse temporary file of the device's size; the metadata area is
    then copied onto the device whole, and the blocks of the data area that mkfs wrote when
    they are not zero; the device is flushed.  The label is `fat_label(label)`.
    ``INVALID_INPUT`` for a volume smaller than 64 KiB or a read-only device."""
    if not device.writable():
        raise SanError("READ_ONLY", f"{device.name} is read-only: it cannot be formatted")
    if device.size < 64 * 1024:
        raise SanError("INVALID_INPUT", f"{device.name} ({device.size} bytes) is too small for "
                                        "a FAT filesystem (64 KiB at least)")
    fat_type, fs_size = _fat_type_for(device.size)
    label = fat_label(label)
    with tempfile.TemporaryDirectory(prefix="san-mkfs-") as tmp:
        image = os.path.join(tmp, "mkfs.img")
        for _ in range(8):
            with open(image, "wb") as f:
                f.truncate(device.size)
            facts, notes = _mkfs_image(image, fat_type, fs_size, label, now,
                                       chs_geometry(device.size // SECTOR))
            excess = facts["clusters"] - FAT16_MAX_CLUSTERS
            doubt = any("determine FAT type" in note for note in notes)
            if facts["type"] == 16 and (excess > 0 or doubt):
                # too many clusters for FAT16 (fsck.fat refuses it, pyfatfs doubts the type)
                fs_size -= max(excess, 1) * facts["cluster_bytes"]
                continue
            break
        else:
            raise SanError("INVALID_INPUT", f"pyfatfs cannot make a FAT{fat_type} filesystem "
                                            f"on {device.name} ({device.size} bytes)")
        _copy_image(image, device, facts["data_start"])
    device.flush()


def _data_extents(f, size: int):
    """(offset, end) ranges of a sparse file that hold data (all of it if unknown)."""
    fd = f.fileno()
    if not hasattr(os, "SEEK_DATA"):
        yield 0, size
        return
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:
            return
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, min(end, size)
        pos = end


def _copy_image(image: str, device: BlockDevice, meta_end: int) -> None:
    size = os.path.getsize(image)
    meta_end = min(round_up(meta_end, SECTOR), size)
    with open(image, "rb") as f:
        f.seek(0)
        done = 0
        while done < meta_end:           # boot sector, FATs, FAT12/16 root: written whole
            data = f.read(min(MAX_IO, meta_end - done))
            device.pwrite(done, data)
            done += len(data)
        for start, end in _data_extents(f, size):
            start = max(start - start % SECTOR, meta_end)
            end = round_up(end, SECTOR)
            pos = start
            while pos < end:
                f.seek(pos)
                n = min(device.cache_block, end - pos)
                data = f.read(n)
                if np.frombuffer(data, dtype=np.uint8).any():
                    device.pwrite(pos, data)
                pos += n


def is_formatted(device) -> bool:
    """Whether the first sector looks like a FAT boot sector (a cheap probe, no mount)."""
    reader = device.pread if isinstance(device, BlockDevice) else device
    head = reader(0, SECTOR)
    head = bytes(head) if not isinstance(head, bytes) else head
    if len(head) < SECTOR or head[510:512] != b"\x55\xaa" or head[0] not in (0xEB, 0xE9):
        return False
    bps = struct.unpack_from("<H", head, 11)[0]
    return bps in (512, 1024, 2048, 4096) and head[13] in (1, 2, 4, 8, 16, 32, 64, 128)
