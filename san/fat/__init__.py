"""FAT filesystems on SAN volumes: a host's `fat` mount (plain Python, no Ray).

A volume is seen as a file (`BlockDevice`): its reads and writes are SAN I/O, made through two
callbacks the host provides, behind a host-side write-back cache.  On it, `pyfatfs` keeps a
FAT filesystem (`FatVolume`); `write_files`, `remove_files`, `restore_files` and checkpoints
of files work on its real files, and `fsck` runs dosfstools' ``fsck.fat -n`` on an image
(and `fsck_repair` runs ``fsck.fat -a``, which repairs it).

One module per concern:

* `san.fat.cache`: the block device and its write-back cache (nothing FAT-specific);
* `san.fat.pyfatfs_adapter`: everything that knows pyfatfs' internals (and its version);
* `san.fat.names`: file paths, 8.3 aliases, volume labels;
* `san.fat.mkfs`: `format_volume` (the FAT type per size, the geometry), timestamps,
  `is_formatted`;
* `san.fat.volume`: `FatVolume`, the mounted filesystem;
* `san.fat.dosfsck`: `fsck` (``fsck.fat -n``), `fsck_repair` (``fsck.fat -a``), `image_to_file`.
"""
from __future__ import annotations

from .cache import BlockDevice
from .dosfsck import changed_ranges, fsck, fsck_binary, fsck_repair, image_to_file
from .mkfs import FAT_EPOCH, format_volume, is_formatted
from .names import fat_label, normalize
from .volume import FatVolume

__all__ = ["FAT_EPOCH", "BlockDevice", "FatVolume", "changed_ranges", "fat_label", "format_volume",
           "fsck", "fsck_binary", "fsck_repair", "image_to_file", "is_formatted", "normalize"]
