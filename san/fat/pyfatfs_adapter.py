"""How `san.fat` speaks to pyfatfs: the one module that imports it or touches its internals.

A host's `fat` mount keeps a real FAT filesystem on a SAN volume with `pyfatfs` (its core only:
``PyFat`` and directory entries).  pyfatfs 1.1 has pitfalls that matter on a SAN, fixed here
by `SanPyFat` (a ``PyFat`` subclass) and a few small functions; everything here that reaches
into pyfatfs' private attributes (``_PyFat__lock``, ``_PyFat__seek``, ``_PyFat__fp``,
``_fat_size``, ``_get_total_sectors``, ``_parse_fat``, ``_write_data_to_address``,
``_mark_dirty`` / ``_mark_clean`` / ``_is_dirty``, ``_get_entries_raw``, ``_write_bpb_header``)
depends on that version, so the version is checked on import (`SUPPORTED`, as pinned in
pyproject.toml): another one raises ImportError naming the supported range.  The rest of
`san.fat` uses only the names this module exports.

Known pyfatfs 1.1.0 pitfalls, and what this module does about each (the ones about mkfs,
labels and names are handled in `san.fat.mkfs` and `san.fat.names`):

* pyfatfs marks the filesystem dirty on mount and only cleans it on close: here a mount
  writes nothing (`mount`), the first change marks it dirty (as Linux does), and
  `FatVolume.flush` marks it clean and writes everything back, so ``fsck.fat -n`` passes
  while still mounted.
* Its ``__del__`` cleans (writes!) a filesystem that is garbage-collected: disabled, so a
  dropped mount never overwrites a volume restored behind its back.
* Read-only mounts go through a non-writable file object (pyfatfs decides read-only mode from
  ``fp.writable()``), so nothing is ever written to a snapshot or backup.
* FAT32's FSInfo free-cluster count is never updated by pyfatfs (``fsck.fat`` then reports
  a wrong free cluster summary): `SanPyFat.write_fsinfo` rewrites it (and its backup), called
  by `FatVolume.flush`.
* The in-memory FAT covers whole FAT sectors, past the last cluster: pyfatfs would allocate
  those phantom clusters (writing past the end of the volume).  The table is cut to the real
  cluster count, and allocation is replaced (pyfatfs also could not hand out the last one).
* A directory that shrinks keeps its old entries in the clusters it no longer needs, and
  pyfatfs (and ``fsck.fat``) would read them back as live files: those clusters are zeroed.
* Replacing an empty file with ``create(wipe=True)`` frees the chain of cluster 0 (FAT[0]):
  freeing cluster 0 or 1 is ignored here, and `FatVolume` replaces files by freeing their own
  chain.
* pyfatfs' PyFilesystem2 layer (``PyFatFS``, ``FatIO``) imports ``fs``, which needs
  setuptools' ``pkg_resources`` (removed in recent setuptools; a fresh venv on Python 3.12+
  gets those): only pyfatfs' core (``PyFat``, directory entries) is used, never ``fs``.
* pyfatfs parses the FAT entry by entry in Python and packs it the same way on every FAT
  write: both are done with numpy here (FAT16/32).
* ``mkfs`` writes 0 heads and 0 sectors per track, which mtools refuses ("zero number of
  heads or sectors"): `set_geometry` writes a geometry into the boot sector (and FAT32's
  backup boot sector), for `san.fat.mkfs` and for mounts of volumes formatted so.
* ``mkfs`` gives a FAT12 0xFF0 as FAT[1] (its "special EOC"), which mtools refuses ("Initial
  bytes of fat is not 0xff"): `set_fat12_reserved` writes 0xFFF there, as ``mkfs.fat`` does
  (pyfatfs never reads FAT[1] of a FAT12: it has no dirty bit).
"""
from __future__ import annotations

import errno
import importlib.metadata
import math
import re
import struct
import warnings

import numpy as np
import pyfatfs

from .cache import SECTOR, ReadOnlyView

SUPPORTED = ">=1.1,<1.2"          # as pinned in pyproject.toml
_LOWEST, _BEYOND = (1, 1), (1, 2)


def installed_version() -> str | None:
    """The installed pyfatfs' version (pyfatfs 1.1 has no ``__version__``: its metadata)."""
    version = getattr(pyfatfs, "__version__", None)
    if version:
        return str(version)
    try:
        return importlib.metadata.version("pyfatfs")
    except importlib.metadata.PackageNotFoundError:
        return None


def check_version(version: str | None) -> None:
    """ImportError unless `version` is in `SUPPORTED` (this module relies on its internals)."""
    found = re.match(r"(\d+)\.(\d+)", version or "")
    if found is None or not _LOWEST <= (int(found[1]), int(found[2])) < _BEYOND:
        raise ImportError(f"san.fat supports pyfatfs {SUPPORTED} only (it relies on that "
                          f"version's internals); the installed pyfatfs is "
                          f"{version or 'of unknown version'}: pip install 'pyfatfs{SUPPORTED}'")


