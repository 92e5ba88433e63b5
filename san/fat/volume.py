"""The mounted FAT filesystem of a host's `fat` mount (plain Python, no Ray).

On a `BlockDevice` (`san.fat.cache`), pyfatfs keeps a FAT filesystem (`FatVolume`, through
`san.fat.pyfatfs_adapter`); `write_files`, `remove_files`, `restore_files` and checkpoints of
files work on its real files.  Mounting writes nothing; the first change marks the filesystem
dirty (as Linux does), and `FatVolume.flush` marks it clean and writes everything back, so
``fsck.fat -n`` passes while still mounted.  One exception: a volume formatted by an older
san has 0 heads and 0 sectors per track in its boot sector (and, a FAT12, 0xFF0 as FAT[1]),
which mtools refuses; a read-write mount puts them as `san.fat.mkfs` now writes them
(`FatVolume.fixed` says what it did), in the cache, so they reach the volume with the next
write-back (`flush`, or the next change).

Names: FAT is case-insensitive and case-preserving.  A path names the same file whatever
its case; a new file keeps the case it was written with, a replaced one keeps its stored name
(``write_file('/A.TXT')`` over ``/a.txt`` leaves ``/a.txt``).  As on Windows, a file's 8.3
alias names it too (``/LONGFI~1.TXT`` is ``/longfilename.txt``).  Paths are reported as
stored.  pyfatfs looks names up case-sensitively, decoding every name of the directory on
every lookup (files in a directory cost O(n^2)): here lookups are case-insensitive, as FAT's
are, through a per-directory index, and entries are created by this module (pyfatfs' short
names).  A volume without a FAT boot sector (or one pyfatfs cannot parse) does not mount:
``FSCK_FAILED``.  Timestamps are the host's simulated clock (UTC, the ``now`` a mount is
given), never the machine's.

Space: `FatVolume.write_file` counts the clusters it needs (data, new directories, growing
directories, the FAT16 root directory's 512 entries) before it touches anything, and raises
``NO_SPACE`` if they are not free.  If pyfatfs still runs out half-way, what the call created
is removed again.  File data is allocated in one chain (contiguous on a fresh filesystem) and
written in 4 MiB pieces straight to the clusters, so memory stays bounded whatever the file
size.

Replacing a file never leaves it half-written: the new content goes into newly allocated
clusters, then the directory entry is switched to them, then the old chain is freed, each
step written back before the next (`FatVolume._replace`).  A call that fails half-way (the
array died) leaves the old file; one that fails after the switch, the new one.  So a
replacement needs room for the new content beside the old one.
"""
from __future__ import annotations

import bisect
import datetime
import errno
import hashlib
import math
import threading

import numpy as np

from ..errors import SanError
from ..pattern import pattern
from .cache import SECTOR, BlockDevice, round_up
from .mkfs import FAT_EPOCH, chs_geometry, dos_stamp, is_formatted
from .names import entry_slots_bytes, fold, normalize, short_name
from .pyfatfs_adapter import (EightDotThree, FATDirectoryEntry, PyFATException, directory_bytes,
                              drop_entry, fat12_reserved_ok, geometry_of, make_lfn_entry, mount,
                              set_fat12_reserved, set_geometry)

PIECE = 4 << 20             # file data moves in pieces of this size
MAX_FILE_SIZE = 0xFFFFFFFF  # FAT's 32-bit file size


def _pattern_pieces(size: int, seed: int):
    off = 0
    while off < size:
        n = min(PIECE, size - off)
        yield pattern(seed, off, round_up(n, SECTOR))[:n]
        off += n


