"""The tape library: drives, media, and volume images on real SIMH tape images.

A library has `drives` drives at `drive_speed` and media with IDs, each a `TapeMedium`
(``STATE_DIR/tapes/LIBRARY/MEDIA.tap``, ANSI-labelled: see `san.tape`).  A drive serves one
medium at a time; work beyond the drive count waits for a drive (a semaphore), and work on
one medium waits for that medium (a lock), so appends to a medium never interleave.

What a backup file on tape holds: a *volume image*, thin.  Its data is a 512-byte-aligned
header, then the bytes of the volume's written extents in order:

    offset  size  field
         0     8  b"SANIMG01"
         8     8  volume size in bytes (u64, little-endian)
        16     4  number of extents n (u32 LE)
        20  16*n  n x (offset u64 LE, length u64 LE): the written byte ranges, in order
         .     .  zeros up to a multiple of 512

so a 2 GiB volume with 200 MiB written takes 200 MiB of tape, and restoring it gives back
every byte (the holes read as zeros).  The catalog row of the copy is in the file's user
header labels, so the catalog can be rebuilt from the tapes alone.
"""
from __future__ import annotations

import struct
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import SanError
from ..digest import digest_extents
from ..tape import TapeMedium

MAGIC = b"SANIMG01"


def image_header(size: int, extents: list[tuple[int, int]]) -> bytes:
    body = MAGIC + struct.pack("<QI", size, len(extents)) + b"".join(
        struct.pack("<QQ", off, length) for off, length in extents)
    return body + bytes(-len(body) % 512)


def header_length(data: bytes) -> int:
    """How many bytes the image header starting `data` takes (a whole number of 512-byte
    blocks), read from its extent count; 0 if `data` is too short to tell (`parse_header`
    then says what is wrong)."""
    if len(data) < 20:
        return 0
    need = 20 + 16 * struct.unpack("<I", data[16:20])[0]
    return need + (-need % 512)


def parse_header(data: bytes, where: str) -> tuple[int, list[tuple[int, int]], int]:
    """(volume size, extents, header length) of an image's first bytes."""
    if data[:8] != MAGIC or len(data) < 20:
        raise SanError("MEDIA_ERROR", f"{where} does not hold a volume image (magic {data[:8]!r})")
    size, count = struct.unpack("<QI", data[8:20])
    if len(data) < 20 + 16 * count:
        raise SanError("MEDIA_ERROR", f"{where}: image header cut short")
    extents = [struct.unpack("<QQ", data[20 + 16 * i:36 + 16 * i]) for i in range(count)]
    return size, extents, header_length(data)