check_version(installed_version())

# Checked first: another version may not have these modules.  Only pyfatfs' core: its
# PyFilesystem2 layer (PyFatFS, FatIO) imports `fs`, which needs setuptools' pkg_resources.
from pyfatfs import PyFATException  # noqa: E402
from pyfatfs.DosDateTime import DosDateTime  # noqa: E402
from pyfatfs.EightDotThree import EightDotThree  # noqa: E402
from pyfatfs.FATDirectoryEntry import FATDirectoryEntry, make_lfn_entry  # noqa: E402
from pyfatfs.PyFat import PyFat  # noqa: E402

__all__ = ["SUPPORTED", "DosDateTime", "EightDotThree", "FATDirectoryEntry", "PyFATException",
           "PyFat", "SanPyFat", "check_version", "cluster_count", "directory_bytes",
           "drop_entry", "fat12_reserved_ok", "geometry_of", "installed_version",
           "make_lfn_entry", "mount", "raw_entries", "set_fat12_reserved", "set_geometry"]


# ---------------------------------------------------------------------------------------------
# Small functions over pyfatfs' private names
# ---------------------------------------------------------------------------------------------
def _read_at(pf: PyFat, offset: int, length: int) -> bytes:
    """Bytes of the filesystem's file, read under pyfatfs' own lock."""
    with pf._PyFat__lock:
        pf._PyFat__seek(offset)
        return pf._PyFat__fp.read(length)


def cluster_count(pf: PyFat) -> int:
    """The data clusters of an opened filesystem (its FAT sectors hold entries past them)."""
    data_sectors = pf._get_total_sectors() - pf.first_data_sector
    return data_sectors // pf.bpb_header["BPB_SecPerClus"]


def raw_entries(directory) -> list:
    """Every entry of a directory (volume label, ``.``, ``..`` included): pyfatfs' own list."""
    return directory._get_entries_raw()


def directory_bytes(directory) -> int:
    """Bytes the entries of a directory take (8.3 and LFN entries)."""
    return sum(len(bytes(d)) for d in raw_entries(directory))


def drop_entry(directory, entry) -> None:
    """Take `entry` out of `directory`'s entries in memory (this entry, not a namesake)."""
    raw_entries(directory).remove(entry)


def geometry_of(pf: PyFat) -> tuple[int, int]:
    """(heads, sectors per track) as an opened filesystem's boot sector says."""
    return pf.bpb_header["BPB_NumHeads"], pf.bpb_header["BPB_SecPerTrk"]


def set_geometry(pf: PyFat, heads: int, sectors_per_track: int) -> None:
    """Write a geometry into the boot sector of a filesystem opened read-write (FAT32: and
    into its backup boot sector, which ``fsck.fat`` compares with the first).  The rest of
    the boot sector is rewritten as pyfatfs holds it, which is as it was read."""
    pf.bpb_header["BPB_NumHeads"] = heads
    pf.bpb_header["BPB_SecPerTrk"] = sectors_per_track
    pf._write_bpb_header()


FAT12_RESERVED = 0xFFF      # FAT[1] of a FAT12, as mkfs.fat writes it (pyfatfs' mkfs: 0xFF0)


def fat12_reserved_ok(pf: PyFat) -> bool:
    """False for a FAT12 whose FAT[1] is not all ones (what pyfatfs' mkfs writes)."""
    return pf.fat_type != pf.FAT_TYPE_FAT12 or pf.fat[1] == FAT12_RESERVED


def set_fat12_reserved(pf: PyFat) -> None:
    """FAT[1] of a FAT12 opened read-write set to all ones, and the FATs written."""
    pf.fat[1] = FAT12_RESERVED
    pf.flush_fat()


