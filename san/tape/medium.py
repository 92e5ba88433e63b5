"""A tape medium of the SAN's tape libraries: one SIMH image file, appended to and read back.

The tape library (`san.elements.tape_library`) keeps one `TapeMedium` per media ID at
``STATE_DIR/tapes/LIBRARY/MEDIA.tap``; backups and copies to tape `append` a labelled file,
restores `read` it or `read_range` into it, a catalog rebuild lists `files`.  A medium never
written has no image, or an empty one: it is *blank* (``files()`` is ``[]``; catalog rebuild
skips it).  The image's layout is in `san.tape.layout`, its labels in `san.tape.labels`.

Reading checks everything: length words before and after each record agree, every label is
where it must be and well formed, the file numbers run 1, 2, ..., block and byte counts match
the trailer, and `read` checks the data's digest (XXH3-128; SHA-256 in files written before,
see `san.tape.labels`) before it yields the last block.  `read_range` checks the digest when
it builds its index of a file (first use, or after the image changed), and the length words
of every record it touches.  Any failure is MEDIA_ERROR
naming the medium, the record number and the byte offset.  Files before a damaged spot stay
readable with `read` (and are listed by ``files(partial=True)``); ``files()`` and `append`
refuse a damaged medium; `damage()` returns the error, or None.  A file whose labels alone
are damaged is lost, and the files after it stay readable: the walk spaces past it by its tape
marks, as a drive spaces forward a file (`san.tape.layout.walk`).

Appending (crash safety): a new file starts where the logical end of tape was (the position of
the second tape mark).  Everything but the new HDR1 record is written beyond the old
``tape mark, end of medium`` and synced; then the HDR1 record is written over them (the
commit) and synced again.  Until the commit, readers see the old tape.  On any failure --
TAPE_FULL, a chunk source that raises -- the image is truncated back and the old ``tape mark,
end of medium`` restored: exactly the image as it was.  A blank medium is written to
``MEDIA.tap.partial`` and renamed into place.  The image never grows beyond `capacity`.

Where an append syncs, and why (nowhere else: not per chunk, record or tape mark)
-------------------------------------------------------------------------------
1. ``fsync`` once the new file's data, trailer and closing marks are written, before the
   commit: the barrier that keeps the commit from reaching the disk before what it commits
   (without it, a power loss could leave a committed HDR1 before data that never arrived).
   It is the one that waits for the data; writing it chunk by chunk needs no sync, since
   until the commit no reader looks past the old end.
2. ``fsync`` after the commit (an 80-byte record): the file is on disk before `append`
   returns, so the catalog row the backup server adds next never names a file a power loss
   could take back.
3. For a blank medium, instead of the commit: the ``.partial`` image is synced (1), renamed
   into place, and the directory synced so the rename itself lasts.
A failed append syncs the restored end (``tape mark, end of medium``) so that a later crash
cannot bring back the half-written file's commit point.
"""
from __future__ import annotations

import errno
import json
import os
import threading
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import SanError
from . import layout
from .labels import MAX_FILES
from .layout import (CLOSE, File, Scan, file_bytes, head_records, tail_records, walk,
                     write_data)
from .simh import TAPE_BLOCK, END_OF_MEDIUM, TAPE_MARK, U32, Sink, record_size