class TapeLibrary:
    def __init__(self, spec, state_dir: Path):
        self.spec = spec
        self.name = spec.name
        self.directory = Path(state_dir) / "tapes" / spec.name
        self.directory.mkdir(parents=True, exist_ok=True)
        self.media = {m: TapeMedium(self.directory / f"{m}.tap", m, spec.media_capacity)
                      for m in spec.media}
        self._free = list(range(spec.drives))
        self._drives = threading.Condition()
        self._medium_locks = {m: threading.Lock() for m in spec.media}
        self._maps: dict[tuple[str, int], tuple] = {}
        self.alive = True               # False once killed (`close`)

    def close(self) -> None:
        """Going down (an in-process SAN's kill, where no process dies): an image being
        appended fails ELEMENT_DOWN at its next chunk, before its file is committed, so the
        medium is left as it was, as a killed actor's would be (its leftovers are cut off by
        the next append); reads fail from then on."""
        self.alive = False

    def _check_alive(self) -> None:
        if not self.alive:
            raise SanError("ELEMENT_DOWN", f"{self.name} went down")

    def describe(self) -> dict:
        return {"name": self.name, "drives": self.spec.drives, "media": sorted(self.media)}

    def medium(self, media_id: str) -> TapeMedium:
        try:
            return self.media[media_id]
        except KeyError:
            raise SanError("NO_SUCH_MEDIA", f"{self.name} has no medium {media_id!r} "
                                            f"(media: {', '.join(sorted(self.media))})") from None

    @contextmanager
    def drive(self, media_id: str):
        """Load `media_id` into a free drive (waiting for one); yields the drive's number."""
        self.medium(media_id)
        with self._medium_locks[media_id]:
            with self._drives:
                self._drives.wait_for(lambda: self._free)
                number = self._free.pop(0)
            try:
                yield number
            finally:
                with self._drives:
                    self._free.append(number)
                    self._free.sort()
                    self._drives.notify()

    # -- writing ------------------------------------------------------------------------------
    def next_file(self, media_id: str) -> int:
        return len(self.medium(media_id).files()) + 1

    def write_image(self, media_id: str, row: dict, size: int, extents: list, chunks) -> dict:
        """Append a volume image (header, then the extents' bytes from `chunks`) as a new
        file; `row` is the catalog row of this copy, its `file` set here.  TAPE_FULL leaves
        the medium as it was."""
        header = image_header(size, extents)
        payload = sum(length for _, length in extents)
        with self.drive(media_id) as drive:
            medium = self.medium(media_id)
            row = {**row, "file": str(len(medium.files()) + 1)}

            def stream():
                yield np.frombuffer(header, dtype=np.uint8)
                for chunk in chunks:
                    self._check_alive()
                    yield chunk
                self._check_alive()       # nothing is committed by a library gone down

            number = medium.append(row, stream(), len(header) + payload)
        return {"file": number, "row": row, "drive": drive, "bytes": len(header) + payload}

    # -- reading ------------------------------------------------------------------------------
    def image_map(self, media_id: str, file: int):
        key = (media_id, int(file))
        if key not in self._maps:
            medium = self.medium(media_id)
            nbytes = self._file_bytes(medium, file)
            head = bytes(medium.read_range(int(file), 0, min(512, nbytes)))
            need = header_length(head)
            if need > len(head):        # over 30 extents: the header runs past its first block
                head = bytes(medium.read_range(int(file), 0, min(need, nbytes)))
            size, extents, hlen = parse_header(head, f"{media_id} file {file}")
            starts, at = [], hlen
            for off, length in extents:
                starts.append(at)
                at += length
            self._maps[key] = (size, extents, starts)
        return self._maps[key]

    @staticmethod
    def _file_bytes(medium: TapeMedium, file: int) -> int:
        """The size of `file`; an intact file of a damaged medium keeps it
        (`files(partial=True)`): it stays readable, as a catalog rebuild that found it
        promises.  A damaged file, or one past damage to the framing, is the damage's
        MEDIA_ERROR, not "no such file"."""
        return medium.file(file)["bytes"]

    def image_size(self, media_id: str, file: int) -> int:
        return self.image_map(media_id, file)[0]

    def image_extents(self, media_id: str, file: int) -> list[tuple[int, int]]:
        return list(self.image_map(media_id, file)[1])

    def read_image(self, media_id: str, file: int, offset: int, length: int) -> np.ndarray:
        """Bytes [offset, offset+length) of the volume image in a file (holes read as zeros)."""
        self._check_alive()
        size, extents, starts = self.image_map(media_id, file)
        if offset < 0 or offset + length > size:
            raise SanError("LBA_OUT_OF_RANGE", f"{media_id} file {file}: bytes {offset}+{length} "
                                               f"are past the image's end ({size} bytes)")
        out = np.zeros(length, dtype=np.uint8)
        medium = self.medium(media_id)
        for (off, ext_len), start in zip(extents, starts):
            lo, hi = max(offset, off), min(offset + length, off + ext_len)
            if lo < hi:
                out[lo - offset:hi - offset] = medium.read_range(int(file), start + lo - off, hi - lo)
        return out

    def image_digest(self, media_id: str, file: int) -> str:
        """The contract's volume digest of the image (as VolumeStore.digest of the volume)."""
        size, extents, _ = self.image_map(media_id, file)
        return digest_extents(extents, size, lambda off, n: self.read_image(media_id, file, off, n))

    def scan(self) -> dict:
        """Every backup file's row on every medium (blank media skipped); a damaged medium
        gives the rows of its intact files and its MEDIA_ERROR, and the others still count."""
        rows, errors = [], []
        for media_id, medium in sorted(self.media.items()):
            if medium.blank:
                continue
            with self._medium_locks[media_id]:
                try:
                    found = medium.files()
                except SanError as exc:
                    found = medium.files(partial=True)
                    errors.append(exc)
            rows += [{**f["row"], "file": str(f["file"])} for f in found]
        return {"rows": rows, "errors": errors}

    def corrupt(self, media_id: str, offset: int, nbytes: int = 1) -> int:
        """Flip stored bytes of a medium's image behind the library's back (the fault); how
        many were flipped."""
        medium = self.medium(media_id)
        if medium.blank or not medium.path.exists():
            raise SanError("LBA_OUT_OF_RANGE", f"{media_id} is blank: there is nothing to corrupt")
        flipped = medium.flip(offset, nbytes)
        self._maps = {k: v for k, v in self._maps.items() if k[0] != media_id}
        return flipped