# ---------------------------------------------------------------------------------------------
# PyFat, with its pitfalls fixed
# ---------------------------------------------------------------------------------------------
class SanPyFat(PyFat):
    """PyFat over a file object: bounded FAT, fixed allocation, quiet mount, no __del__."""

    _mounting = False

    def __del__(self):
        pass

    def close(self):
        """Unmount, writing nothing: never close the caller's file object; cleaning is
        FatVolume.flush's business."""
        self.initialized = False

    def is_dirty(self) -> bool:
        """Whether the volume says it was not cleanly unmounted."""
        return self._is_dirty()

    def mark_dirty(self) -> None:
        """pyfatfs' own dirty marks: FAT[1] and the boot sector."""
        self._mark_dirty()

    def mark_clean(self) -> None:
        self._mark_clean()

    def _mark_dirty(self):
        if not self._mounting:      # set_fp marks dirty on mount: deferred to the 1st change
            super()._mark_dirty()

    def cluster_count(self) -> int:
        return cluster_count(self)

    def _parse_fat(self):
        if self.fat_type in (self.FAT_TYPE_FAT16, self.FAT_TYPE_FAT32):
            self.bytes_per_cluster = (self.bpb_header["BPB_BytsPerSec"]
                                      * self.bpb_header["BPB_SecPerClus"])
            fat_bytes = self.bpb_header["BPB_BytsPerSec"] * self._fat_size
            first = self.bpb_header["BPB_RsvdSecCnt"] * self.bpb_header["BPB_BytsPerSec"]
            raw = _read_at(self, first, fat_bytes)
            if len(raw) != fat_bytes:
                raise PyFATException("Invalid length of FAT")
            if self.fat_type == self.FAT_TYPE_FAT16:
                self.fat = np.frombuffer(raw, dtype="<u2").tolist()
            else:
                self.fat = (np.frombuffer(raw, dtype="<u4") & 0x0FFFFFFF).tolist()
        else:
            super()._parse_fat()
        # the FAT sectors hold entries past the last cluster: never hand those out
        del self.fat[self.cluster_count() + 2:]

    def __bytes__(self):
        if self.fat_type == self.FAT_TYPE_FAT16:
            return np.array(self.fat, dtype="<u2").tobytes()
        if self.fat_type == self.FAT_TYPE_FAT32:
            return np.array(self.fat, dtype="<u4").tobytes()
        return super().__bytes__()

    def free_clusters(self) -> int:
        return self.fat.count(0)

    def _zero_clusters(self, clusters) -> None:
        zero = b"\0" * self.bytes_per_cluster
        for c in clusters:
            self._write_data_to_address(zero, self.get_data_cluster_address(c))

    def allocate_bytes(self, size: int, erase: bool = False) -> list:
        if self.is_read_only:
            raise PyFATException("Filesystem has been opened read-only", errno=errno.EROFS)
        wanted = self.calc_num_clusters(size)
        fat, limit = self.fat, len(self.fat)
        found = []
        hint = min(max(2, self.first_free_cluster), limit)
        special = self.FAT12_SPECIAL_EOC if self.fat_type == self.FAT_TYPE_FAT12 else -1
        for lo, hi in ((hint, limit), (2, hint)):   # from the hint, then wrap around
            i = lo
            while len(found) < wanted:
                try:
                    i = fat.index(0, i, hi)
                except ValueError:
                    break
                if i != special:
                    found.append(i)
                i += 1
        if len(found) < wanted:
            raise PyFATException(f"Not enough free space to allocate {size} bytes "
                                 f"({len(found) * self.bytes_per_cluster} bytes free)",
                                 errno=errno.ENOSPC)
        found.sort()
        eoc = self.FAT_CLUSTER_VALUES[self.fat_type]["END_OF_CLUSTER_MAX"]
        for a, b in zip(found, found[1:]):
            fat[a] = b
        fat[found[-1]] = eoc
        self.first_free_cluster = found[-1] + 1
        if erase:
            self._zero_clusters(found)
        return found

    def free_cluster_chain(self, cluster: int):
        if cluster >= 2:          # never cluster 0 (the "empty file" cluster) or 1
            super().free_cluster_chain(cluster)

    def update_directory_entry(self, dir_entry) -> None:
        super().update_directory_entry(dir_entry)
        if dir_entry is self.root_dir and self.fat_type != self.FAT_TYPE_FAT32:
            return
        keep = max(1, math.ceil(directory_bytes(dir_entry) / self.bytes_per_cluster))
        chain = list(self.get_cluster_chain(dir_entry.get_cluster()))
        if len(chain) > keep:
            # entries that moved up must not live on in the clusters no longer needed
            self._zero_clusters(chain[keep:])

    def write_fsinfo(self) -> None:
        """FAT32: the FSInfo free count and next-free hint (and the backup's)."""
        if self.fat_type != self.FAT_TYPE_FAT32:
            return
        sector = self.bpb_header["BPB_FSInfo"]
        if sector in (0, 0xFFFF):
            return
        free = self.free_clusters()
        try:
            nxt = self.fat.index(0, 2)
        except ValueError:
            nxt = 0xFFFFFFFF
        bps = self.bpb_header["BPB_BytsPerSec"]
        places = [sector * bps]
        backup = self.bpb_header["BPB_BkBootSec"]
        if backup not in (0, 0xFFFF):
            places.append((backup + sector) * bps)
        for where in places:
            raw = _read_at(self, where, SECTOR)
            if len(raw) < SECTOR or struct.unpack_from("<L", raw, 0)[0] != 0x41615252:
                continue
            self._write_data_to_address(struct.pack("<LL", free, nxt), where + 488)


def mount(device, readonly: bool) -> tuple[SanPyFat, list[str]]:
    """Mount the filesystem on a `BlockDevice` without writing anything: (the mount, what
    pyfatfs warned about, e.g. a filesystem not cleanly unmounted).  A `readonly` mount of a
    writable device goes through a `ReadOnlyView`.  Raises what pyfatfs raises on a volume it
    cannot parse."""
    fp = ReadOnlyView(device) if readonly and device.writable() else device
    pf = SanPyFat(encoding="ibm437", lazy_load=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pf._mounting = True
        try:
            pf.set_fp(fp)
        finally:
            pf._mounting = False
    return pf, [str(w.message) for w in caught]