def _key_of(st: os.stat_result) -> tuple:
    """What tells an image changed: inode, size, modification time."""
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _whole(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def _fsync_dir(directory: Path) -> None:
    """Make a new file's name in `directory` durable.  A file system that cannot fsync a
    folder (EINVAL, ENOTSUP) has nothing more to do; any other failure is the append's."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise SanError("MEDIA_ERROR", f"{directory} (the library's media) cannot be opened "
                                      f"({exc.strerror or exc})") from None
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise SanError("MEDIA_ERROR", f"{directory}: a new medium's name could not be made "
                                          f"durable ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


class TapeMedium:
    """One tape medium: the SIMH image at `path` (see `san.tape.layout` for the layout)."""

    def __init__(self, path: Path, media_id: str, capacity: int):
        self.path = Path(path)
        self.media_id = media_id
        self.capacity = int(capacity)
        self.library = self.path.parent.name
        self._lock = threading.RLock()
        self._cache: Scan | None = None

    def __getstate__(self):
        return {"path": self.path, "media_id": self.media_id, "capacity": self.capacity}

    def __setstate__(self, state):
        self.__init__(state["path"], state["media_id"], state["capacity"])

    def __repr__(self) -> str:
        return f"TapeMedium({str(self.path)!r}, {self.media_id!r}, capacity={self.capacity})"

    # ---- errors
    def _error(self, obj: int, pos: int, message: str) -> SanError:
        return SanError("MEDIA_ERROR", f"medium {self.media_id} ({self.path}): record {obj} "
                                       f"at byte {pos}: {message}")

    def _full(self, message: str) -> SanError:
        return SanError("TAPE_FULL", f"medium {self.media_id} (capacity {self.capacity} bytes): {message}")

    def _bad_digest(self, f: File, detail: str = "") -> SanError:
        return self._error(f.data_obj, f.data_start, f"file {f.number}: the data fails its "
                           f"{f.digest_name}{detail}: damaged data blocks")

    # ---- state
    @property
    def _partial(self) -> Path:
        """Where a blank medium's first file is written before it is renamed into place."""
        return self.path.with_name(self.path.name + ".partial")

    def _stat_key(self):
        try:
            return _key_of(os.stat(self.path))
        except FileNotFoundError:
            return None

    def _scan(self) -> Scan:
        with self._lock:
            key = self._stat_key()
            if self._cache is not None and self._cache.key == key:
                return self._cache
            if key is None or key[1] == 0:
                scan = Scan(key, 0, True)
            else:
                with open(self.path, "rb") as f:
                    key = _key_of(os.fstat(f.fileno()))
                    scan = walk(f.fileno(), key, self.media_id, self._error)
            self._cache = scan
            return scan

    # ---- public API
    @property
    def blank(self) -> bool:
        """True when the medium was never written (no image, or an empty one)."""
        return self._scan().blank

    def used_bytes(self) -> int:
        """The size of the image in bytes (0 when blank)."""
        key = self._stat_key()
        return 0 if key is None else key[1]

    def files(self, *, partial: bool = False) -> list[dict]:
        """[{file, row, blocks, bytes}] from the labels; MEDIA_ERROR if the image is damaged.

        With partial=True a damaged image gives its intact files instead (what a catalog
        rebuild can still recover); `damage()` says what is wrong.  A file whose labels are
        damaged but whose framing is not is spaced past, as a drive spaces forward a file: the
        files after it are intact too.  Damage to the framing (a length word) ends the walk:
        no file after it is trusted.
        """
        scan = self._scan()
        if scan.error is not None and not partial:
            raise scan.error
        return [f.public() for f in scan.files]

    def damage(self) -> SanError | None:
        """The MEDIA_ERROR the image's structure gives, or None if it is intact."""
        return self._scan().error

    def _file(self, number) -> tuple[Scan, File]:
        scan = self._scan()
        if not _whole(number):
            raise SanError("INVALID_INPUT", f"a tape file number is a whole number (got {number!r})")
        number = int(number)
        found = scan.file(number)
        if found is not None:
            return scan, found
        if number in scan.lost:
            raise scan.lost[number]
        if scan.fatal is not None and number >= 1:
            raise scan.fatal
        raise SanError("NO_SUCH_BACKUP", f"medium {self.media_id} has no file {number} "
                                         f"(it holds {len(scan.files) + len(scan.lost)})")

    def file(self, number) -> dict:
        """{file, row, blocks, bytes} of file `number`, if it is intact (a damaged medium's
        other files too); else its damage's MEDIA_ERROR, or NO_SUCH_BACKUP."""
        return self._file(number)[1].public()

    def _records(self, f: File, fd: int) -> Iterator[tuple[int, np.ndarray]]:
        """(byte offset, data) of each data record of file `f`, checking the length words."""
        pos = f.data_start
        for i in range(f.blocks):
            buf = bytearray(TAPE_BLOCK + 8)
            got = os.preadv(fd, [buf], pos)
            n = U32.unpack_from(buf)[0] if got >= 4 else -1
            if not 1 <= n <= TAPE_BLOCK or got < record_size(n):
                raise self._error(f.data_obj + i, pos, f"data block {i + 1} of file {f.number} "
                                  "is damaged or cut short (the image changed?)")
            if U32.unpack_from(buf, 4 + n + (n & 1))[0] != n:
                raise self._error(f.data_obj + i, pos, f"data block {i + 1} of file {f.number}: "
                                  "length words differ (damaged length word)")
            yield pos, np.frombuffer(buf, dtype=np.uint8, count=n, offset=4)
            pos += record_size(n)
        if pos != f.data_end:
            raise self._error(f.data_obj + f.blocks, pos, f"file {f.number}: the data section "
                              "does not end where it did (the image changed?)")

    def read(self, file: int) -> Iterator[np.ndarray]:
        """The data blocks of file `file`, in order; the digest is checked before the last one."""
        scan, f = self._file(file)
        return self._read(f)

    def _read(self, f: File) -> Iterator[np.ndarray]:
        with open(self.path, "rb") as fh:
            digest = f.hasher()
            pending = None
            for _, block in self._records(f, fh.fileno()):
                if f.nbytes == 0:       # the filler of an empty file
                    break
                if pending is not None:
                    yield pending
                digest.update(block)
                pending = block
            if digest.hexdigest() != f.digest:
                raise self._bad_digest(f, f" (recorded {f.digest[:16]}..., read "
                                          f"{digest.hexdigest()[:16]}...)")
            if pending is not None:
                yield pending

    def _index(self, scan: Scan, f: File, verify: bool):
        with self._lock:
            index = scan.indices.get(f.number)
            if index is not None and (index[2] or not verify):
                return index
        positions, lengths = [], []
        digest = f.hasher()
        with open(self.path, "rb") as fh:
            for pos, block in self._records(f, fh.fileno()):
                positions.append(pos)
                lengths.append(len(block))
                if verify:
                    digest.update(block)
        if verify and digest.hexdigest() != f.digest:
            raise self._bad_digest(f)
        starts = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(np.asarray(lengths, dtype=np.int64), out=starts[1:])
        index = (np.asarray(positions, dtype=np.int64), starts, verify)
        with self._lock:
            scan.indices[f.number] = index
        return index

    def read_range(self, file: int, offset: int, length: int, *, verify: bool = True) -> np.ndarray:
        """`length` bytes of file `file`'s data from `offset` (random access into a volume image).

        The first call for a file (or the first after the image changed) builds an index of its
        block offsets, reading the whole file once and checking its digest (unless
        verify=False); later calls read only the blocks they need, checking their length words.
        """
        scan, f = self._file(file)
        for name, value in (("offset", offset), ("length", length)):
            if not _whole(value):
                raise SanError("INVALID_INPUT", f"read_range {name} must be a whole number (got {value!r})")
        offset, length = int(offset), int(length)
        if offset < 0 or length < 0 or offset + length > f.nbytes:
            raise SanError("LBA_OUT_OF_RANGE", f"bytes {offset}..{offset + length} are outside file "
                                               f"{f.number} of medium {self.media_id} ({f.nbytes} bytes)")
        out = np.empty(length, dtype=np.uint8)
        if length == 0:
            return out
        positions, starts, _ = self._index(scan, f, verify)
        first = int(np.searchsorted(starts, offset, side="right")) - 1
        done = 0
        with open(self.path, "rb") as fh:
            fd = fh.fileno()
            i = first
            while done < length:
                pos, start = int(positions[i]), int(starts[i])
                n = int(starts[i + 1]) - start
                head = os.pread(fd, 4, pos)
                tail = os.pread(fd, 4, pos + 4 + n + (n & 1))
                if head != U32.pack(n) or tail != head:
                    raise self._error(f.data_obj + i, pos, f"data block {i + 1} of file {f.number}: "
                                      "length words differ from the index (damaged length word)")
                lo = offset + done - start
                take = min(n - lo, length - done)
                got = os.preadv(fd, [memoryview(out)[done:done + take]], pos + 4 + lo)
                if got != take:
                    raise self._error(f.data_obj + i, pos, f"data block {i + 1} of file {f.number} "
                                      "is cut short")
                done += take
                i += 1
        return out

    def erase(self) -> None:
        """Blank the medium again (the image becomes empty)."""
        with self._lock:
            if self.path.exists():
                with open(self.path, "r+b") as fh:
                    fh.truncate(0)
                    os.fsync(fh.fileno())
            self._partial.unlink(missing_ok=True)
            self._cache = None

    def flip(self, offset: int, nbytes: int) -> int:
        """Invert `nbytes` stored bytes at `offset` of the image (the `corrupt` fault); how
        many.  What was learnt of the image goes: its size and times may not show the change
        (a timestamp as coarse as the kernel's tick), and a read must meet the rot."""
        with self._lock:
            with open(self.path, "r+b") as image:
                image.seek(0, 2)
                if offset < 0 or offset + nbytes > image.tell():
                    raise SanError("LBA_OUT_OF_RANGE", f"{self.media_id}: offset {offset} is past "
                                                       f"the image's end ({image.tell()} bytes)")
                image.seek(offset)
                data = bytearray(image.read(nbytes))
                image.seek(offset)
                image.write(bytes(b ^ 0xFF for b in data))
            self._cache = None
            return len(data)

    def projected_size(self, row: dict, size: int, created=None) -> int:
        """The image size after appending a `size`-byte backup with this row (`created` as
        `append` takes it)."""
        scan = self._scan()
        if scan.error is not None:
            raise scan.error
        begin = 0 if scan.blank else scan.end
        number = len(scan.files) + 1
        head = self._head(row, number, scan.blank, created)
        return begin + file_bytes(row, self.media_id, number, head, size, created)

    def _head(self, row: dict, number: int, blank: bool, created) -> list[bytes]:
        return head_records(row, self.media_id, self.library, number, blank, created)

    def append(self, row: dict, chunks: Iterable, size: int | None = None, *, created=None) -> int:
        """Append a backup file: labels, the data of `chunks` in 64 KiB blocks, the trailer.

        Returns its file number (1, 2, ...).  TAPE_FULL if it would not fit within `capacity`:
        checked up front from `size` (the expected byte count, None if unknown) and again as
        the chunks arrive; on TAPE_FULL -- or any other failure -- nothing of the new file
        remains.  `created` (a date, datetime or timestamp text) sets HDR1's creation date;
        by default the date of row["timestamp"].  The row is stored exactly as given.
        """
        with self._lock:
            scan = self._scan()
            if scan.error is not None:
                raise scan.error
            number = len(scan.files) + 1
            if number > MAX_FILES:
                raise self._full(f"it holds {MAX_FILES} files, the most its labels can number")
            head = self._head(row, number, scan.blank, created)
            blank = scan.blank
            begin = 0 if blank else scan.end
            if size is not None:
                need = self.projected_size(row, int(size), created)
                if need > self.capacity:
                    raise self._full(f"a {size}-byte backup needs {need - begin} bytes of tape, "
                                     f"{self.capacity - begin} are free")
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            target = self._partial if blank else self.path
            fd = os.open(target, os.O_RDWR | os.O_CREAT | (os.O_TRUNC if blank else 0), 0o600)
            try:
                commit = b"" if blank else head[0]
                sink = Sink(fd, begin + len(commit), self.capacity, self._full)
                for rec in head[1:] if commit else head:
                    sink.put(rec)
                data_obj = scan.end_obj + len(head) if not blank else len(head) + 1
                data_start = sink.end
                algorithm = layout.DIGEST
                blocks, nbytes, digest = write_data(sink, chunks, algorithm)
                data_end = sink.end
                sink.put(TAPE_MARK)
                trailer = tail_records(row, self.media_id, number, created, blocks, nbytes, digest,
                                       algorithm)
                for rec in trailer:
                    sink.put(rec)
                sink.put(CLOSE)
                sink.flush()
                end = sink.pos - 8
                if os.fstat(fd).st_size > sink.pos:     # leftovers of a crashed append
                    os.ftruncate(fd, sink.pos)
                os.fsync(fd)
                if commit:
                    os.pwrite(fd, commit, begin)
                    os.fsync(fd)
                else:
                    os.replace(target, self.path)
                    _fsync_dir(self.path.parent)
            except BaseException:
                try:
                    if blank:       # (renamed already if the folder's fsync failed)
                        os.ftruncate(fd, 0)
                        Path(target).unlink(missing_ok=True)
                    else:
                        os.pwrite(fd, TAPE_MARK + END_OF_MEDIUM, begin)
                        os.ftruncate(fd, begin + 8)
                        os.fsync(fd)
                finally:
                    os.close(fd)
                    self._cache = None
                raise
            os.close(fd)
            # bring the cached scan up to date instead of walking the whole tape again
            new = File(number, json.loads(json.dumps(row)), blocks, nbytes, digest, begin,
                       data_start, data_obj, data_end, algorithm)
            key = self._stat_key()
            files = [] if blank else scan.files
            objects = len(head) + blocks + 1 + len(trailer) + 1
            end_obj = (scan.end_obj if not blank else 1) + objects
            self._cache = Scan(key, key[1], False, files + [new], end, end_obj)
            self._cache.indices = {} if blank else {k: v for k, v in scan.indices.items()}
            return number