class FatVolume:
    """A mounted FAT filesystem on a `BlockDevice` (pyfatfs over the device as a file).

    ``readonly`` (or a read-only device) mounts through a non-writable file object: listing
    and reading work, every change is ``READ_ONLY``.  Mounting writes nothing (but what a
    volume formatted by an older san lacks, see the module doc: `fixed`); the first change
    marks the filesystem dirty, `flush` cleans it.  A volume that holds no FAT filesystem
    raises ``FSCK_FAILED``.  `warnings` keeps what pyfatfs warned about on mount (e.g. a
    filesystem not cleanly unmounted).  Thread-safe (one lock).
    """

    def __init__(self, device: BlockDevice, readonly: bool = False, now=None):
        self.device = device
        self._now = now or (lambda: FAT_EPOCH)   # file times: the host's simulated clock
        self.readonly = bool(readonly) or not device.writable()
        if not is_formatted(device):
            raise SanError("FSCK_FAILED", f"{device.name} holds no FAT filesystem "
                                          "(no FAT boot sector)")
        try:
            pf, self.warnings = mount(device, self.readonly)
        except SanError:
            raise
        except Exception as exc:    # pyfatfs parsing damaged structures may raise anything
            raise SanError("FSCK_FAILED", f"{device.name} holds no readable FAT "
                                          f"filesystem ({type(exc).__name__}: {exc})") from exc
        self._pf = pf
        self.fixed: list[str] = []            # what this mount put right for mtools
        if not self.readonly:
            self._fix_for_tools()
        self._disk_dirty = pf.is_dirty()      # what the volume says now
        self._found_dirty = self._disk_dirty  # not cleanly unmounted before: it stays marked
        self._marked = False                  # we set the dirty mark ourselves
        self._lock = threading.RLock()
        self._closed = False
        self._indexes: dict[int, tuple] = {}

    def _fix_for_tools(self) -> None:
        """Put right what san's mkfs used to leave and mtools refuses (into the cache)."""
        pf = self._pf
        if 0 in geometry_of(pf):
            was = "{} heads, {} sectors per track".format(*geometry_of(pf))
            heads, sectors = chs_geometry(self.device.size // SECTOR)
            set_geometry(pf, heads, sectors)
            self.fixed.append(f"geometry set to {heads} heads, {sectors} sectors per track "
                              f"(the boot sector said {was})")
        if not fat12_reserved_ok(pf):
            self.fixed.append(f"FAT[1] set to 0xFFF (was {pf.fat[1]:#05x})")
            set_fat12_reserved(pf)

    # -- facts ----------------------------------------------------------------------------------
    @property
    def found_dirty(self) -> bool:
        """The volume was marked dirty when mounted (its last writer did not unmount it
        cleanly): `flush` leaves it so, for ``fsck.fat`` to repair."""
        return self._found_dirty

    @property
    def fat_type(self) -> int:
        return self._pf.fat_type

    @property
    def cluster_size(self) -> int:
        return self._pf.bytes_per_cluster

    @property
    def label(self) -> str:
        return bytes(self._pf.bpb_header["BS_VolLab"]).decode("ascii", "replace").rstrip()

    def free_bytes(self) -> int:
        with self._lock:
            return self._pf.free_clusters() * self._pf.bytes_per_cluster

    # -- helpers --------------------------------------------------------------------------------
    def _check(self, writing: bool = False) -> None:
        if self._closed:
            raise ValueError("the FAT filesystem is unmounted")
        if writing and self.readonly:
            raise SanError("READ_ONLY", f"the FAT filesystem on {self.device.name} is mounted "
                                        "read-only")

    def _begin_change(self) -> None:
        if not self._marked:
            self._pf.mark_dirty()       # pyfatfs' own marks: FAT[1] and the boot sector
            self._marked = True
            self._disk_dirty = True

    def _children(self, entry):
        dirs, files, _ = entry.get_entries()
        return dirs + files

    def _index(self, directory):
        """{folded long or short name: entry} and the set of short names of a directory
        (pyfatfs decodes every name on every lookup: this keeps big directories usable)."""
        got = self._indexes.get(id(directory))
        if got is None or got[0] is not directory:
            got = (directory, {}, set())
            for e in self._children(directory):
                self._index_entry(got, e)
            self._indexes[id(directory)] = got
        return got

    @staticmethod
    def _index_entry(index, entry) -> None:
        _, names, shorts = index
        short = entry.get_short_name()
        shorts.add(short)
        names.setdefault(fold(repr(entry)), entry)
        names.setdefault(fold(short), entry)

    def _indexed_add(self, directory, entry) -> None:
        self._index_entry(self._index(directory), entry)

    def _indexed_remove(self, directory, entry) -> None:
        got = self._indexes.get(id(directory))
        if got is not None and got[0] is directory:
            got[2].discard(entry.get_short_name())
            for key in [k for k, e in got[1].items() if e is entry]:
                del got[1][key]
        self._indexes.pop(id(entry), None)

    def _find(self, parent, name: str):
        return self._index(parent)[1].get(fold(name))

    def _entry_at(self, stored_path: str):
        entry = self._pf.root_dir
        for name in filter(None, stored_path.split("/")):
            entry = self._find(entry, name)
            if entry is None:
                return None
        return entry

    def _new_entry(self, parent, name: str, attr: int):
        """A directory entry named `name` for `parent`: its 8.3 name (and LFN if needed)."""
        pf = self._pf
        short = EightDotThree(encoding=pf.encoding)
        taken = self._index(parent)[2]
        if EightDotThree.is_8dot3_conform(name, pf.encoding) and name not in taken:
            short.set_str_name(name)            # a valid 8.3 name is its own short name
        else:
            short.set_str_name(short_name(name, taken, pf.encoding))
        entry = FATDirectoryEntry.new(name=short, tz=datetime.timezone.utc,
                                      encoding=pf.encoding, attr=attr)
        dos_stamp(entry, self._now(), created=True)
        if short.get_unpadded_filename() != name:
            entry.set_lfn_entry(make_lfn_entry(name, short))
        return entry

    def _link(self, parent, entry) -> None:
        parent.add_subdirectory(entry)
        self._indexed_add(parent, entry)
        self._pf.update_directory_entry(parent)

    def _create_file(self, parent, name: str):
        """A new empty file in `parent` (written to the directory)."""
        entry = self._new_entry(parent, name, FATDirectoryEntry.ATTR_ARCHIVE)
        self._link(parent, entry)
        return entry

    def _create_dir(self, parent, name: str):
        """A new empty directory in `parent`: one zeroed cluster holding ``.`` and ``..``."""
        pf = self._pf
        attr = FATDirectoryEntry.ATTR_DIRECTORY
        entry = self._new_entry(parent, name, attr)
        first = pf.allocate_bytes(64, erase=True)[0]
        entry.set_cluster(first)
        up = 0 if parent is pf.root_dir else parent.get_cluster()
        for dots, cluster in ((b".          ", first), (b"..         ", up)):
            short = EightDotThree(encoding=pf.encoding)
            short.set_byte_name(dots)
            dot = FATDirectoryEntry.new(name=short, tz=datetime.timezone.utc,
                                        encoding=pf.encoding, attr=attr, cluster=cluster)
            dos_stamp(dot, self._now(), created=True)     # not the machine's time
            entry.add_subdirectory(dot)
        pf.update_directory_entry(entry)
        self._link(parent, entry)
        return entry

    def _resolve(self, path: str):
        """(stored parent names, missing dir names, parent entry or None, entry or None)."""
        names = path.strip("/").split("/")
        entry = self._pf.root_dir
        stored: list[str] = []
        for i, name in enumerate(names[:-1]):
            child = self._find(entry, name)
            if child is None:
                return stored, names[i:-1], entry, None
            if not child.is_directory():
                raise SanError("INVALID_INPUT", f"file path {path!r}: "
                                                f"{'/' + '/'.join(stored + [repr(child)])} is a "
                                                "file, not a directory")
            stored.append(repr(child))
            entry = child
        return stored, [], entry, self._find(entry, names[-1])

    def _file_entry(self, path: str):
        path = normalize(path)
        stored, missing, parent, entry = self._resolve(path)
        if missing or entry is None:
            raise SanError("NO_SUCH_FILE", f"no file {path} on {self.device.name}")
        if entry.is_directory():
            raise SanError("NO_SUCH_FILE", f"{path} on {self.device.name} is a directory, "
                                           "not a file")
        return "/" + "/".join(stored + [repr(entry)]), entry

    def _chain(self, entry, size: int, path: str) -> list[int]:
        if size == 0:
            return []
        want = math.ceil(size / self._pf.bytes_per_cluster)
        chain = []
        try:
            for c in self._pf.get_cluster_chain(entry.get_cluster()):
                chain.append(c)
                if len(chain) == want:
                    break
        except (PyFATException, IndexError) as exc:
            raise SanError("FSCK_FAILED", f"{path} on {self.device.name}: broken cluster chain "
                                          f"({exc})") from None
        if len(chain) < want:
            raise SanError("FSCK_FAILED", f"{path} on {self.device.name}: {size} bytes but only "
                                          f"{len(chain)} clusters")
        return chain

    def _runs(self, chain: list[int]) -> list[tuple[int, int, int]]:
        """(file offset, device offset, length) of the physically contiguous cluster runs."""
        bpc = self._pf.bytes_per_cluster
        runs: list[list[int]] = []
        for i, c in enumerate(chain):
            if runs and c == runs[-1][3] + 1:
                runs[-1][2] += bpc
                runs[-1][3] = c
            else:
                runs.append([i * bpc, self._pf.get_data_cluster_address(c), bpc, c])
        return [(a, b, n) for a, b, n, _ in runs]

    # -- reading ----------------------------------------------------------------------------------
    def iter_file(self, path: str, piece: int = PIECE):
        """The content of a file, in pieces of at most `piece` bytes (``NO_SUCH_FILE``)."""
        with self._lock:
            self._check()
            stored, entry = self._file_entry(path)
        return self._iter_entry(entry, stored, piece)

    def _iter_entry(self, entry, stored: str, piece: int = PIECE):
        with self._lock:
            size = entry.filesize
            runs = self._runs(self._chain(entry, size, stored))
        for foff, doff, length in runs:
            length = min(length, size - foff)
            done = 0
            while done < length:
                n = min(piece, length - done)
                with self._lock:
                    data = self.device.pread_array(doff + done, n)
                if len(data) != n:
                    raise SanError("FSCK_FAILED", f"{stored} on {self.device.name} reaches past "
                                                  "the end of the volume")
                yield data
                done += n

    def stat(self, path: str) -> tuple[str, int]:
        """(the file's path as stored, its size in bytes) (``NO_SUCH_FILE``)."""
        with self._lock:
            self._check()
            stored, entry = self._file_entry(path)
            return stored, entry.filesize

    def read_file(self, path: str) -> bytes:
        """The content of a file (``NO_SUCH_FILE``)."""
        return b"".join(d.tobytes() for d in self.iter_file(path))

    @staticmethod
    def _digest(pieces) -> tuple[int, str]:
        h, n = hashlib.sha256(), 0
        for data in pieces:
            h.update(data)
            n += len(data)
        return n, h.hexdigest()

    def file_digest(self, path: str) -> tuple[int, str]:
        """(size, SHA-256 hex) of a file, streamed."""
        return self._digest(self.iter_file(path))

    def files(self) -> dict[str, tuple[int, str]]:
        """Every regular file, ``'/dir/name' -> (size, sha256 hex)``, sorted by path (names as
        stored; volume labels, ``.`` and ``..`` are not files)."""
        with self._lock:
            self._check()
            found = []
            stack = [("", self._pf.root_dir)]
            while stack:
                prefix, entry = stack.pop()
                dirs, files, _ = entry.get_entries()
                found += [(f"{prefix}/{f!r}", f) for f in files]
                stack += [(f"{prefix}/{d!r}", d) for d in dirs]
            found.sort(key=lambda pe: pe[0])
            return {p: self._digest(self._iter_entry(e, p)) for p, e in found}

    def listdir(self, path: str = "/") -> list[str]:
        """Names (as stored) in a directory."""
        with self._lock:
            self._check()
            entry = self._pf.root_dir
            for name in filter(None, path.split("/")):
                entry = self._find(entry, name)
                if entry is None or not entry.is_directory():
                    raise SanError("NO_SUCH_FILE", f"no directory {path} on {self.device.name}")
            return sorted(repr(e) for e in self._children(entry))

    # -- writing ----------------------------------------------------------------------------------
    def write_file(self, path: str, size: int, seed: int) -> int:
        """Write a file of `size` bytes: the first `size` bytes of ``pattern(seed, 0, size
        rounded up to 512)``.  Creates parent directories, replaces an existing file (keeping
        its stored name).  ``NO_SPACE`` when it does not fit (then nothing of the new file
        remains and nothing else changed); returns the bytes written."""
        if not isinstance(size, int) or size < 0:
            raise SanError("INVALID_INPUT", f"file size {size!r} of {path!r} is not a size >= 0")
        return self._write(path, size, _pattern_pieces(size, seed))

    def write_pieces(self, path: str, size: int, pieces) -> int:
        """Write a file of `size` bytes from `pieces` (arrays or bytes, in order, `size` in
        all), as `write_file` does: a restore streams a backup's file through it, so memory
        stays bounded whatever the file's size.  Returns the bytes written."""
        if not isinstance(size, int) or size < 0:
            raise SanError("INVALID_INPUT", f"file size {size!r} of {path!r} is not a size >= 0")
        return self._write(path, size, pieces)

    def write_bytes(self, path: str, data) -> None:
        """Write a file with the given content (as `write_file`)."""
        data = data if isinstance(data, np.ndarray) else np.frombuffer(bytes(data), dtype=np.uint8)
        data = data.reshape(-1).view(np.uint8)
        self._write(path, len(data), (data[i:i + PIECE] for i in range(0, len(data), PIECE)))

    def _needed_clusters(self, parent, missing: list[str], name: str, size: int) -> int:
        """Clusters a new file needs: its data, new directories, directory growth."""
        pf = self._pf
        bpc = pf.bytes_per_cluster
        need = math.ceil(size / bpc)
        first_new = missing[0] if missing else name
        after = directory_bytes(parent) + entry_slots_bytes(first_new)
        if parent is pf.root_dir and pf.fat_type != pf.FAT_TYPE_FAT32:
            room = pf.root_dir_sectors * pf.bpb_header["BPB_BytsPerSec"]
            if after > room:
                raise SanError("NO_SPACE", f"the root directory of {self.device.name} is full "
                                           f"({pf.bpb_header['BPB_RootEntCnt']} entries)")
        else:
            chain = len(list(pf.get_cluster_chain(parent.get_cluster())))
            need += max(0, math.ceil(after / bpc) - chain)
        for i, _ in enumerate(missing):
            child = missing[i + 1] if i + 1 < len(missing) else name
            need += max(1, math.ceil((64 + entry_slots_bytes(child)) / bpc))
        return need

    def _write(self, path: str, size: int, pieces) -> int:
        path = normalize(path)
        if size > MAX_FILE_SIZE:
            raise SanError("INVALID_INPUT", f"file {path}: {size} bytes is more than a FAT file "
                                            f"holds ({MAX_FILE_SIZE} bytes)")
        with self._lock:
            self._check(writing=True)
            pf = self._pf
            names = path.strip("/").split("/")
            stored, missing, parent, entry = self._resolve(path)
            if entry is not None and entry.is_directory():
                raise SanError("INVALID_INPUT", f"file path {path!r} names a directory on "
                                                f"{self.device.name}")
            bpc = pf.bytes_per_cluster
            free = pf.free_clusters()
            if entry is not None:
                need = math.ceil(size / bpc)    # beside the old content, freed only after
            else:
                need = self._needed_clusters(parent, missing, names[-1], size)
            if need > free:
                beside = (f" beside the {entry.filesize} bytes of the file it replaces (kept "
                          "until the new content is written)" if entry is not None else "")
                raise SanError("NO_SPACE", f"no space for {path} ({size} bytes) on "
                                           f"{self.device.name}: {free * bpc} bytes free, "
                                           f"{need * bpc} needed{beside}")
            self._begin_change()
            if entry is not None:
                return self._replace(path, entry, size, pieces)
            created_dirs: list[str] = []
            file_path = None
            try:
                base = "/" + "/".join(stored)
                for name in missing:
                    base = base.rstrip("/") + "/" + name
                    created_dirs.append(base)
                    parent = self._create_dir(parent, name)
                file_path = base.rstrip("/") + "/" + names[-1]
                entry = self._create_file(parent, names[-1])
                if size:
                    chain = pf.allocate_bytes(size)
                    entry.set_cluster(chain[0])
                    self._write_runs(self._runs(chain), pieces, size)
                entry.filesize = size
                pf.update_directory_entry(entry.get_parent_dir())
                pf.flush_fat()
            except PyFATException as exc:
                self._undo(file_path, created_dirs)
                raise self._pyfat_error(exc, path, size) from None
            except BaseException:
                self._undo(file_path, created_dirs)
                raise
            return size

    def _pyfat_error(self, exc, path: str, size: int) -> SanError:
        if exc.errno == errno.ENOSPC:
            return SanError("NO_SPACE", f"no space for {path} ({size} bytes) on "
                                        f"{self.device.name}: {exc}")
        return SanError("INVALID_INPUT", f"cannot write {path} on {self.device.name}: {exc}")

    def _replace(self, path: str, entry, size: int, pieces) -> int:
        """Give an existing file new content without ever leaving it half-written on the
        volume, in the order a careful filesystem writes:

        1. the new content into newly allocated clusters, then the FAT with both chains
           allocated, written back (a barrier: the device's cache writes back in offset
           order, so without it the entry could reach the volume before the data);
        2. the directory entry switched to the new chain, size and time, written back;
        3. the old chain freed (the FAT reaches the volume with the caller's next flush).

        A failure before the switch is written back (the array died, say) leaves the old
        file, in memory and on the volume: the entry is put back and the new chain freed.  A
        failure after it leaves the new file.  On the volume, a stop between the steps leaves
        one of the two files whole and, at worst, a chain no entry names (``fsck.fat``
        reclaims it).  Needs room for the new content beside the old (`_write` checked)."""
        pf, device = self._pf, self.device
        parent = entry.get_parent_dir()
        old = (entry.get_cluster(), entry.filesize, entry.wrttime, entry.wrtdate,
               entry.lstaccessdate)
        chain: list[int] = []
        switched = False
        try:
            if size:
                chain = pf.allocate_bytes(size)
                self._write_runs(self._runs(chain), pieces, size)
                pf.flush_fat()
                device.flush()                          # the new content is on the volume
            entry.set_cluster(chain[0] if chain else 0)
            entry.filesize = size
            self._touch_times(entry)
            switched = True
            pf.update_directory_entry(parent)
            device.flush()                              # the entry names the new content
        except BaseException as exc:
            self._unswitch(entry, parent, old, chain, switched)
            if isinstance(exc, PyFATException):
                raise self._pyfat_error(exc, path, size) from None
            raise
        pf.free_cluster_chain(old[0])                   # no entry names the old chain now
        pf.flush_fat()
        return size

    def _unswitch(self, entry, parent, old, chain, switched: bool) -> None:
        """Best effort, after a failed `_replace`: the entry as it was (if it had been
        switched, the directory sector in the cache holds the old entry again, so a later
        write-back puts it back), and the new chain freed."""
        cluster, size, entry.wrttime, entry.wrtdate, entry.lstaccessdate = old
        entry.set_cluster(cluster)
        entry.filesize = size
        try:
            if switched:
                self._pf.update_directory_entry(parent)
            if chain:
                self._pf.free_cluster_chain(chain[0])
            self._pf.flush_fat()
        except Exception:
            pass

    def _touch_times(self, entry) -> None:
        dos_stamp(entry, self._now(), created=False)

    def _write_runs(self, runs, pieces, size: int) -> None:
        starts = [r[0] for r in runs]
        off = 0
        for piece in pieces:
            piece = piece if isinstance(piece, np.ndarray) else np.frombuffer(piece, dtype=np.uint8)
            n = len(piece)
            if off + n > size:
                raise ValueError("more data than the file size")
            if off + n == size and n % SECTOR:
                # the last sector whole (zero padded inside its cluster): no read-modify-write
                padded = np.zeros(round_up(n, SECTOR), dtype=np.uint8)
                padded[:n] = piece
                piece, n_write = padded, len(padded)
            else:
                n_write = n
            pos = 0
            while pos < n_write:
                i = bisect.bisect_right(starts, off + pos) - 1
                foff, doff, length = runs[i]
                take = min(n_write - pos, foff + length - (off + pos))
                self.device.pwrite(doff + (off + pos - foff), piece[pos:pos + take])
                pos += take
            off += n
        if off != size:
            raise ValueError(f"file data ended at {off} of {size} bytes")

    def _undo(self, file_path, created_dirs) -> None:
        """Best effort: remove what a failed write created (the file, then new directories)."""
        for victim in ([file_path] if file_path else []) + created_dirs[::-1]:
            try:
                parent_path, _, name = victim.rpartition("/")
                self._indexes.clear()          # pyfatfs may have half-added an entry
                parent = self._entry_at(parent_path)
                entry = self._find(parent, name) if parent is not None else None
                if entry is None:
                    continue
                self._unlink(parent, entry)
            except Exception:
                pass
        try:
            self._pf.flush_fat()
        except Exception:
            pass

    def remove_file(self, path: str) -> None:
        """Delete a file (``NO_SUCH_FILE``); its directory stays."""
        with self._lock:
            self._check(writing=True)
            stored, entry = self._file_entry(path)
            self._begin_change()
            self._unlink(entry.get_parent_dir(), entry)
            self._pf.flush_fat()

    def _unlink(self, parent, entry) -> None:
        """Take `entry` out of `parent` (on the volume) and free its clusters."""
        cluster = entry.get_cluster()
        drop_entry(parent, entry)                   # this entry (not a namesake)
        self._indexed_remove(parent, entry)
        self._pf.update_directory_entry(parent)
        entry.mark_empty()
        self._pf.free_cluster_chain(cluster)

    # -- flush / close ----------------------------------------------------------------------------
    def flush(self) -> None:
        """Write everything back through the device with the filesystem marked clean, so the
        volume passes ``fsck.fat -n`` while still mounted.  The next change marks it dirty.

        A volume that was already marked dirty when mounted (its last writer died before its
        flush, or it was copied so) stays marked, as Linux keeps it: what that writer left
        undone is for ``fsck.fat`` (the host's `repair` action) to find, not for a flush to
        hide."""
        with self._lock:
            self._check()
            if self.readonly:
                return
            if self._disk_dirty or self._marked:
                # what the clean mark vouches for reaches the volume first, still marked
                # dirty (the write-back goes in offset order, and the mark is at offset 0): a
                # flush cut short leaves a volume that says so, never a clean one with data
                # or metadata missing
                self.device.flush()
                self._pf.write_fsinfo()
                if not self._found_dirty:
                    self._pf.mark_clean()
                    self._disk_dirty = False
                self._marked = False
            self.device.flush()

    def close(self) -> None:
        """`flush`, then unmount.  The device stays open (it is the caller's)."""
        with self._lock:
            if self._closed:
                return
            try:
                if not self.readonly and not self.device.closed:
                    self.flush()
            finally:
                self._pf.close()                # unmounts; writes nothing
                self._closed = True

    def discard(self) -> None:
        """Unmount without writing anything and drop the device's cache (dirty data is lost):
        for a volume that changed behind the host's back (raw writes, a restore)."""
        with self._lock:
            self._pf.close()
            self._closed = True
            if not self.device.closed:
                self.device.drop_cache()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
